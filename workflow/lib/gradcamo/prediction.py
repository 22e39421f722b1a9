"""Predicting without gradients, as evaluation predicts: the logits of a dataset's cells
(:func:`predict`) or of crops in memory (:func:`predict_crops`), in eval mode, in batches of
:func:`evaluation_batch_size`; and the batch-norm statistics recomputed with the current
weights before every evaluation (:func:`refresh_batch_norm`, "precise BN"; why: its
docstring).

Training's evaluation and validation audit (:mod:`gradcamo.training`,
:mod:`gradcamo.validation_audit`) and the planted control (:mod:`gradcamo.planted`)
predict through these.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import nn

from gradcamo.data import CropCells, cell_loader

#: At most this many training cells give the batch-norm statistics used in evaluation.
BATCH_NORM_CELLS = 2048


def evaluation_batch_size(batch_size: int) -> int:
    """Batch size without gradients: larger than in training, at least 64.

    For :func:`refresh_batch_norm` larger batches also matter for accuracy: there each
    layer normalises with its batch's statistics, which approach the population ones that
    evaluation uses as batches grow.
    """
    return max(64, 2 * batch_size)


@torch.no_grad()
def refresh_batch_norm(
    model: nn.Module,
    dataset: CropCells,
    batch_size: int,
    device: torch.device,
    amp: torch.dtype | None = None,
) -> None:
    """Replace the batch-norm running statistics by their average over ``dataset``.

    MONAI's EfficientNet keeps TensorFlow's batch-norm momentum (0.01): the running
    statistics that evaluation uses start at (0, 1) and need thousands of steps to forget
    that start, while normalised crops have variances near 0.01; evaluated before they
    settle, every block shrinks its input and the logits stop depending on the cell.
    Recomputing them with the current weights ("precise BN") fixes that at any training
    length. Unlike :func:`torch.optim.swa_utils.update_bn`, only the batch-norm layers are
    put in training mode: dropout and drop-connect stay off as in evaluation, so the
    statistics describe the activations evaluation sees. Batches hold >= 2 cells.
    """
    drop_last = len(dataset) >= batch_size
    batches = (
        batch.to(device)[0]
        for batch in cell_loader(dataset, batch_size, 0, device, seed=0, drop_last=drop_last)
    )
    refresh_batch_norm_on(model, batches, device, amp)


def refresh_batch_norm_on(
    model: nn.Module, batches: Iterable[torch.Tensor], device: torch.device, amp: torch.dtype | None = None
) -> None:
    """:func:`refresh_batch_norm` over ``batches`` of crops ``(N, C, Z, Y, X)`` on ``device``."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:  # group norm: nothing to refresh
        return
    was_training = model.training
    model.eval()
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches
        norm.train()
    for images in batches:
        with torch.autocast(torch.device(device).type, dtype=amp, enabled=amp is not None):
            model(images)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.train(was_training)


def predict(
    model: nn.Module,
    dataset: CropCells,
    batch_size: int,
    device: torch.device,
    amp: torch.dtype | None = None,
    num_workers: int = 0,
) -> np.ndarray:
    """Logits ``(N, num_classes)`` float32 of every cell of ``dataset`` (eval mode, as stored)."""
    batches = cell_loader(dataset, batch_size, num_workers, device, seed=0)
    return _logits(model, (batch.to(device)[0] for batch in batches), device, amp)


def predict_crops(
    model: nn.Module,
    crops: torch.Tensor,
    batch_size: int,
    device: torch.device,
    amp: torch.dtype | None = None,
) -> np.ndarray:
    """Logits ``(N, num_classes)`` float32 of in-memory crops ``(N, C, Z, Y, X)`` (eval mode)."""
    batches = (
        crops[start : start + batch_size].to(device).float() for start in range(0, len(crops), batch_size)
    )
    return _logits(model, batches, device, amp)


@torch.no_grad()
def _logits(model: nn.Module, batches, device: torch.device, amp: torch.dtype | None) -> np.ndarray:
    """The eval-mode logits of float32 image batches on ``device``, stacked ``(N, classes)``."""
    model.eval()
    out = []
    for images in batches:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out.append(model(images).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model._fc.out_features), np.float32)
