"""A planted-shortcut control: would this run have caught a shortcut of a known strength?

On a user's own screen nothing says whether a low or high Grad-CAMO, or the audit, would
notice a model that reads the background. This control makes one whose shortcut is known:

1. plant a marker coded by treatment -- small bright blobs drawn like the data's own bright
   debris (at a high percentile of the crops' background intensities, per channel), away
   from every cell and its margin -- in the context of one treatment's crops;
2. fine-tune a copy of the trained model for a few epochs on planted training crops;
3. profile planted test crops with the trained model and with the fine-tuned one (the run's
   map, the evidence gate and the audit), and compare.

A run "catches" the planted shortcut when, on the planted treatment's test cells, the audit's
context reliance rises and the share of cells with Grad-CAMO above the threshold falls.
The marker's strength is how much the fine-tuned model uses it: its accuracy on the planted
treatment's test cells with the markers against the same cells without them.

Arrays: crops ``(N, C, Z, Y, X)``, masks ``(N, Z, Y, X)`` (0 background, 1 the cell, 2
other cells), per-channel intensities ``(C,)``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from gradcamo.context import dilate
from gradcamo.prediction import predict_crops, refresh_batch_norm_on
from gradcamo.store import MASK_BACKGROUND, CropStore


def debris_intensity(images: np.ndarray, masks: np.ndarray, percentile: float, clearance: int) -> np.ndarray:
    """``(C,)`` the ``percentile`` of the crops' background intensities, per channel.

    Background: voxels farther than ``clearance`` voxels from every cell and inside the image
    (padding is exactly 0 in every channel). The data's own bright debris sits in this tail.
    """
    images = np.asarray(images, np.float32)
    free = ~dilate(np.asarray(masks) != MASK_BACKGROUND, clearance) & np.any(images != 0, axis=1)
    values = np.moveaxis(images, 1, -1)[free]  # (V, C)
    if not len(values):
        raise ValueError("no background voxels in the crops to draw the marker's intensity from")
    return np.percentile(values, percentile, axis=0).astype(np.float32)


def blob(radius_zyx: Sequence[float]) -> np.ndarray:
    """A Gaussian blob ``(2 rz + 1, 2 ry + 1, 2 rx + 1)``, 1 at its centre, 0 beyond the
    ellipsoid of ``radius_zyx`` voxels; its sigma is half the radius."""
    r = [max(float(v), 0.5) for v in radius_zyx]
    axes = [np.arange(-int(np.ceil(v)), int(np.ceil(v)) + 1) / v for v in r]
    d2 = sum(np.meshgrid(*[a**2 for a in axes], indexing="ij"))
    return np.where(d2 <= 1.0, np.exp(-d2 / (2 * 0.5**2)), 0.0).astype(np.float32)


def plant_markers(
    images: np.ndarray,
    masks: np.ndarray,
    intensity: np.ndarray,
    n_markers: int,
    radius_zyx: Sequence[float],
    clearance: int,
    seeds: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """Crops with ``n_markers`` bright blobs each in their background, away from the cells.

    Each blob's centre is drawn (``np.random.default_rng(seeds[i])``) among the background
    voxels farther than ``clearance`` plus the blob's radius from every cell, inside the
    image; the blob raises each channel to at most ``intensity`` (a maximum, as debris lies
    over the background). Returns ``(planted (N, C, Z, Y, X) float32, markers (N,) int: the
    blobs planted per crop, fewer where the crop had no room)``.
    """
    out = np.array(images, np.float32)
    masks = np.asarray(masks)
    kernel = blob(radius_zyx)
    half = np.array(kernel.shape) // 2
    reach = int(clearance + max(half))
    inside = np.any(out != 0, axis=1)
    free = ~dilate(masks != MASK_BACKGROUND, reach) & inside
    planted = np.zeros(len(out), int)
    for i in range(len(out)):
        rng = np.random.default_rng(seeds[i])
        z, y, x = np.nonzero(free[i])
        if not len(z):
            continue
        for k in rng.choice(len(z), size=min(int(n_markers), len(z)), replace=False):
            lo = np.array([z[k], y[k], x[k]]) - half
            hi = lo + kernel.shape
            clip_lo, clip_hi = np.maximum(lo, 0), np.minimum(hi, out.shape[2:])
            part = kernel[tuple(slice(a - b, c - b) for a, b, c in zip(clip_lo, lo, clip_hi))]
            region = (slice(None),) + tuple(slice(a, c) for a, c in zip(clip_lo, clip_hi))
            out[i][region] = np.maximum(out[i][region], intensity[:, None, None, None] * part[None])
            planted[i] += 1
    return out, planted


def sample_cells(stores: Sequence[CropStore], treatments: Sequence[str], per_treatment: int, seed: int):
    """Up to ``per_treatment`` cells per treatment drawn (seeded) from the wells' stores.

    ``treatments[k]`` is store ``k``'s treatment. Returns ``(images (N, C, Z, Y, X) float32,
    masks (N, Z, Y, X), cells (N rows, Metadata_* plus Metadata_Treatment), labels (N,) str)``.
    """
    rng = np.random.default_rng(seed)
    index = pd.DataFrame(
        [(k, i, t) for k, (s, t) in enumerate(zip(stores, treatments)) for i in range(len(s))],
        columns=["store", "row", "treatment"],
    )
    picked = []
    for _, group in index.groupby("treatment", sort=True):
        take = rng.choice(len(group), size=min(per_treatment, len(group)), replace=False)
        picked.append(group.iloc[np.sort(take)])
    picked = pd.concat(picked) if picked else index.iloc[:0]
    images = np.stack([np.asarray(stores[k].images[i], np.float32) for k, i in zip(picked.store, picked.row)])
    masks = np.stack([np.asarray(stores[k].masks[i]) for k, i in zip(picked.store, picked.row)])
    offsets = np.cumsum([0] + [len(s) for s in stores])[:-1]
    every = pd.concat([s.cells for s in stores], ignore_index=True)
    cells = every.iloc[offsets[picked.store.to_numpy()] + picked.row.to_numpy()].reset_index(drop=True)
    cells = cells.assign(Metadata_Treatment=picked.treatment.to_numpy())
    return images, masks, cells, picked.treatment.to_numpy()


def fine_tune(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = lambda message: None,
) -> nn.Module:
    """A copy of ``model`` trained further on ``images`` (N, C, Z, Y, X) and class ids
    ``labels`` (N,): Adam, cross-entropy, seeded shuffles, then the batch-norm statistics
    recomputed over ``images`` with the final weights, as the train rule does
    (:func:`gradcamo.prediction.refresh_batch_norm`)."""
    tuned = copy.deepcopy(model).to(device)
    optimizer = torch.optim.Adam(tuned.parameters(), lr=learning_rate)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    for epoch in range(1, int(epochs) + 1):
        tuned.train()
        order, loss_sum, correct = rng.permutation(len(images)), 0.0, 0
        for lo in range(0, len(order), batch_size):
            take = order[lo : lo + batch_size]
            x = torch.from_numpy(np.asarray(images[take], np.float32)).to(device)
            y = torch.from_numpy(np.asarray(labels[take], np.int64)).to(device)
            logits = tuned(x)
            loss = nn.functional.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(take)
            correct += int((logits.detach().argmax(1) == y).sum())
        log(
            f"fine-tune epoch {epoch}/{epochs}: loss {loss_sum / len(order):.4f}, "
            f"accuracy {correct / len(order):.3f}"
        )
    batches = (
        torch.from_numpy(np.asarray(images[lo : lo + batch_size], np.float32)).to(device)
        for lo in range(0, len(images), batch_size)
        if len(images[lo : lo + batch_size]) >= 2
    )
    refresh_batch_norm_on(tuned, batches, torch.device(device))
    return tuned.eval()


def in_memory_store(
    images: np.ndarray, masks: np.ndarray, cells: pd.DataFrame, channels: Sequence[str]
) -> CropStore:
    """A :class:`CropStore` over arrays (planted crops), for :func:`gradcamo.profiles.profile_store`."""
    return CropStore(
        path=Path("<planted crops>"),
        images=np.asarray(images, np.float32),
        masks=np.asarray(masks),
        cells=cells.reset_index(drop=True),
        channels=list(channels),
        crop_shape=tuple(int(s) for s in np.shape(images)[2:]),
        normalization={},
    )


def _mean(values) -> float | None:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def cell_statistics(table: pd.DataFrame, threshold: float) -> dict:
    """Of a profile table's cells: accuracy, accuracy from the context alone, mean context
    and cell reliance, cells with a Grad-CAMO and the share of those above ``threshold``."""
    truth = table["Metadata_Treatment"].astype(str)
    scores = table["Metadata_GradCAMO"].to_numpy(np.float64)
    scored = scores[np.isfinite(scores)]
    return {
        "n_cells": int(len(table)),
        "accuracy": _mean(table["Metadata_Predicted"].astype(str) == truth),
        "context_only_accuracy": _mean(table["Metadata_PredictedFromContext"].astype(str) == truth),
        "context_reliance": _mean(table["Metadata_ContextReliance"]),
        "cell_reliance": _mean(table["Metadata_CellReliance"]),
        "n_scored": int(scored.size),
        "share_above": float((scored > threshold).mean()) if scored.size else None,
    }


def planted_verdict(
    before: dict, after: dict, without_markers_accuracy: float | None, margin: float = 0.05
) -> dict:
    """Whether the audit and Grad-CAMO caught the planted shortcut on the planted treatment's
    test cells, ``before`` (trained model) against ``after`` (fine-tuned on planted crops),
    each :func:`cell_statistics`.

    ``marker_strength``: the fine-tuned model's accuracy with the markers minus without them,
    how much it reads them. ``learned``: that strength above ``margin``; without it the copy
    holds no shortcut to catch and the control is inconclusive (``caught_by_*`` are then
    None). Otherwise ``caught_by_audit``: context reliance up by more than ``margin``;
    ``caught_by_gradcamo``: the share above the threshold down by more than ``margin``.
    """

    def delta(key):
        a, b = before.get(key), after.get(key)
        return None if a is None or b is None else b - a

    reliance, share = delta("context_reliance"), delta("share_above")
    strength = None
    if after.get("accuracy") is not None and without_markers_accuracy is not None:
        strength = after["accuracy"] - without_markers_accuracy
    learned = bool(strength is not None and strength > margin)
    return {
        "context_reliance_change": reliance,
        "share_above_change": share,
        "marker_strength": strength,
        "learned": learned,
        "caught_by_audit": bool(reliance is not None and reliance > margin) if learned else None,
        "caught_by_gradcamo": bool(share is not None and share < -margin) if learned else None,
        "margin": margin,
    }


def predicted_classes(model: nn.Module, images: np.ndarray, batch_size: int, device="cpu") -> np.ndarray:
    """Eval-mode predicted class ids ``(N,)`` of crops ``(N, C, Z, Y, X)``
    (:func:`gradcamo.prediction.predict_crops`' arg-max)."""
    crops = torch.from_numpy(np.asarray(images, np.float32))
    return predict_crops(model, crops, batch_size, torch.device(device)).argmax(1)
