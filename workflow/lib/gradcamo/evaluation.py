"""Profile quality beyond accuracy: phenotypic activity as mean average precision (copairs).

Phenotypic activity (Kalinin et al. 2025, "A versatile information retrieval framework for
evaluating profile strength and similarity", the copairs method): each profile of a
treatment queries a list made of the other profiles of its treatment (positives) and the
control profiles (negatives), ranked by cosine similarity; its average precision (AP)
says how well its replicates stand out from the controls. A treatment's mean AP (mAP) is
compared with a permutation null (p-value), Benjamini-Hochberg-corrected across
treatments. copairs does all of that; this module only chooses the pairs and the rows.
"""

from __future__ import annotations

import logging
import tempfile
from typing import Sequence

import numpy as np
import pandas as pd
from copairs.map import average_precision, mean_average_precision
from copairs.matching import assign_reference_index

from gradcamo.aggregate import feature_columns
from gradcamo.errors import InputError

log = logging.getLogger(__name__)

TREATMENT = "Metadata_Treatment"
REFERENCE = "Metadata_Reference_Index"
ACTIVITY_COLUMNS = [
    "treatment",
    "mean_average_precision",
    "mean_normalized_average_precision",
    "p_value",
    "corrected_p_value",
    "below_corrected_p",
    "n_profiles",
    "n_control_profiles",
]


def phenotypic_activity(
    meta: pd.DataFrame,
    features: np.ndarray,
    control: str,
    null_size: int = 10000,
    seed: int = 0,
    threshold: float = 0.05,
    treatments: Sequence[str] | None = None,
) -> pd.DataFrame:
    """mAP of every treatment against the control (copairs phenotypic activity).

    Parameters
    ----------
    meta: ``(N, ...)`` metadata with a ``Metadata_Treatment`` column.
    features: ``(N, D)`` profiles (sphered), rows aligned with ``meta``.
    control: the control treatment; its profiles are the negatives.
    null_size: permutations in copairs' null distribution of AP.
    seed: seed of the null distribution.
    threshold: significance level of ``below_corrected_p``.
    treatments: treatments to report (default: every non-control one in ``meta``); one
        with fewer than 2 profiles has no replicate to retrieve and gets NaN.

    Returns
    -------
    One row per treatment with the columns of :data:`ACTIVITY_COLUMNS`.

    Raises
    ------
    InputError: no control profile, or ``meta`` and ``features`` disagree.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) != len(meta):
        raise InputError(f"mAP: {len(meta)} metadata rows but a feature matrix of shape {features.shape}")
    labels = meta[TREATMENT].astype(str).reset_index(drop=True)
    is_control = (labels == str(control)).to_numpy()
    if not is_control.any():
        raise InputError(
            f"mAP: no profile of the control treatment {control!r} (aggregate.control) to "
            f"compare against; treatments present: {sorted(labels.unique())}"
        )
    counts = labels.value_counts()
    if treatments is None:
        treatments = sorted(t for t in counts.index if t != str(control))
    treatments = [str(t) for t in treatments]
    evaluable = [t for t in treatments if counts.get(t, 0) >= 2]
    for t in treatments:
        if t not in evaluable:
            log.warning("mAP: treatment %r has %d profile(s); needs 2 for mAP", t, counts.get(t, 0))
    scores = None
    if evaluable:
        keep = (labels.isin(evaluable) | pd.Series(is_control)).to_numpy()
        sub_meta = pd.DataFrame({TREATMENT: labels[keep].to_numpy()})
        # Each control profile gets its own reference index, every other one -1: then
        # positives are same-treatment pairs of non-controls and negatives are exactly the
        # treatment-control pairs (copairs' phenotypic-activity recipe).
        sub_meta = assign_reference_index(
            sub_meta, f"{TREATMENT} == {str(control)!r}", reference_col=REFERENCE
        )
        ap = average_precision(
            sub_meta,
            features[keep],
            pos_sameby=[TREATMENT, REFERENCE],
            pos_diffby=[],
            neg_sameby=[],
            neg_diffby=[TREATMENT, REFERENCE],
            distance="cosine",
            progress_bar=False,
        )
        ap = ap[ap[TREATMENT] != str(control)]
        # A fresh cache folder: copairs' default cache is ~/.copairs, and reusing null
        # distributions across calls would make p-values depend on earlier runs.
        with tempfile.TemporaryDirectory(prefix="copairs-") as cache:
            scores = mean_average_precision(
                ap,
                [TREATMENT],
                null_size=null_size,
                threshold=threshold,
                seed=seed,
                progress_bar=False,
                cache_dir=cache,
            )
        scores = scores.rename(columns={TREATMENT: "treatment"}).drop(columns=["indices"])
    return _activity_rows(treatments, counts, int(is_control.sum()), scores)


def _activity_rows(
    treatments: Sequence[str],
    counts: pd.Series,
    n_control: int,
    scores: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per treatment with its profile counts and copairs' ``scores`` (NaN without)."""
    result = pd.DataFrame({"treatment": list(treatments)})
    result["n_profiles"] = [int(counts.get(t, 0)) for t in treatments]
    result["n_control_profiles"] = int(n_control)
    if scores is not None:
        result = result.merge(scores, on="treatment", how="left")
    for column in ACTIVITY_COLUMNS:
        if column not in result:
            result[column] = np.nan
    result["below_corrected_p"] = result["below_corrected_p"].astype("boolean")
    return result[ACTIVITY_COLUMNS]


