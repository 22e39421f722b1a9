"""Single-cell tables, well profiles and sphering (ZCA whitening on control profiles).

Tables follow the image-based profiling convention (pycytominer, CytoTable): columns that
start with ``Metadata_`` describe a row, every other column is a float feature.

Sphering is the DeepProfiler / pycytominer recipe: fit a ZCA whitening transform on the
control profiles (wells or cells of the control treatment), apply it to every profile, so
that the control population has identity covariance and treatment effects are measured in
units of control variation. :func:`fit_sphering` follows the conventions of
``pycytominer.operations.Spherize`` (``center=True``, ``method="ZCA"`` or ``"ZCA-cor"``,
``epsilon`` added to the singular values of the centred data, whitening matrix scaled by
``sqrt(n - 1)``, null-space singular values replaced by the smallest non-null one) and
gives the same transform (tests/test_aggregate.py checks it against pycytominer).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from sklearn.preprocessing import StandardScaler

from gradcamo.audit_summary import audit_statistics
from gradcamo.columns import (
    ATTENTION_COLUMNS,
    AUDIT_PREDICTION_COLUMNS,
    AUDIT_RELIANCE_COLUMNS,
    BACKGROUND_PREFIX,
    GRADCAMO_COLUMN,
    UNIFORM_COLUMN,
)
from gradcamo.errors import InputError

log = logging.getLogger(__name__)

METADATA_PREFIX = "Metadata_"
WELL_KEYS = ("Metadata_Plate", "Metadata_Well")
#: Columns every per-well profile table must have (the profile stage's contract).
REQUIRED_COLUMNS = (
    "Metadata_Plate",
    "Metadata_Well",
    "Metadata_Treatment",
    "Metadata_Split",
    "Metadata_GradCAMO",
)
#: Row of a cell in its well's profile table, crop store and ``.cams.npy`` (added on read).
PROFILE_ROW = "Metadata_ProfileRow"
SPHERING_METHODS = ("ZCA", "ZCA-cor")
#: Per-cell metadata never carried into well profiles, even where a well has one cell.
PER_CELL_COLUMNS = (
    PROFILE_ROW,
    "Metadata_Site",
    "Metadata_ObjectNumber",
    "Metadata_Predicted",
    "Metadata_Probability",
    GRADCAMO_COLUMN,
    *ATTENTION_COLUMNS.values(),
    UNIFORM_COLUMN,
    *AUDIT_RELIANCE_COLUMNS.values(),
    *AUDIT_PREDICTION_COLUMNS.values(),
)
#: Where the Grad-CAM attention of a cell falls (profile-table columns; the first is Grad-CAMO).
ATTENTION_REGIONS = {"cell": GRADCAMO_COLUMN, **ATTENTION_COLUMNS}


# --------------------------------------------------------------------------- columns


def feature_columns(table: pd.DataFrame) -> list[str]:
    """Feature columns of a profile table: every column not starting with ``Metadata_``."""
    return [c for c in table.columns if not str(c).startswith(METADATA_PREFIX)]


def metadata_columns(table: pd.DataFrame) -> list[str]:
    """Metadata columns of a profile table: the columns starting with ``Metadata_``."""
    return [c for c in table.columns if str(c).startswith(METADATA_PREFIX)]


def control_mask(table: pd.DataFrame, control: str, what: str = "profiles") -> np.ndarray:
    """Boolean ``(N,)`` mask of the rows whose ``Metadata_Treatment`` is ``control``.

    Raises
    ------
    InputError: no row has the control treatment (names the config key and the treatments
        that are present).
    """
    mask = (table["Metadata_Treatment"].astype(str) == str(control)).to_numpy()
    if not mask.any():
        present = sorted(table["Metadata_Treatment"].astype(str).unique())
        raise InputError(
            f"aggregate.control: no {what} of the control treatment {control!r}; "
            f"treatments present: {present}. Sphering and mAP need control wells: set "
            "aggregate.control to one of them or add control wells to the sample sheet."
        )
    return mask


# --------------------------------------------------------------------------- reading


def read_profile_tables(
    paths: Sequence[str | os.PathLike],
) -> tuple[pd.DataFrame, list[str]]:
    """Read and stack per-well profile tables into one single-cell table.

    Parameters
    ----------
    paths: per-well profile Parquets (``results/profiles/{plate}/{well}.parquet``).

    Returns
    -------
    cells: one row per cell, the wells in ``paths`` order, rows in each well's order, with
        the column :data:`PROFILE_ROW` added (the row in the well's own table, which is also
        the cell's index in its crop store and ``.cams.npy``); features float32.
    empty: the paths of wells without cells (their tables have zero rows).

    Raises
    ------
    InputError: a file is unreadable, lacks a required column, has no feature columns, has
        feature columns different from the first well's, or has a non-finite feature (the
        file, column and row are named); or every well is empty.
    """
    if not paths:
        raise InputError("no profile tables given to aggregate")
    tables, empty = [], []
    features: list[str] | None = None
    first = None
    for path in paths:
        try:
            table = pq.read_table(path).to_pandas()
        except FileNotFoundError:
            raise InputError(f"{path}: profile table does not exist") from None
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise InputError(f"{path}: cannot read Parquet ({type(exc).__name__}: {exc})") from None
        missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
        if missing:
            raise InputError(f"{path}: profile table lacks column(s) {missing}")
        these = feature_columns(table)
        if features is None:
            if not these:
                raise InputError(f"{path}: profile table has no feature (non-Metadata_) columns")
            features, first = these, path
        elif these != features:
            extra = sorted(set(these) - set(features))[:5]
            lacking = sorted(set(features) - set(these))[:5]
            raise InputError(
                f"{path}: feature columns differ from {first} "
                f"(extra {extra}, missing {lacking}, or another order)"
            )
        if len(table) == 0:
            empty.append(str(path))
            log.warning("%s: well without cells, left out of the well profiles", path)
            continue
        values = table[features].to_numpy(dtype=np.float32)
        bad = ~np.isfinite(values)
        if bad.any():
            row, col = map(int, np.argwhere(bad)[0])
            raise InputError(
                f"{path}: feature {features[col]!r} is not finite in row {row} "
                f"({int(bad.sum())} non-finite values in the table)"
            )
        meta = table[metadata_columns(table)].reset_index(drop=True)
        meta[PROFILE_ROW] = np.arange(len(table), dtype=np.int64)
        tables.append(pd.concat([meta, pd.DataFrame(values, columns=features)], axis=1))
    if not tables:
        raise InputError(f"all {len(paths)} profile tables are empty: no cells to aggregate")
    cells = pd.concat(tables, ignore_index=True)
    for column in ("Metadata_Plate", "Metadata_Well", "Metadata_Treatment", "Metadata_Split"):
        cells[column] = cells[column].astype(str)
    for column in (*ATTENTION_REGIONS.values(), UNIFORM_COLUMN):
        if column in cells:  # tables written before the shares existed lack the newer ones
            cells[column] = cells[column].astype(np.float64)
    # Metadata first, features after, as in every pycytominer table.
    return cells[metadata_columns(cells) + features], empty


# --------------------------------------------------------------------------- well profiles


def well_profiles(cells: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """Median profile of every well (the pycytominer ``aggregate(operation="median")`` step).

    Parameters
    ----------
    cells: single-cell table (:func:`read_profile_tables`).
    threshold: Grad-CAMO threshold for the per-well share of cells above it.

    Returns
    -------
    One row per well, sorted by plate and well: the well-level metadata columns (those
    constant within every well, e.g. treatment, concentration, control, split),
    ``Metadata_Cell_Count``, ``Metadata_GradCAMO_Median`` and ``Metadata_GradCAMO_Above``
    (share of the well's scored cells above ``threshold``, NaN without scored cells), then
    the median of every feature (float32).
    """
    features = feature_columns(cells)
    groups = cells.groupby(list(WELL_KEYS), sort=True, observed=True)
    # Metadata that is one value per well (treatment, split, ...) describes the well.
    candidates = [
        c
        for c in metadata_columns(cells)
        if c not in WELL_KEYS and c not in PER_CELL_COLUMNS and not c.startswith(BACKGROUND_PREFIX)
    ]
    distinct = groups[candidates].nunique(dropna=False) if candidates else None
    constant = [c for c in candidates if distinct is not None and (distinct[c] <= 1).all()]
    meta = groups[constant].first() if constant else groups.size().to_frame().iloc[:, :0]
    score = cells["Metadata_GradCAMO"]
    meta["Metadata_Cell_Count"] = groups.size().astype(np.int64)
    meta["Metadata_GradCAMO_Median"] = score.groupby([cells[k] for k in WELL_KEYS], sort=True).median()
    above = (score > threshold).astype(np.float64).where(score.notna())
    meta["Metadata_GradCAMO_Above"] = above.groupby([cells[k] for k in WELL_KEYS], sort=True).mean()
    medians = groups[features].median().astype(np.float32)
    wells = pd.concat([meta, medians], axis=1).reset_index()
    return wells


# --------------------------------------------------------------------------- sphering


@dataclass(frozen=True)
class Sphering:
    """A fitted ZCA whitening transform: ``x -> ((x - mean) / scale) @ matrix``.

    Attributes
    ----------
    mean: ``(D,)`` feature means of the fitting (control) profiles.
    scale: ``(D,)`` feature standard deviations (``ZCA-cor``) or ones (``ZCA``).
    matrix: ``(D, D)`` symmetric whitening matrix.
    method: ``"ZCA"`` or ``"ZCA-cor"``.
    n_fit: number of profiles the transform was fitted on.
    rank: rank of the centred fitting data.
    """

    mean: np.ndarray
    scale: np.ndarray
    matrix: np.ndarray
    method: str
    n_fit: int
    rank: int

    def transform(self, features: np.ndarray, block_rows: int = 8192) -> np.ndarray:
        """Sphere ``(N, D)`` features; returns ``(N, D)`` float32, in row blocks to bound memory."""
        features = np.asarray(features)
        out = np.empty(features.shape, dtype=np.float32)
        for start in range(0, len(features), block_rows):
            block = features[start : start + block_rows].astype(np.float64)
            out[start : start + block_rows] = ((block - self.mean) / self.scale) @ self.matrix
        return out


def _centred_spectrum(centred: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Singular values ``s (k,)`` and right singular vectors ``V (D, k)`` of ``centred (n, D)``.

    Uses the eigendecomposition of the smaller Gram matrix (``D x D`` or ``n x n``) instead
    of an SVD of the data: pycytominer's ``np.linalg.svd(X, full_matrices=True)`` builds an
    ``n x n`` matrix (20 GB for 50,000 control cells) and a LAPACK SVD of a 25,000 x 1,280
    matrix takes minutes here, the Gram route seconds. Returns the rank with
    ``numpy.linalg.matrix_rank``'s tolerance ``s_max * max(n, D) * eps`` -- on eigenvalues
    of a Gram matrix, whose rounding error is ``~eps * s_max**2``, the same tolerance is
    applied to ``s**2`` (so it reads ``s_max * sqrt(max(n, D) * eps)`` on ``s``).
    """
    n, d = centred.shape
    if n >= d:
        eigenvalues, vectors = np.linalg.eigh(centred.T @ centred)  # (D,), (D, D)
    else:
        eigenvalues, left = np.linalg.eigh(centred @ centred.T)  # (n,), (n, n)
        vectors = None
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)
    tolerance = eigenvalues[0] * max(n, d) * np.finfo(np.float64).eps if len(eigenvalues) else 0.0
    rank = int((eigenvalues > tolerance).sum())
    singular = np.sqrt(eigenvalues)
    if vectors is None:
        # V = X^T U S^-1 for the non-null part; the null space is handled by the caller.
        left = left[:, order[:rank]]
        vectors = centred.T @ left / singular[:rank]
        singular = singular[:rank]
    else:
        vectors = vectors[:, order]
    return singular, vectors, rank


