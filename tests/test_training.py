"""Training: model shapes, data and augmentation, metrics, learning, outputs, kill-and-resume.

Crop stores are written with CropStoreWriter and filled with synthetic cells whose treatment
sets the size of a blob and its brightest channel, differences a 3D CNN learns in a few epochs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from gradcamo import validation_audit
from gradcamo.audit import audit_seeds, counterfactual_crops
from gradcamo.context import dilate
from gradcamo.data import (
    Augmentation,
    BalancedDraws,
    CropCells,
    as_batch,
    augment,
    augment_batch,
    augment_params,
    cell_table,
)
from gradcamo.devices import choose_device
from gradcamo.errors import InputError
from gradcamo.metrics import classification_metrics
from gradcamo.model import build_model, load_checkpoint, save_checkpoint, set_drop_connect_rate
from gradcamo.resume import fingerprint, load_resume_state, save_resume_state
from gradcamo.split import split_wells
from gradcamo.store import CropStore, CropStoreWriter
from gradcamo.train_settings import TrainSettings
from gradcamo.training import HISTORY_COLUMNS, one_cycle_schedule, train_classifier, write_training_outputs
from gradcamo.validation_audit import ValidationAudit, selection_score, validation_counterfactuals

CHANNELS = ["DNA", "ER", "Mito"]
CROP = (8, 16, 16)
TREATMENTS = ["DMSO", "CompoundA", "CompoundB"]
TRAIN_CONFIG = {
    "variant": "b0",
    "norm": "batch",
    "drop_connect_rate": 0.0,
    "epochs": 4,
    "batch_size": 16,
    "learning_rate": 0.002,
    # the share of 4 epochs the warm-up took before the key existed (one epoch)
    "warmup_fraction": 0.25,
    "weight_decay": 0.05,
    "patience": 5,
    "select_by": "accuracy",
    "audit_cells": 256,
    "seed": 0,
    "num_workers": 0,
    "mixed_precision": True,
    "augment": {
        "flip_z": False,
        "intensity_jitter": 0.1,
        "context_swap": {"probability": 0.0, "margin": 2},
    },
    "attention_penalty": {
        "weight": 0.0,
        "method": "input_x_gradient",
        "target_layer": "_blocks.2",
        "target_resolution": None,
        "dilation": 2,
    },
    "gpu": 0,
}


def blob_cells(
    rng: np.random.Generator, n: int, radius: float, bright_channel: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` crops (n, C, Z, Y, X) of a noisy Gaussian blob of about ``radius`` voxels, brightest
    in ``bright_channel``, and their masks."""
    grid = np.meshgrid(*(np.arange(s) - (s - 1) / 2 for s in CROP), indexing="ij")
    images = np.empty((n, len(CHANNELS), *CROP), np.float32)
    masks = np.empty((n, *CROP), np.uint8)
    for i in range(n):
        centre = rng.normal(0, 1.0, 3)
        r = radius * rng.uniform(0.9, 1.1)
        d2 = sum(((g - c) / s) ** 2 for g, c, s in zip(grid, centre, (r / 2, r, r)))
        blob = np.exp(-d2 / 2)
        for c in range(len(CHANNELS)):
            level = rng.uniform(0.8, 1.0) if c == bright_channel else rng.uniform(0.3, 0.5)
            images[i, c] = blob * level + rng.normal(0, 0.05, blob.shape)
        masks[i] = np.where(d2 < 1, 1, 0)
    return images, masks


