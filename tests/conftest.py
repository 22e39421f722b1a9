"""Shared fixtures: writable caches, the repository, and throw-away Snakemake projects."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from gradcamo.readers import ImageSettings, Site, labelled_sites, open_reader
from gradcamo.readers.tiff import read_zstack
from gradcamo.sites import SiteSource

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "resources" / "mini"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
CHANNELS = ["DNA", "ER", "RNA", "AGP", "Mito"]


def image_settings(channels=CHANNELS, layout="tiff", page_order=None, voxel_size=(1.0, 1.0, 1.0), **changes):
    """Image settings for test files (write_zstack's default voxel size is 1 µm)."""
    values = dict(
        channels=tuple(channels),
        layout=layout,
        page_order=page_order,
        channel_names={},
        voxel_size=tuple(voxel_size),
        voxel_size_tolerance=0.02,
    )
    return ImageSettings(**{**values, **changes})


def zstack(path, channels=CHANNELS, page_order=None, **changes) -> np.ndarray:
    """A test z-stack file read as the workflow reads it (ZCYX, channels by name)."""
    return read_zstack(path, image_settings(channels, page_order=page_order, **changes))


def file_site(site: int, image, labels, channels=CHANNELS) -> SiteSource:
    """One site of z-stack and label files, as the crop stage receives it."""
    reader = open_reader(image_settings(channels))
    return labelled_sites(reader, [Site("P1", "B02", site, image=str(image))], [str(labels)])[0]


# numba (Cellpose, UMAP), matplotlib and Cellpose need writable folders; never the home.
_CACHE = Path(tempfile.gettempdir()) / "gradcamo-test-cache"
for _var, _sub in (
    ("NUMBA_CACHE_DIR", "numba"),
    ("MPLCONFIGDIR", "matplotlib"),
    ("CELLPOSE_LOCAL_MODELS_PATH", "cellpose_models"),
):
    os.environ.setdefault(_var, str(_CACHE / _sub))
    Path(os.environ[_var]).mkdir(parents=True, exist_ok=True)


def _reads_mini_run(item) -> bool:
    return "mini_run" in getattr(item, "fixturenames", ())


def pytest_itemcollected(item):
    """The tests that read the session's run of the mini workflow (fixture ``mini_run``, about
    20 minutes on 2 cores) form one xdist group: with ``make test``'s two workers
    (``-n 2 --dist loadgroup``) one worker runs them all, and the run once, while the other
    works through every other test beside it. (Marked here, as each item is collected:
    xdist turns the mark into the item's node id in its own collection hook.)"""
    if _reads_mini_run(item):
        item.add_marker(pytest.mark.xdist_group("mini_run"))


def pytest_collection_modifyitems(config, items):
    """The mini run's tests first, so that its worker starts the run at once (the paper
    screen's and the studies' workflow runs join its group: see tests/test_paper_screen.py)."""
    items.sort(key=lambda item: not _reads_mini_run(item))  # stable: each part keeps its order


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    """On an xdist worker with ``--dist loadgroup``: refuse to run when xdist did not group the
    mini run's tests (its group shows as a node-id suffix). It once stopped doing so silently
    (pytest 9.2, pytest-xdist#1386), and then each worker ran the mini workflow."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    ungrouped = [i.nodeid for i in session.items if _reads_mini_run(i) and not i.nodeid.endswith("@mini_run")]
    if ungrouped:
        raise pytest.UsageError(
            f"pytest-xdist did not put {len(ungrouped)} test(s) of the mini run in its group "
            f"(e.g. {ungrouped[0]}): both workers would run the mini workflow (pytest-xdist#1386)"
        )


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """The command line that runs the repository's workflow in ``workdir``."""
    return [SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), "-d", str(workdir), *args]


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 1800):
    """Run the repository's workflow in ``workdir`` (its own config/ and results/)."""
    cmd = snakemake_command(workdir, *args)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def slurm_cluster() -> bool:
    """Whether the SLURM tests run: ``GRADCAMO_TEST_SLURM=1`` (``.ci/run`` sets it after
    ``.ci/slurm-cluster.sh up``) and ``sinfo`` answers. Opt-in, so that ``make test`` on a
    login node never submits to a real cluster."""
    if os.environ.get("GRADCAMO_TEST_SLURM") != "1":
        return False
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip())