def fit_sphering(features: np.ndarray, epsilon: float = 1e-6, method: str = "ZCA") -> Sphering:
    """Fit ZCA whitening on ``(n, D)`` (control) features, pycytominer-compatible.

    With centred (``ZCA``) or standardised (``ZCA-cor``) data ``X = U S V^T`` the matrix is
    ``W = V diag(sqrt(n - 1) / (s + epsilon)) V^T``, so ``cov(X W) = I`` up to ``epsilon``.
    Directions without variance in the fitting data (all but ``n - 1`` of them when
    ``n <= D``, as for a handful of control wells) get the smallest non-null singular value,
    exactly as ``pycytominer.operations.Spherize`` does for ``n <= D``; pycytominer refuses
    rank-deficient data with ``n > D``, this function treats it the same way.

    Raises
    ------
    InputError: fewer than 2 profiles, no variance at all, a zero-variance feature with
        ``ZCA-cor``, a non-finite value, or an unknown method.
    """
    if method not in SPHERING_METHODS:
        raise InputError(f"aggregate.sphering_method: {method!r} is not one of {list(SPHERING_METHODS)}")
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise InputError(f"sphering needs an (n, D) feature matrix, got shape {features.shape}")
    n, d = features.shape
    if n < 2:
        raise InputError(f"sphering needs at least 2 control profiles to estimate their covariance, got {n}")
    if not np.isfinite(features).all():
        raise InputError("sphering: the control features contain NaN or infinite values")
    if method == "ZCA-cor":
        # pycytominer standardises with sklearn's StandardScaler (population variance).
        scaler = StandardScaler().fit(features)
        zero = np.flatnonzero(scaler.var_ == 0)
        if zero.size:
            raise InputError(
                f"sphering_method ZCA-cor: {zero.size} feature(s) have zero variance in the "
                f"control profiles (column indices {zero[:10].tolist()}); use ZCA or drop them"
            )
        mean, scale = scaler.mean_, scaler.scale_
    else:
        mean, scale = features.mean(axis=0), np.ones(d)
    centred = (features - mean) / scale
    singular, vectors, rank = _centred_spectrum(centred)
    if rank == 0:
        raise InputError(f"sphering: the {n} control profiles are identical; their covariance is zero")
    gain = np.sqrt(n - 1) / (singular[:rank] + epsilon)  # (rank,)
    kept = vectors[:, :rank]  # (D, rank)
    matrix = (kept * gain) @ kept.T
    if rank < d:
        # Null space of the control data: the smallest non-null singular value (pycytominer).
        null_gain = np.sqrt(n - 1) / (singular[rank - 1] + epsilon)
        matrix += null_gain * (np.eye(d) - kept @ kept.T)
    return Sphering(mean=mean, scale=scale, matrix=matrix, method=method, n_fit=n, rank=rank)


