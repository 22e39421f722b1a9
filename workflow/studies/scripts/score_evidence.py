"""One model's test cells for the evidence curve, and its randomisation check
(gradcamo.studies.evidence, gradcamo.randomisation)."""

import numpy as np
import pandas as pd
import torch
from gradcamo.devices import choose_device
from gradcamo.logs import log_to
from gradcamo.model import load_checkpoint
from gradcamo.planted import sample_cells
from gradcamo.profiles import build_profiler
from gradcamo.randomisation import randomisation_table
from gradcamo.store import CropStore
from gradcamo.studies import kind_of
from gradcamo.studies.evidence import model_cells
from gradcamo.studies.variants import read_wells

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = log_to(sm.log[0])
torch.set_num_threads(sm.threads)
device = choose_device(sm.resources.gpu)
kind, seed = kind_of(sm.wildcards.variant, sm.wildcards.context), int(sm.wildcards.seed)
model, meta = load_checkpoint(sm.input.model)
model = model.to(device).eval()
wells, fills = read_wells(sm.input.wells)
config = {
    "profile": sm.params.profile,
    "voxel_size": sm.params.voxel_size,
    "crops": {"cell_margin": sm.params.cell_margin},
}
cells = model_cells(kind, seed, model, meta["classes"], wells, fills.__getitem__, config, device)
cells.to_csv(sm.output.cells, sep="\t", index=False)

test = wells[wells.split == "test"]
stores = [CropStore.open(p) for p in test.store]
images, masks, _, _ = sample_cells(stores, ["all"] * len(stores), sm.params.randomisation_cells, 0)
fill = np.concatenate([fills[p] for p in sorted(set(test.plate))])
rows = randomisation_table(
    model,
    lambda m: build_profiler(m, images.shape[2:], sm.params.profile, sm.params.voxel_size, fill),
    images,
    masks,
    stages=None,
    seeds=range(sm.params.randomisation_seeds),
    device=device,
)
pd.DataFrame([{**r, "kind": kind, "model_seed": seed} for r in rows]).to_csv(
    sm.output.randomisation, sep="\t", index=False
)
log.info("%d test cells; randomisation: %d rows", len(cells), len(rows))
