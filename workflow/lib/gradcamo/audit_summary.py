"""The audit's numbers over a run: accuracy from the cell alone and from the context alone,
how Grad-CAMO ranks with the cell's reliance, and whether the background leaks the treatment.

Reads the single-cell table (:mod:`gradcamo.aggregate`) with the profile stage's audit
columns (:mod:`gradcamo.audit`, :mod:`gradcamo.columns`); no PyTorch here (the aggregate
stage's environment has none).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gradcamo.columns import (
    AUDIT_PREDICTION_COLUMNS,
    AUDIT_RELIANCE_COLUMNS,
    BACKGROUND_PREFIX,
    GRADCAMO_COLUMN,
)

TREATMENT, SPLIT, PREDICTED = "Metadata_Treatment", "Metadata_Split", "Metadata_Predicted"
#: Accuracy of each input: the crop, the cell alone (context replaced), the context alone.
INPUTS = {
    "full": PREDICTED,
    "cell_only": AUDIT_PREDICTION_COLUMNS["from_cell"],
    "context_only": AUDIT_PREDICTION_COLUMNS["from_context"],
}


def has_audit(cells: pd.DataFrame) -> bool:
    """Whether the table holds audit results (``profile.audit`` was on)."""
    column = AUDIT_RELIANCE_COLUMNS["cell"]
    return column in cells and bool(cells[column].notna().any())


def _float(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def input_accuracies(cells: pd.DataFrame) -> dict:
    """Accuracy of the predictions from the full crop, the cell alone and the context alone,
    and the mean reliances, over ``cells``: a dict of floats (None without cells)."""
    truth = cells[TREATMENT].astype(str).to_numpy()
    out = {"n_cells": int(len(cells))}
    for name, column in INPUTS.items():
        predicted = cells[column].astype(str).to_numpy() if column in cells else None
        out[name] = _float(np.mean(predicted == truth)) if predicted is not None and len(cells) else None
    for name, column in AUDIT_RELIANCE_COLUMNS.items():
        out[f"{name}_reliance"] = _float(cells[column].mean()) if len(cells) else None
    return out


def gradcamo_reliance_correlation(cells: pd.DataFrame) -> float | None:
    """Spearman correlation of Grad-CAMO with the cell's reliance (NaN scores left out);
    None with fewer than 3 cells or a constant column."""
    pair = cells[[GRADCAMO_COLUMN, AUDIT_RELIANCE_COLUMNS["cell"]]].dropna()
    if len(pair) < 3 or pair.nunique().min() < 2:
        return None
    return _float(spearmanr(pair.iloc[:, 0], pair.iloc[:, 1]).statistic)


def background_leak(cells: pd.DataFrame, train: str = "train", held_out: Sequence[str] = ("test",)) -> dict:
    """How well the crops' background alone predicts the treatment of held-out wells.

    A logistic regression on the per-channel background means
    (``Metadata_BackgroundMean_*``) is fitted on the ``train`` split's cells and scored on
    the ``held_out`` splits' cells (other wells). Near chance: the crops carry no treatment
    outside their cells. Well above chance: a shortcut -- preprocessing (per-site
    normalisation), a plate or batch effect, or a real background difference -- that the
    model can learn instead of the cells.

    Returns ``{"accuracy", "chance", "n_train", "n_held_out", "features"}``; accuracy None
    when either side has no cells or the training cells have one treatment only.
    """
    features = [c for c in cells.columns if c.startswith(BACKGROUND_PREFIX)]
    usable = cells.dropna(subset=features) if features else cells.iloc[:0]
    fit = usable[usable[SPLIT] == train]
    test = usable[usable[SPLIT].isin(list(held_out))]
    n_classes = cells[TREATMENT].nunique()
    out = {
        "accuracy": None,
        "chance": 1.0 / n_classes if n_classes else None,
        "n_train": int(len(fit)),
        "n_held_out": int(len(test)),
        "features": [c[len(BACKGROUND_PREFIX) :] for c in features],
    }
    if len(fit) and len(test) and fit[TREATMENT].nunique() >= 2:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(fit[features].to_numpy(), fit[TREATMENT].astype(str).to_numpy())
        predicted = model.predict(test[features].to_numpy())
        out["accuracy"] = _float(np.mean(predicted == test[TREATMENT].astype(str).to_numpy()))
    return out


def audit_statistics(cells: pd.DataFrame) -> dict | None:
    """The ``audit`` entry of ``summary.json``; None when the run had no audit.

    ``by_split``: per split, :func:`input_accuracies` and ``spearman_gradcamo_cell_reliance``;
    ``by_treatment``: the same accuracies on the test split per treatment;
    ``background_leak``: :func:`background_leak` (train wells -> test wells).
    """
    if not has_audit(cells):
        return None
    by_split = {}
    for split, group in cells.groupby(SPLIT, sort=True):
        by_split[str(split)] = {
            **input_accuracies(group),
            "spearman_gradcamo_cell_reliance": gradcamo_reliance_correlation(group),
        }
    test = cells[cells[SPLIT] == "test"]
    return {
        "by_split": by_split,
        "by_treatment": {str(t): input_accuracies(group) for t, group in test.groupby(TREATMENT, sort=True)},
        "background_leak": background_leak(cells),
    }
