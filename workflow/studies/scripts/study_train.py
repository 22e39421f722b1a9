"""Train one study model (gradcamo.training.train_classifier, as the train rule does)."""

import numpy as np
import pandas as pd
import torch
from gradcamo.devices import choose_device
from gradcamo.logs import log_to
from gradcamo.train_settings import TrainSettings
from gradcamo.training import train_classifier, write_training_outputs
from gradcamo.validation_audit import ValidationAudit

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = log_to(sm.log[0])
torch.set_num_threads(sm.threads)
wells = pd.read_csv(sm.input.wells, sep="\t", dtype=str)
audit = ValidationAudit(
    fills={plate: np.load(path) for plate, path in zip(wells.plate, wells.fill)},
    cell_margin=sm.params.cell_margin,
    seed=sm.params.fill_seed,
)
result = train_classifier(
    wells,
    TrainSettings.from_config(sm.params.settings),
    sm.params.channels,
    sm.params.crop_shape,
    choose_device(sm.resources.gpu),
    audit=audit,
)
write_training_outputs(result, sm.output.model, sm.output.history, sm.output.metrics)
log.info("test accuracy %.3f", result.metrics["test"]["accuracy"])
