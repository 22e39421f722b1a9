"""Per-channel intensity normalisation of crops, and the reference a plate is normalised by.

Intensities are mapped by robust percentiles: ``(x - lower) / (upper - lower)`` per channel.
Where the percentiles come from decides whether normalisation can leak the treatment:

- ``scope: plate`` (default): one set of bounds per plate, from its *reference wells*
  (``reference: controls``, the default: the plate's control wells, the image-based profiling
  convention -- DeepProfiler normalises per plate -- or ``all`` wells). Every cell of the
  plate is scaled alike, so a treatment that changes its cells cannot move the scale of its
  own background.
- ``scope: site``: each site scaled by its own percentiles. Treated cells move those
  percentiles, which rescales the whole site -- background included -- by something the
  treatment caused: a background-only classifier then predicts the treatment (measured on
  the mini dataset: 0.63 on held-out wells, chance 0.25). Kept for plates without a stable
  reference; the audit's ``background_only`` accuracy shows the cost.

A plate's percentiles are estimated from an equal, strided voxel sample of every reference
site (exact percentiles would need all sites in memory); the same pass samples the
background voxels of the neutral fill (:mod:`gradcamo.context`).

Axes: z-stacks ``(Z, C, Y, X)``, crops ``(..., C, Z, Y, X)``, bounds ``(C, 2)``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from gradcamo.context import background_voxels
from gradcamo.sites import SiteSource

SCOPES = ("site", "plate")
REFERENCES = ("controls", "all")


def percentile_bounds(voxels: np.ndarray, lower: float, upper: float) -> np.ndarray:
    """Per-channel intensity bounds ``(C, 2)`` = (lower, upper) percentiles.

    Parameters
    ----------
    voxels: ``(Z, C, Y, X)`` z-stack, or ``(C, n)`` sampled voxels per channel.

    A channel whose upper percentile does not exceed its lower one (e.g. mostly empty)
    falls back to its maximum; a constant channel gets the range (lower, lower + 1).
    """
    per_channel = (
        voxels.reshape(voxels.shape[0], voxels.shape[1], -1).swapaxes(0, 1) if voxels.ndim == 4 else voxels
    )
    per_channel = per_channel.reshape(per_channel.shape[0], -1)
    bounds = np.percentile(per_channel, [lower, upper], axis=1).T.astype(np.float64)
    maxima = per_channel.max(axis=1).astype(np.float64)
    flat = bounds[:, 1] <= bounds[:, 0]
    bounds[flat, 1] = np.where(maxima[flat] > bounds[flat, 0], maxima[flat], bounds[flat, 0] + 1.0)
    return bounds


def sample_voxels(zstack: np.ndarray, max_voxels: int) -> np.ndarray:
    """At most ``max_voxels`` voxels per channel of a ``(Z, C, Y, X)`` z-stack, ``(C, n)``.

    A regular stride through the flattened stack: deterministic, no random state.
    """
    per_channel = np.moveaxis(zstack, 1, 0).reshape(zstack.shape[1], -1)
    step = max(1, int(np.ceil(per_channel.shape[1] / max(int(max_voxels), 1))))
    return per_channel[:, ::step]


def normalize(crops: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """``(x - lower) / (upper - lower)`` per channel; crops ``(..., C, Z, Y, X)``, float32."""
    lower = bounds[:, 0].reshape(-1, 1, 1, 1).astype(np.float32)
    scale = (bounds[:, 1] - bounds[:, 0]).reshape(-1, 1, 1, 1).astype(np.float32)
    return (crops.astype(np.float32) - lower) / scale


def normalize_voxels(voxels: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """:func:`normalize` for sampled voxels ``(n, C)``; returns ``(n, C)`` float32."""
    lower, upper = bounds[:, 0].astype(np.float32), bounds[:, 1].astype(np.float32)
    return (np.asarray(voxels, np.float32) - lower) / (upper - lower)


def plate_reference(
    sites: Sequence[SiteSource],
    lower: float,
    upper: float,
    scope: str,
    sample_voxels_per_channel: int,
    fill_voxels: int,
    seed: int,
) -> tuple[np.ndarray | None, np.ndarray]:
    """A plate's normalisation bounds and neutral fill, from its reference sites.

    Parameters
    ----------
    sites: every reference site of the plate.
    scope: ``"plate"`` (one set of bounds from all reference sites) or ``"site"`` (no plate
        bounds; each site's fill voxels normalised by that site's own bounds).
    sample_voxels_per_channel: voxels per channel the plate's percentiles are estimated
        from, an equal strided share per site.
    fill_voxels: background voxels in the fill, an equal random share per site.
    seed: of the fill's draw.

    Returns
    -------
    ``(bounds (C, 2) or None for scope "site", fill (M, C) float32)``. Reads one site at a
    time: memory is one z-stack plus the samples.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if not sites:
        raise ValueError("no reference sites to normalise the plate by")
    rng = np.random.default_rng(seed)
    per_site = max(1, sample_voxels_per_channel // len(sites))
    fill_per_site = max(1, fill_voxels // len(sites))
    samples, raw_fill, fill = [], [], []
    for site in sites:
        zstack, labels = site.arrays()
        voxels = background_voxels(zstack, labels, fill_per_site, rng)
        if scope == "plate":  # normalised below, once the plate's bounds are known
            samples.append(sample_voxels(zstack, per_site))
            raw_fill.append(voxels)
        else:
            fill.append(normalize_voxels(voxels, percentile_bounds(zstack, lower, upper)))
        del zstack, labels
    if scope == "site":
        return None, np.concatenate(fill)
    bounds = percentile_bounds(np.concatenate(samples, axis=1), lower, upper)
    return bounds, normalize_voxels(np.concatenate(raw_fill), bounds)
