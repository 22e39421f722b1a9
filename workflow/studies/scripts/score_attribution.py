"""Score one model with every map of the attribution study (gradcamo.studies.attribution)."""

import json

import pandas as pd
import torch
from gradcamo.devices import choose_device
from gradcamo.logs import log_to
from gradcamo.model import load_checkpoint
from gradcamo.studies import kind_of
from gradcamo.studies.attribution import score_model
from gradcamo.studies.variants import read_wells

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = log_to(sm.log[0])
torch.set_num_threads(sm.threads)
device = choose_device(sm.resources.gpu)
model, meta = load_checkpoint(sm.input.model)
wells, fills = read_wells(sm.input.wells)
rows, summary = score_model(
    kind_of(sm.wildcards.variant, sm.wildcards.context),
    int(sm.wildcards.seed),
    model.to(device),
    meta["classes"],
    wells,
    fills,
    sm.params.cell_margin,
    [(m, layer, tuple(s)) for m, layer, s in sm.params.maps],
    sm.params.ig_steps,
    device,
)
pd.DataFrame(rows).to_csv(sm.output.maps, sep="\t", index=False)
with open(sm.output.model, "w") as f:
    json.dump(summary, f, indent=2)
log.info("%s", summary)
