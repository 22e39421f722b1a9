"""The mask review: a page per plate showing what the segmentation drew, so that a scientist
checks the masks (every later number stands on them) without opening another tool.

A seeded sample of the plate's sites, the ones its segmentation QC flags first; for each, a
few planes through its cells with the masks' outlines on the image (cytoplasm channel in
grey, nucleus in blue), titled with the site's QC numbers (cells, foreground share, the flag's
reason, and AP@0.5 where the site has ground-truth labels).

Axes: z-stacks ``(Z, C, Y, X)``, labels ``(Z, Y, X)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from skimage.segmentation import find_boundaries

#: Outline colour (yellow) and nucleus tint (blue) of the review's panels.
OUTLINE = np.array([1.0, 0.85, 0.0])
NUCLEUS = np.array([0.25, 0.45, 1.0])


@dataclass(frozen=True)
class ReviewSite:
    """One site of the review: its name, the planes drawn and their panels' pixels.

    planes: z indices drawn; images: ``(P, Y, X, 3)`` RGB in [0, 1] with the outlines burnt in.
    title: the site's QC numbers.
    """

    name: str
    planes: tuple[int, ...]
    images: np.ndarray
    title: str


def choose_sites(qc: pd.DataFrame, n_sites: int, seed: int) -> pd.DataFrame:
    """The sites to review: every flagged site (up to ``n_sites``), then a seeded sample of
    the others; rows of the plate's segmentation QC table (``plate, well, site, n_cells,
    foreground, flagged, reason``), flagged first, then by well and site."""
    flagged = qc[qc["flagged"]].sort_values(["well", "site"])
    rest = qc[~qc["flagged"]]
    take = max(0, n_sites - len(flagged))
    sample = rest.sample(n=min(take, len(rest)), random_state=seed).sort_values(["well", "site"])
    return pd.concat([flagged.head(n_sites), sample], ignore_index=True)


def choose_planes(labels: np.ndarray, n_planes: int) -> tuple[int, ...]:
    """``n_planes`` z indices spread evenly over the planes that hold cells (all planes when
    none does), from the first to the last."""
    occupied = np.flatnonzero((labels > 0).reshape(len(labels), -1).any(axis=1))
    pool = occupied if len(occupied) else np.arange(len(labels))
    picks = np.linspace(0, len(pool) - 1, num=min(n_planes, len(pool))).round().astype(int)
    return tuple(int(pool[i]) for i in np.unique(picks))


def _scaled(plane: np.ndarray) -> np.ndarray:
    """A plane scaled to [0, 1] by its 1st and 99.5th percentiles."""
    low, high = np.percentile(plane, (1, 99.5))
    return np.clip((plane.astype(np.float32) - low) / max(high - low, 1e-6), 0, 1)


def overlay(
    zstack: np.ndarray, labels: np.ndarray, z: int, cytoplasm: int, nucleus: int | None
) -> np.ndarray:
    """Plane ``z`` as RGB ``(Y, X, 3)``: the cytoplasm channel in grey, the nucleus channel
    tinted blue over it, the masks' outlines in yellow."""
    grey = _scaled(zstack[z, cytoplasm])
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if nucleus is not None:
        rgb = np.clip(rgb + 0.6 * _scaled(zstack[z, nucleus])[..., None] * NUCLEUS, 0, 1)
    rgb[find_boundaries(labels[z], mode="inner")] = OUTLINE
    return rgb


def site_title(row, score: float | None = None) -> str:
    """``"B02 site 1: 21 cells, 34 % foreground"`` (+ AP@0.5, + the flag's reason)."""
    title = f"{row.well} site {row.site}: {row.n_cells} cells, {100 * row.foreground:.0f} % foreground"
    if score is not None and np.isfinite(score):
        title += f", AP@0.5 {score:.2f}"
    if row.flagged:
        title += f"\nFLAGGED: {row.reason}"
    return title


def review_site(
    name: str,
    zstack: np.ndarray,
    labels: np.ndarray,
    title: str,
    cytoplasm: int,
    nucleus: int | None,
    n_planes: int,
) -> ReviewSite:
    """One row of the review from a site's arrays."""
    planes = choose_planes(labels, n_planes)
    images = np.stack([overlay(zstack, labels, z, cytoplasm, nucleus) for z in planes])
    return ReviewSite(name, planes, images, title)


def mask_review_figure(
    plate: str, sites: Sequence[ReviewSite], n_sites_in_plate: int, n_flagged: int
) -> Figure:
    """The plate's page: one row per reviewed site, one panel per plane."""
    columns = max((len(s.planes) for s in sites), default=1)
    figure = Figure(figsize=(3.2 * columns, 3.7 * max(len(sites), 1) + 0.8))
    figure.suptitle(
        f"Plate {plate}: masks on {len(sites)} of {n_sites_in_plate} sites "
        f"({n_flagged} flagged by the segmentation QC, shown first); "
        "grey: cytoplasm channel, blue: nucleus, yellow: mask outlines",
        fontsize=10,
    )
    if not sites:
        ax = figure.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, "no site to review", ha="center", va="center")
        return figure
    axes = np.atleast_2d(figure.subplots(len(sites), columns, squeeze=False))
    for row, site in zip(axes, sites):
        for k, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if k >= len(site.planes):
                ax.axis("off")
                continue
            ax.imshow(site.images[k], interpolation="nearest")
            ax.set_xlabel(f"plane z = {site.planes[k]}", fontsize=8)
        row[0].set_title(site.title, fontsize=8, loc="left")
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    return figure
