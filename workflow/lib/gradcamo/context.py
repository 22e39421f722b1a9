"""A neutral fill for a crop's cell or its context: counterfactual crops for the audit.

"Is the model looking at the cell?" is answered by what the model does when the cell, or
everything around it, is taken away. Taking away must keep the crop in distribution (a zero
hole is a shape the model never saw, and its edge is itself a feature) and must carry no
treatment. The fill here is *background voxels of the plate's reference (control) wells*,
normalised like the crops and drawn independently per voxel:

- in distribution: the same intensities, per channel jointly, as the background of every
  crop the model trained on (camera offset, read and shot noise, autofluorescence);
- no treatment: control wells' background, sampled away from any cell (so no halo of a
  cell's blurred light comes with it);
- no structure: independent draws carry no shape, texture or neighbour the model could read.

The same fill serves ``crops.context: cell`` (every crop's context replaced at crop time,
DeepProfiler's "masking objects") and the profile stage's audit.

Axes: z-stacks ``(Z, C, Y, X)``, labels ``(Z, Y, X)``, crops ``(N, C, Z, Y, X)`` or one crop
``(C, Z, Y, X)``, masks ``(N, Z, Y, X)``, fill ``(M, C)``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from gradcamo.store import MASK_CELL


def dilate(region: np.ndarray, margin: int) -> np.ndarray:
    """``region`` (..., Z, Y, X) bool widened by ``margin`` voxels along Z, Y and X (a
    6-connected step per voxel of margin); leading axes (cells) stay apart."""
    if margin <= 0:
        return np.asarray(region, bool)
    structure = ndimage.generate_binary_structure(3, 1)
    structure = structure.reshape((1,) * (np.ndim(region) - 3) + structure.shape)
    return ndimage.binary_dilation(region, structure=structure, iterations=int(margin))


def cell_region(masks: np.ndarray, margin: int = 0) -> np.ndarray:
    """The cell of interest of each crop, widened by ``margin`` voxels (:func:`dilate`).

    ``masks``: ``(N, Z, Y, X)`` or ``(Z, Y, X)`` crop masks (1 = the cell of interest).
    The margin keeps the cell's blurred light with the cell: without it, "the cell removed"
    would leave its halo (in Y/X and, with the microscope's longer axial blur, above and
    below it), which still outlines the cell's size, shape and brightness.

    Returns a bool array of the same shape. The crop is split in two: the region (the cell)
    and its complement (the context: neighbours, background and padding).
    """
    return dilate(np.asarray(masks) == MASK_CELL, margin)


def background_voxels(
    zstack: np.ndarray,
    labels: np.ndarray,
    n_voxels: int,
    rng: np.random.Generator,
    clearance: int = 2,
) -> np.ndarray:
    """Up to ``n_voxels`` background voxels of one site, ``(n, C)`` float32, as in the file.

    Parameters
    ----------
    zstack: ``(Z, C, Y, X)`` raw intensities; labels: ``(Z, Y, X)``, 0 = background.
    n_voxels: how many, drawn without replacement by ``rng``.
    clearance: voxels (Z, Y, X) kept clear of every cell, so no cell's halo is sampled.

    Normalise them like the crops (:func:`gradcamo.normalization.normalize_voxels`). A site
    without background (cells everywhere) gives ``(0, C)``.
    """
    free = ~dilate(np.asarray(labels) > 0, clearance)
    z, y, x = np.nonzero(free)
    pick = rng.choice(len(z), size=min(int(n_voxels), len(z)), replace=False)
    return np.asarray(zstack[z[pick], :, y[pick], x[pick]], np.float32).reshape(len(pick), zstack.shape[1])


def replace_region(
    image: np.ndarray, region: np.ndarray, fill: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A copy of one crop with the voxels of ``region`` drawn from ``fill``.

    Parameters
    ----------
    image: ``(C, Z, Y, X)``; region: ``(Z, Y, X)`` bool; fill: ``(M, C)``, M >= 1.
    rng: draws the fill voxel of every replaced voxel (with replacement).

    Returns ``(C, Z, Y, X)`` float32.
    """
    out = np.array(image, dtype=np.float32)
    z, y, x = np.nonzero(region)
    if len(z):
        if len(fill) == 0:
            raise ValueError("the fill has no voxels to draw from")
        draws = np.asarray(fill, np.float32)[rng.integers(len(fill), size=len(z))]  # (n, C)
        out[:, z, y, x] = draws.T
    return out


def replace_regions(images: np.ndarray, regions: np.ndarray, fill: np.ndarray, seeds: Sequence) -> np.ndarray:
    """:func:`replace_region` for a batch ``(N, C, Z, Y, X)`` with ``regions (N, Z, Y, X)``;
    cell ``i`` draws from ``np.random.default_rng(seeds[i])``, so a cell's counterfactual
    does not depend on the batch it was in."""
    out = np.empty(np.shape(images), np.float32)
    for i, seed in enumerate(seeds):
        out[i] = replace_region(images[i], regions[i], fill, np.random.default_rng(seed))
    return out


def context_seeds(seed: int, sites: Sequence[int], objects: Sequence[int]) -> list[list[int]]:
    """Per cell, the seed of its context fill under ``crops.context: cell``:
    ``(seed, site, object number)``, so a crop does not depend on its neighbours in a block."""
    return [[int(seed), int(site), int(obj)] for site, obj in zip(sites, objects)]


def replace_context(
    images: np.ndarray, masks: np.ndarray, fill: np.ndarray, margin: int, seeds: Sequence
) -> np.ndarray:
    """Crops ``(N, C, Z, Y, X)`` with everything outside the cell of interest (widened by
    ``margin``, :func:`cell_region`) drawn from ``fill``: ``crops.context: cell``."""
    return replace_regions(images, ~cell_region(masks, margin), fill, seeds)
