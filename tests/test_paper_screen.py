"""The screen template, for real, on a small synthetic screen at the paper's geometry.

``config/config.yaml`` (5x21x128x128 crops, ``profile.target_resolution``, ``drop_border``,
``drop_flagged_sites``, ``save_attributions: false``) with ``.test/paper/config.yaml`` on top,
which overrides only this screen's data keys and what CI's 2 cores can afford (each key says
which and why). The screen (``make_mini_dataset.py --geometry paper``: 21x512x512 sites, cells
about 62 px across, one nearly empty site the segmentation QC flags, cells cut by the border)
is generated into the run's folder; Cellpose is trained on its annotated sites, the 3D
EfficientNet for one epoch, and the run goes through the profiles, the checks and the report.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, run_snakemake
from gradcamo.config import load_config

# The mini run's xdist group: its worker runs this after the mini workflow. Side by side on
# CI's 2 cores two workflow runs slow each other far more than 2x (the mini run's training
# took 3x as long at stop 38, and again this session when the paper screen and the studies'
# tiny run were moved beside it); one after the other, the other worker's tests fill the gap.
pytestmark = [pytest.mark.workflow, pytest.mark.xdist_group("mini_run")]
TEMPLATE = REPO / "config" / "config.yaml"
OVERLAY = REPO / ".test" / "paper" / "config.yaml"
CROP = (21, 128, 128)


def configfiles() -> list[str]:
    return ["--configfile", str(TEMPLATE), str(OVERLAY)]


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("paper-run")
    made = subprocess.run(
        [
            sys.executable,
            str(REPO / "workflow" / "scripts" / "make_mini_dataset.py"),
            "--geometry",
            "paper",
            "--out",
            str(root / "data"),
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    run_snakemake(root, *configfiles(), "--cores", "2", timeout=2400)
    run_snakemake(root, *configfiles(), "--report", "report.html", timeout=600)
    return root


def merged_config() -> dict:
    """The template with the overlay on top, key by key."""
    merged = yaml.safe_load(TEMPLATE.read_text())
    overlay = yaml.safe_load(OVERLAY.read_text())

    def merge(base, top):
        for key, value in top.items():
            base[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
        return base

    return merge(merged, overlay)


@pytest.fixture(scope="module")
def config():
    return merged_config()


def test_the_overlay_keeps_the_template_s_paper_keys(config):
    """The keys this test is about are the template's, not overridden."""
    overlay = yaml.safe_load(OVERLAY.read_text())
    assert "shape" not in overlay.get("crops", {}) and config["crops"]["shape"] == list(CROP)
    assert "target_resolution" not in overlay.get("profile", {})
    assert config["crops"]["filters"]["drop_border"] and config["crops"]["filters"]["drop_flagged_sites"]
    assert config["profile"]["save_attributions"] is False
    assert load_config(TEMPLATE)["profile"]["target_resolution"] == 8


def test_crops_are_paper_sized_and_the_stores_hold_the_sample(paper_run, config):
    stores = sorted((paper_run / "results" / "crops").glob("*/*/store.json"))
    assert len(stores) >= 6
    per_well = config["crops"]["sample"]["cells_per_well"]
    sampled = 0
    for path in stores:
        meta = json.loads(path.read_text())
        assert meta["crop_shape"] == list(CROP)
        assert meta["n_cells"] == min(per_well, meta["sample"]["well_cells"])
        sampled += meta["n_cells"] < meta["sample"]["well_cells"]
        images = np.load(path.parent / "images.npy", mmap_mode="r")
        assert images.shape[1:] == (5, *CROP) and images.dtype == np.float16
    assert sampled, "no well had more cells than crops.sample.cells_per_well: the sample was not exercised"


def test_flagged_sites_and_border_cells_are_dropped(paper_run):
    qc = pd.concat(pd.read_parquet(p) for p in (paper_run / "results/segmentation/qc").glob("*.parquet"))
    flagged = qc[qc.flagged]
    assert len(flagged) >= 1, "the screen's nearly empty site was not flagged"
    cells = pd.read_parquet(paper_run / "results/aggregate/cells.parquet")
    for row in flagged.itertuples(index=False):
        here = cells[(cells.Metadata_Well == row.well) & (cells.Metadata_Site == row.site)]
        assert here.empty, f"flagged site {row.well}/{row.site} was profiled"
        log = (paper_run / f"logs/crops/{row.plate}/{row.well}.log").read_text()
        assert "drop_flagged_sites: dropped site(s)" in log
    assert not cells.Metadata_BorderContact.any()
    border = 0
    for log in (paper_run / "logs/crops").glob("*/*.log"):
        border += sum(int(n) for n in re.findall(r"(\d+) at the border", log.read_text()))
    assert border > 0, "no cell touched the border: drop_border was not exercised"


