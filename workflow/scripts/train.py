"""Train the 3D EfficientNet (results/train/{model.pt,history.tsv,metrics.json})."""

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from gradcamo.devices import choose_device
from gradcamo.logs import log_to
from gradcamo.profiles import split_stores
from gradcamo.train_settings import TrainSettings
from gradcamo.training import train_classifier, write_training_outputs
from gradcamo.validation_audit import ValidationAudit

log = log_to(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
sm = snakemake  # noqa: F821
torch.set_num_threads(sm.threads)

# The crop store of a well is the folder results/crops/{plate}/{well}/ of its images.npy.
wells = pd.read_csv(sm.input.split, sep="\t", dtype=str)
wells["store"] = [str(store) for store in split_stores(wells, sm.input.images, sm.input.split)]

settings = TrainSettings.from_config(sm.params.settings)
device = choose_device(sm.resources.gpu)
# results/crops/{plate}/fill.npy: the plate's neutral fill, as the profile stage's audit uses it.
audit = ValidationAudit(
    fills={Path(path).parent.name: np.load(path) for path in sm.input.fills},
    cell_margin=sm.params.cell_margin,
    seed=sm.params.fill_seed,
)
result = train_classifier(
    wells,
    settings,
    sm.params.channels,
    sm.params.crop_shape,
    device,
    resume_path=sm.params.resume,
    audit=audit,
)
write_training_outputs(result, sm.output.model, sm.output.history, sm.output.metrics)
# The run is complete: a later rerun (new code, forced) trains afresh instead of resuming.
Path(sm.params.resume).unlink(missing_ok=True)
for split, m in result.metrics.items():
    log.info(
        "%s: %d cells, accuracy %s, balanced accuracy %s (chance %.3f)",
        split,
        m["n_cells"],
        m["accuracy"],
        m["balanced_accuracy"],
        m["chance_level"],
    )