def slurm_profile(folder: Path) -> Path:
    """``profiles/slurm`` as CI runs it: the shipped profile without its conda keys, with
    ``.ci/slurm-overlay.yaml`` merged on top (dicts key by key), written to ``folder``."""
    import yaml

    def merge(base: dict, top: dict) -> dict:
        out = dict(base)
        for key, value in top.items():
            out[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
        return out

    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    for key in ("software-deployment-method", "conda-frontend"):
        profile.pop(key)
    overlay = yaml.safe_load((REPO / ".ci" / "slurm-overlay.yaml").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(merge(profile, overlay), sort_keys=False))
    return folder


def write_project(workdir: Path, sheet_rows: list[dict], config_edits: dict | None = None) -> Path:
    """A Snakemake project folder: config/config.yaml (the mini config of .test/ + edits) and samples.tsv."""
    import pandas as pd
    import yaml

    (workdir / "config").mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    for dotted, value in (config_edits or {}).items():
        *parents, key = dotted.split(".")
        node = config
        for p in parents:
            node = node.setdefault(p, {})
        if value is _DELETE:
            node.pop(key, None)
        else:
            node[key] = value
    config["samples"] = "config/samples.tsv"
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    pd.DataFrame(sheet_rows).to_csv(workdir / "config" / "samples.tsv", sep="\t", index=False)
    return workdir


class _Delete:
    """Marker: remove a config key in :func:`write_project`."""


_DELETE = _Delete()


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory) -> Path:
    """A few small valid ZCYX z-stacks (random noise) for tests that only parse and validate."""
    from gradcamo.io import write_labels, write_zstack

    folder = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c", "d"):
        write_zstack(
            folder / f"{name}.tif", rng.integers(100, 1000, (4, 5, 16, 16), dtype=np.uint16), CHANNELS
        )
        labels = np.zeros((4, 16, 16), np.uint16)
        labels[1:3, 4:10, 4:10] = 1
        write_labels(folder / f"{name}_labels.tif", labels)
    return folder


@pytest.fixture
def tiny_sheet(tiny_images) -> list[dict]:
    """Sample-sheet rows: 2 wells × 2 sites, treatments DMSO and X, on the tiny images."""
    rows = []
    for well, treatment, names in (("B02", "DMSO", "ab"), ("B03", "X", "cd")):
        for site, name in enumerate(names, start=1):
            rows.append(
                {
                    "plate": "P1",
                    "well": well,
                    "site": site,
                    "image": str(tiny_images / f"{name}.tif"),
                    "labels": str(tiny_images / f"{name}_labels.tif"),
                    "treatment": treatment,
                    "control": treatment == "DMSO",
                }
            )
    return rows


@pytest.fixture
def tiny_config() -> dict:
    """Config edits that make the tiny sheet valid (train segmentation on its sites)."""
    return {"segmentation.train.sites": ["P1/B02/1", "P1/B03/1"]}


@pytest.fixture(scope="session")
def mini_run(tmp_path_factory) -> Path:
    """The whole workflow on the bundled mini dataset, once per session: through
    ``profiles/slurm`` (:func:`slurm_profile`) where a SLURM cluster is up (CI), else locally
    on 2 cores. The end-to-end tests read what it wrote; the SLURM tests check how it ran."""
    workdir = write_project(tmp_path_factory.mktemp("mini-run"), mini_sheet_rows())
    if slurm_cluster():
        profile = slurm_profile(tmp_path_factory.mktemp("slurm-profile"))
        # alone about 20 minutes; the other worker's workflow runs share the cores for part of it
        run_snakemake(workdir, "--profile", str(profile), timeout=4200)
    else:
        run_snakemake(workdir, "--cores", "2")
    return workdir


def mini_sheet_rows() -> list[dict]:
    """The bundled mini dataset's sheet with absolute paths."""
    import pandas as pd

    sheet = pd.read_csv(MINI / "samples.tsv", sep="\t")
    for col in ("image", "labels"):
        sheet[col] = [str(MINI / p) for p in sheet[col]]
    return sheet.to_dict("records")
