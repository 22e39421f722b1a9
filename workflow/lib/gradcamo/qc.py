"""Image quality control per site and channel: intensity statistics, saturation and focus.

Focus is the normalised variance of the Laplacian per z-plane (Groen et al. 1985), a
standard autofocus measure: higher is sharper. Written by hand because scikit-image has
no focus measure; it is two lines on top of :func:`scipy.ndimage.laplace`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

PERCENTILES = (1, 50, 99)


def focus_per_plane(stack: np.ndarray) -> np.ndarray:
    """Normalised variance of the Laplacian of each plane of a ``(Z, Y, X)`` stack → ``(Z,)``."""
    stack = np.asarray(stack, dtype=np.float32)
    lap = np.stack([ndimage.laplace(plane) for plane in stack])
    mean = stack.reshape(len(stack), -1).mean(axis=1)
    return lap.reshape(len(stack), -1).var(axis=1) / np.maximum(mean, 1e-6) ** 2


def saturation_level(dtype: np.dtype, configured: int) -> float | None:
    """The intensity at or above which a voxel of ``dtype`` counts as saturated.

    Integer cameras: ``configured`` (``qc.saturation_value``), but never above the dtype's
    maximum (an 8-bit image saturates at 255 whatever the config says). Floating-point
    images carry no camera range: None (saturation is not measured).
    """
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        return float(min(int(configured), np.iinfo(dtype).max))
    return None


def site_qc(image: np.ndarray, channels: list[str], saturation_value: int) -> pd.DataFrame:
    """QC of one z-stack ``(Z, C, Y, X)``: one row per channel.

    Columns: ``channel, mean, p01, p50, p99, saturated_fraction`` (NaN for floating-point
    images, :func:`saturation_level`), ``focus_per_z`` (list, one value per z-plane),
    ``best_focus_z``, ``focus_max``.
    """
    level = saturation_level(image.dtype, saturation_value)
    rows = []
    for c, name in enumerate(channels):
        # Contiguous, and compared in its own dtype: NumPy 2.0 crashed (SIGSEGV) comparing a
        # strided uint8 view with 65535.
        stack = np.ascontiguousarray(image[:, c])
        p = np.percentile(stack, PERCENTILES)
        focus = focus_per_plane(stack)
        rows.append(
            {
                "channel": name,
                "mean": float(stack.mean()),
                **{f"p{q:02d}": float(v) for q, v in zip(PERCENTILES, p)},
                "saturated_fraction": (
                    float((stack >= stack.dtype.type(level)).mean()) if level is not None else np.nan
                ),
                "focus_per_z": focus.astype(float).tolist(),
                "best_focus_z": int(np.argmax(focus)),
                "focus_max": float(focus.max()),
            }
        )
    return pd.DataFrame(rows)


def well_position(well: str) -> tuple[int, int]:
    """``"B03"`` → ``(1, 2)``: zero-based (row, column) on the plate."""
    letters = "".join(ch for ch in well if ch.isalpha()).upper()
    number = int("".join(ch for ch in well if ch.isdigit()))
    row = 0
    for ch in letters:
        row = row * 26 + (ord(ch) - ord("A") + 1)
    return row - 1, number - 1


def plate_layout(qc: pd.DataFrame, value: str) -> pd.DataFrame:
    """Well-level mean of ``value`` per channel as a plate grid.

    ``qc`` holds rows of :func:`site_qc` with ``Metadata_Well`` added. Returns a DataFrame
    indexed by (channel, row letter) with one column per plate column number, covering the
    smallest rectangle of rows and columns that holds the plate's wells.
    """
    per_well = qc.groupby(["channel", "Metadata_Well"])[value].mean().reset_index()
    pos = per_well["Metadata_Well"].map(well_position)
    per_well["row"] = [chr(ord("A") + r) if r < 26 else f"A{chr(ord('A') + r - 26)}" for r, _ in pos]
    per_well["column"] = [c + 1 for _, c in pos]
    return per_well.pivot_table(index=["channel", "row"], columns="column", values=value)


def plot_plate_layout(qc: pd.DataFrame, plate: str, path) -> None:
    """Plate-layout heatmaps (PNG): mean intensity and best focus per well, one row per channel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [
        ("mean", "mean intensity"),
        ("focus_max", "focus (best plane)"),
        ("saturated_fraction", "saturated fraction"),
    ]
    channels = list(dict.fromkeys(qc["channel"]))
    fig, axes = plt.subplots(
        len(channels),
        len(metrics),
        figsize=(4.2 * len(metrics), 2.0 * len(channels) + 0.8),
        squeeze=False,
        constrained_layout=True,
    )
    for j, (metric, label) in enumerate(metrics):
        grid = plate_layout(qc, metric)
        for i, channel in enumerate(channels):
            ax = axes[i, j]
            data = grid.loc[channel]
            im = ax.imshow(data.to_numpy(dtype=float), cmap="viridis", aspect="auto")
            ax.set_xticks(range(data.shape[1]), [f"{c:02d}" for c in data.columns])
            ax.set_yticks(range(data.shape[0]), list(data.index))
            ax.set_xlabel("plate column")
            ax.set_ylabel("plate row")
            ax.set_title(f"{channel}: {label}", fontsize=10)
            fig.colorbar(im, ax=ax, shrink=0.9)
    fig.suptitle(f"Plate {plate}: image QC per well (mean over sites)")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def channel_correlation(images: np.ndarray, masks: np.ndarray, region: int = 1) -> tuple[np.ndarray, int]:
    """Sums for the Pearson correlation of the channels over the voxels of one region.

    ``images``: ``(N, C, Z, Y, X)`` crops, ``masks``: ``(N, Z, Y, X)`` (1 = the cell of
    interest). Returns ``(moments, n)``: ``moments`` is ``(C + 1, C + 1)`` -- the cross
    products of ``[1, x_1, ..., x_C]`` summed over the region's voxels -- so that blocks of
    cells add up (:func:`correlation_from_moments`) without holding a plate in memory.
    """
    inside = np.asarray(masks) == region
    voxels = np.moveaxis(np.asarray(images, np.float64), 1, -1)[inside]  # (n, C)
    design = np.concatenate([np.ones((len(voxels), 1)), voxels], axis=1)
    return design.T @ design, int(len(voxels))