def sample_per_treatment(table: pd.DataFrame, max_rows: int, seed: int = 0) -> pd.DataFrame:
    """At most ``max_rows`` random rows per ``Metadata_Treatment`` (table order kept)."""
    if max_rows is None or len(table) == 0:
        return table
    shuffled = table.sample(frac=1.0, random_state=seed)
    return shuffled.groupby(TREATMENT, sort=False, observed=True).head(int(max_rows)).sort_index()


def activity_table(
    wells: pd.DataFrame,
    cells: pd.DataFrame,
    control: str,
    gradcamo_threshold: float = 0.5,
    max_cells_per_treatment: int | None = 500,
    null_size: int = 10000,
    seed: int = 0,
) -> pd.DataFrame:
    """Phenotypic activity (mAP) of every treatment at the well and the single-cell level.

    Rows (``level``, ``split``, ``subset``):

    - ``well, all, all``: every well profile;
    - ``well, test, all``: wells of the held-out test split only;
    - ``cell, test, all``: test-split cells (the model never trained on their wells);
    - ``cell, test, gradcamo_above``: test cells with Grad-CAMO > threshold, controls
      included, i.e. the cells kept by a Grad-CAMO filter;
    - ``cell, test, gradcamo_below``: those dropped by it (Grad-CAMO <= threshold); cells
      without a score (NaN) are in neither.

    At the cell level each treatment (control included) is subsampled to
    ``max_cells_per_treatment`` cells (copairs' pair count grows with its square).
    A selection without control profiles yields NaN rows (logged), not an error.

    Parameters
    ----------
    wells: sphered well profiles; cells: sphered single-cell profiles (both with
        ``Metadata_Treatment`` and ``Metadata_Split``, cells with ``Metadata_GradCAMO``).

    Returns
    -------
    Columns ``level, split, subset`` + :data:`ACTIVITY_COLUMNS` + ``gradcamo_threshold``.
    """
    control = str(control)
    present = set(wells[TREATMENT].astype(str)) | set(cells[TREATMENT].astype(str))
    treatments = sorted(present - {control})
    score = cells["Metadata_GradCAMO"]
    test_cells = cells["Metadata_Split"].astype(str) == "test"
    selections = [
        ("well", "all", "all", wells),
        ("well", "test", "all", wells[wells["Metadata_Split"].astype(str) == "test"]),
        ("cell", "test", "all", cells[test_cells]),
        ("cell", "test", "gradcamo_above", cells[test_cells & (score > gradcamo_threshold)]),
        ("cell", "test", "gradcamo_below", cells[test_cells & (score <= gradcamo_threshold)]),
    ]
    parts = []
    for level, split, subset, table in selections:
        if level == "cell":
            table = sample_per_treatment(table, max_cells_per_treatment, seed)
        has_control = (table[TREATMENT].astype(str) == control).any()
        if has_control:
            part = phenotypic_activity(
                table,
                table[feature_columns(table)].to_numpy(),
                control,
                null_size=null_size,
                seed=seed,
                treatments=treatments,
            )
        else:
            log.warning("mAP %s/%s/%s: no control profiles, mAP left NaN", level, split, subset)
            part = _activity_rows(treatments, table[TREATMENT].astype(str).value_counts(), 0)
        part.insert(0, "subset", subset)
        part.insert(0, "split", split)
        part.insert(0, "level", level)
        log.info(
            "mAP %s/%s/%s: %s",
            level,
            split,
            subset,
            ", ".join(
                f"{r.treatment}={r.mean_average_precision:.3f} (n={r.n_profiles})" for r in part.itertuples()
            ),
        )
        parts.append(part)
    result = pd.concat(parts, ignore_index=True)
    result["gradcamo_threshold"] = float(gradcamo_threshold)
    result["n_profiles"] = result["n_profiles"].astype(np.int64)
    result["n_control_profiles"] = result["n_control_profiles"].astype(np.int64)
    return result
