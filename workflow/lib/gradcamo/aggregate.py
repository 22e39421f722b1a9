"""Single-cell tables and well profiles: reading the profile stage's tables, medians per well.

Tables follow the image-based profiling convention (pycytominer, CytoTable): columns that
start with ``Metadata_`` describe a row, every other column is a float feature. Sphering is
in :mod:`gradcamo.sphering`, the run's summary in :mod:`gradcamo.summary`.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from gradcamo.columns import (
    ATTENTION_COLUMNS,
    AUDIT_PREDICTION_COLUMNS,
    AUDIT_RELIANCE_COLUMNS,
    BACKGROUND_PREFIX,
    GRADCAMO_COLUMN,
    SAMPLED_COLUMN,
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
#: Row of a cell in its well's profile table, crop store and ``.attributions.npy`` (added on read).
PROFILE_ROW = "Metadata_ProfileRow"
#: Per-cell metadata never carried into well profiles, even where a well has one cell.
PER_CELL_COLUMNS = (
    PROFILE_ROW,
    "Metadata_Site",
    "Metadata_ObjectNumber",
    "Metadata_Predicted",
    "Metadata_Probability",
    GRADCAMO_COLUMN,
    SAMPLED_COLUMN,
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
        the cell's index in its crop store and ``.attributions.npy``); features float32.
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
    ``Metadata_Cell_Count``, ``Metadata_GradCAMO_Count`` (the cells with a score: the
    attribution sample's, ``profile.attribution_cells_per_well``, with evidence),
    ``Metadata_GradCAMO_Median`` and ``Metadata_GradCAMO_Above`` (share of the well's scored
    cells above ``threshold``, NaN without scored cells), then the median of every feature
    (float32) over every cell.
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
    meta["Metadata_GradCAMO_Count"] = (
        score.notna().groupby([cells[k] for k in WELL_KEYS], sort=True).sum().astype(np.int64)
    )
    meta["Metadata_GradCAMO_Median"] = score.groupby([cells[k] for k in WELL_KEYS], sort=True).median()
    above = (score > threshold).astype(np.float64).where(score.notna())
    meta["Metadata_GradCAMO_Above"] = above.groupby([cells[k] for k in WELL_KEYS], sort=True).mean()
    medians = groups[features].median().astype(np.float32)
    wells = pd.concat([meta, medians], axis=1).reset_index()
    return wells
