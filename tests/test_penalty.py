"""The attention penalty and context swapping: what each computes, that double backpropagation
differentiates it correctly, and what training with the penalty does.

The last test trains real models (b0, CPU, tiny crops) on cells whose treatment is written
twice: in the cell (blob size and brightest channel) and, as a shortcut, in the background
(a treatment-coded level of one channel outside the cell). The penalty is optimised and moves
the map off the shortcut; the per-epoch validation audit shows the unpenalised model reading
the shortcut. Whether the penalised model then predicts better without the shortcut depends
on the float path of one small training (it did on one machine, not on another over three
seeds), so that is measured by the study over seeds (``make validate``), not asserted here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from gradcamo.context import dilate
from gradcamo.data import Augmentation, BalancedDraws, ContextSwap, CropCells, augment, cell_table
from gradcamo.gradcam import GradCamProfiler, gradcamo_score
from gradcamo.model import build_model, set_drop_connect_rate
from gradcamo.penalty import AttentionPenalty, PenalisedModel, dilate_masks, outside_share
from gradcamo.store import MASK_CELL, MASK_OTHER, CropStore
from gradcamo.train_settings import TrainSettings
from gradcamo.training import HISTORY_COLUMNS, train_classifier
from gradcamo.validation_audit import ValidationAudit
from test_training import (
    CHANNELS,
    CROP,
    TRAIN_CONFIG,
    TREATMENTS,
    blob_cells,
    blob_fills,
    one_thread,  # noqa: F401 (autouse: one torch thread in this module too)
    split_table,
    write_wells,
)


def penalty(
    method: str, layer: str = "_blocks.1", weight: float = 1.0, dilation: int = 0
) -> AttentionPenalty:
    return AttentionPenalty(weight, method, layer, None, dilation)


def batch(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    images, masks = blob_cells(rng, n, radius=3.0, bright_channel=1)
    labels = torch.as_tensor(rng.integers(len(TREATMENTS), size=n))
    return torch.from_numpy(images), labels, torch.from_numpy(masks)


def test_dilate_masks_is_the_crop_stages_dilation():
    region = np.random.default_rng(0).random((3, 6, 9, 9)) > 0.93
    for margin in range(4):
        np.testing.assert_array_equal(
            dilate_masks(torch.from_numpy(region), margin).numpy(), dilate(region, margin)
        )


def test_outside_share_of_a_zero_map_is_zero_without_nan_gradients():
    maps = torch.zeros(2, 2, 3, 3, requires_grad=True)
    outside = torch.zeros(2, 2, 3, 3, dtype=torch.bool)
    outside[:, 0] = True
    with torch.no_grad():
        maps[1, 0, 0, 0] = 3.0
        maps[1, 1, 0, 0] = -1.0  # negative attention counts by its magnitude
    share, zero = outside_share(maps, outside)
    assert zero.tolist() == [True, False]
    np.testing.assert_allclose(share.detach().numpy(), [0.0, 0.75])
    share.sum().backward()
    assert torch.isfinite(maps.grad).all()


def test_penalty_is_one_minus_the_profiled_gradcamo():
    """With dilation 0, the input x gradient penalty of a cell is 1 - its Grad-CAMO as the
    profile stage computes it (eval mode, the true class): the same map, the same mask."""
    model = build_model("b0", len(CHANNELS), len(TREATMENTS), CROP).eval()
    images, labels, masks = batch()
    penalised = PenalisedModel(model, penalty("input_x_gradient", dilation=0), "input")
    out = penalised(images, labels, masks)
    profiled = GradCamProfiler(model, method="input_x_gradient")(images, labels)
    np.testing.assert_allclose(
        out.penalty.detach().numpy(),
        1 - gradcamo_score(profiled["cam"], masks).numpy(),
        rtol=1e-5,
    )
    torch.testing.assert_close(out.logits.detach(), profiled["logits"])


@pytest.mark.parametrize(
    "method, layer", [("input_x_gradient", "input"), ("gradcam", "_blocks.1"), ("rrr", "input")]
)
def test_double_backpropagation_matches_finite_differences(method, layer):
    """The penalty's parameter gradient is second order (it differentiates a gradient): a
    directional finite difference in float64, in training mode, checks it through MONAI's
    custom swish backward and batch norm's batch statistics."""
    torch.manual_seed(0)
    model = build_model("b0", len(CHANNELS), len(TREATMENTS), CROP).double().train()
    model._dropout.p = 0.0  # deterministic passes
    set_drop_connect_rate(model, 0.0)
    images, labels, masks = batch()
    images = images.double()
    penalised = PenalisedModel(model, penalty(method, layer, dilation=1), layer)
    weight = model._blocks[1][0]._expand_conv.weight if layer == "input" else model._conv_stem.weight
    direction = torch.randn_like(weight)

    def value() -> torch.Tensor:
        return penalised(images, labels, masks).penalty.sum()

    (grad,) = torch.autograd.grad(value(), weight)
    eps = 1e-8  # batch norm over 4 cells at 1x1x1 maps is steep: small steps
    with torch.no_grad():
        weight += eps * direction
    plus = float(value().detach())
    with torch.no_grad():
        weight -= 2 * eps * direction
    minus = float(value().detach())
    with torch.no_grad():
        weight += eps * direction
    numeric = (plus - minus) / (2 * eps)
    assert float((grad * direction).sum()) == pytest.approx(numeric, rel=1e-5)


