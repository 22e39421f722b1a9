"""One confounded model of the penalty study (gradcamo.studies.penalty.evaluate)."""

import json

import pandas as pd
import torch
from gradcamo.devices import choose_device
from gradcamo.logs import log_to
from gradcamo.model import load_checkpoint
from gradcamo.studies.penalty import evaluate
from gradcamo.studies.variants import read_wells

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = log_to(sm.log[0])
torch.set_num_threads(sm.threads)
device = choose_device(sm.resources.gpu)
model, meta = load_checkpoint(sm.input.model)
wells, fills = read_wells(sm.input.wells)
free = pd.read_csv(sm.input.shortcut_free, sep="\t", dtype=str)
row = evaluate(
    model.to(device),
    meta["classes"],
    wells,
    fills,
    sm.params.cell_margin,
    {(p, w): s for p, w, s in zip(free.plate, free.well, free.store)},
    sm.params.ig_steps,
    tuple(sm.params.smoothing),
    device,
)
with open(sm.output[0], "w") as f:
    json.dump(row, f, indent=2)
log.info("%s", row)
