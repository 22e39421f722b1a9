"""Well-disjoint train / validation / test split, stratified by treatment.

Cells of one well share its plate position, staining batch and neighbourhood, so a split
of cells would leak well effects from train into test; whole wells go to one split.
"""

from __future__ import annotations

import logging
from typing import Mapping

import numpy as np
import pandas as pd

from gradcamo.errors import InputError

SPLITS = ("train", "val", "test")
log = logging.getLogger(__name__)


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """Validate ``split.fractions``: keys train/val/test, non-negative, summing to 1.

    Returns the fractions as a plain dict in ``SPLITS`` order.
    """
    keys = set(fractions)
    if keys != set(SPLITS):
        raise InputError(
            f"config key split.fractions must have exactly the keys {', '.join(SPLITS)}, "
            f"got {', '.join(sorted(keys)) or 'none'}"
        )
    out = {name: float(fractions[name]) for name in SPLITS}
    if any(value < 0 for value in out.values()):
        raise InputError(f"config key split.fractions: fractions must be non-negative, got {out}")
    if out["train"] <= 0 or out["test"] <= 0:
        raise InputError(f"config key split.fractions: train and test must be > 0, got {out}")
    if not np.isclose(sum(out.values()), 1.0, atol=1e-6):
        raise InputError(f"config key split.fractions must sum to 1, got {out}")
    return out


def split_counts(n_wells: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """How many of ``n_wells`` wells go to each split.

    Largest-remainder rounding of ``n_wells * fraction``, then at least one well each for
    train and test (taken from validation first); validation may get none.
    ``n_wells`` must be at least 2.
    """
    fractions = check_fractions(fractions)
    exact = np.array([n_wells * fractions[name] for name in SPLITS])
    counts = np.floor(exact).astype(int)
    # Hand-written because sklearn's stratified splitters work on samples and give no
    # guarantee that a class with two or three wells lands in both train and test.
    for i in np.argsort(-(exact - counts), kind="stable")[: n_wells - counts.sum()]:
        counts[i] += 1
    counts = dict(zip(SPLITS, (int(c) for c in counts)))
    for need, other in (("train", "test"), ("test", "train")):
        if counts[need] == 0:
            donor = "val" if counts["val"] > 0 else other
            counts[donor] -= 1
            counts[need] += 1
    return counts


def split_wells(wells: pd.DataFrame, fractions: Mapping[str, float], seed: int) -> pd.DataFrame:
    """Assign every well to ``train``, ``val`` or ``test``, stratified by treatment.

    Parameters
    ----------
    wells: one row per well with columns ``plate, well, treatment``.
    fractions: ``{"train": f, "val": f, "test": f}``, summing to 1.
    seed: seeds the shuffle of wells within each treatment.

    Returns
    -------
    ``plate, well, treatment, split`` one row per well, sorted by plate and well.

    Raises
    ------
    InputError: a well is listed twice, or a treatment has fewer than two wells and so
        cannot appear in both train and test (the message names it and its well count).
    """
    fractions = check_fractions(fractions)
    missing = {"plate", "well", "treatment"} - set(wells.columns)
    if missing:
        raise InputError(f"well table lacks column(s) {', '.join(sorted(missing))}")
    table = wells[["plate", "well", "treatment"]].astype(str).sort_values(["plate", "well"])
    duplicated = table.duplicated(["plate", "well"], keep=False)
    if duplicated.any():
        first = table[duplicated].iloc[0]
        raise InputError(f"well {first.plate}/{first.well} is listed more than once")
    table = table.reset_index(drop=True)
    sizes = table.groupby("treatment").size()
    too_small = sizes[sizes < 2]
    if len(too_small):
        listed = ", ".join(f"{name!r} ({n} well)" for name, n in too_small.items())
        raise InputError(
            f"treatment(s) {listed} cannot appear in both train and test: "
            "every treatment needs at least 2 wells"
        )

    rng = np.random.default_rng(seed)
    split = pd.Series("", index=table.index, dtype=object)
    for treatment in sorted(sizes.index):
        rows = table.index[table["treatment"] == treatment].to_numpy()
        rows = rows[rng.permutation(len(rows))]
        counts = split_counts(len(rows), fractions)
        start = 0
        for name in SPLITS:
            split[rows[start : start + counts[name]]] = name
            start += counts[name]
        if fractions["val"] > 0 and counts["val"] == 0:
            log.warning(
                "treatment %r has only %d wells: none goes to validation; validation "
                "accuracy is measured on the other treatments",
                treatment,
                len(rows),
            )
    table["split"] = split
    return table
