"""Single-cell table, well profiles, sphering (vs pycytominer) and the run summary."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from gradcamo.aggregate import PROFILE_ROW, feature_columns, read_profile_tables, well_profiles
from gradcamo.errors import InputError
from gradcamo.evaluation import activity_table
from gradcamo.sphering import Sphering, fit_sphering, sphere_profiles
from gradcamo.summary import gradcamo_by, gradcamo_statistics, gradcamo_with_baseline, summary
from pycytominer import normalize
from synthetic_profiles import CONTROL, WELLS, feature_names, write_profiles


@pytest.fixture(scope="module")
def profile_paths(tmp_path_factory):
    return write_profiles(tmp_path_factory.mktemp("agg"))


@pytest.fixture(scope="module")
def cells_and_empty(profile_paths):
    return read_profile_tables(profile_paths)


# ----------------------------------------------------------------------------- reading


def test_read_profile_tables_stacks_every_cell(cells_and_empty, profile_paths):
    cells, empty = cells_and_empty
    assert len(cells) == sum(w[-1] for w in WELLS)
    assert empty == [str(p) for p, w in zip(profile_paths, WELLS) if w[-1] == 0]
    assert feature_columns(cells) == feature_names()
    assert all(cells[c].dtype == np.float32 for c in feature_names())
    # Metadata first; the row index in each well restarts at 0.
    assert cells.columns[0].startswith("Metadata_") and cells.columns[-1] == feature_names()[-1]
    first_well = cells[(cells.Metadata_Plate == "P1") & (cells.Metadata_Well == "B02")]
    assert list(first_well[PROFILE_ROW]) == list(range(WELLS[0][-1]))
    assert cells["Metadata_GradCAMO"].isna().any()
    original = pd.read_parquet(profile_paths[0])
    np.testing.assert_array_equal(
        first_well[feature_names()].to_numpy(), original[feature_names()].to_numpy()
    )


def test_read_refuses_bad_tables(tmp_path, profile_paths):
    good = pd.read_parquet(profile_paths[0])
    missing = tmp_path / "missing_column.parquet"
    good.drop(columns="Metadata_Treatment").to_parquet(missing)
    with pytest.raises(InputError, match="missing_column.parquet.*Metadata_Treatment"):
        read_profile_tables([profile_paths[0], missing])

    other = tmp_path / "other_features.parquet"
    good.rename(columns={"emb_0003": "emb_9999"}).to_parquet(other)
    with pytest.raises(InputError, match="other_features.parquet: feature columns differ"):
        read_profile_tables([profile_paths[0], other])

    nan = tmp_path / "nan.parquet"
    broken = good.copy()
    broken.loc[4, "emb_0002"] = np.nan
    broken.to_parquet(nan)
    with pytest.raises(InputError, match="nan.parquet: feature 'emb_0002' is not finite in row 4"):
        read_profile_tables([nan])

    empty = tmp_path / "empty.parquet"
    good.iloc[:0].to_parquet(empty)
    with pytest.raises(InputError, match="all 1 profile tables are empty"):
        read_profile_tables([empty])

    with pytest.raises(InputError, match="does not exist"):
        read_profile_tables([tmp_path / "nope.parquet"])


# ----------------------------------------------------------------------------- wells


def test_well_profiles_are_medians_per_well(cells_and_empty):
    cells, _ = cells_and_empty
    wells = well_profiles(cells, threshold=0.5)
    non_empty = [w for w in WELLS if w[-1]]
    assert len(wells) == len(non_empty)
    for column in (
        "Metadata_Treatment",
        "Metadata_Split",
        "Metadata_Concentration",
        "Metadata_Control",
        "Metadata_Cell_Count",
        "Metadata_GradCAMO_Median",
        "Metadata_GradCAMO_Above",
    ):
        assert column in wells
    # Per-cell metadata does not leak into well profiles.
    for column in ("Metadata_ObjectNumber", "Metadata_Centroid_Z", PROFILE_ROW):
        assert column not in wells
    assert feature_columns(wells) == feature_names()
    row = wells[(wells.Metadata_Plate == "P2") & (wells.Metadata_Well == "C03")].iloc[0]
    members = cells[(cells.Metadata_Plate == "P2") & (cells.Metadata_Well == "C03")]
    assert row.Metadata_Treatment == "ACTIVE" and row.Metadata_Split == "test"
    assert row.Metadata_Cell_Count == len(members) == 12
    np.testing.assert_allclose(
        row[feature_names()].to_numpy(float), np.median(members[feature_names()], axis=0), rtol=1e-6
    )
    scores = members.Metadata_GradCAMO.dropna()
    assert row.Metadata_GradCAMO_Above == pytest.approx((scores > 0.5).mean())
    assert wells["Metadata_GradCAMO_Above"].dropna().between(0, 1).all()


# ----------------------------------------------------------------------------- sphering


def _pycytominer_spherize(table, method, epsilon):
    features = feature_columns(table)
    meta = [c for c in table.columns if c not in features]
    return normalize(
        table.reset_index(drop=True),
        features=features,
        meta_features=meta,
        samples=f"Metadata_Treatment == '{CONTROL}'",
        method="spherize",
        spherize_method=method,
        spherize_center=True,
        spherize_epsilon=epsilon,
    )[features].to_numpy()


@pytest.mark.parametrize("method", ["ZCA", "ZCA-cor"])
@pytest.mark.parametrize("level", ["wells", "cells"])
def test_sphering_matches_pycytominer(cells_and_empty, method, level):
    """Wells: 5 control wells < 24 features (null space); cells: 74 control cells > 24."""
    cells, _ = cells_and_empty
    table = well_profiles(cells) if level == "wells" else cells
    table = table[[c for c in table.columns if c in ("Metadata_Treatment",)] + feature_names()]
    ours = sphere_profiles(table, CONTROL, 1e-6, method, level)
    theirs = _pycytominer_spherize(table, method, 1e-6)
    assert list(ours.columns) == list(table.columns)
    scale = np.abs(theirs).max()
    np.testing.assert_allclose(ours[feature_names()].to_numpy(), theirs, atol=1e-5 * scale)


def test_sphering_whitens_the_controls():
    rng = np.random.default_rng(1)
    mixing = rng.normal(size=(10, 10))
    controls = rng.normal(size=(500, 10)) @ mixing + 5
    sphered = fit_sphering(controls, epsilon=1e-9).transform(controls)
    np.testing.assert_allclose(sphered.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(np.cov(sphered, rowvar=False), np.eye(10), atol=1e-4)


def test_rank_deficient_controls_stay_finite():
    """A feature constant in the controls (n > D) is scaled like the weakest direction,
    not by 1 / epsilon (pycytominer refuses such data)."""
    rng = np.random.default_rng(2)
    controls = rng.normal(size=(200, 6))
    controls[:, 3] = 7.0
    sphering = fit_sphering(controls, epsilon=1e-6)
    assert sphering.rank == 5
    treated = controls[:5].copy()
    treated[:, 3] = 8.0
    out = sphering.transform(treated)
    assert np.isfinite(out).all() and np.abs(out).max() < 100


def test_sphering_refuses_bad_controls(cells_and_empty):
    cells, _ = cells_and_empty
    wells = well_profiles(cells)
    with pytest.raises(InputError, match="aggregate.control.*'PBS'.*'ACTIVE'"):
        sphere_profiles(wells, "PBS", what="wells")
    one_control = wells[~((wells.Metadata_Treatment == CONTROL) & (wells.Metadata_Well != "B02"))]
    one_control = one_control[
        ~((one_control.Metadata_Treatment == CONTROL) & (one_control.Metadata_Plate == "P2"))
    ]
    with pytest.raises(InputError, match="at least 2 control profiles.*control wells of 'DMSO': 1"):
        sphere_profiles(one_control, CONTROL, what="wells")
    constant = wells.copy()
    constant["emb_0001"] = 1.0
    with pytest.raises(InputError, match="ZCA-cor: 1 feature"):
        sphere_profiles(constant, CONTROL, method="ZCA-cor")
    with pytest.raises(InputError, match="aggregate.sphering_method"):
        fit_sphering(np.ones((3, 2)), method="PCA")


# ----------------------------------------------------------------------------- summary


def test_gradcamo_statistics_exclude_nan():
    stats = gradcamo_statistics(np.array([0.2, 0.6, np.nan, 0.9, np.nan]), threshold=0.5)
    assert stats["n_cells"] == 5 and stats["n_scored"] == 3 and stats["n_nan"] == 2
    assert stats["n_above"] == 2 and stats["share_above"] == pytest.approx(2 / 3)
    assert stats["mean"] == pytest.approx(np.mean([0.2, 0.6, 0.9]))
    assert stats["median"] == pytest.approx(0.6)
    assert gradcamo_statistics(np.array([np.nan]))["share_above"] is None


def test_summary_is_complete_json(cells_and_empty):
    cells, empty = cells_and_empty
    wells = well_profiles(cells)
    sphered = sphere_profiles(wells, CONTROL)
    activity = activity_table(sphered, sphere_profiles(cells, CONTROL), CONTROL, null_size=200)
    # The layout gradcamo.training writes: classes, best_epoch, epochs_run, splits.
    metrics = {
        "classes": ["ACTIVE", "DMSO", "INERT", "SINGLE"],
        "best_epoch": 3,
        "epochs_run": 5,
        "splits": {
            "train": {
                "n_cells": 51,
                "accuracy": 0.9,
                "balanced_accuracy": 0.88,
                "confusion_matrix": {"labels": ["A", "B"], "counts": [[1, 0], [0, 1]]},
                "chance_level": 0.25,
                "n_wells": 5,
            },
            "test": {
                "n_cells": 81,
                "accuracy": 0.7,
                "balanced_accuracy": None,
                "chance_level": 0.25,
                "n_wells": 7,
            },
        },
    }
    info = summary(cells, wells, empty, metrics, activity, CONTROL, 0.5)
    text = json.dumps(info, allow_nan=False)  # NaN written as null, never invalid JSON
    info = json.loads(text)
    assert info["cells"] == len(cells) and info["wells"] == len(wells) == 14
    assert info["empty_wells"] == empty and len(empty) == 1
    assert info["control_wells"] == 5
    assert info["accuracy"] == {
        "train": {
            "n_cells": 51,
            "accuracy": 0.9,
            "balanced_accuracy": 0.88,
            "chance_level": 0.25,
            "n_wells": 5,
        },
        "test": {
            "n_cells": 81,
            "accuracy": 0.7,
            "balanced_accuracy": None,
            "chance_level": 0.25,
            "n_wells": 7,
        },
    }
    assert info["training"] == {"best_epoch": 3, "epochs_run": 5}
    scores = cells.Metadata_GradCAMO
    assert info["gradcamo"]["n_nan"] == int(scores.isna().sum()) > 0
    assert info["gradcamo"]["share_above"] == pytest.approx((scores.dropna() > 0.5).mean())
    assert set(info["gradcamo_by_split"]) == {"train", "val", "test"}
    # a table without the shuffled baseline's column (written before it): no baseline, no error
    assert info["gradcamo"]["shuffled"] == {"mean": None, "share_above": None}
    well_map = info["mean_average_precision"]["well"]["all/all"]
    assert set(well_map) == {"ACTIVE", "INERT", "SINGLE"}
    assert well_map["SINGLE"]["mean_average_precision"] is None
    assert set(info["mean_average_precision"]["cell"]) == {
        "test/all",
        "test/gradcamo_above",
        "test/gradcamo_below",
    }


def test_a_fitted_sphering_saves_and_loads_to_the_same_transform(tmp_path):
    rng = np.random.default_rng(0)
    controls = rng.normal(size=(40, 6)) @ rng.normal(size=(6, 6))
    fitted = fit_sphering(controls, 1e-6, "ZCA-cor")
    fitted.save(tmp_path / "cell_sphering.npz")
    loaded = Sphering.load(tmp_path / "cell_sphering.npz")
    assert (loaded.method, loaded.n_fit, loaded.rank) == (fitted.method, fitted.n_fit, fitted.rank)
    x = rng.normal(size=(5, 6))
    np.testing.assert_array_equal(loaded.transform(x), fitted.transform(x))


def test_gradcamo_statistics_carry_the_shuffled_baseline():
    cells = pd.DataFrame(
        {
            "Metadata_GradCAMO": [0.9, 0.8, 0.2, np.nan],
            "Metadata_GradCAMO_Shuffled": [0.6, 0.1, 0.2, 0.3],
        }
    )
    stats = gradcamo_with_baseline(cells, 0.5)
    assert stats["share_above"] == pytest.approx(2 / 3) and stats["n_nan"] == 1
    # over the three scored cells
    assert stats["shuffled"] == {"mean": pytest.approx(0.3), "share_above": pytest.approx(1 / 3)}


def test_gradcamo_is_read_over_cells_with_evidence_per_class_and_treatment():
    """Cells without a score leave the share and its shuffled baseline alike; the summary
    counts them by reason, per predicted class and per treatment of the test cells."""
    cells = pd.DataFrame(
        {
            "Metadata_Split": ["test"] * 6 + ["train"],
            "Metadata_Treatment": ["DMSO", "DMSO", "DMSO", "drug", "drug", "drug", "drug"],
            "Metadata_Predicted": ["DMSO", "DMSO", "drug", "drug", "drug", "DMSO", "drug"],
            "Metadata_GradCAMO": [np.nan, np.nan, 0.2, 0.9, 0.8, 0.6, 0.1],
            "Metadata_GradCAMO_Shuffled": [0.9, 0.9, 0.1, 0.2, 0.7, 0.3, 0.9],
            "Metadata_GradCAMO_Undefined": [
                "baseline_is_class",
                "low_evidence",
                None,
                None,
                None,
                None,
                None,
            ],
        }
    )
    stats = gradcamo_with_baseline(cells, 0.5)
    assert stats["n_scored"] == 5 and stats["share_above"] == pytest.approx(3 / 5)
    # the shuffled baseline over the same five cells, not the two without a score
    assert stats["shuffled"]["share_above"] == pytest.approx(2 / 5)
    assert stats["undefined"] == {
        "not_sampled": 0,
        "no_attention": 0,
        "baseline_is_class": 1,
        "low_evidence": 1,
    }
    test = cells[cells.Metadata_Split == "test"]
    by_class = gradcamo_by(test, "Metadata_Predicted", 0.5)
    assert by_class["DMSO"]["n_cells"] == 3 and by_class["DMSO"]["n_scored"] == 1
    assert by_class["DMSO"]["undefined"]["baseline_is_class"] == 1
    assert by_class["drug"]["share_above"] == pytest.approx(2 / 3)
    assert gradcamo_by(test, "Metadata_Treatment", 0.5)["drug"]["share_above"] == 1.0
