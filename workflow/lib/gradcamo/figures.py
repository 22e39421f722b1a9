"""PNG figures of the aggregate stage: UMAPs, Grad-CAMO distributions, the Grad-CAM
gallery ("where is the model looking"), training curves and mAP.

Every ``*_figure`` function takes arrays or tables and returns a
:class:`matplotlib.figure.Figure` (no pyplot state, no backend needed); :func:`save_figure`
writes it atomically. :func:`umap_embedding` computes the 2-D layouts the UMAP figures
draw, :func:`read_gallery_cells` reads the gallery's crops and attribution maps.

One module because it is one figure per function, sharing the treatment colours, the method
labels and the scatter and message helpers: splitting would scatter that shared style.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gradcamo.attribution_methods import INPUT_METHODS
from gradcamo.errors import InputError
from gradcamo.io import (
    save_figure,  # noqa: F401 (the figure scripts write through it)
)

log = logging.getLogger(__name__)

#: Display names of the attribution methods (``profile.attribution_method``).
METHOD_NAMES = {
    "gradcam": "Grad-CAM",
    "gradcampp": "Grad-CAM++",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "input_x_gradient": "input × gradient",
    "integrated_gradients": "integrated gradients",
}


def method_label(attribution_method: str, smoothing_sigma: float = 0.0) -> str:
    """How a figure names the map behind Grad-CAMO, e.g. ``integrated gradients (smoothed,
    sigma 1 voxel)``; smoothing applies to the input-level maps only."""
    label = METHOD_NAMES[attribution_method]
    if smoothing_sigma > 0 and attribution_method in INPUT_METHODS:
        label += f" (smoothed, sigma {smoothing_sigma:g} voxel{'s' if smoothing_sigma != 1 else ''})"
    return label


#: UMAP's spectral initialisation needs more samples than ``n_components + 1``.
MIN_UMAP_SAMPLES = 3
#: Display colours of channels 0, 1, 2, ... in composites (blue, green, red, magenta, yellow).
CHANNEL_COLOURS = np.array(
    [[0.2, 0.4, 1.0], [0.1, 1.0, 0.2], [1.0, 0.2, 0.1], [1.0, 0.1, 1.0], [1.0, 0.9, 0.1]]
)
NAN_GREY = "#b0b0b0"


# --------------------------------------------------------------------------- layout


def umap_embedding(
    features: np.ndarray,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int = 0,
    pca_components: int | None = 50,
) -> np.ndarray:
    """2-D UMAP layout of ``(N, D)`` profiles -> ``(N, 2)`` float32.

    With ``pca_components`` the profiles are first projected on that many principal
    components (when ``D`` and ``N`` exceed it): UMAP's nearest-neighbour search on 1,280-d
    features is several times slower than on 50 PCs, for the same neighbourhoods. For tiny
    inputs ``n_neighbors`` is lowered to ``N - 1`` and the initialisation is random where
    UMAP's spectral one cannot run.

    Raises
    ------
    InputError: fewer than :data:`MIN_UMAP_SAMPLES` profiles, or non-finite features.
    """
    import umap  # heavy import (numba), only where a layout is computed
    from sklearn.decomposition import PCA

    features = np.asarray(features, dtype=np.float32)
    n = len(features)
    if n < MIN_UMAP_SAMPLES:
        raise InputError(f"UMAP needs at least {MIN_UMAP_SAMPLES} profiles, got {n}")
    if not np.isfinite(features).all():
        raise InputError("UMAP: the features contain NaN or infinite values")
    if pca_components and features.shape[1] > pca_components and n > pca_components:
        features = PCA(pca_components, random_state=seed).fit_transform(features)
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=int(max(2, min(n_neighbors, n - 1))),
        min_dist=float(min_dist),
        random_state=int(seed),
        n_jobs=1,  # a seeded UMAP runs on one thread anyway; saying so avoids its warning
        init="spectral" if n > MIN_UMAP_SAMPLES else "random",
    )
    return reducer.fit_transform(features).astype(np.float32)


def subsample(n: int, max_rows: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_rows`` of ``n`` rows, drawn without replacement."""
    if max_rows is None or n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, int(max_rows), replace=False))


