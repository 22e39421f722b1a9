"""The counterfactual audit: what the model predicts with the cell, or its context, taken away.

For every crop the profile stage predicts from

(a) the crop as it is,
(b) the crop with the cell of interest replaced by the neutral fill ("context alone"),
(c) the crop with its context -- neighbours, background, padding -- replaced ("cell alone"),

where the cell is its mask widened by ``cell_margin`` voxels in Y/X and the fill is the
plate's control background (:mod:`gradcamo.context`). The drop of the target-class
probability from (a) to (b) is the cell's *reliance* (how much the prediction needs the
cell), from (a) to (c) the context's. A model that looks at the cell loses its prediction
in (b) and keeps it in (c); one that reads a shortcut in the background does the opposite.
Grad-CAMO is evidence only where it agrees with these drops.

Also here, for the leak check of the aggregate stage: per-channel background statistics of
each crop (mean over the voxels inside the image that belong to no cell). If they predict
the treatment of held-out wells, the crops carry it outside the cells.

Axes: crops ``(N, C, Z, Y, X)``, masks ``(N, Z, Y, X)``, fill ``(M, C)``.
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from gradcamo.context import cell_region, dilate, replace_regions
from gradcamo.store import MASK_BACKGROUND


def counterfactual_crops(
    images: np.ndarray,
    masks: np.ndarray,
    fill: np.ndarray,
    cell_margin: int,
    seeds: Sequence,
) -> tuple[np.ndarray, np.ndarray]:
    """``(context alone, cell alone)``: the crops with the cell, or its context, replaced.

    ``images (N, C, Z, Y, X)``, ``masks (N, Z, Y, X)``, ``fill (M, C)``; cell ``i`` draws its
    fill from ``np.random.default_rng(seeds[i])`` (the two counterfactuals from independent
    streams). Both ``(N, C, Z, Y, X)`` float32.
    """
    cell = cell_region(masks, cell_margin)
    without_cell = replace_regions(images, cell, fill, [(*_seq(s), 0) for s in seeds])
    without_context = replace_regions(images, ~cell, fill, [(*_seq(s), 1) for s in seeds])
    return without_cell, without_context


def audit_seeds(cells: pd.DataFrame, seed: int) -> list[tuple[int, ...]]:
    """Per cell, the seed of its counterfactuals' fill: ``(seed, plate/well code, site,
    object number)``, so a cell's audit depends neither on batching nor on the run."""
    codes = [zlib.crc32(f"{p}/{w}".encode()) for p, w in zip(cells["Metadata_Plate"], cells["Metadata_Well"])]
    return [
        (int(seed), int(code), int(site), int(obj))
        for code, site, obj in zip(codes, cells["Metadata_Site"], cells["Metadata_ObjectNumber"])
    ]


def _seq(seed) -> tuple:
    return tuple(seed) if isinstance(seed, (tuple, list)) else (int(seed),)


@torch.no_grad()
def target_probabilities(
    model: nn.Module, images: torch.Tensor, target: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode ``(probability of each cell's target class (N,), predicted class (N,))``."""
    if model.training:
        raise RuntimeError("the model must be in eval mode (BatchNorm couples the batch)")
    probabilities = torch.softmax(model(images).float(), 1)
    chosen = probabilities.gather(1, target[:, None].long())[:, 0]
    return chosen.cpu().numpy(), probabilities.argmax(1).cpu().numpy()


def background_statistics(images: np.ndarray, masks: np.ndarray, clearance: int = 0) -> np.ndarray:
    """Per crop and channel, the mean intensity of its background, ``(N, C)`` float64.

    Background: voxels inside the image farther than ``clearance`` voxels (:func:`dilate`)
    from every cell; with the audit's ``cell_margin`` as clearance, the cells' blurred halos
    count with the cells, as in the counterfactuals. The crop store marks padding
    (outside the image) only by its value, exactly 0 in every channel (normalised intensities
    of real voxels are never exactly 0 in all channels at once), so such voxels are left out.
    NaN for a crop without background voxels.
    """
    images = np.asarray(images, np.float32)
    inside = np.any(images != 0, axis=1)
    background = ~dilate(np.asarray(masks) != MASK_BACKGROUND, clearance) & inside  # (N, Z, Y, X)
    counts = background.reshape(len(images), -1).sum(1)
    sums = np.einsum("nczyx,nzyx->nc", images, background.astype(np.float32), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts[:, None] > 0, sums / counts[:, None], np.nan)