def fit_control_sphering(
    table: pd.DataFrame,
    control: str,
    epsilon: float = 1e-6,
    method: str = "ZCA",
    what: str = "profiles",
) -> Sphering:
    """:func:`fit_sphering` on the rows of ``table`` whose treatment is ``control``.

    ``what`` names the rows in messages ("wells", "cells").

    Raises
    ------
    InputError: no control row (see :func:`control_mask`) or too few / identical ones.
    """
    features = feature_columns(table)
    mask = control_mask(table, control, what)
    try:
        sphering = fit_sphering(table.loc[mask, features].to_numpy(), epsilon, method)
    except InputError as exc:
        raise InputError(f"{exc} (control {what} of {control!r}: {int(mask.sum())})") from None
    log.info(
        "sphering (%s) fitted on %d control %s, rank %d of %d features",
        method,
        sphering.n_fit,
        what,
        sphering.rank,
        len(features),
    )
    return sphering


def apply_sphering(table: pd.DataFrame, sphering: Sphering) -> pd.DataFrame:
    """``table`` with the same metadata and its features sphered (float32)."""
    features = feature_columns(table)
    sphered = sphering.transform(table[features].to_numpy())
    return pd.concat(
        [table[metadata_columns(table)], pd.DataFrame(sphered, columns=features, index=table.index)],
        axis=1,
    )