def treatment_colours(treatments: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per treatment name (sorted order, tab10 / tab20 palette)."""
    names = sorted(set(map(str, treatments)))
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _message(ax, text: str) -> None:
    """An empty panel that says why it is empty."""
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


# --------------------------------------------------------------------------- UMAPs


def _scatter_by_treatment(ax, embedding, treatments, colours, size, marker_of=None) -> None:
    treatments = np.asarray(treatments, dtype=str)
    for name, colour in colours.items():
        sel = treatments == name
        if not sel.any():
            continue
        if marker_of is None:
            ax.scatter(*embedding[sel].T, s=size, color=colour, label=name, linewidths=0)
        else:
            for marker in np.unique(marker_of[sel]):
                both = sel & (marker_of == marker)
                ax.scatter(
                    *embedding[both].T,
                    s=size,
                    color=colour,
                    marker=marker,
                    edgecolors="black",
                    linewidths=0.4,
                )
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")


def _point_size(n: int) -> float:
    return float(np.clip(3000 / max(n, 1), 2, 40))


def umap_cells_figure(
    embedding: np.ndarray | None,
    treatments: Sequence[str],
    gradcamo: np.ndarray,
    threshold: float = 0.5,
    title: str = "Test-set cells",
    note: str | None = None,
) -> Figure:
    """Two UMAP panels of the same cells: coloured by treatment, and by Grad-CAMO.

    Parameters
    ----------
    embedding: ``(N, 2)`` layout, or ``None`` when there were too few cells (``note`` says why).
    treatments: ``(N,)`` treatment names. gradcamo: ``(N,)`` scores, NaN drawn grey.
    """
    figure = Figure(figsize=(13, 5.5), layout="constrained")
    by_treatment, by_score = figure.subplots(1, 2)
    figure.suptitle(title + (f"\n{note}" if note else ""))
    if embedding is None:
        for ax in (by_treatment, by_score):
            _message(ax, note or "no layout")
        return figure
    gradcamo = np.asarray(gradcamo, dtype=np.float64)
    size = _point_size(len(embedding))
    colours = treatment_colours(treatments)
    _scatter_by_treatment(by_treatment, embedding, treatments, colours, size)
    by_treatment.legend(
        title="treatment", markerscale=max(1.0, 30 / size) ** 0.5, loc="best", fontsize="small"
    )
    by_treatment.set_title("coloured by treatment")
    scored = np.isfinite(gradcamo)
    if (~scored).any():
        by_score.scatter(
            *embedding[~scored].T,
            s=size,
            color=NAN_GREY,
            linewidths=0,
            label=f"no score (NaN, n={int((~scored).sum())})",
        )
        by_score.legend(loc="best", fontsize="small")
    points = by_score.scatter(
        *embedding[scored].T, s=size, c=gradcamo[scored], cmap="viridis", vmin=0, vmax=1, linewidths=0
    )
    colourbar = figure.colorbar(points, ax=by_score, label="Grad-CAMO")
    colourbar.ax.axhline(threshold, color="red", linewidth=1.5)
    by_score.set_xlabel("UMAP 1")
    by_score.set_ylabel("UMAP 2")
    by_score.set_title(f"coloured by Grad-CAMO (red tick: {threshold:g})")
    return figure


def umap_wells_figure(
    embedding: np.ndarray | None,
    treatments: Sequence[str],
    splits: Sequence[str],
    note: str | None = None,
) -> Figure:
    """UMAP of well profiles: colour = treatment, marker = split (train / val / test)."""
    figure = Figure(figsize=(7, 6), layout="constrained")
    ax = figure.subplots()
    figure.suptitle("Well profiles (sphered)" + (f"\n{note}" if note else ""))
    if embedding is None:
        _message(ax, note or "no layout")
        return figure
    markers = {"train": "o", "val": "s", "test": "^"}
    splits = np.asarray(splits, dtype=str)
    marker_of = np.array([markers.get(s, "D") for s in splits])
    colours = treatment_colours(treatments)
    _scatter_by_treatment(ax, embedding, treatments, colours, 80, marker_of)
    handles = [Line2D([], [], marker="o", linestyle="", color=c, label=t) for t, c in colours.items()]
    handles += [
        Line2D(
            [],
            [],
            marker=markers.get(s, "D"),
            linestyle="",
            color="grey",
            markeredgecolor="black",
            label=f"split: {s}",
        )
        for s in sorted(set(splits))
    ]
    ax.legend(handles=handles, loc="best", fontsize="small")
    return figure


# --------------------------------------------------------------------------- Grad-CAMO


def gradcamo_histogram_figure(
    scores: np.ndarray,
    threshold: float = 0.5,
    method: str = "Grad-CAM",
    shuffled: np.ndarray | None = None,
    classes: Sequence[str] | None = None,
    reasons: Sequence[str | None] | None = None,
    subset: str = "all cells",
) -> Figure:
    """Histograms of Grad-CAMO over [0, 1], one panel per predicted class (``classes``, (N,);
    None: one panel), with the threshold line and the share above it; ``method`` names the
    attribution map behind the scores. ``shuffled`` (optional, (N,)): the shuffled baseline
    (each cell's mask on another cell's map), drawn as an outline over the same (scored)
    cells with its own share above the threshold: what a map scores for looking at the
    crop's centre. ``reasons`` (optional, (N,)): why a score is NaN
    (:data:`gradcamo.columns.UNDEFINED_REASONS`); each panel counts its cells without one.
    """
    scores = np.asarray(scores, dtype=np.float64)
    by_class = classes
    classes = np.asarray(["all"] * len(scores) if classes is None else list(classes), dtype=object)
    reasons = np.asarray([None] * len(scores) if reasons is None else list(reasons), dtype=object)
    null_all = np.asarray(
        shuffled if shuffled is not None else np.full(len(scores), np.nan), dtype=np.float64
    )
    names = sorted(set(classes.tolist())) or ["all"]
    figure = Figure(figsize=(4.2 * len(names) + 0.8, 4.5), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(names), sharey=True, squeeze=False)[0])
    bins = np.linspace(0, 1, 41)
    for ax, name in zip(axes, names):
        here = classes == name
        finite = np.isfinite(scores) & here
        ax.hist(scores[finite], bins=bins, color="#4477aa", edgecolor="white", label="each cell's own map")
        ax.axvline(threshold, color="red", linestyle="--", linewidth=2, label=f"threshold {threshold:g}")
        n = int(finite.sum())
        text = (
            f"{100 * (scores[finite] > threshold).mean():.1f}% of {n} scored > {threshold:g}"
            if n
            else "no scored cells"
        )
        null = null_all[finite]
        null = null[np.isfinite(null)]
        if null.size:
            ax.hist(
                null,
                bins=bins,
                histtype="step",
                color="black",
                linewidth=1.5,
                label="its mask on another cell's map",
            )
            text += f"\non another cell's map: {100 * (null > threshold).mean():.1f}%"
        missing = here & ~np.isfinite(scores)
        if missing.any():
            counts = {
                r: int(((reasons == r) & missing).sum())
                for r in ("baseline_is_class", "low_evidence", "no_attention")
            }
            text += f"\n{int(missing.sum())} without a score:"
            if counts["baseline_is_class"]:
                text += f"\n {counts['baseline_is_class']} empty crop is {name} too"
            if counts["low_evidence"]:
                text += f"\n {counts['low_evidence']} too little evidence"
            other = int(missing.sum()) - counts["baseline_is_class"] - counts["low_evidence"]
            if other:
                text += f"\n {other} zero map"
        ax.text(
            0.98,
            0.97,
            text,
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize="small",
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "grey"},
        )
        ax.set_xlim(0, 1)
        ax.set_xlabel("Grad-CAMO (share on the cell)")
        ax.set_title(subset if by_class is None else f"predicted {name}")
    axes[0].set_ylabel("cells")
    axes[0].legend(loc="upper left", fontsize="small")
    figure.suptitle(f"Grad-CAMO of {subset} by predicted class ({method} attention)")
    return figure


#: Colours of the attention regions: the cell (Grad-CAMO), its neighbours, the background.
ATTENTION_COLOURS = {"cell": "#2ca02c", "neighbours": "#ff7f0e", "background": "#7f7f7f"}


def gradcamo_by_treatment_figure(
    scores: np.ndarray,
    treatments: Sequence[str],
    threshold: float = 0.5,
    attention: pd.DataFrame | None = None,
    method: str = "Grad-CAM",
) -> Figure:
    """Grad-CAMO per treatment (from ``method``'s maps): a box plot (NaN excluded, share
    above the threshold noted) and,
    given ``attention`` (one row per cell, columns ``cell``, ``neighbours``, ``background``:
    shares of each cell's map), beside it the mean share of attention on each region."""
    scores = np.asarray(scores, dtype=np.float64)
    treatments = np.asarray(treatments, dtype=str)
    names = sorted(set(treatments))
    groups = [scores[(treatments == t) & np.isfinite(scores)] for t in names]
    width = max(5, 1.3 * len(names) + 2)
    figure = Figure(figsize=(width * (2 if attention is not None else 1), 4.8), layout="constrained")
    axes = figure.subplots(1, 2 if attention is not None else 1, squeeze=False)[0]
    ax = axes[0]
    colours = treatment_colours(names)
    box = ax.boxplot(
        groups,
        patch_artist=True,
        showfliers=False,
        widths=0.6,
        medianprops={"color": "black", "linewidth": 1.5},
    )
    for patch, name in zip(box["boxes"], names):
        patch.set_facecolor(colours[name])
        patch.set_alpha(0.6)
    rng = np.random.default_rng(0)
    for i, values in enumerate(groups, start=1):
        shown = values if values.size <= 400 else rng.choice(values, 400, replace=False)
        ax.scatter(i + rng.uniform(-0.18, 0.18, shown.size), shown, s=4, color="black", alpha=0.35)
    ax.axhline(threshold, color="red", linestyle="--", linewidth=1.5)
    ax.set_xticks(range(1, len(names) + 1))
    ax.set_xticklabels(
        [
            f"{t}\nn={g.size}, >{threshold:g}: {100 * (g > threshold).mean():.0f}%" if g.size else f"{t}\nn=0"
            for t, g in zip(names, groups)
        ],
        fontsize="small",
    )
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("treatment")
    ax.set_ylabel("Grad-CAMO")
    ax.set_title(f"Grad-CAMO per treatment, {method} (red: {threshold:g})")
    if attention is not None:
        _attention_bars(axes[1], attention, treatments, names, method)
    return figure


def _attention_bars(
    ax, attention: pd.DataFrame, treatments: np.ndarray, names: list[str], method: str
) -> None:
    """Stacked bars: mean share of each treatment's attribution map on each region; a black
    tick marks the cell's share a uniform map would get (``attention["uniform"]``, if given)."""

    def means(column: str, empty: float) -> np.ndarray:
        values = attention[column].to_numpy(np.float64)
        by_treatment = [values[(treatments == t) & np.isfinite(values)] for t in names]
        return np.array([v.mean() if v.size else empty for v in by_treatment])

    bottom = np.zeros(len(names))
    for region, colour in ATTENTION_COLOURS.items():
        means_of_region = means(region, 0.0)
        ax.bar(range(len(names)), means_of_region, bottom=bottom, color=colour, width=0.6, label=region)
        for i, (m, b) in enumerate(zip(means_of_region, bottom)):
            if m >= 0.06:
                ax.text(i, b + m / 2, f"{m:.2f}", ha="center", va="center", fontsize="small")
        bottom += means_of_region
    if "uniform" in attention and np.isfinite(attention["uniform"].to_numpy(np.float64)).any():
        ax.hlines(
            means("uniform", np.nan),
            np.arange(len(names)) - 0.4,
            np.arange(len(names)) + 0.4,
            colors="black",
            linewidth=2.5,
            label="cell, if the map were uniform",
        )
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize="small")
    ax.set_ylim(0, 1.0)
    ax.set_xlabel("treatment")
    ax.set_ylabel(f"mean share of {method} attention")
    ax.set_title("Where the model looks: the cell, its neighbours, or the background")
    ax.legend(loc="upper right", fontsize="small", framealpha=0.9)


# --------------------------------------------------------------------------- gallery


@dataclass
class GalleryCell:
    """One cell of the gallery.

    image: ``(C, Z, Y, X)`` crop; mask: ``(Z, Y, X)`` (1 = cell of interest, 2 = others);
    cam: ``(Z, Y, X)`` attribution map or ``None``; label: text above the cell.
    """

    image: np.ndarray
    mask: np.ndarray
    cam: np.ndarray | None
    label: str


def select_extremes(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``k`` lowest and ``k`` highest finite scores (lowest first, highest
    last); with fewer than ``2 k`` scores the two sets split them without overlap."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(scores))
    order = finite[np.argsort(scores[finite], kind="stable")]
    k_low = min(k, len(order) // 2 + len(order) % 2)
    k_high = min(k, len(order) - k_low)
    return order[:k_low], order[len(order) - k_high :][::-1]


def max_projection_rgb(image: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """Colour composite ``(Y, X, 3)`` in [0, 1] of the Z max projection of ``(C, Z, Y, X)``.

    Each channel is scaled to its own ``percentile`` and painted in
    :data:`CHANNEL_COLOURS` (cycled); the channels are added and the sum is divided by its
    maximum where that exceeds 1 (so overlapping channels do not clip to white).
    """
    projection = np.asarray(image, dtype=np.float32).max(axis=1)  # (C, Y, X)
    rgb = np.zeros((*projection.shape[1:], 3), np.float32)
    for c, plane in enumerate(projection):
        low, high = np.percentile(plane, [0.5, percentile])
        scaled = np.clip((plane - low) / (high - low), 0, 1) if high > low else np.zeros_like(plane)
        rgb += scaled[..., None] * CHANNEL_COLOURS[c % len(CHANNEL_COLOURS)]
    return np.clip(rgb / max(1.0, float(rgb.max())), 0, 1)


def cam_gallery_figure(
    lowest: Sequence[GalleryCell],
    highest: Sequence[GalleryCell],
    channels: Sequence[str],
    method: str = "Grad-CAM",
) -> Figure:
    """Cells with the lowest and highest Grad-CAMO: where is the model looking?

    For each cell: the Z max projection of the crop (channel composite) with the cell of
    interest's outline, and below it the same crop in grey with the attribution map's max projection
    overlaid (or a note when the maps were not saved).
    """
    if not lowest and not highest:
        figure = Figure(figsize=(7, 3), layout="constrained")
        figure.suptitle("Where is the model looking? Cells with the lowest and highest Grad-CAMO")
        _message(figure.subplots(), "no cell has a Grad-CAMO score\n(every attribution map is zero)")
        return figure
    columns = max(len(lowest), len(highest), 1)
    figure = Figure(figsize=(1.9 * columns + 1.2, 8.6), layout="constrained")
    axes = figure.subplots(4, columns, squeeze=False)
    legend = ", ".join(
        f"{name}: {'blue green red magenta yellow'.split()[i % 5]}" for i, name in enumerate(channels)
    )
    figure.suptitle(
        "Where is the model looking? Cells with the lowest and highest Grad-CAMO\n"
        f"max projection over Z ({legend}); yellow line: cell of interest; "
        f"heat map: {method}",
        fontsize="medium",
    )
    for block, (cells, name) in enumerate(((lowest, "lowest"), (highest, "highest"))):
        top, bottom = axes[2 * block], axes[2 * block + 1]
        top[0].set_ylabel(f"{name} Grad-CAMO\ncrop", fontsize="medium")
        bottom[0].set_ylabel(f"{name} Grad-CAMO\n{method}", fontsize="medium")
        for j in range(columns):
            for ax in (top[j], bottom[j]):
                ax.set_xticks([])
                ax.set_yticks([])
            if j >= len(cells):
                for ax in (top[j], bottom[j]):
                    ax.set_frame_on(False)
                continue
            cell = cells[j]
            outline = (np.asarray(cell.mask) == 1).any(axis=0).astype(np.float32)
            top[j].imshow(max_projection_rgb(cell.image))
            top[j].set_title(cell.label, fontsize="small")
            grey = max_projection_rgb(cell.image).mean(axis=2)
            bottom[j].imshow(grey, cmap="gray")
            if cell.cam is not None:
                heat = np.asarray(cell.cam, dtype=np.float32).max(axis=0)
                peak = heat.max()
                bottom[j].imshow(heat / peak if peak > 0 else heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            else:
                bottom[j].text(
                    0.5,
                    0.05,
                    "no attribution map saved",
                    color="white",
                    ha="center",
                    transform=bottom[j].transAxes,
                    fontsize="x-small",
                )
            for ax in (top[j], bottom[j]):
                if outline.any():
                    ax.contour(outline, levels=[0.5], colors="yellow", linewidths=1.0)
    return figure


def stored_cells(rows: pd.DataFrame, crop_stores: Mapping[tuple[str, str], str | os.PathLike]) -> np.ndarray:
    """``(len(rows),)`` bool: which cells of a single-cell table are in their well's crop store
    (a store keeps the well's training sample, ``crops.sample``), by site and object number."""
    import pyarrow.parquet as pq

    keys = ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber"]
    tables = [
        pq.read_table(Path(path) / "cells.parquet", columns=keys).to_pandas() for path in crop_stores.values()
    ]
    if not tables or not len(rows):
        return np.zeros(len(rows), bool)
    stored = pd.concat(tables, ignore_index=True).astype({"Metadata_Plate": str, "Metadata_Well": str})
    cells = rows[keys].astype({"Metadata_Plate": str, "Metadata_Well": str})
    return pd.MultiIndex.from_frame(cells).isin(pd.MultiIndex.from_frame(stored[keys]))


def read_gallery_cells(
    rows: pd.DataFrame,
    crop_stores: Mapping[tuple[str, str], str | os.PathLike],
    cam_files: Mapping[tuple[str, str], str | os.PathLike] | None = None,
) -> list[GalleryCell]:
    """Read the crops (and attribution maps) of the cells in ``rows``.

    Parameters
    ----------
    rows: single-cell table rows with ``Metadata_Plate``, ``Metadata_Well``,
        ``Metadata_Site``, ``Metadata_ObjectNumber`` (the cell in its crop store),
        ``Metadata_ProfileRow`` (its index in ``.attributions.npy``),
        ``Metadata_Treatment`` and ``Metadata_GradCAMO``.
    crop_stores: ``(plate, well) -> crop store folder``.
    cam_files: ``(plate, well) -> .attributions.npy`` ``(N, Z, Y, X)``, or ``None``.

    Raises
    ------
    InputError: a well's crop store or attribution map file is missing, a cell is not in its
        well's store (:func:`stored_cells` says which are), or a map file holds fewer cells
        than the profile table says.
    """
    from gradcamo.store import CropStore

    stores: dict = {}
    cams: dict = {}
    out = []
    for row in rows.itertuples(index=False):
        key = (str(row.Metadata_Plate), str(row.Metadata_Well))
        if key not in crop_stores:
            raise InputError(f"no crop store given for well {key[0]}/{key[1]}")
        if key not in stores:
            store = CropStore.open(crop_stores[key])
            position = pd.Series(
                np.arange(len(store)),
                index=pd.MultiIndex.from_frame(store.cells[["Metadata_Site", "Metadata_ObjectNumber"]]),
            )
            stores[key] = (store, position)
        store, position = stores[key]
        cell = (int(row.Metadata_Site), int(row.Metadata_ObjectNumber))
        if cell not in position.index:
            raise InputError(
                f"{store.path}: site {cell[0]} object {cell[1]} is not in the store (crops.sample keeps "
                f"{len(store)} cells of the well)"
            )
        image, mask = store[int(position[cell])]
        cam = None
        if cam_files is not None:
            index = int(row.Metadata_ProfileRow)
            if key not in cam_files:
                raise InputError(f"no attribution map file given for well {key[0]}/{key[1]}")
            if key not in cams:
                cams[key] = np.load(cam_files[key], mmap_mode="r")
            if index >= len(cams[key]) or cams[key].shape[1:] != mask.shape:
                raise InputError(
                    f"{cam_files[key]}: attribution maps {cams[key].shape} does not hold cell "
                    f"{index} with the crop shape {mask.shape}"
                )
            cam = np.asarray(cams[key][index], dtype=np.float32)
        label = f"{row.Metadata_Treatment} {key[0]}/{key[1]}\nGrad-CAMO {row.Metadata_GradCAMO:.2f}"
        out.append(GalleryCell(image=image, mask=mask, cam=cam, label=label))
    return out


# --------------------------------------------------------------------------- training, mAP


def training_curves_figure(history: pd.DataFrame) -> Figure:
    """Loss and accuracy per epoch, train vs validation; with the per-epoch validation audit,
    the validation accuracy from the cell alone and from the context alone beside them (is
    training learning the cell or its surroundings?).

    ``history`` columns are looked up by name: ``epoch`` (else the row number + 1),
    ``train_loss``, ``val_loss``, ``train_accuracy``, ``val_accuracy``,
    ``val_cell_accuracy``, ``val_context_accuracy``; a missing or all-NaN one is left out of
    its panel.
    """
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    loss_ax, acc_ax = figure.subplots(1, 2)
    figure.suptitle("Training curves")
    epochs = history["epoch"].to_numpy() if "epoch" in history else np.arange(1, len(history) + 1)
    for ax, quantity in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        drawn = False
        curves = [("train", "-o", "train"), ("val", "-s", "validation")]
        if quantity == "accuracy":
            curves += [
                ("val_cell", "--^", "validation, cell alone"),
                ("val_context", ":v", "validation, context alone"),
            ]
        for split, style, label in curves:
            column = f"{split}_{quantity}"
            if column in history and history[column].notna().any():
                ax.plot(epochs, history[column].to_numpy(dtype=float), style, markersize=4, label=label)
                drawn = True
        if drawn:
            ax.legend()
            ax.set_xlabel("epoch")
            ax.set_ylabel(quantity)
            if quantity == "accuracy":
                ax.set_ylim(0, 1.02)
        else:
            _message(ax, f"no {quantity} recorded in the training history")
        ax.set_title(quantity)
    return figure


def activity_figure(activity: pd.DataFrame) -> Figure:
    """mAP per treatment for every (level, split, subset) of the activity table, bars
    hatched where the corrected p-value is not below 0.05."""
    groups = activity[["level", "split", "subset"]].drop_duplicates().itertuples(index=False)
    groups = [tuple(g) for g in groups]
    treatments = sorted(activity["treatment"].astype(str).unique())
    figure = Figure(figsize=(max(7, 1.2 * len(treatments) * len(groups) / 2 + 3), 4.8), layout="constrained")
    ax = figure.subplots()
    if not treatments:
        _message(ax, "no treatment besides the control")
        return figure
    width = 0.8 / max(len(groups), 1)
    palette = colormaps["tab10"]
    x = np.arange(len(treatments))
    for i, group in enumerate(groups):
        part = (
            activity[
                (activity["level"] == group[0])
                & (activity["split"] == group[1])
                & (activity["subset"] == group[2])
            ]
            .set_index("treatment")
            .reindex(treatments)
        )
        values = part["mean_average_precision"].to_numpy(dtype=float)
        significant = part["below_corrected_p"].fillna(False).to_numpy(dtype=bool)
        bars = ax.bar(
            x + (i - (len(groups) - 1) / 2) * width,
            np.nan_to_num(values),
            width,
            color=palette(i % 10),
            label="/".join(group),
        )
        for bar, sig, value in zip(bars, significant, values):
            if not sig:
                bar.set_hatch("//")
            if not np.isfinite(value):
                ax.text(
                    bar.get_x() + bar.get_width() / 2,
                    0.01,
                    "n/a",
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize="x-small",
                )
    ax.set_xticks(x)
    ax.set_xticklabels(treatments)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("treatment")
    ax.set_ylabel("mAP vs control")
    ax.set_title("Phenotypic activity (mAP, copairs); hatched: not significant (corrected p >= 0.05)")
    ax.legend(title="level/split/subset", fontsize="small")
    return figure


# --------------------------------------------------------------------------- audit


AUDIT_INPUTS = {"full": "full crop", "cell_only": "cell alone", "context_only": "context alone"}


def audit_figure(
    by_treatment: Mapping[str, Mapping[str, float | None]],
    gradcamo: np.ndarray,
    cell_reliance: np.ndarray,
    chance: float,
    spearman: float | None = None,
) -> Figure:
    """The counterfactual audit of the test cells, in two panels.

    Left: per treatment, accuracy from the full crop, from the cell alone (its context
    replaced by the neutral fill) and from the context alone (the cell replaced), with the
    chance level. Right: each cell's Grad-CAMO against its reliance on the cell (drop of
    the target probability when the cell is replaced), with their Spearman correlation.

    ``by_treatment``: treatment -> ``{"full", "cell_only", "context_only"}`` accuracies
    (:func:`gradcamo.audit_summary.input_accuracies`); ``gradcamo``, ``cell_reliance``:
    ``(N,)`` per test cell.
    """
    names = sorted(by_treatment)
    figure = Figure(figsize=(max(6, 1.6 * len(names) + 2) + 5.5, 4.8), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=[max(6, 1.6 * len(names) + 2), 5.5])
    if names:
        width = 0.8 / len(AUDIT_INPUTS)
        shades = {"full": "#555555", "cell_only": "#2b8cbe", "context_only": "#e34a33"}
        for k, (key, label) in enumerate(AUDIT_INPUTS.items()):
            values = [by_treatment[t].get(key) for t in names]
            heights = [np.nan if v is None else v for v in values]
            left.bar(np.arange(len(names)) + (k - 1) * width, heights, width, label=label, color=shades[key])
        left.axhline(chance, color="black", linestyle=":", linewidth=1.2, label=f"chance ({chance:.2f})")
        left.set_xticks(np.arange(len(names)))
        left.set_xticklabels(names, fontsize="small")
        left.set_ylim(0, 1.05)
        left.legend(fontsize="small", loc="upper right")
    else:
        _message(left, "no test cells")
    left.set_xlabel("treatment")
    left.set_ylabel("accuracy (test cells)")
    left.set_title("What the model predicts from")
    gradcamo = np.asarray(gradcamo, np.float64)
    reliance = np.asarray(cell_reliance, np.float64)
    ok = np.isfinite(gradcamo) & np.isfinite(reliance)
    if ok.any():
        right.scatter(gradcamo[ok], reliance[ok], s=8, alpha=0.5, color="#2b8cbe")
        right.axhline(0, color="grey", linewidth=0.8)
    else:
        _message(right, "no audited cells with a Grad-CAMO score")
    right.set_xlim(-0.02, 1.02)
    right.set_xlabel("Grad-CAMO (share of attention on the cell)")
    right.set_ylabel("cell reliance (probability drop, cell replaced)")
    rho = "n/a" if spearman is None else f"{spearman:.2f}"
    right.set_title(f"Does the score agree with the model? Spearman {rho}")
    return figure