def write_wells(
    root: Path,
    wells_per_treatment: int = 4,
    cells_per_well: int = 10,
    radius_step: float = 1.5,
    shortcut: float = 0.0,
) -> pd.DataFrame:
    """One crop store per well under ``root``; returns plate, well, treatment, store.

    Treatment ``k`` has blobs of radius ``1.5 + radius_step * k``; with ``shortcut`` > 0,
    channel 0 is raised by ``shortcut * k`` beyond 2 voxels of each cell: a background that
    predicts the treatment (the same cells and masks as without it).
    """
    rng = np.random.default_rng(0)
    rows = []
    for k, treatment in enumerate(TREATMENTS):
        for w in range(wells_per_treatment):
            plate, well = f"P{w % 2 + 1}", f"{'BCD'[k]}{w + 2:02d}"
            path = root / plate / well
            images, masks = blob_cells(rng, cells_per_well, radius=1.5 + radius_step * k, bright_channel=k)
            if shortcut:
                outside = ~dilate(masks == 1, 2)
                images[:, 0] += np.where(outside, shortcut * k, 0.0).astype(np.float32)
            writer = CropStoreWriter(path, cells_per_well, CHANNELS, CROP, {"scope": "site"})
            writer.write(images, masks)
            writer.close(
                pd.DataFrame(
                    {
                        "Metadata_Plate": [plate] * cells_per_well,
                        "Metadata_Well": [well] * cells_per_well,
                        "Metadata_Site": [1] * cells_per_well,
                        "Metadata_ObjectNumber": np.arange(1, cells_per_well + 1),
                    }
                )
            )
            rows.append({"plate": plate, "well": well, "treatment": treatment, "store": str(path)})
    return pd.DataFrame(rows)


def blob_fills(wells: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each plate's neutral fill, as the crop stage draws it: the voxels ``(M, C)`` of its
    wells' crops farther than 2 voxels from the cell."""
    fills = {}
    for plate, rows in wells.groupby("plate"):
        voxels = []
        for path in rows["store"]:
            store = CropStore.open(path)
            away = ~dilate(np.asarray(store.masks) == 1, 2)  # (N, Z, Y, X)
            voxels.append(np.moveaxis(np.asarray(store.images, np.float32), 1, -1)[away])
        fills[plate] = np.concatenate(voxels)
    return fills


def split_table(wells: pd.DataFrame) -> pd.DataFrame:
    split = split_wells(wells, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=0)
    return split.merge(wells[["plate", "well", "store"]], on=["plate", "well"])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: small 3D convolutions gain little from two, and runs must compare."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def wells(tmp_path_factory) -> pd.DataFrame:
    return split_table(write_wells(tmp_path_factory.mktemp("crops")))


@pytest.fixture(scope="module")
def trained(wells, tmp_path_factory):
    """One uninterrupted CPU training run (1 thread, as the resumed run in a subprocess)."""
    out = tmp_path_factory.mktemp("train")
    result = train_classifier(
        wells,
        TrainSettings.from_config(TRAIN_CONFIG),
        CHANNELS,
        CROP,
        "cpu",
        resume_path=out / "resume" / "last.pt",
    )
    write_training_outputs(result, out / "model.pt", out / "history.tsv", out / "metrics.json")
    return result, out


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize("crop_shape", [(8, 16, 16), (12, 32, 32), (21, 128, 128)])
def test_model_forward_on_cpu(crop_shape):
    """Sizes below 32 and the paper's 21×128×128 crops both run, giving (N, classes) logits."""
    torch.manual_seed(0)
    model = build_model("b0", 5, 4, crop_shape).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 5, *crop_shape))
    assert logits.shape == (2, 4)
    assert torch.isfinite(logits).all()
    # Fan-in initialised head: small initial logits, not MONAI's TensorFlow-style ±10.
    assert logits.abs().max() < 5


