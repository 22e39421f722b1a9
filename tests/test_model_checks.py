"""The model checks on a user's screen: model randomisation (cascading re-initialisation) and
the planted-shortcut control's parts (markers, their intensity, fine-tuning, the verdict)."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from gradcamo.context import dilate
from gradcamo.gradcam import GradCamProfiler
from gradcamo.model import build_model
from gradcamo.planted import (
    blob,
    cell_statistics,
    debris_intensity,
    fine_tune,
    in_memory_store,
    plant_markers,
    planted_verdict,
    predicted_classes,
)
from gradcamo.profiles import profile_store, profile_table_of
from gradcamo.randomisation import (
    cascade_levels,
    map_rank_correlation,
    randomisation_table,
    randomisation_verdict,
    randomised_copy,
)

CROP = (8, 16, 16)
CHANNELS = 3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("b0", CHANNELS, 2, CROP).eval()


def crops(n, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(0.2, 0.05, (n, CHANNELS, *CROP)).astype(np.float32)
    masks = np.zeros((n, *CROP), np.uint8)
    masks[:, 2:6, 5:11, 5:11] = 1
    masks[:, :, :, :2] = 2
    images[:, :, 2:6, 5:11, 5:11] += 0.5
    return images, masks


def test_the_cascade_reinitialises_from_the_top_and_only_what_it_names(model):
    levels = cascade_levels(model, 2)
    assert [name for name, _ in levels] == ["classifier", "head", "_blocks.6", "_blocks.5"]
    assert levels[-1][1] == ["_fc", "_conv_head", "_bn1", "_blocks.6", "_blocks.5"]
    full = cascade_levels(model)
    assert [name for name, _ in full][2:] == [f"_blocks.{k}" for k in range(6, -1, -1)] + ["stem"]
    assert set(full[-1][1]) >= {"_conv_stem", "_bn0", "_blocks.0"}
    # A "trained" model: every weight and statistic moved away from its initial value.
    trained = copy.deepcopy(model)
    with torch.no_grad():
        for name, value in trained.state_dict().items():
            if value.is_floating_point():
                value.add_(0.01 * torch.randn_like(value) + 0.01)
    clone = randomised_copy(trained, levels[1][1], seed=3)
    again = randomised_copy(trained, levels[1][1], seed=3)
    before, after, repeat = trained.state_dict(), clone.state_dict(), again.state_dict()
    for key in before:
        changed = not torch.equal(before[key], after[key])
        top = key.startswith(("_fc.", "_conv_head.", "_bn1."))
        # Every re-initialised weight changed; batch-norm counters may stay at 0.
        assert changed == top or (top and "num_batches_tracked" in key), key
        assert torch.equal(after[key], repeat[key]), key  # seeded
    assert not clone.training


def test_map_rank_correlation():
    a = np.arange(24, dtype=float).reshape(1, 2, 3, 4)
    np.testing.assert_allclose(map_rank_correlation(a, a), [1.0])
    np.testing.assert_allclose(map_rank_correlation(a, -a), [-1.0])
    assert np.isnan(map_rank_correlation(a, np.zeros_like(a)))[0]


def test_randomisation_table_scores_the_same_cells_at_every_level(model):
    images, masks = crops(6)
    baseline = np.full(CHANNELS, 0.2, np.float32)
    rows = randomisation_table(
        model,
        lambda m: GradCamProfiler(m, method="integrated_gradients", baseline=baseline, steps=2),
        images,
        masks,
        stages=1,
        seeds=(0, 1),
        batch_size=4,
    )
    assert [(r["level"], r["seed"]) for r in rows] == [
        ("trained", -1),
        ("classifier", 0),
        ("classifier", 1),
        ("head", 0),
        ("head", 1),
        ("_blocks.6", 0),
        ("_blocks.6", 1),
    ]
    assert rows[0]["map_spearman"] == 1.0 and all(r["n_cells"] == 6 for r in rows)
    assert all(0 <= r["shuffled_above"] <= 1 for r in rows)
    # Below the classifier the map changes with the weights.
    assert all(r["map_spearman"] < 0.99 for r in rows if r["depth"] >= 2)
    verdict = randomisation_verdict(rows)
    assert verdict["randomised"]["deepest_level"] == "_blocks.6"
    assert set(verdict["randomised"]["share_above_by_level"]) == {"classifier", "head", "_blocks.6"}
    low, high = verdict["randomised"]["share_above_range"]
    assert verdict["within_spread"] == (rows[0]["share_above"] <= high)


def test_the_verdict_warns_when_the_trained_map_scores_no_higher_than_random_ones():
    def row(depth, share):
        return {
            "depth": depth,
            "level": f"l{depth}",
            "seed": 0,
            "n_cells": 10,
            "share_above": share,
            "shuffled_above": 0.05,
            "mean_gradcamo": share,
            "map_spearman": 0.1,
        }

    # Against the deepest (most randomised) level: a higher share at the classifier level,
    # where the learnt features still stand, does not count.
    assert randomisation_verdict([row(0, 0.30), row(1, 0.35), row(2, 0.12)])["within_spread"] is False
    assert randomisation_verdict([row(0, 0.11), row(1, 0.05), row(2, 0.12)])["within_spread"] is True


def test_markers_lie_in_the_background_away_from_every_cell_at_the_debris_intensity():
    images, masks = crops(5)
    intensity = debris_intensity(images, masks, 99.0, clearance=1)
    free = ~dilate(masks != 0, 1)
    np.testing.assert_allclose(
        intensity, np.percentile(np.moveaxis(images, 1, -1)[free], 99.0, axis=0), rtol=1e-6
    )
    planted, count = plant_markers(images, masks, intensity * 3, 2, (1, 2, 2), 1, seeds=range(5))
    assert (count == 2).all()
    changed = np.any(planted != images, axis=1)
    assert changed.any(axis=(1, 2, 3)).all()
    assert not (changed & dilate(masks != 0, 1)).any()  # never on a cell or its margin
    np.testing.assert_allclose(planted.max(axis=(0, 2, 3, 4)), 3 * intensity, rtol=1e-6)
    again, _ = plant_markers(images, masks, intensity * 3, 2, (1, 2, 2), 1, seeds=range(5))
    np.testing.assert_array_equal(planted, again)  # seeded
    # A crop that is all cell has no room: nothing planted, and it says so.
    full = np.ones_like(masks)
    unchanged, count = plant_markers(images, full, intensity, 2, (1, 2, 2), 1, seeds=range(5))
    assert (count == 0).all() and np.array_equal(unchanged, images)
    assert blob((1, 2, 2)).shape == (3, 5, 5) and blob((1, 2, 2))[1, 2, 2] == 1


def test_fine_tuning_learns_a_planted_marker_and_leaves_the_model_alone(model):
    images, masks = crops(32, seed=1)
    labels = np.arange(32) % 2
    intensity = np.full(CHANNELS, 4.0, np.float32)
    planted = images.copy()
    planted[labels == 1], _ = plant_markers(
        images[labels == 1], masks[labels == 1], intensity, 2, (1, 2, 2), 1, range(16)
    )
    tuned = fine_tune(model, planted, labels, epochs=6, batch_size=8, learning_rate=1e-3, seed=0)
    assert not tuned.training and not model.training
    # The copy's batch-norm statistics are recomputed on the planted crops; the model's stay.
    assert not torch.equal(tuned._bn0.running_mean, model._bn0.running_mean)
    assert torch.equal(model._bn0.running_mean, torch.zeros_like(model._bn0.running_mean))
    assert not torch.equal(tuned._fc.weight, model._fc.weight)
    test_images, test_masks = crops(16, seed=2)
    test_labels = np.arange(16) % 2
    test_planted = test_images.copy()
    test_planted[test_labels == 1], _ = plant_markers(
        test_images[test_labels == 1],
        test_masks[test_labels == 1],
        intensity,
        2,
        (1, 2, 2),
        1,
        range(100, 108),
    )
    with_markers = (predicted_classes(tuned, test_planted, 8) == test_labels).mean()
    without = (predicted_classes(tuned, test_images, 8)[test_labels == 1] == 1).mean()
    assert with_markers >= 0.75 and without <= 0.5  # it reads the marker, and only the marker
    # The audit sees it: on the planted cells the copy's context reliance rises above the
    # original's, and the control's verdict says so.
    fill = np.random.default_rng(5).normal(0.2, 0.05, (500, CHANNELS)).astype(np.float32)
    cells = pd.DataFrame(
        {
            "Metadata_Plate": "P1",
            "Metadata_Well": "B02",
            "Metadata_Site": 1,
            "Metadata_ObjectNumber": np.arange(16),
            "Metadata_Treatment": np.where(test_labels == 1, "b", "a"),
        }
    )
    store = in_memory_store(test_planted, test_masks, cells, ["c0", "c1", "c2"])
    stats = {}
    for name, m in (("trained", model), ("fine_tuned", tuned)):
        profiler = GradCamProfiler(m, method="integrated_gradients", baseline=fill.mean(0), steps=2)
        result = profile_store(profiler, store, "predicted", 8, "cpu", fill=fill, cell_margin=1)
        table = profile_table_of(result, store.cells, "test", ["a", "b"], store.channels)
        stats[name] = cell_statistics(table[test_labels == 1], 0.5)
    verdict = planted_verdict(stats["trained"], stats["fine_tuned"], without)
    assert verdict["learned"] and verdict["caught_by_audit"], (stats, verdict)


def test_planted_verdict():
    table = pd.DataFrame(
        {
            "Metadata_Treatment": ["a", "a", "a", "a"],
            "Metadata_Predicted": ["a", "a", "b", "a"],
            "Metadata_PredictedFromContext": ["a", "b", "b", "b"],
            "Metadata_ContextReliance": [0.1, 0.2, 0.3, 0.4],
            "Metadata_CellReliance": [0.4, 0.3, 0.2, 0.1],
            "Metadata_GradCAMO": [0.6, 0.2, np.nan, 0.7],
        }
    )
    stats = cell_statistics(table, 0.5)
    assert stats["accuracy"] == 0.75 and stats["context_only_accuracy"] == 0.25
    assert stats["n_scored"] == 3 and stats["share_above"] == pytest.approx(2 / 3)
    before = {"context_reliance": 0.05, "share_above": 0.4, "accuracy": 0.6}
    after = {"context_reliance": 0.30, "share_above": 0.1, "accuracy": 0.95}
    verdict = planted_verdict(before, after, 0.5)
    assert verdict["learned"] and verdict["caught_by_audit"] and verdict["caught_by_gradcamo"]
    assert verdict["marker_strength"] == pytest.approx(0.45)
    missed = planted_verdict(before, {**after, "context_reliance": 0.07, "share_above": 0.38}, 0.5)
    assert missed["caught_by_audit"] is False and missed["caught_by_gradcamo"] is False
    # A copy that reads the cells as before holds no shortcut: the control is inconclusive.
    unlearned = planted_verdict(before, after, 0.93)
    assert not unlearned["learned"] and unlearned["caught_by_audit"] is None
