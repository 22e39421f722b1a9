"""Train one study model (gradcamo.training.train_classifier, as the train rule does)."""

import torch
from gradcamo.devices import choose_device
from gradcamo.logs import log_to
from gradcamo.studies.variants import read_wells
from gradcamo.train_settings import TrainSettings
from gradcamo.training import train_classifier, write_training_outputs
from gradcamo.validation_audit import ValidationAudit

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = log_to(sm.log[0])
torch.set_num_threads(sm.threads)
wells, fills = read_wells(sm.input.wells)
audit = ValidationAudit(
    fills=fills,
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
