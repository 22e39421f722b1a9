"""The per-epoch audit of the validation cells, and the score the best epoch is kept by.

Given the plates' neutral fills (:class:`ValidationAudit`), up to ``train.audit_cells``
validation cells are taken apart once as the profile stage's audit takes a cell apart
(:func:`validation_counterfactuals`, :func:`gradcamo.audit.counterfactual_crops`) and
predicted after every epoch from the cell alone and from its context alone
(:func:`audit_accuracies`), so the log says each epoch whether the model is learning the
cell or its surroundings; ``select_by: cell_accuracy`` keeps the epoch with the best
accuracy from the cell alone (:func:`selection_score`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from torch import nn

from gradcamo.audit import audit_seeds, counterfactual_crops
from gradcamo.data import CropCells
from gradcamo.errors import InputError
from gradcamo.prediction import predict_crops
from gradcamo.store import CropStore

#: Cells taken apart at once for the validation audit (bounds its float32 working copies).
COUNTERFACTUAL_BLOCK = 32


@dataclass(frozen=True)
class ValidationAudit:
    """What the per-epoch audit of the validation cells needs: the profile stage's audit.

    ``fills``: plate → its neutral fill ``(M, C)`` (``results/crops/{plate}/fill.npy``,
    :mod:`gradcamo.context`); ``cell_margin`` and ``seed``: ``crops.cell_margin`` and
    ``crops.fill.seed``, so a validation cell is taken apart as its profile's audit will
    take it apart (:func:`gradcamo.audit.counterfactual_crops`, :func:`audit_seeds`).
    """

    fills: Mapping[str, np.ndarray]
    cell_margin: int
    seed: int


@dataclass
class Counterfactuals:
    """Validation cells taken apart, float16 ``(N, C, Z, Y, X)`` each: ``cell_alone`` (the
    context replaced by the fill), ``context_alone`` (the cell replaced), and ``labels`` (N,)."""

    cell_alone: torch.Tensor
    context_alone: torch.Tensor
    labels: np.ndarray


def validation_counterfactuals(
    data: CropCells, audit: ValidationAudit, max_cells: int, seed: int
) -> Counterfactuals:
    """The audit's two counterfactuals of up to ``max_cells`` cells of ``data`` (a seeded
    choice, in store order), made once and kept in memory as float16 (as crops are stored):
    ``max_cells`` x 2 x C x Z x Y x X x 2 bytes, 1.8 GB for 256 paper-sized (5x21x128x128)
    crops. Raises :class:`InputError` when a cell's plate has no fill, or an empty one.
    """
    pick = np.sort(np.random.default_rng(seed).permutation(len(data))[:max_cells])
    subset = data.subset(pick)
    cell_alone = context_alone = None
    for number in np.unique(subset.store_index):
        at = np.flatnonzero(subset.store_index == number)
        store = CropStore.open(subset.stores[number])
        rows = subset.row[at]
        cells = store.cells.iloc[rows]
        plate = str(cells["Metadata_Plate"].iloc[0])
        fill = audit.fills.get(plate)
        if fill is None or len(fill) == 0:
            raise InputError(
                f"{store.path}: plate {plate!r} has {'no' if fill is None else 'an empty'} neutral fill "
                "for the validation audit"
            )
        if cell_alone is None:
            cell_alone = torch.empty((len(subset), *store.images.shape[1:]), dtype=torch.float16)
            context_alone = torch.empty_like(cell_alone)
        seeds = audit_seeds(cells, audit.seed)
        for lo in range(0, len(rows), COUNTERFACTUAL_BLOCK):  # float32 working copies per block
            block = slice(lo, lo + COUNTERFACTUAL_BLOCK)
            without_cell, without_context = counterfactual_crops(
                np.asarray(store.images[rows[block]], np.float32),
                np.asarray(store.masks[rows[block]]),
                fill,
                audit.cell_margin,
                seeds[block],
            )
            cell_alone[at[block]] = torch.from_numpy(without_context).half()
            context_alone[at[block]] = torch.from_numpy(without_cell).half()
    if cell_alone is None:
        cell_alone = context_alone = torch.zeros((0,), dtype=torch.float16)
    return Counterfactuals(cell_alone, context_alone, subset.labels)


def audit_accuracies(
    model: nn.Module,
    counterfactuals: Counterfactuals | None,
    batch_size: int,
    device: torch.device,
    amp: torch.dtype | None = None,
) -> tuple[float, float]:
    """``(accuracy from the cell alone, accuracy from the context alone)``; NaN without cells."""
    if counterfactuals is None or len(counterfactuals.labels) == 0:
        return float("nan"), float("nan")
    labels = counterfactuals.labels
    return tuple(
        float(np.mean(predict_crops(model, crops, batch_size, device, amp).argmax(1) == labels))
        for crops in (counterfactuals.cell_alone, counterfactuals.context_alone)
    )


def selection_score(
    select_by: str, val_accuracy: float, val_loss: float, cell_accuracy: float
) -> tuple[float, ...]:
    """What the best epoch is chosen by, compared as a tuple: ``(val accuracy, -val loss)``,
    or with ``cell_accuracy`` ``(accuracy from the cell alone, val accuracy, -val loss)``."""
    if select_by == "cell_accuracy":
        return (cell_accuracy, val_accuracy, -val_loss)
    return (val_accuracy, -val_loss)
