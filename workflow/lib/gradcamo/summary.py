"""The run's summary (``summary.json``): accuracy, Grad-CAMO, attention shares, mAP, audit."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from gradcamo.aggregate import ATTENTION_REGIONS
from gradcamo.audit_summary import audit_statistics
from gradcamo.columns import (
    SAMPLED_COLUMN,
    SHUFFLED_COLUMN,
    UNDEFINED_COLUMN,
    UNDEFINED_REASONS,
    UNIFORM_COLUMN,
)


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


def undefined_counts(cells: pd.DataFrame) -> dict:
    """How many cells have no Grad-CAMO, per reason (:data:`gradcamo.columns.UNDEFINED_REASONS`,
    every reason listed, 0 included)."""
    counts = cells[UNDEFINED_COLUMN].value_counts() if UNDEFINED_COLUMN in cells else pd.Series(dtype=int)
    return {reason: int(counts.get(reason, 0)) for reason in UNDEFINED_REASONS}


def gradcamo_with_baseline(cells: pd.DataFrame, threshold: float = 0.5) -> dict:
    """:func:`gradcamo_statistics` of ``cells``' Grad-CAMO (the cells with a score), with
    ``shuffled``: the mean and the share above ``threshold`` of the shuffled baseline (each
    cell's mask on another cell's map, ``Metadata_GradCAMO_Shuffled``) over the same cells,
    None where the table has none; and ``undefined``: the cells without a score, by reason."""
    scores = cells["Metadata_GradCAMO"].to_numpy(np.float64)
    out = gradcamo_statistics(scores, threshold)
    scored = np.isfinite(scores)
    null = gradcamo_statistics(
        cells[SHUFFLED_COLUMN].to_numpy(np.float64)[scored] if SHUFFLED_COLUMN in cells else np.array([]),
        threshold,
    )
    out["shuffled"] = {"mean": null["mean"], "share_above": null["share_above"]}
    out["undefined"] = undefined_counts(cells)
    return out


def gradcamo_by(cells: pd.DataFrame, column: str, threshold: float = 0.5) -> dict:
    """:func:`gradcamo_with_baseline` per value of ``column`` (the predicted class, the
    treatment): a model that reads a shortcut can score well on one class and say nothing
    on another, and the run's share mixes the two."""
    if column not in cells:
        return {}
    return {str(k): gradcamo_with_baseline(g, threshold) for k, g in cells.groupby(column, sort=True)}


def attention_shares(cells: pd.DataFrame) -> pd.DataFrame:
    """Per cell, the shares of its attribution map: columns ``cell`` (Grad-CAMO),
    ``neighbours`` and ``background``, plus ``uniform`` (the cell's share for a uniform map);
    NaN where the table lacks a column."""
    columns = {**ATTENTION_REGIONS, "uniform": UNIFORM_COLUMN}
    shares = pd.DataFrame(
        {
            name: cells[column].to_numpy(np.float64) if column in cells else np.nan
            for name, column in columns.items()
        },
        index=cells.index,
    )
    # Where Grad-CAMO is undefined (no evidence), so are the map's other shares: the three
    # regions are read over the same cells and still sum to 1.
    shares.loc[shares["cell"].isna(), list(ATTENTION_REGIONS)] = np.nan
    return shares


def attention_statistics(cells: pd.DataFrame) -> dict:
    """Mean share of the attribution map on the cell, its neighbours and the background.

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
    checks: dict | None = None,
) -> dict:
    """The run's headline numbers as a JSON-ready dict (NaN written as ``None``).

    Parameters
    ----------
    cells, wells: single-cell and well tables.
    empty_wells: profile tables without cells.
    metrics: the training stage's ``metrics.json``.
    activity: the mAP table (:func:`gradcamo.evaluation.activity_table`).
    attribution: how the maps behind Grad-CAMO were made (``attribution_method``, ``ig_steps``,
        ``smoothing_sigma``, ``target_layer``, ``target_resolution``), reported as ``attribution``.
    checks: the model checks' summaries (``randomisation``, ``planted``), reported as ``checks``.

    ``gradcamo_by_predicted_class`` and ``gradcamo_by_treatment`` are over the test cells;
    ``attribution_sample`` says how many cells carry a map (``profile.attribution_cells_per_well``):
    every Grad-CAMO and audit statistic is over those.
    """
    test = cells[cells["Metadata_Split"] == "test"]
    by_split = {
        str(split): gradcamo_with_baseline(group, threshold)
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
        "training": {
            k: metrics[k]
            for k in ("best_epoch", "epochs_run", "attention_penalty", "context_swap", "numerics")
            if k in metrics
        },
        "attribution": dict(attribution or {}),
        "attribution_sample": attribution_sample(cells),
        "gradcamo": gradcamo_with_baseline(cells, threshold),
        "gradcamo_by_split": by_split,
        "gradcamo_by_predicted_class": gradcamo_by(test, "Metadata_Predicted", threshold),
        "gradcamo_by_treatment": gradcamo_by(test, "Metadata_Treatment", threshold),
        "attention": attention_statistics(cells),
        "attention_by_split": {
            str(split): attention_statistics(group)
            for split, group in cells.groupby("Metadata_Split", sort=True)
        },
        "mean_average_precision": mean_ap,
        "audit": audit_statistics(cells),
        "checks": dict(checks or {}),
    }


def attribution_sample(cells: pd.DataFrame) -> dict:
    """How many cells carry an attribution map, Grad-CAMO and the audit (``mapped``) of how
    many (``cells``), overall and per split; ``sampled``: whether that is a sample."""
    mapped = cells[SAMPLED_COLUMN].astype(bool) if SAMPLED_COLUMN in cells else pd.Series(True, cells.index)
    return {
        "sampled": bool((~mapped).any()),
        "cells": int(len(cells)),
        "mapped": int(mapped.sum()),
        "mapped_by_split": {
            str(split): int(group.sum())
            for split, group in mapped.groupby(cells["Metadata_Split"], sort=True)
        },
    }


def _json_float(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