def correlation_from_moments(moments: np.ndarray) -> np.ndarray:
    """The ``(C, C)`` Pearson correlation matrix from summed moments (:func:`channel_correlation`)."""
    n = moments[0, 0]
    mean = moments[0, 1:] / n
    covariance = moments[1:, 1:] / n - np.outer(mean, mean)
    sd = np.sqrt(np.clip(np.diag(covariance), 1e-30, None))
    return covariance / np.outer(sd, sd)


def plot_channel_correlation(
    correlation: np.ndarray, channels: list[str], plate: str, n_voxels: int, path
) -> None:
    """Heatmap of a plate's inter-channel correlation over cell voxels (PNG)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 5), layout="constrained")
    ax = figure.subplots()
    shown = ax.imshow(correlation, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(channels)), channels)
    ax.set_yticks(range(len(channels)), channels)
    for i in range(len(channels)):
        for j in range(len(channels)):
            ax.text(j, i, f"{correlation[i, j]:.2f}", ha="center", va="center", fontsize="small")
    ax.set_xlabel("channel")
    ax.set_ylabel("channel")
    ax.set_title(f"Plate {plate}: channel correlation over {n_voxels:,} cell voxels")
    figure.colorbar(shown, ax=ax, label="Pearson r")
    figure.savefig(path, dpi=150, format="png")


def robust_z(values: np.ndarray) -> np.ndarray:
    """``(x - median) / (1.4826 MAD)`` of ``values`` (a normal SD for normal data); where
    the MAD is 0 (identical values), 10 % of the median stands in, so only real departures
    score high."""
    values = np.asarray(values, np.float64)
    median = np.median(values)
    mad = 1.4826 * np.median(np.abs(values - median))
    scale = mad if mad > 0 else max(0.1 * abs(median), 1e-12)
    return (values - median) / scale


def flag_segmentations(sites: pd.DataFrame, max_z: float) -> pd.DataFrame:
    """Flag the sites of a plate whose segmentation is far off the plate's.

    ``sites``: one row per site with ``n_cells`` and ``foreground`` (share of voxels in a
    cell). Adds ``z_cells``, ``z_foreground`` (:func:`robust_z` within the plate),
    ``flagged`` (either beyond ``max_z``) and ``reason``. A field without cells segmented as
    hundreds of noise "cells", or an empty well, stands out here before it is trained on.
    """
    out = sites.copy()
    out["z_cells"] = robust_z(out["n_cells"])
    out["z_foreground"] = robust_z(out["foreground"])
    reasons = []
    for row in out.itertuples(index=False):
        parts = [
            f"{name} {value:g} vs plate median {median:g} (robust z {z:+.1f})"
            for name, value, median, z in (
                ("cells", row.n_cells, out["n_cells"].median(), row.z_cells),
                (
                    "foreground",
                    round(row.foreground, 3),
                    round(out["foreground"].median(), 3),
                    row.z_foreground,
                ),
            )
            if abs(z) > max_z
        ]
        reasons.append("; ".join(parts))
    out["reason"] = reasons
    out["flagged"] = out["reason"] != ""
    return out
