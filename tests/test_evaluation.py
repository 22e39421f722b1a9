"""Phenotypic activity (copairs mAP) at the well and single-cell level."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from gradcamo.aggregate import read_profile_tables, well_profiles
from gradcamo.errors import InputError
from gradcamo.evaluation import (
    ACTIVITY_COLUMNS,
    activity_table,
    phenotypic_activity,
    sample_per_treatment,
)
from gradcamo.sphering import sphere_profiles
from synthetic_profiles import CONTROL, write_profiles


@pytest.fixture(scope="module")
def sphered(tmp_path_factory):
    cells, _ = read_profile_tables(write_profiles(tmp_path_factory.mktemp("eval")))
    wells = sphere_profiles(well_profiles(cells), CONTROL, what="wells")
    return wells, sphere_profiles(cells, CONTROL, what="cells")


def _by_treatment(table):
    return table.set_index("treatment")


def test_map_is_higher_for_a_treatment_with_an_effect(sphered):
    wells, _ = sphered
    features = wells.filter(like="emb_").to_numpy()
    result = _by_treatment(phenotypic_activity(wells, features, CONTROL, null_size=2000))
    assert list(result.reset_index().columns) == ACTIVITY_COLUMNS
    active, inert = result.loc["ACTIVE"], result.loc["INERT"]
    assert active.mean_average_precision > inert.mean_average_precision
    assert active.mean_average_precision == pytest.approx(1.0)
    assert active.n_profiles == 4 and inert.n_profiles == 4 and active.n_control_profiles == 5
    assert 0 < active.p_value < inert.p_value <= 1
    assert active.corrected_p_value >= active.p_value


def test_treatment_with_one_well_gets_nan(sphered, caplog):
    wells, _ = sphered
    result = _by_treatment(
        phenotypic_activity(wells, wells.filter(like="emb_").to_numpy(), CONTROL, null_size=200)
    )
    single = result.loc["SINGLE"]
    assert single.n_profiles == 1 and np.isnan(single.mean_average_precision)
    assert pd.isna(single.below_corrected_p)
    assert "'SINGLE' has 1 profile(s)" in caplog.text


def test_no_control_is_refused(sphered):
    wells, _ = sphered
    treated = wells[wells.Metadata_Treatment != CONTROL]
    with pytest.raises(InputError, match="no profile of the control treatment 'DMSO'"):
        phenotypic_activity(treated, treated.filter(like="emb_").to_numpy(), CONTROL)
    with pytest.raises(InputError, match="metadata rows"):
        phenotypic_activity(wells, np.zeros((2, 3)), CONTROL)


def test_activity_table_levels_and_gradcamo_subsets(sphered):
    wells, cells = sphered
    table = activity_table(
        wells, cells, CONTROL, gradcamo_threshold=0.5, max_cells_per_treatment=20, null_size=500, seed=0
    )
    groups = table[["level", "split", "subset"]].drop_duplicates().apply(tuple, axis=1).tolist()
    assert groups == [
        ("well", "all", "all"),
        ("well", "test", "all"),
        ("cell", "test", "all"),
        ("cell", "test", "gradcamo_above"),
        ("cell", "test", "gradcamo_below"),
    ]
    assert (table.groupby(["level", "split", "subset"]).size() == 3).all()  # ACTIVE INERT SINGLE
    assert (table["gradcamo_threshold"] == 0.5).all()
    cell = table[table.level == "cell"].set_index(["subset", "treatment"])
    # Subsampled to 20 cells per treatment; above + below never exceed all (NaN in neither).
    assert cell.loc[("all", "ACTIVE"), "n_profiles"] == 20
    test_active = cells[(cells.Metadata_Split == "test") & (cells.Metadata_Treatment == "ACTIVE")]
    scores = test_active.Metadata_GradCAMO
    assert cell.loc[("gradcamo_above", "ACTIVE"), "n_profiles"] == min(20, int((scores > 0.5).sum()))
    assert cell.loc[("gradcamo_below", "ACTIVE"), "n_profiles"] == min(20, int((scores <= 0.5).sum()))
    assert (
        cell.loc[("all", "ACTIVE"), "mean_average_precision"]
        > cell.loc[("all", "INERT"), "mean_average_precision"]
    )
    # Test wells: one well per treatment and plate -> ACTIVE has 2, SINGLE 1 (NaN).
    test_wells = table[(table.level == "well") & (table.split == "test")].set_index("treatment")
    assert test_wells.loc["ACTIVE", "n_profiles"] == 2
    assert np.isnan(test_wells.loc["SINGLE", "mean_average_precision"])
    valid = table["mean_average_precision"].dropna()
    assert valid.between(0, 1).all() and table["p_value"].dropna().between(0, 1).all()


def test_selection_without_controls_gives_nan_rows(sphered):
    wells, cells = sphered
    no_test_controls = cells[~((cells.Metadata_Split == "test") & (cells.Metadata_Treatment == CONTROL))]
    table = activity_table(wells, no_test_controls, CONTROL, null_size=200)
    cell = table[table.level == "cell"]
    assert cell["mean_average_precision"].isna().all()
    assert (cell["n_control_profiles"] == 0).all() and (cell["n_profiles"] > 0).any()
    assert table[table.level == "well"]["mean_average_precision"].notna().any()


def test_sample_per_treatment_caps_each_group():
    table = pd.DataFrame({"Metadata_Treatment": ["a"] * 10 + ["b"] * 3, "x": range(13)})
    sampled = sample_per_treatment(table, 4, seed=1)
    assert sampled.Metadata_Treatment.value_counts().to_dict() == {"a": 4, "b": 3}
    assert sampled.index.is_monotonic_increasing
    assert sample_per_treatment(table, None).equals(table)
