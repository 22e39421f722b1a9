"""The validation studies' own pieces (gradcamo.studies; the studies' workflow is
tests/test_studies.py): the cell-context stores and the shortcut-free counterparts they
derive, and the tables they write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from gradcamo import crops
from gradcamo.config import load_config
from gradcamo.store import CropStore
from gradcamo.studies import attribution, design, evidence, penalty, variants
from test_crops import CHANNELS, CROP, METADATA, PLATE_SCOPE, cube_labels, write_site

REPO = Path(__file__).resolve().parents[1]


def test_cell_context_store_equals_the_crop_stage_with_context_cell(tmp_path):
    sites = [write_site(tmp_path, "site1", cube_labels([(3, 5, 5), (4, 12, 14), (5, 12, 17)]), seed=1)]
    bounds = np.array([[100.0, 4000.0]] * 5)
    fill = np.random.default_rng(0).normal(0, 0.05, (50, 5)).astype(np.float32)
    common = dict(normalization=PLATE_SCOPE, bounds=bounds, cell_margin=1, seed=3)
    crops.write_well_store(tmp_path / "full", sites, METADATA, CHANNELS, CROP, **common)
    crops.write_well_store(
        tmp_path / "cell", sites, METADATA, CHANNELS, CROP, **common, context="cell", context_fill=fill
    )
    derived = variants.cell_context_store(tmp_path / "full", tmp_path / "derived", fill, 1, 3)
    expected, got = CropStore.open(tmp_path / "cell"), CropStore.open(derived)
    np.testing.assert_array_equal(got.images, expected.images)
    np.testing.assert_array_equal(got.masks, expected.masks)
    assert not np.array_equal(got.images, CropStore.open(tmp_path / "full").images)


def test_separation_is_in_units_of_the_seeds_spread():
    rows = []
    for seed, (honest, cheat) in enumerate([(0.5, 0.1), (0.6, 0.2), (0.7, 0.3)]):
        rows += [
            {
                "method": "layercam",
                "layer": "_blocks.0",
                "kind": "clean",
                "seed": seed,
                "share_above_0.5": honest,
            },
            {
                "method": "layercam",
                "layer": "_blocks.0",
                "kind": "confounded",
                "seed": seed,
                "share_above_0.5": cheat,
            },
        ]
    separation = attribution.separation(pd.DataFrame(rows), "share_above_0.5", "confounded", "clean")
    assert separation[("layercam", "_blocks.0")] == pytest.approx(0.4 / 0.1)


def test_shortcut_free_counterparts_are_the_workflows_crops_of_the_same_cells(mini_run, tmp_path):
    """The penalty study crops the clean z-stacks with the confounded run's labels and
    normalisation. Given the run's own images, that path must give the run's crop store."""
    split = pd.read_csv(mini_run / "results/split/wells.tsv", sep="\t", dtype=str)
    test = split[split.split == "test"].head(1)
    config = load_config(mini_run / "config" / "config.yaml")
    clean_sheet = pd.read_csv(REPO / "resources" / "mini" / "samples.tsv", sep="\t")
    clean_sheet["image"] = [str(REPO / "resources" / "mini" / p) for p in clean_sheet.image]
    paths = variants.counterpart_stores(mini_run, clean_sheet, test, config, tmp_path)
    (plate, well), path = next(iter(paths.items()))
    got, expected = CropStore.open(path), CropStore.open(mini_run / "results/crops" / plate / well)
    assert len(got) == len(expected) > 0
    np.testing.assert_array_equal(got.images, expected.images)
    np.testing.assert_array_equal(got.masks, expected.masks)
    pd.testing.assert_frame_equal(got.cells, expected.cells)


def test_penalty_summary_gives_each_setting_its_means_seeds_and_clean_cost():
    rows = []
    for seed, (share, clean) in enumerate([(0.2, 0.60), (0.4, 0.64)]):
        rows += [
            {"setting": "weight 1", "seed": seed, "variant": "confounded", "test_accuracy": 0.9}
            | {
                column: share
                for column in (
                    "share_above_0.5_input_x_gradient",
                    "share_above_0.5_layercam_blocks.0",
                    "share_above_0.5_integrated_gradients",
                )
            }
            | {"cell_reliance": 0.3, "context_reliance": 0.1, "shortcut_free_accuracy": 0.7},
            {"setting": "weight 1", "seed": seed, "variant": "clean", "test_accuracy": clean},
        ]
    rows.append({"setting": "weight 0", "seed": 0, "variant": "clean", "test_accuracy": 0.65})
    lines = penalty.summary_markdown(pd.DataFrame(rows), order=["weight 0", "weight 1"]).splitlines()
    weight0, weight1 = lines[2], lines[3]  # in the study's order of settings, not the rows'
    assert weight0.startswith("| weight 0 |") and weight0.endswith("| 0.65 | 0 / 1 |")
    assert weight1.startswith("| weight 1 | 0.30±0.14 | 0.30±0.14 | 0.30±0.14 | 0.30±0.00 |")
    assert weight1.endswith("| 0.62±0.03 | 2 / 2 |")


def _confounded_row(setting, seed, share, reliance, shortcut_free):
    return {
        "setting": setting,
        "seed": seed,
        "variant": "confounded",
        "share_above_0.5_integrated_gradients": share,
        "cell_reliance": reliance,
        "shortcut_free_accuracy": shortcut_free,
        "test_accuracy": 0.9,
    }


def test_penalty_study_judges_each_setting_against_weight_0_on_the_same_seeds():
    clean = {"weight 0": [0.60, 0.50], "weight 1": [0.59, 0.49], "weight 10": [0.40, 0.30]}
    rows = [
        row
        for seed in (0, 1)
        for row in (
            _confounded_row("weight 0", seed, 0.05 + 0.1 * seed, 0.15 + 0.1 * seed, 0.5),
            _confounded_row("weight 1", seed, 0.30 + 0.1 * seed, 0.40 + 0.1 * seed, 0.6 + 0.1 * seed),
            _confounded_row("weight 10", seed, 0.90, 0.20, 0.3),
        )
    ]
    rows += [
        {"setting": setting, "seed": seed, "variant": "clean", "test_accuracy": accuracy}
        for setting, accuracies in clean.items()
        for seed, accuracy in enumerate(accuracies)
    ]
    # a seed weight 0 lacks is not compared
    rows.append(_confounded_row("weight 1", 2, 0.9, 0.9, 0.9))
    deltas = penalty.against_weight_0(pd.DataFrame(rows)).set_index(["setting", "seed"])
    assert deltas.loc[("weight 1", 0), "share_above_0.5_integrated_gradients"] == pytest.approx(0.25)
    assert deltas.loc[("weight 1", 1), "cell_reliance"] == pytest.approx(0.25)
    assert deltas.loc[("weight 1", 1), "shortcut_free_accuracy"] == pytest.approx(0.2)
    assert deltas.loc[("weight 1", 0), "clean_cost"] == pytest.approx(0.01)
    assert np.isnan(deltas.loc[("weight 1", 2), "cell_reliance"])
    assert deltas.loc[("weight 10", 1), "clean_cost"] == pytest.approx(0.2)
    lines = penalty.summary_markdown(pd.DataFrame(rows)).splitlines()
    weight1 = next(line for line in lines if line.startswith("| weight 1 | 0.250"))
    assert weight1.endswith("| 0.010±0.000 | 2 | yes |")
    # a high share of a model that lost its cell reliance and its accuracy does not pass
    weight10 = next(line for line in lines if line.startswith("| weight 10 | 0.800"))
    assert weight10.endswith("| no |")


def test_penalty_study_measures_the_bar_on_the_reference_models():
    rows = [
        _confounded_row("weight 0", 0, 0.05, 0.10, 0.50),
        _confounded_row("weight 0", 1, 0.05, 0.20, 0.60),
        {"setting": "weight 0", "seed": 0, "variant": "clean", "test_accuracy": 0.70},
        {"setting": "weight 0", "seed": 1, "variant": "clean", "test_accuracy": 0.60},
    ]
    cell_models = pd.DataFrame(
        {
            "kind": "cell",
            "seed": [0, 1, 2],  # weight 0 lacks seed 2: not compared
            "test_accuracy": [0.62, 0.56, 0.9],
            "cell_reliance": [0.40, 0.30, 0.9],
            "context_reliance": [0.01, 0.03, 0.0],
        }
    )
    reference = penalty.reference_against_weight_0(pd.DataFrame(rows), cell_models).set_index("seed")
    assert list(reference.index) == [0, 1]
    assert reference.loc[0, "cell_reliance"] == pytest.approx(0.30)
    assert reference.loc[1, "shortcut_free_accuracy"] == pytest.approx(-0.04)  # 0.56 against 0.60
    assert reference.loc[0, "clean_cost"] == pytest.approx(0.08)
    clean_models = pd.DataFrame(
        {
            "kind": "clean",
            "seed": [0, 1],
            "test_accuracy": [0.70, 0.60],
            "cell_reliance": [0.25, 0.30],
            "context_reliance": [0.1, 0.1],
        }
    )
    lines = penalty.summary_markdown(
        pd.DataFrame(rows), {"cell": cell_models, "clean": clean_models}
    ).splitlines()
    # the clean model, as the weight 0 clean rows are, costs nothing on the clean variant
    assert lines[-2] == (
        "| no shortcut, neighbours kept (the clean model) "
        "| +0.125±0.035 | 0.100 | +0.100±0.141 | 0.000±0.000 | 2 |"
    )
    assert (
        lines[-1]
        == "| no context (`crops.context: cell`) | +0.200±0.141 | 0.020 | +0.040±0.113 | 0.060±0.028 | 2 |"
    )
    # without the attribution study's models the summary has no such line
    assert not any("no context" in line for line in penalty.summary_markdown(pd.DataFrame(rows)).splitlines())


def test_study_grid_smooths_only_the_input_level_maps():
    rows = design.grid((1.0, 0.65, 0.65))
    smoothed = [(m, label, s) for m, label, s in rows if max(s) > 0]
    assert smoothed and all(label.startswith("input, sigma") for _, label, _ in smoothed)
    assert {m for m, _, _ in smoothed} == {"input_x_gradient", "integrated_gradients"}
    assert ("integrated_gradients", "input", (0.0, 0.0, 0.0)) in rows  # the unsmoothed map too
    assert ("integrated_gradients", "input, sigma 1", pytest.approx((0.65, 1.0, 1.0))) in rows


def test_attribution_summary_puts_the_shuffled_baseline_beside_each_share():
    def row(kind, seed, share, shuffled):
        return {
            "kind": kind,
            "seed": seed,
            "method": "integrated_gradients",
            "layer": "input",
            "mean_gradcamo": 0.4,
            "share_above_0.5": share,
            "enrichment": 5.0,
            "spearman_cell_reliance": 0.5,
            "mean_gradcamo_shuffled": 0.3,
            "share_above_0.5_shuffled": shuffled,
        }

    table = pd.DataFrame(
        [
            row(kind, seed, share + 0.1 * seed, shuffled)
            for kind, share, shuffled in (("clean", 0.3, 0.1), ("confounded", 0.05, 0.0), ("cell", 0.8, 0.6))
            for seed in (0, 1)
        ]
    )
    models = pd.DataFrame(
        {
            "kind": ["clean", "clean"],
            "seed": [0, 1],
            **{
                m: [0.5, 0.5]
                for m in ("test_accuracy", "cell_only_accuracy", "context_only_accuracy")
                + ("cell_reliance", "context_reliance")
            },
        }
    )
    lines = attribution.summary_markdown(table, models).splitlines()
    assert "shuffled baseline" in lines[0] and lines[0].count("|") == lines[1].count("|") == 9
    assert lines[2].startswith(
        "| integrated_gradients | input | 0.35±0.07 / 0.10±0.07 / 0.85±0.07 "
        "| 0.10±0.00 / 0.00±0.00 / 0.60±0.00 |"
    )
    # a table from before the column still prints
    older = attribution.summary_markdown(table.drop(columns="share_above_0.5_shuffled"), models).splitlines()
    assert older[2].startswith(
        "| integrated_gradients | input | 0.35±0.07 / 0.10±0.07 / 0.85±0.07 | – / – / – |"
    )


def test_every_penalty_setting_is_a_train_section_the_schema_accepts():
    """Each default setting of the studies' schema, merged into the mini config's ``train``,
    passes the config schema (unknown keys and out-of-range values are refused there); the
    studies' workflow checks the same at parse time, so a typo in a setting is named before
    any job runs, not hours in."""
    from snakemake.utils import validate

    config = load_config(REPO / ".test" / "config" / "config.yaml")
    schema = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
    studies = yaml.safe_load((REPO / "workflow/studies/schemas/config.schema.yaml").read_text())
    settings = studies["properties"]["penalty"]["properties"]["settings"]["default"]
    assert "weight_0" in settings and settings["weight_0"]["train"] == {}
    for setting in settings.values():
        train = design.setting_train(config["train"], setting["train"], 2)
        validate({**config, "train": train}, schema, set_default=False)
        assert train["seed"] == 2
    with pytest.raises(Exception, match="weigth"):
        typo = {**config["train"], "attention_penalty": {"weigth": 1.0}}
        validate({**config, "train": typo}, schema, set_default=False)


def test_evidence_curve_reads_each_gate_over_the_cells_it_keeps():
    """The min_evidence curve: cells below the gate leave the share, its shuffled baseline and
    the Spearman alike; treated cells are those of the treatments other than the control."""
    rows = []
    for seed in range(2):
        for i in range(40):
            treated = i % 2 == 1
            rows.append(
                {
                    "kind": "clean",
                    "seed": seed,
                    "treatment": "drug" if treated else "DMSO",
                    "predicted": "drug" if treated else "DMSO",
                    # control cells: no evidence, noise scores; treated: evidence, scores on the cell
                    "gradcamo": 0.8 if treated else 0.1 + 0.01 * i,
                    "shuffled": 0.2,
                    "evidence": 0.5 if treated else 0.0,
                    "baseline_is_class": not treated,
                    "cell_reliance": 0.3 + 0.01 * i if treated else -0.01 * i,
                    "context_reliance": 0.0,
                }
            )
    cells = pd.DataFrame(rows)
    curve = evidence.curve(cells, "DMSO", grid=(-1.0, 0.05))
    ungated = curve[curve.min_evidence == -1.0].iloc[0]
    gated = curve[curve.min_evidence == 0.05].iloc[0]
    assert ungated.kept == 1.0 and ungated.share_above == 0.5
    assert gated.kept == 0.5 and gated.share_above == 1.0 and gated.shuffled_above == 0.0
    assert gated.treated_share_above == 1.0 and gated.gap == 1.0
    assert len(curve) == 4
