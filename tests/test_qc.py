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
