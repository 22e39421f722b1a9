"""Well-disjoint, treatment-stratified train / val / test split."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
from gradcamo.errors import InputError
from gradcamo.split import SPLITS, split_counts, split_wells

MINI_FRACTIONS = {"train": 0.5, "val": 0.25, "test": 0.25}


def mini_wells() -> pd.DataFrame:
    """The mini dataset's layout: 2 plates × 8 wells, 4 treatments × 4 wells."""
    treatments = ["DMSO", "CompoundA", "CompoundB", "CompoundC"]
    rows = []
    for plate in ("P1", "P2"):
        for i, well in enumerate(["B02", "B03", "B04", "B05", "C02", "C03", "C04", "C05"]):
            rows.append({"plate": plate, "well": well, "treatment": treatments[i % 4]})
    return pd.DataFrame(rows)


def test_mini_layout_gives_two_one_one_wells_per_treatment():
    wells = mini_wells()
    table = split_wells(wells, MINI_FRACTIONS, seed=0)
    assert list(table.columns) == ["plate", "well", "treatment", "split"]
    assert len(table) == len(wells)
    assert not table.duplicated(["plate", "well"]).any()
    assert set(table["split"]) == set(SPLITS)
    counts = table.groupby(["treatment", "split"]).size().unstack(fill_value=0)
    for treatment, row in counts.iterrows():
        assert (row["train"], row["val"], row["test"]) == (2, 1, 1), treatment
    # Each well keeps its own treatment.
    merged = table.merge(wells, on=["plate", "well"], suffixes=("", "_sheet"))
    assert (merged["treatment"] == merged["treatment_sheet"]).all()


def test_split_is_seeded():
    wells = mini_wells()
    first = split_wells(wells, MINI_FRACTIONS, seed=0)
    again = split_wells(wells.sample(frac=1, random_state=3), MINI_FRACTIONS, seed=0)
    pd.testing.assert_frame_equal(first, again)
    others = [split_wells(wells, MINI_FRACTIONS, seed=s)["split"] for s in range(1, 6)]
    assert any(not other.equals(first["split"]) for other in others)


@pytest.mark.parametrize(
    "fractions",
    [
        MINI_FRACTIONS,
        {"train": 0.8, "val": 0.0, "test": 0.2},
        {"train": 0.1, "val": 0.1, "test": 0.8},
    ],
)
def test_counts_keep_train_and_test_for_every_size(fractions):
    for n in range(2, 40):
        counts = split_counts(n, fractions)
        assert sum(counts.values()) == n
        assert counts["train"] >= 1 and counts["test"] >= 1
        for name in SPLITS:
            # Never further than one well from the exact share, except for the forced minimum.
            assert abs(counts[name] - n * fractions[name]) < 1 + 1e-9 or counts[name] == 1


def test_treatment_with_one_well_is_named():
    wells = pd.concat([mini_wells(), pd.DataFrame([{"plate": "P3", "well": "B02", "treatment": "Lonely"}])])
    with pytest.raises(InputError, match=r"'Lonely' \(1 well\)"):
        split_wells(wells, MINI_FRACTIONS, seed=0)


def test_two_wells_leave_validation_without_the_treatment(caplog):
    wells = mini_wells()
    wells = wells[~((wells.treatment == "CompoundC") & (wells.plate == "P2"))]
    with caplog.at_level(logging.WARNING, logger="gradcamo.split"):
        table = split_wells(wells, MINI_FRACTIONS, seed=0)
    pair = table[table.treatment == "CompoundC"]
    assert sorted(pair["split"]) == ["test", "train"]
    assert "'CompoundC' has only 2 wells" in caplog.text


@pytest.mark.parametrize(
    "fractions, message",
    [
        ({"train": 0.5, "val": 0.5}, "exactly the keys"),
        ({"train": 0.6, "val": 0.3, "test": 0.3}, "sum to 1"),
        ({"train": 1.0, "val": 0.0, "test": 0.0}, "train and test must be > 0"),
        ({"train": 1.2, "val": -0.4, "test": 0.2}, "non-negative"),
    ],
)
def test_bad_fractions_name_the_key(fractions, message):
    with pytest.raises(InputError, match="split.fractions") as err:
        split_wells(mini_wells(), fractions, seed=0)
    assert message in str(err.value)


def test_duplicate_well_is_named():
    wells = pd.concat([mini_wells(), mini_wells().iloc[[3]]])
    with pytest.raises(InputError, match="P1/B05 is listed more than once"):
        split_wells(wells, MINI_FRACTIONS, seed=0)
