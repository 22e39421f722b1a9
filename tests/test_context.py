"""The neutral fill and the counterfactual audit: what is replaced, by what, reproducibly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gradcamo.audit import background_statistics, counterfactual_crops, target_probabilities
from gradcamo.context import background_voxels, cell_region, dilate, replace_region
from gradcamo.crops import crop_cells
from gradcamo.model import build_model


def crop_with_cell(shape=(6, 12, 12)):
    """One crop's mask: a cell (1) in the middle, a neighbour (2) at one side."""
    mask = np.zeros(shape, np.uint8)
    mask[2:4, 4:8, 4:8] = 1
    mask[2:4, 0:3, 0:12] = 2
    return mask


def test_dilation_widens_in_z_y_x_and_keeps_cells_apart():
    region = np.zeros((2, 5, 7, 7), bool)
    region[0, 2, 3, 3] = True
    grown = dilate(region, 1)
    assert grown[0].sum() == 7 and not grown[1].any()  # the 6-neighbourhood, cell 0 only
    assert grown[0, 1, 3, 3] and grown[0, 3, 3, 3] and grown[0, 2, 2, 3] and not grown[0, 1, 2, 3]
    assert dilate(region, 0).sum() == 1


def test_cell_region_is_the_dilated_cell_of_interest():
    mask = crop_with_cell()
    assert cell_region(mask, 0).sum() == (mask == 1).sum()
    wide = cell_region(mask, 1)
    assert wide[mask == 1].all() and wide.sum() > (mask == 1).sum()


def test_replace_region_draws_only_from_the_fill_and_only_in_the_region():
    rng = np.random.default_rng(0)
    image = rng.normal(5, 1, (3, 6, 12, 12)).astype(np.float32)
    mask = crop_with_cell()
    region = mask == 1
    fill = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], np.float32)
    out = replace_region(image, region, fill, np.random.default_rng(1))
    np.testing.assert_array_equal(out[:, ~region], image[:, ~region])
    replaced = out[:, region].T  # (n, C)
    assert all(any(np.array_equal(v, f) for f in fill) for v in replaced)
    assert len({tuple(v) for v in replaced}) == 2  # both fill voxels drawn
    again = replace_region(image, region, fill, np.random.default_rng(1))
    np.testing.assert_array_equal(out, again)
    with pytest.raises(ValueError, match="no voxels"):
        replace_region(image, region, fill[:0], np.random.default_rng(1))


def test_background_voxels_stay_clear_of_cells():
    zstack = np.zeros((4, 2, 16, 16), np.uint16)
    labels = np.zeros((4, 16, 16), np.uint16)
    labels[:, :8] = 1
    zstack[:, :, :8] = 1000  # the cell
    zstack[:, :, 8:10] = 500  # its halo, within the clearance
    zstack[:, :, 10:] = 100  # background
    voxels = background_voxels(zstack, labels, 1000, np.random.default_rng(0), clearance=2)
    assert voxels.shape == (4 * 6 * 16, 2) and (voxels == 100).all()
    empty = background_voxels(zstack, np.ones_like(labels), 10, np.random.default_rng(0))
    assert empty.shape == (0, 2)


def test_counterfactuals_split_the_crop_between_cell_and_context():
    rng = np.random.default_rng(0)
    images = rng.normal(5, 1, (2, 3, 6, 12, 12)).astype(np.float32)
    masks = np.stack([crop_with_cell(), crop_with_cell()])
    fill = np.full((4, 3), -1.0, np.float32)
    without_cell, without_context = counterfactual_crops(images, masks, fill, 1, [(0, 1), (0, 2)])
    cell = cell_region(masks, 1)
    for i in range(2):
        np.testing.assert_array_equal(without_cell[i][:, cell[i]], -1.0)
        np.testing.assert_array_equal(without_cell[i][:, ~cell[i]], images[i][:, ~cell[i]])
        np.testing.assert_array_equal(without_context[i][:, ~cell[i]], -1.0)
        np.testing.assert_array_equal(without_context[i][:, cell[i]], images[i][:, cell[i]])


def test_context_cell_crops_keep_the_cell_and_fill_the_rest():
    rng = np.random.default_rng(0)
    zstack = rng.integers(100, 200, (6, 2, 20, 20)).astype(np.uint16)
    labels = np.zeros((6, 20, 20), np.int32)
    labels[2:4, 8:12, 8:12] = 1
    labels[2:4, 0:4, 0:20] = 2
    import pandas as pd

    cells = pd.DataFrame(
        {
            "Metadata_Site": [1],
            "Metadata_ObjectNumber": [1],
            "Metadata_Centroid_Z": [2.5],
            "Metadata_Centroid_Y": [9.5],
            "Metadata_Centroid_X": [9.5],
        }
    )
    bounds = np.array([[100.0, 200.0], [100.0, 200.0]])
    fill = np.full((3, 2), 7.0, np.float32)
    full, masks = crop_cells(zstack, labels, cells, (6, 16, 16), bounds)
    alone, masks_alone = crop_cells(zstack, labels, cells, (6, 16, 16), bounds, fill, 1, 0)
    np.testing.assert_array_equal(masks, masks_alone)  # masks describe the original crop
    cell = cell_region(masks[0], 1)
    np.testing.assert_array_equal(alone[0][:, cell], full[0][:, cell])
    np.testing.assert_array_equal(alone[0][:, ~cell], 7.0)


def test_background_statistics_leave_out_cells_halos_and_padding():
    images = np.zeros((1, 2, 6, 12, 12), np.float32)
    mask = crop_with_cell()[None]
    images[0, :, :, :, :10] = 0.5  # background inside the image
    images[0][:, mask[0] > 0] = 9.0  # cells
    images[0, :, :, :, 10:] = 0.0  # padding (outside the image)
    np.testing.assert_allclose(background_statistics(images, mask, clearance=0), [[0.5, 0.5]])
    near = dilate(mask[0] > 0, 1) & (mask[0] == 0)
    images[0][:, near] = 3.0  # a halo next to the cells
    np.testing.assert_allclose(background_statistics(images, mask, clearance=1), [[0.5, 0.5]])
    assert background_statistics(images, mask, clearance=0)[0, 0] > 0.5


def test_target_probabilities_are_eval_mode_softmax():
    torch.manual_seed(0)
    model = build_model("b0", 2, 3, (6, 16, 16)).eval()
    x = torch.randn(4, 2, 6, 16, 16)
    target = torch.tensor([0, 1, 2, 0])
    p, predicted = target_probabilities(model, x, target)
    with torch.no_grad():
        expected = torch.softmax(model(x), 1)
    np.testing.assert_allclose(p, expected[torch.arange(4), target].numpy(), rtol=1e-5)
    np.testing.assert_array_equal(predicted, expected.argmax(1).numpy())
    with pytest.raises(RuntimeError, match="eval mode"):
        target_probabilities(model.train(), x, target)
