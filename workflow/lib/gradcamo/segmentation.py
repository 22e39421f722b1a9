"""Cellpose 3 segmentation of ZCYX z-stacks: offline model lookup, training, inference, scoring.

Cellpose does the work (network, flows, stitching, training loop, matching metric); this
module only feeds it the two configured channels in the layout it expects and keeps it
offline:

- built-in model names (``cyto3``, ``nuclei``, ...) are looked up in Cellpose's model folder
  (``CELLPOSE_LOCAL_MODELS_PATH``, else ``~/.cellpose/models``) *before* Cellpose is asked
  to build the model, because Cellpose would otherwise start a download and hang on a
  node without internet;
- segmentation is 2D per z-plane with Cellpose's own 3D stitching (``mode="stitch"``) or
  Cellpose's full 3D flows (``mode="3d"``) with the voxel anisotropy;
- training runs :func:`cellpose.train.train_seg` on 2D z-planes of annotated sites.

Channel layout fed to Cellpose everywhere: ``(..., 2, Y, X)`` with channel 0 = cytoplasm
(whole cell) and channel 1 = nucleus, i.e. Cellpose's ``channels=[cyto, nucleus]``.

One module because every function wraps Cellpose with this one channel layout and the
offline model lookup; its longest part, training (:func:`train_model`), is about 100 lines.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from cellpose import metrics, models, train, transforms
from cellpose import utils as cp_utils
from skimage.segmentation import relabel_sequential

from gradcamo.devices import choose_device
from gradcamo.errors import InputError

log = logging.getLogger(__name__)

MODES = ("stitch", "3d")

# Built-in names whose weights file is "<name>torch_0" (see cellpose.models.model_path);
# every other built-in name is stored under its own name.
_TORCH_SUFFIXED = ("cyto", "cyto2", "nuclei")


@dataclass(frozen=True)
class ModelSource:
    """Where a Cellpose model's weights come from.

    Attributes
    ----------
    name: the configured value (a built-in name or a file path).
    weights: the weights file that exists on disk.
    builtin: True for a Cellpose built-in model (``model_type``), False for a custom file.
    """

    name: str
    weights: Path
    builtin: bool


def model_dir() -> Path:
    """Cellpose's model folder (``CELLPOSE_LOCAL_MODELS_PATH`` or ``~/.cellpose/models``).

    Read from the environment at call time, the way Cellpose reads it at import.
    """
    env = os.environ.get("CELLPOSE_LOCAL_MODELS_PATH")
    return Path(env) if env else Path.home() / ".cellpose" / "models"


def builtin_weights_name(name: str) -> str:
    """File name Cellpose 3 uses for a built-in model's weights (``cyto2`` → ``cyto2torch_0``).

    Only the weights are needed: the size model (``size_cyto3.npy``, ...) is loaded by
    ``cellpose.models.Cellpose`` for diameter estimation, which gradcamo does not use --
    it runs ``CellposeModel`` with the configured diameter (or the model's own).
    """
    return f"{name}torch_0" if name in _TORCH_SUFFIXED else name


def resolve_model(model: str | os.PathLike, folder: Path | None = None) -> ModelSource:
    """Find a model's weights on disk without downloading anything.

    Parameters
    ----------
    model: a Cellpose built-in name (``cyto3``, ``nuclei``, ``cyto2``, ...) or a path to a
        model file (e.g. one written by :func:`train_model`).
    folder: Cellpose's model folder; default :func:`model_dir`.

    Raises
    ------
    InputError: the weights are not there; the message says which file to put where.
    """
    folder = model_dir() if folder is None else Path(folder)
    text = os.fspath(model)
    path = Path(text)
    if path.is_file():
        return ModelSource(text, path, builtin=False)
    if text in models.MODEL_NAMES:
        weights = folder / builtin_weights_name(text)
        if not weights.is_file():
            raise InputError(
                f"segmentation.model: Cellpose built-in model {text!r} is not available "
                f"offline; put its weights file {weights.name!r} (from "
                f"{models._MODEL_URL}/{weights.name}) into {folder} "
                "(the folder CELLPOSE_LOCAL_MODELS_PATH names)"
            )
        return ModelSource(text, weights, builtin=True)
    raise InputError(
        f"segmentation.model: {text!r} is neither an existing model file nor a Cellpose "
        f"built-in name ({', '.join(sorted(set(models.MODEL_NAMES)))})"
    )


def load_model(source: ModelSource, device: torch.device | None = None) -> models.CellposeModel:
    """Build a Cellpose 3 model from resolved, local weights (never downloads)."""
    device = choose_device() if device is None else device
    gpu = device.type == "cuda"
    if source.builtin:
        model = models.CellposeModel(gpu=gpu, device=device, model_type=source.name)
    else:
        model = models.CellposeModel(gpu=gpu, device=device, pretrained_model=os.fspath(source.weights))
    log.info("Cellpose model %s (%s) on %s", source.name, source.weights, device)
    return model


def cellpose_input(zstack: np.ndarray, channel_indices: Sequence[int | None]) -> np.ndarray:
    """Pick the cytoplasm and nucleus channels of a ZCYX z-stack.

    Parameters
    ----------
    zstack: ``(Z, C, Y, X)``.
    channel_indices: ``(cytoplasm, nucleus)`` indices into C; nucleus None gives a zero
        second channel (Cellpose's "no nuclear channel").

    Returns
    -------
    ``(Z, 2, Y, X)`` float32.
    """
    cyto, nucleus = channel_indices
    out = np.zeros((zstack.shape[0], 2, *zstack.shape[2:]), np.float32)
    out[:, 0] = zstack[:, int(cyto)]
    if nucleus is not None:
        out[:, 1] = zstack[:, int(nucleus)]
    return out


def segment_zstack(
    model: models.CellposeModel,
    zstack: np.ndarray,
    channel_indices: Sequence[int | None],
    *,
    mode: str = "stitch",
    diameter: float | None = None,
    flow_threshold: float = 0.4,
    cellprob_threshold: float = 0.0,
    stitch_threshold: float = 0.25,
    min_size: int = 15,
    anisotropy: float = 1.0,
    batch_size: int = 8,
) -> np.ndarray:
    """Segment the cells of one z-stack.

    Parameters
    ----------
    model: a loaded Cellpose model (:func:`load_model`).
    zstack: ``(Z, C, Y, X)`` raw intensities.
    channel_indices: ``(cytoplasm, nucleus)`` indices into C.
    mode: ``"stitch"`` (2D per z-plane, masks stitched across planes when their IoU exceeds
        ``stitch_threshold``) or ``"3d"`` (Cellpose ``do_3D`` with ``anisotropy`` = Z voxel
        size / Y voxel size).
    diameter: expected cell diameter in pixels; None or 0 uses the model's own (the mean
        diameter of its training cells for a custom model, 30 / 17 for built-ins).
    flow_threshold, cellprob_threshold, min_size: Cellpose's mask parameters (``min_size``
        in voxels after stitching).

    Returns
    -------
    ``(Z, Y, X)`` int32 labels, 0 = background, cells numbered 1..N.
    """
    if mode not in MODES:
        raise InputError(f"segmentation.mode: {mode!r} is not one of {', '.join(MODES)}")
    if mode == "stitch" and stitch_threshold <= 0 and zstack.shape[0] > 1:
        raise InputError(
            "segmentation.stitch_threshold must be > 0 in mode 'stitch' (otherwise the "
            "planes' masks are not joined into cells)"
        )
    x = cellpose_input(zstack, channel_indices)
    # Cellpose leaves a channel without contrast un-normalised (raw values into the network,
    # which then "sees" cells in an empty field); zero is what normalisation would give it.
    x[:, np.ptp(x, axis=(0, 2, 3)) == 0] = 0
    n_planes = x.shape[0]
    # A fresh dict each call: Cellpose mutates its module-level normalisation defaults.
    normalize = {"normalize": True, "norm3D": True}
    masks, _flows, _styles = model.eval(
        x if n_planes > 1 else x[0],
        channel_axis=1 if n_planes > 1 else 0,
        z_axis=0 if n_planes > 1 else None,
        normalize=normalize,
        diameter=diameter or None,
        flow_threshold=flow_threshold,
        cellprob_threshold=cellprob_threshold,
        do_3D=mode == "3d" and n_planes > 1,
        anisotropy=anisotropy,
        stitch_threshold=stitch_threshold if mode == "stitch" and n_planes > 1 else 0.0,
        min_size=min_size,
        batch_size=batch_size,
    )
    masks = np.asarray(masks).reshape(zstack.shape[0], *zstack.shape[2:])
    return relabel_sequential(masks.astype(np.int32))[0]


def select_training_planes(labels: np.ndarray, n_planes: int) -> np.ndarray:
    """Deterministically choose ``n_planes`` z-planes of a label image for training.

    Evenly spaced over the planes that contain at least one cell, so that the model sees
    cells cut through their middle and near their top and bottom (as it will when
    segmenting plane by plane).

    Parameters
    ----------
    labels: ``(Z, Y, X)`` ground-truth labels.

    Returns
    -------
    Sorted plane indices (at most ``n_planes``; none for an image without cells).
    """
    occupied = np.flatnonzero(labels.reshape(labels.shape[0], -1).max(axis=1) > 0)
    if len(occupied) <= n_planes:
        return occupied
    picks = np.linspace(0, len(occupied) - 1, n_planes).round().astype(int)
    return occupied[np.unique(picks)]


def training_planes(
    zstack: np.ndarray,
    labels: np.ndarray,
    channel_indices: Sequence[int | None],
    n_planes: int,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """2D training pairs from one annotated site.

    The z-stack is normalised as a whole (Cellpose's ``norm3D``: 1st-99th percentile per
    channel over the stack), exactly as :func:`segment_zstack` normalises it, so the planes
    the model trains on look like the planes it will segment.

    Parameters
    ----------
    zstack: ``(Z, C, Y, X)``; labels: ``(Z, Y, X)``.

    Returns
    -------
    (images, labels): lists of ``(2, Y, X)`` float32 and ``(Y, X)`` int32 arrays.
    """
    x = cellpose_input(zstack, channel_indices)  # (Z, 2, Y, X)
    x = transforms.normalize_img(x, norm3D=True, axis=1)  # still (Z, 2, Y, X)
    planes = select_training_planes(labels, n_planes)
    images = [np.ascontiguousarray(x[z]) for z in planes]
    masks = [labels[z].astype(np.int32) for z in planes]
    return images, masks


def seed_everything(seed: int) -> None:
    """Seed NumPy and torch (CPU and CUDA) so training is repeatable on one machine."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def train_model(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    out_path: str | os.PathLike,
    *,
    pretrained: ModelSource | None = None,
    epochs: int = 40,
    learning_rate: float = 0.01,
    weight_decay: float = 1e-4,
    batch_size: int = 8,
    seed: int = 0,
    device: torch.device | None = None,
    diam_mean: float | None = None,
) -> dict:
    """Train a Cellpose 3 model (CPnet) with :func:`cellpose.train.train_seg`.

    Parameters
    ----------
    images: ``(2, Y, X)`` float32 planes already normalised (:func:`training_planes`).
    labels: ``(Y, X)`` integer label planes, same order.
    out_path: the model file to write (a Cellpose model file, loadable by
        :func:`resolve_model` / :func:`load_model`).
    pretrained: start from these weights; None trains from random initialisation.
    epochs, learning_rate, weight_decay, batch_size: Cellpose's training settings (its
        AdamW optimiser; from random weights 0.1 diverges, 0.01 trains in ~80 steps).
    seed: seeds NumPy and torch (network initialisation, augmentation).
    diam_mean: from random weights, the cell diameter (pixels) the network works at; images
        are resampled by ``diam_mean`` / the cells' diameter in training and at inference.
        None: the training cells' own mean diameter (no resampling). Smaller is faster (a
        network at 10 px reads 62 px cells at a sixteenth of the pixels).

    Returns
    -------
    A summary dict: n_images, seconds, final_loss, diam_mean (the scale the network works
    at), diam_labels (mean training-cell diameter), tile (training patch size).
    """
    if len(images) == 0:
        raise InputError("segmentation.train.sites: the annotated sites hold no cells to train on")
    device = choose_device() if device is None else device
    seed_everything(seed)
    scale = 1.0
    if pretrained is None:
        # From scratch the network can work at the cells' own scale: with diam_mean set to
        # the training cells' mean diameter, neither training nor inference (diameter
        # None) resamples the images, which Cellpose would otherwise scale to 30 px cells.
        # A diam_mean given works at that scale instead (training resamples each image by
        # diam_mean / its cells' diameter).
        diam_labels = float(np.mean([cp_utils.diameters(lab)[0] for lab in labels]))
        if diam_mean is not None:
            scale = float(diam_mean) / diam_labels
        model = models.CellposeModel(
            gpu=device.type == "cuda",
            device=device,
            pretrained_model=False,
            diam_mean=diam_labels if diam_mean is None else float(diam_mean),
        )
    else:
        model = load_model(pretrained, device)
    # Training patches (Cellpose's augmentation crops bsize x bsize, zero-padding smaller
    # images) need not be larger than the images themselves, as resampled for training.
    tile = int(min(224, 16 * np.ceil(scale * max(max(im.shape[-2:]) for im in images) / 16)))
    log.info(
        "training Cellpose on %d planes (%s) on %s: epochs=%d lr=%g wd=%g batch=%d",
        len(images),
        "random init" if pretrained is None else f"from {pretrained.name}",
        device,
        epochs,
        learning_rate,
        weight_decay,
        batch_size,
    )
    out_path = Path(out_path)
    workdir = Path(tempfile.mkdtemp(prefix=".cellpose-train.", dir=out_path.parent))
    tic = time.perf_counter()
    try:
        weights, train_losses, _ = train.train_seg(
            model.net,
            train_data=list(images),
            train_labels=list(labels),
            # Already normalised by training_planes, as at inference. A dict, because a bool
            # would be written into Cellpose's module-wide normalisation defaults.
            normalize={"normalize": False},
            channels=None,
            batch_size=batch_size,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            n_epochs=epochs,
            min_train_masks=1,
            bsize=tile,
            save_path=workdir,
            save_every=max(epochs, 1),
            model_name="cellpose_model",
        )
        shutil.move(os.fspath(weights), out_path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.perf_counter() - tic
    return {
        "n_images": len(images),
        "seconds": round(seconds, 1),
        "final_loss": float(train_losses[-1]) if len(train_losses) else float("nan"),
        "diam_mean": float(model.net.diam_mean.item()),
        "diam_labels": float(model.net.diam_labels.item()),
        "tile": tile,
    }


def score_site(true_labels: np.ndarray, pred_labels: np.ndarray, iou: float = 0.5) -> dict:
    """Match predicted cells to ground truth at an IoU threshold (Cellpose's metric).

    Parameters
    ----------
    true_labels, pred_labels: ``(Z, Y, X)`` (or 2D) label images of the same shape.

    Returns
    -------
    dict with n_true, n_pred, tp, fp, fn, ap (= TP / (TP + FP + FN), Cellpose's "average
    precision" at ``iou``) and f1 (= 2TP / (2TP + FP + FN)). A site with no cells in either
    image scores 1.0 (nothing to find, nothing invented).
    """
    if true_labels.shape != pred_labels.shape:
        raise ValueError(f"label shapes differ: {true_labels.shape} vs {pred_labels.shape}")
    true_labels = relabel_sequential(np.asarray(true_labels, dtype=np.int32))[0]
    pred_labels = relabel_sequential(np.asarray(pred_labels, dtype=np.int32))[0]
    n_true, n_pred = int(true_labels.max(initial=0)), int(pred_labels.max(initial=0))
    if n_true == 0 and n_pred == 0:
        return dict(n_true=0, n_pred=0, tp=0, fp=0, fn=0, ap=1.0, f1=1.0)
    _, tp, fp, fn = metrics.average_precision(true_labels, pred_labels, threshold=[iou])
    tp, fp, fn = int(tp[0]), int(fp[0]), int(fn[0])
    return dict(
        n_true=n_true,
        n_pred=n_pred,
        tp=tp,
        fp=fp,
        fn=fn,
        ap=tp / (tp + fp + fn),
        f1=2 * tp / (2 * tp + fp + fn),
    )


def summarize_scores(scores: pd.DataFrame) -> dict:
    """Mean AP and F1 at IoU 0.5 over the held-out sites and over all scored sites.

    Parameters
    ----------
    scores: one row per site with columns ``ap50``, ``f1``, ``tp``, ``fp``, ``fn`` (from
        :func:`score_site` at IoU 0.5) and ``used_for_training`` (the site trained the model).

    Returns
    -------
    ``{"held_out": {...}, "all": {...}}``, each with n_sites, ap50 and f1 (means over sites;
    None without sites) and pooled_f1 (F1 of the summed TP, FP, FN).
    """
    held_out = scores[~scores["used_for_training"].astype(bool)]

    def summary(table: pd.DataFrame) -> dict:
        tp, fp, fn = (int(table[c].sum()) for c in ("tp", "fp", "fn"))
        pooled = 2 * tp + fp + fn
        return {
            "n_sites": int(len(table)),
            "ap50": float(table["ap50"].mean()) if len(table) else None,
            "f1": float(table["f1"].mean()) if len(table) else None,
            "pooled_f1": 2 * tp / pooled if pooled else None,
        }

    return {"held_out": summary(held_out), "all": summary(scores)}
