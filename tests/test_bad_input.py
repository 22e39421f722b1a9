"""What a file hides: image types, undeclared page orders, truncated files, well spellings,
crops deeper than the stacks, and --config values that arrive as strings."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import REPO, SNAKEMAKE, file_site, run_snakemake, write_project, zstack
from gradcamo.crops import write_well_store
from gradcamo.errors import InputError
from gradcamo.io import write_labels, write_zstack
from gradcamo.qc import saturation_level, site_qc
from gradcamo.samples import canonical_well, coerce_to_schema, read_sample_sheet

CHANNELS = ["DNA", "ER"]


def stack(dtype, shape=(4, 2, 16, 16), seed=0):
    values = np.random.default_rng(seed).integers(0, 250, shape)
    return values.astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_supported_pixel_types_read_and_qc_by_type(tmp_path, dtype):
    path = tmp_path / "z.tif"
    image = stack(dtype)
    image[0, 0, 0, :4] = 255 if dtype == np.uint8 else image[0, 0, 0, :4]
    write_zstack(path, image, CHANNELS)
    back = zstack(path, CHANNELS)
    assert back.dtype == dtype and back.shape == (4, 2, 16, 16)
    # A strided uint8 channel view compared with 65535 crashed NumPy 2.0 (SIGSEGV).
    qc = site_qc(back, CHANNELS, saturation_value=65535)
    if dtype == np.float32:
        assert qc.saturated_fraction.isna().all()
    else:
        assert (qc.saturated_fraction >= 0).all()
    if dtype == np.uint8:
        assert qc.saturated_fraction.iloc[0] >= 4 / back[:, 0].size
    assert saturation_level(np.uint8, 65535) == 255 and saturation_level(np.uint16, 4095) == 4095
    assert saturation_level(np.float32, 65535) is None


@pytest.mark.parametrize("dtype", [np.int32, np.float64])
def test_other_pixel_types_are_refused_by_name(tmp_path, dtype):
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, stack(dtype), metadata={"axes": "ZCYX"}, ome=True)
    with pytest.raises(InputError, match=rf"z\.tif: pixel type {np.dtype(dtype)} is not supported"):
        zstack(path, CHANNELS)


def test_untagged_pages_are_read_in_the_declared_order_or_refused(tmp_path):
    zcyx = stack(np.uint16, (3, 2, 8, 8))
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, zcyx.reshape(6, 8, 8), photometric="minisblack", metadata=None)
    with pytest.raises(InputError, match=r"plain\.tif: a TIFF without axes metadata.*images\.page_order"):
        zstack(path, CHANNELS)
    np.testing.assert_array_equal(zstack(path, CHANNELS, "ZCYX"), zcyx)
    czyx = tmp_path / "czyx.tif"
    tifffile.imwrite(czyx, zcyx.swapaxes(0, 1).reshape(6, 8, 8), photometric="minisblack", metadata=None)
    np.testing.assert_array_equal(zstack(czyx, CHANNELS, "CZYX"), zcyx)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_truncated_tiff_is_named_as_truncated(tmp_path, keep):
    full = tmp_path / "full.tif"
    write_zstack(full, stack(np.uint16, (6, 2, 32, 32)), CHANNELS)
    data = full.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputError, match=r"cut\.tif: .*truncated or damaged"):
        zstack(cut, CHANNELS)


def test_well_names_have_one_spelling(tmp_path):
    assert [canonical_well(w) for w in ("B4", "b04", "B004", "AA1", "P24", "well1")] == [
        "B04",
        "B04",
        "B04",
        "AA01",
        "P24",
        "well1",
    ]
    image = tmp_path / "a.tif"
    write_zstack(image, stack(np.uint16), CHANNELS)
    rows = [("P1", "B4", 1, "X"), ("P1", "b4", 2, "X"), ("P1", "C03", 1, "DMSO")]
    sheet = tmp_path / "samples.tsv"
    pd.DataFrame(rows, columns=["plate", "well", "site", "treatment"]).assign(image="a.tif").to_csv(
        sheet, sep="\t", index=False
    )
    with pytest.raises(InputError, match=r"plate 'P1' names well B04 in 2 ways.*'B4'.*line 3: 'b4'"):
        read_sample_sheet(sheet)
    pd.DataFrame(rows[::2], columns=["plate", "well", "site", "treatment"]).assign(image="a.tif").to_csv(
        sheet, sep="\t", index=False
    )
    assert list(read_sample_sheet(sheet).well) == ["B04", "C03"]


def test_crops_deeper_than_the_stack_are_said_in_the_log(tmp_path, caplog):
    write_zstack(tmp_path / "s1.tif", stack(np.uint16, (4, 2, 16, 16)), CHANNELS)
    labels = np.zeros((4, 16, 16), np.uint16)
    labels[1:3, 6:10, 6:10] = 1
    write_labels(tmp_path / "l1.tif", labels)
    site = file_site(1, tmp_path / "s1.tif", tmp_path / "l1.tif", CHANNELS)
    norm = {"scope": "site", "reference": "all", "lower_percentile": 1.0, "upper_percentile": 99.0}
    meta = {"plate": "P1", "well": "B02", "treatment": "X"}
    with caplog.at_level(logging.WARNING, logger="gradcamo.crops"):
        write_well_store(tmp_path / "store", [site], meta, CHANNELS, (8, 8, 8), normalization=norm)
    assert any(
        "s1.tif" in r.message
        and "Z size 8 exceeds the z-stack's 4" in r.message
        and "50 % padding" in r.message
        for r in caplog.records
    )


def test_string_config_values_are_read_as_the_schema_types():
    schema = {
        "properties": {
            "train": {
                "properties": {
                    "epochs": {"type": "integer"},
                    "learning_rate": {"type": "number"},
                    "mixed_precision": {"type": "boolean"},
                    "variant": {"type": "string"},
                    "target_resolution": {"type": ["integer", "null"]},
                }
            }
        }
    }
    got = coerce_to_schema(
        {
            "train": {
                "epochs": "2",
                "learning_rate": "1e-3",
                "mixed_precision": "true",
                "variant": "7",
                "target_resolution": "null",
            }
        },
        schema,
    )
    assert got == {
        "train": {
            "epochs": 2,
            "learning_rate": 0.001,
            "mixed_precision": True,
            "variant": "7",
            "target_resolution": None,
        }
    }
    assert coerce_to_schema({"train": {"epochs": "two"}}, schema) == {"train": {"epochs": "two"}}


def test_nested_config_on_the_command_line(tmp_path, tiny_sheet, tiny_config):
    write_project(tmp_path, tiny_sheet, tiny_config)
    proc = run_snakemake(tmp_path, "-n", "--config", "train={epochs: 2, learning_rate: 0.01}")
    assert "train" in proc.stdout
    proc = run_snakemake(tmp_path, "-n", "--config", "train={epochs: two}", check=False)
    assert proc.returncode != 0 and "train.epochs" in proc.stdout + proc.stderr


def test_a_labels_file_of_the_wrong_shape_is_named_before_segmentation(tmp_path, tiny_sheet, tiny_config):
    wrong = tmp_path / "wrong_labels.tif"
    write_labels(wrong, np.zeros((4, 12, 12), np.uint16))
    tiny_sheet[3]["labels"] = str(wrong)  # a held-out site (not a training site)
    write_project(tmp_path, tiny_sheet, tiny_config)
    proc = run_snakemake(tmp_path, "results/qc/P1/B03.parquet", "--cores", "1", check=False)
    assert proc.returncode != 0
    log = (tmp_path / "logs/qc_well/P1/B03.log").read_text()
    assert "wrong_labels.tif" in log and "(4, 12, 12)" in log and "(4, 16, 16)" in log
    assert not (tmp_path / "results/qc/P1/B03.parquet").exists()
    assert not (tmp_path / "results/segment").exists()


def test_a_killed_writer_leaves_nothing_that_survives_the_rerun(tmp_path):
    from gradcamo.io import atomic_path

    target = tmp_path / "crops" / "B02"
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[2]); from gradcamo.io import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.mkdir(); (tmp / 'images.npy').write_bytes(b'x' * 1000); print('ready', flush=True)\n"
        "    time.sleep(60)\n"
    )
    lib = str(Path(__file__).resolve().parents[1] / "workflow" / "lib")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target), lib], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    leftovers = list(target.parent.glob(".B02.*"))
    assert leftovers and not target.exists()  # what a kill leaves: a hidden folder, no output
    with atomic_path(target) as tmp:  # the rerun of the job
        tmp.mkdir()
        (tmp / "images.npy").write_bytes(b"y")
    assert sorted(p.name for p in target.parent.iterdir()) == ["B02"]
    assert (target / "images.npy").read_bytes() == b"y"


def test_make_gives_snakemake_a_writable_cache_when_the_home_has_none(tmp_path):
    """Snakemake writes a source cache under $XDG_CACHE_HOME (default ~/.cache) before it reads
    the workflow, and fails with a bare NotADirectoryError where that is a file; the Makefile
    (the README's commands) then points it into the project, and the run works."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".cache").write_text("a file where a folder should be")
    env = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"} | {"HOME": str(home)}
    proc = subprocess.run(
        [
            "make",
            "-s",
            "--no-print-directory",
            "--eval",
            "print-cache: ; @echo $$XDG_CACHE_HOME",
            "print-cache",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    cache = proc.stdout.strip()
    assert proc.returncode == 0 and cache == str(REPO / ".snakemake" / "cache" / "xdg"), proc
    dry = subprocess.run(
        [SNAKEMAKE, "-n", "--quiet", "--directory", ".test"],
        cwd=REPO,
        env=env | {"XDG_CACHE_HOME": cache},
        capture_output=True,
        text=True,
    )
    assert dry.returncode == 0, dry.stderr[-3000:]
