"""The audit's run-level numbers: accuracies by input, Spearman, the background leak check,
and the report's headline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from gradcamo.audit_summary import (
    audit_statistics,
    background_leak,
    gradcamo_reliance_correlation,
    input_accuracies,
)
from gradcamo.headline import headline

TREATMENTS = ["DMSO", "A", "B"]


def audited_cells(n_per_well=20, leak=0.0, seed=0) -> pd.DataFrame:
    """Cells of 3 treatments x 4 wells (2 train, 1 val, 1 test each); background means with a
    treatment offset of ``leak``; a model that is right from the cell, wrong from context."""
    rng = np.random.default_rng(seed)
    rows = []
    for t, treatment in enumerate(TREATMENTS):
        for w, split in enumerate(["train", "train", "val", "test"]):
            n = n_per_well
            reliance = rng.uniform(0, 1, n)
            rows.append(
                pd.DataFrame(
                    {
                        "Metadata_Well": f"{treatment}{w}",
                        "Metadata_Treatment": treatment,
                        "Metadata_Split": split,
                        "Metadata_Predicted": treatment,
                        "Metadata_PredictedFromCell": treatment,
                        "Metadata_PredictedFromContext": TREATMENTS[(t + 1) % 3],
                        "Metadata_CellReliance": reliance,
                        "Metadata_ContextReliance": rng.uniform(-0.1, 0.1, n),
                        "Metadata_GradCAMO": np.clip(reliance + rng.normal(0, 0.1, n), 0, 1),
                        **{
                            f"Metadata_BackgroundMean_{c}": rng.normal(0.1 + leak * t, 0.01, n)
                            for c in ("DNA", "ER")
                        },
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


def test_input_accuracies_count_each_input():
    cells = audited_cells()
    acc = input_accuracies(cells)
    assert acc["full"] == 1.0 and acc["cell_only"] == 1.0 and acc["context_only"] == 0.0
    assert acc["n_cells"] == len(cells)
    assert acc["cell_reliance"] == pytest.approx(cells.Metadata_CellReliance.mean())


def test_spearman_ranks_gradcamo_with_reliance():
    cells = audited_cells()
    assert gradcamo_reliance_correlation(cells) > 0.8
    shuffled = cells.assign(Metadata_GradCAMO=np.random.default_rng(1).permutation(cells.Metadata_GradCAMO))
    assert abs(gradcamo_reliance_correlation(shuffled)) < 0.2
    assert gradcamo_reliance_correlation(cells.iloc[:2]) is None


def test_background_leak_finds_a_planted_shortcut_and_not_an_absent_one():
    clean = background_leak(audited_cells(leak=0.0))
    leaky = background_leak(audited_cells(leak=0.05))
    assert clean["chance"] == pytest.approx(1 / 3) and clean["features"] == ["DNA", "ER"]
    assert clean["n_train"] == 120 and clean["n_held_out"] == 60
    assert clean["accuracy"] < 1 / 3 + 0.2
    assert leaky["accuracy"] > 0.95
    one = audited_cells()
    one = one[(one.Metadata_Split != "train") | (one.Metadata_Treatment == "A")]
    assert background_leak(one)["accuracy"] is None


def test_audit_statistics_and_headline():
    cells = audited_cells()
    audit = audit_statistics(cells)
    assert set(audit["by_split"]) == {"train", "val", "test"}
    assert set(audit["by_treatment"]) == set(TREATMENTS)
    assert audit["by_split"]["test"]["cell_only"] == 1.0
    assert audit_statistics(cells.assign(Metadata_CellReliance=np.nan)) is None
    summary = {
        "accuracy": {"test": {"accuracy": 1.0, "chance_level": 1 / 3}},
        "gradcamo_by_split": {
            "test": {"threshold": 0.5, "share_above": 0.5, "shuffled": {"mean": 0.3, "share_above": 0.2}}
        },
        "audit": audit,
    }
    answer = headline(summary)
    assert answer["cell_only"] == 1.0 and answer["context_only"] == 0.0
    assert answer["share_above"] == 0.5 and answer["share_above_shuffled"] == 0.2
    assert "mostly from the cell" in answer["verdict"]
    audit["by_split"]["test"].update(cell_only=0.3, context_only=1.0)
    assert "shortcut" in headline(summary)["verdict"]
    assert "unchecked" in headline({"accuracy": {}})["verdict"]


def test_headline_reads_per_class_and_the_model_checks():
    summary = {
        "accuracy": {"test": {"accuracy": 0.9, "chance_level": 0.5}},
        "gradcamo_by_split": {
            "test": {
                "threshold": 0.5,
                "share_above": 0.4,
                "n_scored": 30,
                "shuffled": {"share_above": 0.2},
                "undefined": {"no_attention": 0, "baseline_is_class": 8, "low_evidence": 2},
            }
        },
        "gradcamo_by_predicted_class": {
            "DMSO": {
                "n_scored": 5,
                "share_above": 0.2,
                "shuffled": {"share_above": 0.2},
                "undefined": {"baseline_is_class": 8, "low_evidence": 1},
            },
            "drug": {
                "n_scored": 25,
                "share_above": 0.44,
                "shuffled": {"share_above": 0.2},
                "undefined": {"low_evidence": 1},
            },
        },
        "checks": {
            "randomisation": {
                "n_cells": 64,
                "trained": {"share_above": 0.3, "mean_gradcamo": 0.4},
                "randomised": {"share_above_range": [0.1, 0.35], "deepest_level": "stem"},
                "within_spread": True,
            },
            "planted": {
                "treatment": "drug",
                "trained": {"accuracy": 0.8, "context_reliance": 0.02, "share_above": 0.4},
                "fine_tuned": {"accuracy": 1.0, "context_reliance": 0.5, "share_above": 0.1},
                "fine_tuned_accuracy_without_markers": 0.3,
                "marker_strength": 0.7,
                "learned": True,
                "caught_by_audit": True,
                "caught_by_gradcamo": False,
            },
        },
    }
    answer = headline(summary)
    assert answer["no_evidence"] == 10 and answer["n_scored"] == 30
    assert [c["predicted"] for c in answer["by_class"]] == ["DMSO", "drug"]
    assert answer["by_class"][0]["no_evidence"] == 9 and answer["by_class"][0]["baseline_is_class"] == 8
    assert answer["randomisation"]["warning"] and "WARNING" in answer["randomisation"]["line"]
    assert "Caught by the audit." in answer["planted"]["line"]
    assert "strength +0.70" in answer["planted"]["line"]
    planted = summary["checks"]["planted"]
    planted.update(learned=False, marker_strength=0.0, caught_by_audit=None, caught_by_gradcamo=None)
    assert "inconclusive" in headline(summary)["planted"]["line"]