def sphere_profiles(
    table: pd.DataFrame,
    control: str,
    epsilon: float = 1e-6,
    method: str = "ZCA",
    what: str = "profiles",
) -> pd.DataFrame:
    """Fit sphering on the control rows of ``table`` and apply it to every row (the
    pycytominer ``normalize(method="spherize", samples=<control query>)`` step)."""
    return apply_sphering(table, fit_control_sphering(table, control, epsilon, method, what))


# --------------------------------------------------------------------------- summaries


def gradcamo_statistics(scores: Iterable[float], threshold: float = 0.5) -> dict:
    """Mean, median and share above ``threshold`` of Grad-CAMO scores, NaN excluded.

    Returns a dict: ``n_cells``, ``n_scored``, ``n_nan``, ``mean``, ``median``,
    ``n_above``, ``share_above`` and ``threshold``; statistics are ``None`` without scores.
    """
    scores = np.asarray(list(scores), dtype=np.float64)
    finite = scores[np.isfinite(scores)]
    n_above = int((finite > threshold).sum())
    return {
        "threshold": float(threshold),
        "n_cells": int(scores.size),
        "n_scored": int(finite.size),
        "n_nan": int(scores.size - finite.size),
        "mean": float(finite.mean()) if finite.size else None,
        "median": float(np.median(finite)) if finite.size else None,
        "n_above": n_above,
        "share_above": n_above / finite.size if finite.size else None,
    }


