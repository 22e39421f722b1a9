"""The report's mask review: which sites and planes it shows, and the page it draws."""

from __future__ import annotations

import numpy as np
import pandas as pd
from gradcamo.mask_review import (
    OUTLINE,
    choose_planes,
    choose_sites,
    mask_review_figure,
    overlay,
    review_site,
    site_title,
)


def qc_table(n=10, flagged=(3, 7)):
    return pd.DataFrame(
        {
            "plate": "P1",
            "well": [f"B{2 + i // 3:02d}" for i in range(n)],
            "site": [1 + i % 3 for i in range(n)],
            "n_cells": np.arange(n) + 10,
            "foreground": np.linspace(0.1, 0.3, n),
            "flagged": [i in flagged for i in range(n)],
            "reason": [
                "n_cells 9.0 robust SDs from the plate's median" if i in flagged else "" for i in range(n)
            ],
        }
    )


def test_flagged_sites_come_first_then_a_seeded_sample():
    qc = qc_table()
    chosen = choose_sites(qc, 4, seed=0)
    assert list(chosen.flagged) == [True, True, False, False]
    assert choose_sites(qc, 4, seed=0).equals(chosen)
    others = {
        tuple(choose_sites(qc, 4, seed=s)[["well", "site"]].iloc[2:].itertuples(index=False))
        for s in range(6)
    }
    assert len(others) > 1  # the sample depends on the seed
    assert len(choose_sites(qc, 1, seed=0)) == 1 and choose_sites(qc, 1, seed=0).flagged.all()
    assert len(choose_sites(qc, 50, seed=0)) == len(qc)


def test_planes_spread_over_the_planes_that_hold_cells():
    labels = np.zeros((12, 8, 8), np.uint16)
    labels[3:9, 2:5, 2:5] = 1
    assert choose_planes(labels, 3) == (3, 5, 8)
    assert choose_planes(labels, 1) == (3,)
    assert choose_planes(np.zeros((4, 8, 8), np.uint16), 3) == (0, 2, 3)


def test_the_outline_is_drawn_on_the_cell_edge_and_the_page_renders():
    rng = np.random.default_rng(0)
    zstack = rng.integers(100, 200, (6, 2, 32, 32)).astype(np.uint16)
    labels = np.zeros((6, 32, 32), np.uint16)
    labels[1:5, 8:20, 8:20] = 1
    zstack[:, 0][labels > 0] += 1000
    rgb = overlay(zstack, labels, 2, cytoplasm=0, nucleus=1)
    assert rgb.shape == (32, 32, 3) and 0 <= rgb.min() and rgb.max() <= 1
    np.testing.assert_allclose(rgb[8, 12], OUTLINE)  # the mask's edge
    assert not np.allclose(rgb[13, 13], OUTLINE) and not np.allclose(rgb[0, 0], OUTLINE)
    row = qc_table().iloc[3]
    title = site_title(row, 0.91)
    assert "B03 site 1: 13 cells" in title and "AP@0.5 0.91" in title and "FLAGGED" in title
    site = review_site("B03/1", zstack, labels, title, 0, 1, 3)
    assert site.planes == (1, 3, 4) and site.images.shape == (3, 32, 32, 3)
    figure = mask_review_figure("P1", [site, site], n_sites_in_plate=10, n_flagged=2)
    assert "masks on 2 of 10 sites (2 flagged" in figure._suptitle.get_text()
    assert len([ax for ax in figure.axes if ax.images]) == 6