def test_group_norm_model_judges_each_cell_alone_and_round_trips(tmp_path):
    """With ``norm="group"`` a cell's logits do not depend on its batch, even in training
    mode, and the checkpoint rebuilds the same architecture."""
    torch.manual_seed(0)
    model = build_model("b0", 5, 4, (8, 16, 16), norm="group").train()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    model._dropout.p = 0.0  # switch off the random layers: dropout and drop connect
    set_drop_connect_rate(model, 0.0)
    cells = torch.randn(3, 5, 8, 16, 16)
    with torch.no_grad():
        together = model(cells)
        alone = torch.cat([model(cells[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)

    meta = {
        "variant": "b0",
        "norm": "group",
        "channels": list("ABCDE"),
        "classes": list("wxyz"),
        "crop_shape": [8, 16, 16],
        "normalization": {},
    }
    save_checkpoint(tmp_path / "model.pt", model, meta)
    loaded, loaded_meta = load_checkpoint(tmp_path / "model.pt")
    assert loaded_meta["norm"] == "group"
    with torch.no_grad():
        torch.testing.assert_close(loaded(cells), model.eval()(cells))


def test_unknown_norm_is_named():
    with pytest.raises(InputError, match="norm 'layer'"):
        build_model("b0", 5, 4, (8, 16, 16), norm="layer")


# ----------------------------------------------------------------------------- data


def test_augment_keeps_content_and_repeats_per_seed():
    rng = np.random.default_rng(1)
    image = rng.random((3, 4, 6, 6)).astype(np.float32)
    plain = Augmentation(flip_z=True, intensity_jitter=0.0)
    outs = [augment(image, np.random.default_rng([0, 1, d]), plain) for d in range(20)]
    for out in outs:
        assert out.shape == image.shape and out.flags.c_contiguous
        # Flips and rotations only move voxels: each channel keeps its values.
        for c in range(3):
            np.testing.assert_array_equal(np.sort(out[c].ravel()), np.sort(image[c].ravel()))
    assert len({out.tobytes() for out in outs}) > 5
    again = augment(image, np.random.default_rng([0, 1, 7]), plain)
    np.testing.assert_array_equal(again, outs[7])
    original = image.copy()
    jittered = augment(image, np.random.default_rng(0), Augmentation(flip_z=False, intensity_jitter=0.2))
    assert not np.allclose(np.sort(jittered.ravel()), np.sort(image.ravel()))
    np.testing.assert_array_equal(image, original)  # the input is left alone


def test_augment_rotates_non_square_crops_by_half_turns_only():
    image = np.random.default_rng(2).random((1, 2, 4, 6)).astype(np.float32)
    for draw in range(30):
        out = augment(
            image, np.random.default_rng([0, 0, draw]), Augmentation(flip_z=False, intensity_jitter=0.0)
        )
        assert out.shape == image.shape


def test_balanced_draws_are_seeded_per_epoch_and_balanced():
    labels = np.array([0] * 90 + [1] * 10)
    first = list(BalancedDraws(labels, 2000, seed=0, epoch=1))
    assert first == list(BalancedDraws(labels, 2000, seed=0, epoch=1))
    assert first != list(BalancedDraws(labels, 2000, seed=0, epoch=2))
    assert all(epoch == 1 for epoch, _, _ in first)
    assert [draw for _, draw, _ in first] == list(range(2000))
    share_minor = np.mean(labels[[cell for _, _, cell in first]] == 1)
    assert 0.45 < share_minor < 0.55


def test_dataset_reads_lazily_and_workers_do_not_change_batches(wells):
    stores, cells = cell_table(wells)
    assert len(cells) == 120 and list(cells["row"][:3]) == [0, 1, 2]
    labels = cells["treatment"].map({t: i for i, t in enumerate(sorted(TREATMENTS))})
    augmentation = Augmentation(flip_z=False, intensity_jitter=0.1)
    data = CropCells(stores, cells["store"], cells["row"], labels, augmentation, seed=3)
    image, label = data[13]
    expected = CropStore.open(stores[cells["store"][13]]).images[cells["row"][13]]
    np.testing.assert_array_equal(image.numpy(), expected.astype(np.float32))
    assert label == labels[13]

    def batches(num_workers):
        draws = BalancedDraws(data.labels, 32, seed=3, epoch=2)
        loader = torch.utils.data.DataLoader(
            data, batch_size=8, sampler=draws, num_workers=num_workers, collate_fn=as_batch
        )
        return [tuple(t.numpy() for t in (b.images, *b.to(torch.device("cpu")))) for b in loader]

    serial, parallel = batches(0), batches(2)
    for (raw_s, xs, ys), (raw_p, xp, yp) in zip(serial, parallel, strict=True):
        assert raw_s.dtype == np.float16  # the CPU side moves crops as stored
        np.testing.assert_array_equal(raw_s, raw_p)
        np.testing.assert_array_equal(xs, xp)
        np.testing.assert_array_equal(ys, yp)
    # Each draw of a batch, augmented after the transfer, is the CPU reference's to the bit.
    draws = list(BalancedDraws(data.labels, 32, seed=3, epoch=2))
    reference = np.stack([data[key][0].numpy() for key in draws[:8]])
    np.testing.assert_array_equal(serial[0][1], reference)


@pytest.mark.parametrize("flip_z,jitter,shape", [(False, 0.1, (3, 4, 6, 6)), (True, 0.0, (2, 5, 4, 7))])
def test_augment_batch_is_the_reference_augment_to_the_bit(flip_z, jitter, shape):
    """The device-side augmentation (torch, any device) equals the NumPy reference draw by
    draw, with and without square planes (quarter vs half turns) and jitter."""
    augmentation = Augmentation(flip_z=flip_z, intensity_jitter=jitter)
    images = np.random.default_rng(0).random((16, *shape)).astype(np.float16)
    square = shape[-1] == shape[-2]
    params = np.stack(
        [augment_params(np.random.default_rng([5, 1, d]), augmentation, shape[0], square) for d in range(16)]
    )
    assert set(params[:, 3]) <= ({0, 1, 2, 3} if square else {0, 2})
    batch = augment_batch(torch.from_numpy(images), torch.from_numpy(params)).numpy()
    for d in range(16):
        expected = augment(images[d].astype(np.float32), np.random.default_rng([5, 1, d]), augmentation)
        np.testing.assert_array_equal(batch[d], expected)


# ----------------------------------------------------------------------------- metrics


def test_classification_metrics_count_a_small_case():
    classes = ["a", "b", "c"]
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 2, 2])
    m = classification_metrics(labels, predicted, classes)
    assert m["n_cells"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["confusion_matrix"] == {"labels": classes, "counts": [[2, 1, 0], [0, 1, 1], [0, 0, 1]]}
    assert m["chance_level"] == pytest.approx(1 / 3)
    assert m["majority_class_rate"] == pytest.approx(3 / 6)
    # A split lacking a class: balanced accuracy over the classes present.
    m = classification_metrics(np.array([0, 0, 1]), np.array([0, 2, 1]), classes)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    empty = classification_metrics(np.array([], int), np.array([], int), classes)
    assert empty["n_cells"] == 0 and empty["accuracy"] is None


# ----------------------------------------------------------------------------- training


def test_training_learns_on_held_out_wells(trained):
    result, _ = trained
    test = result.metrics["test"]
    assert test["n_cells"] == 30 and test["chance_level"] == pytest.approx(1 / 3)
    assert test["accuracy"] > test["chance_level"] + 0.3, test
    assert result.history["train_loss"].iloc[-1] < result.history["train_loss"].iloc[0]


def test_outputs_are_complete_and_loadable(trained, wells):
    result, out = trained
    model, meta = load_checkpoint(out / "model.pt")
    assert meta["classes"] == sorted(TREATMENTS)
    assert meta["channels"] == CHANNELS and tuple(meta["crop_shape"]) == CROP
    assert meta["normalization"] == {"scope": "site"} and meta["variant"] == "b0"
    assert 1 <= meta["best_epoch"] <= TRAIN_CONFIG["epochs"]
    assert meta["config"]["learning_rate"] == TRAIN_CONFIG["learning_rate"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[name]), name

    history = pd.read_csv(out / "history.tsv", sep="\t")
    assert tuple(history.columns) == HISTORY_COLUMNS
    assert list(history["epoch"]) == list(range(1, len(history) + 1))
    assert history["seconds"].gt(0).all() and history["learning_rate"].gt(0).all()

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == sorted(TREATMENTS)
    assert metrics["best_epoch"] == meta["best_epoch"]
    # what decides the float rounding is recorded with the model and in the metrics
    assert metrics["numerics"] == meta["numerics"]
    assert meta["numerics"]["torch"] == torch.__version__ and meta["numerics"]["threads"] >= 1
    assert meta["numerics"]["device"].startswith("CPU") and meta["numerics"]["cpu_capability"]
    for split in ("train", "val", "test"):
        m = metrics["splits"][split]
        assert m["n_cells"] == (wells["split"] == split).sum() * 10
        assert m["confusion_matrix"]["labels"] == sorted(TREATMENTS)
        assert np.sum(m["confusion_matrix"]["counts"]) == m["n_cells"]
        assert {"accuracy", "balanced_accuracy", "chance_level", "majority_class_rate"} <= set(m)
    # The best validation accuracy in the history is the one reported for the best epoch.
    best = history.loc[history["epoch"] == meta["best_epoch"], "val_accuracy"].item()
    assert best == history["val_accuracy"].max()
    assert metrics["splits"]["val"]["accuracy"] == pytest.approx(best)


RUNNER = """
import json, logging, sys
import pandas as pd, torch
torch.set_num_threads(1)
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
from gradcamo.train_settings import TrainSettings
from gradcamo.training import train_classifier, write_training_outputs
wells = pd.read_csv(sys.argv[1], sep="\\t", dtype=str)
config, out = json.loads(sys.argv[2]), sys.argv[3]
result = train_classifier(wells, TrainSettings.from_config(config), {channels}, {crop}, "cpu",
                          resume_path=out + "/resume/last.pt")
write_training_outputs(result, out + "/model.pt", out + "/history.tsv", out + "/metrics.json")
""".format(channels=CHANNELS, crop=CROP)


def run_training(wells_tsv: Path, out: Path, kill_after_first_checkpoint: bool) -> str:
    cmd = [sys.executable, "-c", RUNNER, str(wells_tsv), json.dumps(TRAIN_CONFIG), str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if kill_after_first_checkpoint:
        checkpoint = out / "resume" / "last.pt"
        while not checkpoint.exists() and proc.poll() is None:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    output, _ = proc.communicate(timeout=300)
    return output


def test_killed_run_resumes_to_the_same_result(trained, wells, tmp_path):
    result, _ = trained
    wells_tsv = tmp_path / "wells.tsv"
    wells.to_csv(wells_tsv, sep="\t", index=False)
    out = tmp_path / "run"

    run_training(wells_tsv, out, kill_after_first_checkpoint=True)
    assert not (out / "model.pt").exists()
    state = torch.load(out / "resume" / "last.pt", weights_only=False)
    killed_after = len(state["progress"]["history"])
    assert 1 <= killed_after < TRAIN_CONFIG["epochs"]

    log = run_training(wells_tsv, out, kill_after_first_checkpoint=False)
    assert f"resuming from {out / 'resume' / 'last.pt'} after epoch {killed_after}" in log, log
    model, meta = load_checkpoint(out / "model.pt")
    for name, value in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    history = pd.read_csv(out / "history.tsv", sep="\t", float_precision="round_trip")
    history = history.drop(columns="seconds")
    pd.testing.assert_frame_equal(history, result.history.drop(columns="seconds"), check_exact=True)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["splits"] == json.loads(json.dumps(result.metrics))
    assert meta["best_epoch"] == result.meta["best_epoch"]


def test_resume_state_of_other_settings_is_ignored(tmp_path, caplog):
    path = tmp_path / "resume" / "last.pt"
    save_resume_state(path, {"format": 1, "fingerprint": "abc", "history": []})
    assert not list(path.parent.glob(".*tmp"))  # no temporary file left behind
    (path.parent / ".last.pt.999.tmp").write_bytes(b"half")  # a run killed mid-write
    assert load_resume_state(path, "abc") is not None
    assert not list(path.parent.glob(".*tmp"))
    assert load_resume_state(path, "other") is None
    assert "other training settings or data" in caplog.text
    path.write_bytes(b"truncated")
    assert load_resume_state(path, "abc") is None


def test_fingerprint_changes_with_settings_and_split(wells):
    settings = TrainSettings.from_config(TRAIN_CONFIG)
    base = fingerprint(settings, wells, sorted(TREATMENTS), {})
    assert base == fingerprint(settings, wells.copy(), sorted(TREATMENTS), {})
    workers = TrainSettings.from_config({**TRAIN_CONFIG, "num_workers": 4})
    assert fingerprint(workers, wells, sorted(TREATMENTS), {}) == base  # does not change results
    lr = TrainSettings.from_config({**TRAIN_CONFIG, "learning_rate": 0.01})
    assert fingerprint(lr, wells, sorted(TREATMENTS), {}) != base
    moved = wells.copy()
    a, b = wells.index[wells["split"] == "train"][0], wells.index[wells["split"] == "test"][0]
    moved.loc[[a, b], "split"] = ["test", "train"]
    assert fingerprint(settings, moved, sorted(TREATMENTS), {}) != base


@pytest.mark.parametrize("warmup_fraction", [0.05, 0.3])
def test_the_learning_rate_peaks_after_the_warm_up_share_of_the_steps(warmup_fraction):
    settings = TrainSettings.from_config({**TRAIN_CONFIG, "epochs": 20, "warmup_fraction": warmup_fraction})
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=settings.learning_rate)
    schedule = one_cycle_schedule(optimizer, settings, steps_per_epoch=10)
    rates = []
    for _ in range(200):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    peak = int(np.argmax(rates))
    assert rates[peak] == pytest.approx(settings.learning_rate)
    assert peak == round(warmup_fraction * 200) - 1
    assert rates[0] == pytest.approx(settings.learning_rate / 25)  # OneCycleLR's div_factor
    assert np.all(np.diff(rates[: peak + 1]) > 0) and np.all(np.diff(rates[peak:]) < 0)


@pytest.mark.parametrize("steps_per_epoch", [1, 2, 4, 8])
def test_a_warm_up_of_one_step_does_not_divide_by_zero(steps_per_epoch):
    # 0.25 of 4 steps: OneCycleLR alone raises ZeroDivisionError at the first step
    settings = TrainSettings.from_config({**TRAIN_CONFIG, "epochs": 1, "warmup_fraction": 0.25})
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=settings.learning_rate)
    schedule = one_cycle_schedule(optimizer, settings, steps_per_epoch)
    rates = []
    for _ in range(steps_per_epoch):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert all(np.isfinite(rates)) and max(rates) <= settings.learning_rate


def test_bad_inputs_are_named(wells):
    with pytest.raises(InputError, match="train lacks key"):
        TrainSettings.from_config({k: v for k, v in TRAIN_CONFIG.items() if k != "epochs"})
    with pytest.raises(InputError, match="train.batch_size"):
        TrainSettings.from_config({**TRAIN_CONFIG, "batch_size": 1})
    with pytest.raises(InputError, match="train.warmup_fraction"):
        TrainSettings.from_config({**TRAIN_CONFIG, "warmup_fraction": 1.0})
    settings = TrainSettings.from_config(TRAIN_CONFIG)
    with pytest.raises(InputError, match="differ from config channels"):
        train_classifier(wells, settings, ["DNA", "ER", "RNA"], CROP)
    with pytest.raises(InputError, match="crops.shape"):
        train_classifier(wells, settings, CHANNELS, (8, 16, 12))
    no_train = wells.assign(split=wells["split"].replace("train", "test"))
    with pytest.raises(InputError, match="0 cell"):
        train_classifier(no_train, settings, CHANNELS, CROP)


def test_cpu_fallback_is_logged(caplog):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert choose_device(1).type == "cpu"
    assert "no CUDA device is visible" in caplog.text
    assert choose_device(0).type == "cpu"


def test_validation_without_a_treatment_still_trains(wells, caplog):
    val_rows = wells.index[(wells["split"] == "val") & (wells["treatment"] == "DMSO")]
    uneven = wells.copy()
    uneven.loc[val_rows, "split"] = "train"
    settings = TrainSettings.from_config({**TRAIN_CONFIG, "epochs": 1})
    result = train_classifier(uneven, settings, CHANNELS, CROP)
    expected = "val split has no cells of treatment(s) DMSO; its accuracy covers the other 2"
    assert expected in caplog.text
    val = result.metrics["val"]
    dmso = sorted(TREATMENTS).index("DMSO")
    assert sum(val["confusion_matrix"]["counts"][dmso]) == 0
    assert val["n_cells"] == 20 and 0 <= val["balanced_accuracy"] <= 1
    assert np.isfinite(result.history["val_accuracy"]).all()


# ----------------------------------------------------------------------------- the validation audit


def test_validation_cells_are_taken_apart_as_the_profile_audit_takes_them_apart(wells, monkeypatch):
    """Each validation cell's two counterfactuals are the profile stage's (same fill, margin
    and per-cell seeds), stored as float16, whatever block they were made in; a cap keeps a
    seeded subset in store order."""
    monkeypatch.setattr(validation_audit, "COUNTERFACTUAL_BLOCK", 3)  # 10 cells per well: 4 blocks
    fills = blob_fills(wells)
    stores, cells = cell_table(wells)
    val = np.flatnonzero(cells["split"] == "val")
    store_index, row = cells["store"].to_numpy()[val], cells["row"].to_numpy()[val]
    data = CropCells(stores, store_index, row, np.arange(len(val)))
    audit = ValidationAudit(fills, cell_margin=1, seed=3)
    out = validation_counterfactuals(data, audit, max_cells=1000, seed=0)
    assert out.cell_alone.dtype == torch.float16 and out.cell_alone.shape == (len(val), len(CHANNELS), *CROP)
    np.testing.assert_array_equal(out.labels, np.arange(len(val)))
    at = 0
    for path in wells.loc[wells["split"] == "val", "store"]:
        store = CropStore.open(path)
        n = len(store)
        without_cell, without_context = counterfactual_crops(
            np.asarray(store.images, np.float32),
            np.asarray(store.masks),
            fills[store.cells["Metadata_Plate"].iloc[0]],
            1,
            audit_seeds(store.cells, 3),
        )
        np.testing.assert_array_equal(out.cell_alone[at : at + n].numpy(), without_context.astype(np.float16))
        np.testing.assert_array_equal(out.context_alone[at : at + n].numpy(), without_cell.astype(np.float16))
        at += n
    capped = validation_counterfactuals(data, audit, max_cells=7, seed=0)
    assert len(capped.labels) == 7 and np.all(np.diff(capped.labels) > 0)  # a subset, in order
    np.testing.assert_array_equal(capped.cell_alone.numpy(), out.cell_alone[capped.labels].numpy())
    plate = wells.loc[wells["split"] == "val", "plate"].iloc[0]
    others = {name: fill for name, fill in fills.items() if name != plate}
    with pytest.raises(InputError, match=f"plate '{plate}' has no neutral fill"):
        validation_counterfactuals(data, ValidationAudit(others, 1, 3), 1000, 0)


def test_training_audits_its_validation_cells_and_can_keep_the_epoch_that_reads_the_cell_best(wells, caplog):
    caplog.set_level("INFO", logger="gradcamo.training")
    settings = TrainSettings.from_config(
        {
            **TRAIN_CONFIG,
            "epochs": 3,
            "warmup_fraction": 0.3,
            "select_by": "cell_accuracy",
            "mixed_precision": False,
        }
    )
    audit = ValidationAudit(blob_fills(wells), cell_margin=1, seed=0)
    result = train_classifier(wells, settings, CHANNELS, CROP, "cpu", audit=audit)
    history = result.history
    assert tuple(history.columns) == HISTORY_COLUMNS
    for column in ("val_cell_accuracy", "val_context_accuracy"):
        assert history[column].between(0, 1).all(), history
    assert "validation audit: 30 validation cells" in caplog.text
    assert "(cell alone " in caplog.text and "accuracy from the cell alone" in caplog.text
    scores = [
        selection_score("cell_accuracy", row.val_accuracy, row.val_loss, row.val_cell_accuracy)
        for row in history.itertuples()
    ]
    best_row = max(range(len(scores)), key=scores.__getitem__)  # the first of equal scores
    assert result.meta["best_epoch"] == int(history["epoch"].iloc[best_row])
    # The blobs' size and colour are in the cell: from the cell alone the model keeps most of
    # what it reads; from the context alone (the blob replaced) it is near chance.
    best = history.loc[history["epoch"] == result.meta["best_epoch"]].iloc[0]
    assert best["val_cell_accuracy"] > best["val_context_accuracy"], history


def test_selection_settings_are_checked(wells):
    with pytest.raises(InputError, match="train.select_by is 'loss'"):
        TrainSettings.from_config({**TRAIN_CONFIG, "select_by": "loss"})
    with pytest.raises(InputError, match="train.audit_cells is 0"):
        TrainSettings.from_config({**TRAIN_CONFIG, "select_by": "cell_accuracy", "audit_cells": 0})
    settings = TrainSettings.from_config({**TRAIN_CONFIG, "select_by": "cell_accuracy"})
    with pytest.raises(InputError, match="needs the plates' neutral fills"):
        train_classifier(wells, settings, CHANNELS, CROP)
    assert selection_score("accuracy", 0.5, 1.0, 0.9) == (0.5, -1.0)
    assert selection_score("cell_accuracy", 0.5, 1.0, 0.9) == (0.9, 0.5, -1.0)
