"""Model randomisation check: Grad-CAMO of a seeded sample of test cells under the trained
model and under copies re-initialised from the top, cascading (results/checks/randomisation.*)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from gradcamo.devices import choose_device
from gradcamo.io import atomic_path
from gradcamo.logs import log_to
from gradcamo.model import load_checkpoint
from gradcamo.planted import sample_cells
from gradcamo.profiles import build_profiler, split_stores
from gradcamo.randomisation import randomisation_table, randomisation_verdict
from gradcamo.store import CropStore

log = log_to(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
sm = snakemake  # noqa: F821
torch.set_num_threads(sm.threads)
device = choose_device(sm.resources.gpu)
settings = sm.params.settings

model, meta = load_checkpoint(sm.input.model, map_location=device)
wells = pd.read_csv(sm.input.split, sep="\t", dtype=str)
test = wells[wells["split"] == "test"]
stores = [CropStore.open(store) for store in split_stores(test, sm.input.store_json, sm.input.split)]
# One sample over all test cells, whatever their treatment: the map's dependence on the
# weights is the question, not any class.
images, masks, cells, _ = sample_cells(stores, ["all"] * len(stores), settings["cells"], settings["seed"])
# The plates' fills pooled: the sample spans plates, and one baseline serves every copy.
fill = np.concatenate([np.load(path) for path in sm.input.fills])
log.info(
    "%d test cells from %d wells; cascade: classifier, head and %s stages, %d seeds each",
    len(images),
    len(stores),
    "every" if settings["stages"] is None else settings["stages"],
    settings["seeds"],
)
rows = randomisation_table(
    model,
    lambda m: build_profiler(m, images.shape[2:], sm.params.attribution, sm.params.voxel_size, fill),
    images,
    masks,
    stages=settings["stages"],
    seeds=[settings["seed"] + k for k in range(settings["seeds"])],
    threshold=sm.params.threshold,
    batch_size=sm.params.batch_size,
    device=device,
    log=log.info,
)
verdict = randomisation_verdict(rows)
log.info("verdict: %s", verdict)
with atomic_path(sm.output.table) as tmp:
    pd.DataFrame(rows).to_csv(tmp, sep="\t", index=False)
with atomic_path(sm.output.summary) as tmp:
    Path(tmp).write_text(json.dumps({**verdict, "threshold": sm.params.threshold}, indent=2) + "\n")