def test_penalised_logits_are_the_models_training_forward():
    torch.manual_seed(0)
    model = build_model("b0", len(CHANNELS), len(TREATMENTS), CROP).train()  # drop-connect on
    images, labels, masks = batch(6)
    torch.manual_seed(1)
    expected = model(images)
    torch.manual_seed(1)
    logits = PenalisedModel(model, penalty("layercam"), "_blocks.1")(images, labels, masks).logits
    torch.testing.assert_close(logits, expected)


def write_confounded_wells(root, shortcut=True) -> pd.DataFrame:
    """test_training's wells with 12 cells each and, with ``shortcut``, channel 0 raised
    outside each cell by a treatment-coded level: a background that predicts the treatment."""
    return split_table(write_wells(root, 4, 12, radius_step=1.0, shortcut=0.4 if shortcut else 0.0))


def test_context_swap_keeps_the_cell_and_takes_another_cells_context(tmp_path):
    wells = write_confounded_wells(tmp_path)
    stores, cells = cell_table(wells)
    labels = np.zeros(len(cells), np.int64)
    swap = ContextSwap(probability=1.0, margin=1)
    data = CropCells(
        stores, cells["store"], cells["row"], labels, None, seed=0, context_swap=swap, with_masks=True
    )
    keys = [(1, draw, cell) for draw, cell in enumerate([0, 5, 17, 40])]
    swapped = data.__getitems__(keys)
    plain = CropCells(stores, cells["store"], cells["row"], labels, with_masks=True).__getitems__(
        [0, 5, 17, 40]
    )
    assert swapped.images.dtype == torch.float16 and swapped.masks.dtype == torch.uint8
    for i in range(4):
        own = dilate(plain.masks[i].numpy() == MASK_CELL, 1)
        np.testing.assert_array_equal(swapped.images[i].numpy()[:, own], plain.images[i].numpy()[:, own])
        assert not np.array_equal(swapped.images[i].numpy()[:, ~own], plain.images[i].numpy()[:, ~own])
        mask = swapped.masks[i].numpy()
        np.testing.assert_array_equal(mask == MASK_CELL, plain.masks[i].numpy() == MASK_CELL)
        assert set(np.unique(mask[~own])) <= {0, MASK_OTHER}
    again = data.__getitems__(keys)  # seeded by (seed, epoch, draw): the same swap
    assert torch.equal(again.images, swapped.images)
    off = CropCells(stores, cells["store"], cells["row"], labels, context_swap=ContextSwap(0.0, 1))
    assert torch.equal(off.__getitems__(keys).images, plain.images)


def test_masks_follow_their_augmented_crops(tmp_path):
    """Each mask gets its crop's flips and turns: the CPU reference :func:`augment` of the
    same draw, applied to the stored mask, gives the batch's mask."""
    wells = write_confounded_wells(tmp_path, shortcut=False)
    stores, cells = cell_table(wells)
    augmentation = Augmentation(flip_z=True, intensity_jitter=0.0)
    data = CropCells(
        stores,
        cells["store"],
        cells["row"],
        np.zeros(len(cells), np.int64),
        augmentation,
        seed=4,
        with_masks=True,
    )
    keys = list(BalancedDraws(data.labels, 24, seed=4, epoch=3))
    images, _, masks = data.__getitems__(keys).to_with_masks(torch.device("cpu"))
    for (epoch, draw, cell), image, mask in zip(keys, images, masks):
        stored = CropStore.open(stores[cells["store"][cell]]).masks[cells["row"][cell]]
        rng = np.random.default_rng([4, epoch, draw])
        expected = augment(stored[None].astype(np.float32), rng, augmentation)[0]
        np.testing.assert_array_equal(mask.numpy(), expected.astype(np.uint8))
        np.testing.assert_array_equal(image.numpy(), data[(epoch, draw, cell)][0].numpy())


