"""Image QC helpers: the inter-channel correlation over cell voxels, summed block by block."""

from __future__ import annotations

import numpy as np
from gradcamo.qc import channel_correlation, correlation_from_moments


def test_channel_correlation_is_pearson_over_the_cells_voxels_in_any_blocks():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(6, 3, 4, 8, 8))
    images[:, 1] = 0.8 * images[:, 0] + 0.2 * images[:, 1]  # channel 1 follows channel 0
    masks = (rng.random((6, 4, 8, 8)) > 0.6).astype(np.uint8)
    masks[masks == 0] = 2 * (rng.random((masks == 0).sum()) > 0.5)
    voxels = np.moveaxis(images, 1, -1)[masks == 1]
    whole, n = channel_correlation(images, masks)
    np.testing.assert_allclose(correlation_from_moments(whole), np.corrcoef(voxels.T), atol=1e-10)
    assert n == (masks == 1).sum()
    blocks = [channel_correlation(images[i : i + 2], masks[i : i + 2])[0] for i in range(0, 6, 2)]
    np.testing.assert_allclose(sum(blocks), whole)
    assert correlation_from_moments(whole)[0, 1] > 0.9


def test_segmentation_qc_flags_the_site_far_off_its_plate():
    import pandas as pd
    from gradcamo.qc import flag_segmentations, robust_z

    sites = pd.DataFrame(
        {
            "plate": "P1",
            "well": ["B02", "B02", "B03", "B03", "C02", "C02"],
            "site": [1, 2, 1, 2, 1, 2],
            "n_cells": [20, 22, 19, 23, 176, 21],  # C02/1: camera noise segmented as "cells"
            "foreground": [0.31, 0.33, 0.30, 0.34, 0.05, 0.32],
        }
    )
    table = flag_segmentations(sites, max_z=5.0)
    assert list(table.flagged) == [False, False, False, False, True, False]
    reason = table.reason.iloc[4]
    assert "cells 176 vs plate median 21.5" in reason and "foreground 0.05" in reason
    assert np.allclose(robust_z([3, 3, 3]), 0) and robust_z([10, 10, 20])[2] == 10