def attention_shares(cells: pd.DataFrame) -> pd.DataFrame:
    """Per cell, the shares of its Grad-CAM attention: columns ``cell`` (Grad-CAMO),
    ``neighbours`` and ``background``, plus ``uniform`` (the cell's share for a uniform map);
    NaN where the table lacks a column."""
    columns = {**ATTENTION_REGIONS, "uniform": UNIFORM_COLUMN}
    return pd.DataFrame(
        {
            name: cells[column].to_numpy(np.float64) if column in cells else np.nan
            for name, column in columns.items()
        },
        index=cells.index,
    )


def attention_statistics(cells: pd.DataFrame) -> dict:
    """Mean share of the Grad-CAM attention on the cell, its neighbours and the background.

    Returns ``{"cell": ..., "neighbours": ..., "background": ..., "cell_if_uniform": ...}``
    (NaN-excluded means, None where a column is missing or has no values); the first three
    sum to about 1; ``cell_if_uniform`` is the mean Grad-CAMO a uniform map would get.
    """
    means = attention_shares(cells).mean()  # skips NaN; NaN for a column without values
    names = {"uniform": "cell_if_uniform"}
    return {names.get(k, k): None if np.isnan(v) else float(v) for k, v in means.items()}


def split_accuracies(metrics: dict) -> dict:
    """Per-split accuracy entries of the training ``metrics.json``.

    Reads ``metrics["splits"]`` (or ``metrics`` itself) as split -> dict and keeps, for every
    split entry that has an ``accuracy``, the scalar fields among ``accuracy``,
    ``balanced_accuracy``, ``chance_level`` / ``chance``, ``n_cells`` and ``n_wells``.
    """
    wanted = ("accuracy", "balanced_accuracy", "chance_level", "chance", "n_cells", "n_wells")
    splits = metrics.get("splits", metrics) if isinstance(metrics, dict) else {}
    out = {}
    for split, entry in splits.items():
        if isinstance(entry, dict) and "accuracy" in entry:
            out[str(split)] = {
                k: (None if v is None or (isinstance(v, float) and np.isnan(v)) else v)
                for k, v in entry.items()
                if k in wanted and (v is None or np.isscalar(v))
            }
    return out


def summary(
    cells: pd.DataFrame,
    wells: pd.DataFrame,
    empty_wells: Sequence[str],
    metrics: dict,
    activity: pd.DataFrame,
    control: str,
    threshold: float = 0.5,
    attribution: dict | None = None,
) -> dict:
    """The run's headline numbers as a JSON-ready dict (NaN written as ``None``).

    Parameters
    ----------
    cells, wells: single-cell and well tables.
    empty_wells: profile tables without cells.
    metrics: the training stage's ``metrics.json``.
    activity: the mAP table (:func:`gradcamo.evaluation.activity_table`).
    attribution: how the maps behind Grad-CAMO were made (``cam_method``, ``target_layer``,
        ``target_resolution``), reported as ``attribution``.
    """
    by_split = {
        str(split): gradcamo_statistics(group["Metadata_GradCAMO"].to_numpy(), threshold)
        for split, group in cells.groupby("Metadata_Split", sort=True)
    }
    mean_ap: dict = {}
    for row in activity.itertuples(index=False):
        node = mean_ap.setdefault(row.level, {}).setdefault(f"{row.split}/{row.subset}", {})
        node[row.treatment] = {
            "mean_average_precision": _json_float(row.mean_average_precision),
            "corrected_p_value": _json_float(row.corrected_p_value),
            "n_profiles": int(row.n_profiles),
        }
    return {
        "cells": int(len(cells)),
        "wells": int(len(wells)),
        "empty_wells": list(map(str, empty_wells)),
        "control": str(control),
        "control_wells": int((wells["Metadata_Treatment"] == str(control)).sum()),
        "treatments": sorted(map(str, cells["Metadata_Treatment"].unique())),
        "cells_per_split": {
            str(k): int(v) for k, v in cells["Metadata_Split"].value_counts().sort_index().items()
        },
        "accuracy": split_accuracies(metrics),
        "training": {k: metrics[k] for k in ("best_epoch", "epochs_run") if k in metrics},
        "attribution": dict(attribution or {}),
        "gradcamo": gradcamo_statistics(cells["Metadata_GradCAMO"].to_numpy(), threshold),
        "gradcamo_by_split": by_split,
        "attention": attention_statistics(cells),
        "attention_by_split": {
            str(split): attention_statistics(group)
            for split, group in cells.groupby("Metadata_Split", sort=True)
        },
        "mean_average_precision": mean_ap,
        "audit": audit_statistics(cells),
    }


def _json_float(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
