"""The validation study's own pieces (bench/validate_attribution.py; the study itself runs in
`make validate`, not in CI): the cell-context stores it derives, and its separation figure."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from gradcamo import crops
from gradcamo.store import CropStore
from test_crops import CHANNELS, CROP, METADATA, PLATE_SCOPE, cube_labels, write_site

STUDY = runpy.run_path(str(Path(__file__).resolve().parents[1] / "bench" / "validate_attribution.py"))


def test_cell_context_store_equals_the_crop_stage_with_context_cell(tmp_path):
    sites = [write_site(tmp_path, "site1", cube_labels([(3, 5, 5), (4, 12, 14), (5, 12, 17)]), seed=1)]
    bounds = np.array([[100.0, 4000.0]] * 5)
    fill = np.random.default_rng(0).normal(0, 0.05, (50, 5)).astype(np.float32)
    common = dict(normalization=PLATE_SCOPE, bounds=bounds, cell_margin=1, seed=3)
    crops.write_well_store(tmp_path / "full", sites, METADATA, CHANNELS, CROP, **common)
    crops.write_well_store(
        tmp_path / "cell", sites, METADATA, CHANNELS, CROP, **common, context="cell", context_fill=fill
    )
    derived = STUDY["cell_context_store"](tmp_path / "full", tmp_path / "derived", fill, 1, 3)
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
    separation = STUDY["separation"](pd.DataFrame(rows), "share_above_0.5", "confounded", "clean")
    assert separation[("layercam", "_blocks.0")] == pytest.approx(0.4 / 0.1)