def test_every_cell_is_profiled_and_only_the_sample_is_mapped(paper_run, config):
    """The profile stage crops every cell from the sites (not the stores' sample): every cell
    has its embedding and prediction; Grad-CAMO and the audit only the attribution sample's."""
    per_well = config["profile"]["attribution_cells_per_well"]
    cells = pd.read_parquet(paper_run / "results/aggregate/cells.parquet")
    for path in (paper_run / "results" / "crops").glob("*/*/store.json"):
        meta = json.loads(path.read_text())
        plate, well = path.parent.parent.name, path.parent.name
        table = pd.read_parquet(paper_run / f"results/profiles/{plate}/{well}.parquet")
        assert len(table) == meta["sample"]["well_cells"]
        assert table.filter(like="emb_").notna().all().all() and table.Metadata_Predicted.notna().all()
        mapped = table.Metadata_AttributionSampled
        assert mapped.sum() == min(per_well, len(table))
        assert (table.Metadata_GradCAMO_Undefined[~mapped] == "not_sampled").all()
        assert table.Metadata_CellReliance[mapped].notna().all()
        assert table.Metadata_CellReliance[~mapped].isna().all()
        # The mapped cells are part of the store's sample, so the gallery can draw them.
        stored = pd.read_parquet(path.parent / "cells.parquet")
        keys = ["Metadata_Site", "Metadata_ObjectNumber"]
        assert set(map(tuple, table[mapped][keys].values)) <= set(map(tuple, stored[keys].values))
    assert len(cells) == sum(
        json.loads(p.read_text())["sample"]["well_cells"]
        for p in (paper_run / "results" / "crops").glob("*/*/store.json")
    )
    summary = json.loads((paper_run / "results/aggregate/summary.json").read_text())
    assert summary["attribution_sample"]["sampled"]
    assert summary["attribution_sample"]["mapped"] == int(cells.Metadata_AttributionSampled.sum())
    assert summary["gradcamo"]["n_scored"] <= summary["attribution_sample"]["mapped"]
    assert not list((paper_run / "results/profiles").glob("*/*.attributions.npy"))  # save_attributions: false
    wells = pd.read_parquet(paper_run / "results/aggregate/wells.parquet")
    assert (wells.Metadata_GradCAMO_Count <= per_well).all()


def test_the_resolution_chooses_the_layer_on_the_trained_model(paper_run, config):
    """``profile.target_resolution: 8`` at 21x128x128: the deepest layer whose map keeps at
    least 8 voxels in Y and X, on the model the run trained."""
    import torch
    from gradcamo.gradcam import map_shapes
    from gradcamo.model import load_checkpoint
    from gradcamo.profiles import build_profiler

    model, meta = load_checkpoint(paper_run / "results/train/model.pt")
    assert tuple(meta["crop_shape"]) == CROP
    settings = {**config["profile"], "attribution_method": "gradcam"}
    fill = np.load(next((paper_run / "results/crops").glob("*/fill.npy")))
    profiler = build_profiler(model, CROP, settings, config["voxel_size"], fill)
    shapes = map_shapes(model, CROP)
    layer = profiler.target_layer
    assert min(shapes[layer][1:]) >= 8
    deeper = list(shapes)[list(shapes).index(layer) + 1 :]
    assert deeper and all(min(shapes[name][1:]) < 8 for name in deeper)
    assert profiler(torch.zeros(1, 5, *CROP))["cam"].shape[1:] == tuple(shapes[layer])


def test_the_report_says_the_scores_are_the_sample_s(paper_run):
    html = (paper_run / "report.html").read_text(errors="replace")
    assert "attribution sample" in html
    assert (paper_run / "results/figures/attribution_gallery.png").stat().st_size > 10_000