def accuracy(result, wells: pd.DataFrame) -> float:
    test = wells[wells.split == "test"]
    stores, cells = cell_table(test)
    classes = result.meta["classes"]
    labels = cells["treatment"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    data = CropCells(stores, cells["store"], cells["row"], labels)
    images = torch.stack([data[i][0] for i in range(len(data))])
    with torch.no_grad():
        return float((result.model.eval()(images).argmax(1).numpy() == labels).mean())


def outside_attention(result, wells: pd.DataFrame) -> float:
    test = wells[wells.split == "test"]
    stores = [CropStore.open(p) for p in test.store]
    images = torch.from_numpy(np.concatenate([np.asarray(s.images, np.float32) for s in stores]))
    masks = torch.from_numpy(np.concatenate([np.asarray(s.masks) for s in stores]))
    cam = GradCamProfiler(result.model.eval(), method="input_x_gradient")(images)["cam"]
    return float(
        1
        - gradcamo_score(cam, torch.from_numpy(dilate(masks.numpy() == MASK_CELL, 2).astype(np.uint8))).mean()
    )


def test_penalised_training_moves_attention_to_the_cell_and_off_the_shortcut(tmp_path, caplog):
    caplog.set_level("INFO", logger="gradcamo.training")
    wells = write_confounded_wells(tmp_path / "confounded")
    clean = write_confounded_wells(tmp_path / "clean", shortcut=False)
    # The fill: background without the shortcut (the crop stage draws it from control wells).
    audit = ValidationAudit(blob_fills(clean), cell_margin=1, seed=0)
    results = {}
    for weight in (0.0, 10.0):
        # 90 steps: enough to learn the shortcut, and, with the penalty, to unlearn part of it
        config = {**TRAIN_CONFIG, "epochs": 10, "batch_size": 8, "patience": 20, "mixed_precision": False}
        config["warmup_fraction"] = 0.1  # one epoch, as this test was calibrated
        config["attention_penalty"] = {**config["attention_penalty"], "weight": weight}
        results[weight] = train_classifier(
            wells, TrainSettings.from_config(config), CHANNELS, CROP, "cpu", audit=audit
        )
    history = results[10.0].history
    assert tuple(history.columns) == HISTORY_COLUMNS
    assert (history["train_penalty"] > 0).all() and (history["penalty_share_of_loss"] > 0).all()
    assert history["penalty_zero_maps"].notna().all()
    assert results[0.0].history["train_penalty"].isna().all()
    assert "% of the loss" in caplog.text and "attention penalty: weight 10" in caplog.text
    penalty_curve = history["train_penalty"].to_numpy()
    assert penalty_curve[-3:].mean() < penalty_curve[:3].mean(), penalty_curve  # it is optimised
    outside = {w: outside_attention(r, wells) for w, r in results.items()}
    # The map moves: on an AMD EPYC (2026-12-06) 0.80 -> 0.62, 0.79 -> 0.71, 0.80 -> 0.58 for
    # training seeds 0, 1, 2 (seed 0 here).
    assert outside[10.0] < outside[0.0] - 0.08, outside
    # The per-epoch validation audit sees what the unpenalised model reads: the shortcut, from
    # the context alone it does far better than from the cell alone (seeds 0-2 there: 0.94,
    # 0.87, 0.90 against 0.38, 0.53, 0.35, means over the epochs).
    audit_means = {
        w: r.history[["val_cell_accuracy", "val_context_accuracy"]].mean() for w, r in results.items()
    }
    assert audit_means[0.0]["val_context_accuracy"] > audit_means[0.0]["val_cell_accuracy"] + 0.2, audit_means
    # What the penalty does to the model is not asserted: on that machine the penalised
    # models read their context alone at 0.92, 0.84, 0.73 (unpenalised 0.94, 0.87, 0.90) and
    # scored 0.47, 0.47, 0.36 on the same cells without the shortcut (unpenalised 0.50, 0.61,
    # 0.33); on the machine of an earlier session seed 0 had gained 0.39 -> 0.61. The map
    # moves more than the model (docs/regulariser.md).
    assert all(accuracy(r, wells) > 0.9 for r in results.values())  # both learn the task
