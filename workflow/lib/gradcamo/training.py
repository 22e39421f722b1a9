"""Training the 3D EfficientNet on treatment labels: seeded, resumable, early-stopped.

One call, :func:`train_classifier`, takes the well table (``plate, well, treatment, split,
store``) and returns the model with its best weights, the per-epoch history and the
metrics per split. Training

- draws cells class-balanced with replacement (:class:`gradcamo.data.BalancedDraws`) and
  augments them with transforms that keep the biology (:func:`gradcamo.data.augment`);
- uses AdamW with a one-cycle learning-rate schedule (PyTorch's ``OneCycleLR``): the rate
  rises along half a cosine from a 25th of its peak over the first ``warmup_fraction`` of the
  planned steps, and falls along half a cosine to nearly 0 over the rest;
- uses autocast mixed precision on CUDA (bf16 where supported, else fp16 with a GradScaler);
- recomputes the batch-norm statistics before every evaluation
  (:func:`gradcamo.prediction.refresh_batch_norm`);
- audits the validation cells after every epoch when given the plates' neutral fills
  (:class:`gradcamo.validation_audit.ValidationAudit`): the accuracy from the cell alone and
  from its context alone, the profile stage's counterfactuals, so the log says each epoch
  whether the model is learning the cell or its surroundings;
- keeps the weights of the epoch with the best validation accuracy (``select_by:
  accuracy``; ties: lower validation loss) or the best accuracy from the cell alone
  (``select_by: cell_accuracy``; ties: validation accuracy, then loss), and stops when that
  has not improved for ``patience`` epochs;
- writes a resume state after every epoch (atomically); a rerun with the same settings and
  data continues from it, and on the CPU ends bitwise-identical to an uninterrupted run.
  A state made with other settings or data is ignored (with a warning): training restarts.

With ``train.attention_penalty.weight`` > 0 the loss adds the weighted share of each
training draw's attribution map outside its cell (:mod:`gradcamo.penalty`); with
``train.augment.context_swap`` draws' contexts come from other cells
(:class:`gradcamo.data.ContextSwap`).

History columns: ``train_loss`` (cross-entropy) / ``train_accuracy`` over the epoch's
augmented training draws (training mode); ``train_penalty`` (the penalty before its weight,
mean over draws), ``penalty_share_of_loss`` (weighted penalty / total loss, summed over the
epoch) and ``penalty_zero_maps`` (draws whose map was zero everywhere), NaN with the penalty
off; ``val_loss`` / ``val_accuracy`` over the validation cells (evaluation mode, NaN without
validation cells), ``val_cell_accuracy`` / ``val_context_accuracy`` from the audit's
counterfactuals of (up to ``audit_cells``) validation cells (NaN without an audit),
``learning_rate`` of the epoch's last step, ``seconds``.

The settings are :class:`gradcamo.train_settings.TrainSettings`, prediction and the
batch-norm refresh :mod:`gradcamo.prediction`, the validation audit and the score the best
epoch is kept by :mod:`gradcamo.validation_audit`, the resume state :mod:`gradcamo.resume`.
One module because the epoch loop (:func:`_fit`) and the stage around it
(:func:`train_classifier`) share the settings, the resume state and the history columns;
what keeps it over 400 lines is the loop's logging and this docstring, not a second concern.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from gradcamo.data import BalancedDraws, CropCells, cell_loader, cell_table, check_stores
from gradcamo.devices import autocast_dtype, numerics, reproducible
from gradcamo.errors import InputError
from gradcamo.io import atomic_path
from gradcamo.metrics import classification_metrics, loss_and_accuracy
from gradcamo.model import build_model, save_checkpoint, set_drop_connect_rate
from gradcamo.penalty import PenalisedModel
from gradcamo.prediction import BATCH_NORM_CELLS, evaluation_batch_size, predict, refresh_batch_norm
from gradcamo.resume import (
    RESUME_FORMAT,
    Progress,
    fingerprint,
    load_resume_state,
    restore_rng_state,
    rng_state,
    save_resume_state,
)
from gradcamo.train_settings import TrainSettings
from gradcamo.validation_audit import (
    Counterfactuals,
    ValidationAudit,
    audit_accuracies,
    selection_score,
    validation_counterfactuals,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "train_penalty",
    "penalty_share_of_loss",
    "penalty_zero_maps",
    "val_loss",
    "val_accuracy",
    "val_cell_accuracy",
    "val_context_accuracy",
    "learning_rate",
    "seconds",
)


@dataclass
class TrainResult:
    """What :func:`train_classifier` returns.

    ``model``: best weights, eval mode, on the CPU. ``meta``: checkpoint metadata (see
    :func:`gradcamo.model.save_checkpoint`). ``history``: one row per epoch
    (``HISTORY_COLUMNS``). ``metrics``: per split, see :func:`classification_metrics`.
    """

    model: nn.Module
    meta: dict[str, Any]
    history: pd.DataFrame
    metrics: dict[str, Any]


# --------------------------------------------------------------------------- loops


@dataclass
class EpochStats:
    """What one training pass measured: mean cross-entropy ``loss`` and ``accuracy`` over the
    draws, the last ``learning_rate``; with a penalty, its mean before the weight
    (``penalty``), the weighted penalty's share of the summed loss (``penalty_share``) and
    the number of all-zero maps (``zero_maps``), NaN without one."""

    loss: float
    accuracy: float
    learning_rate: float
    penalty: float = float("nan")
    penalty_share: float = float("nan")
    zero_maps: float = float("nan")


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    amp: torch.dtype | None,
    penalised: PenalisedModel | None = None,
) -> EpochStats:
    """One pass over the epoch's draws. ``penalised``: add its attention penalty, weighted,
    to the cross-entropy (the loader must then yield masks)."""
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    penalty_sum, weighted_sum, total_sum, zero_maps = 0.0, 0.0, 0.0, 0
    lr = optimizer.param_groups[0]["lr"]
    for batch in loader:
        if penalised is None:
            images, labels = batch.to(device)
        else:
            images, labels, masks = batch.to_with_masks(device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            if penalised is None:
                logits = model(images)
                loss = nn.functional.cross_entropy(logits, labels)
                total = loss
            else:
                logits, penalty, zero = penalised(images, labels, masks)
                loss = nn.functional.cross_entropy(logits, labels)
                weighted = penalised.penalty.weight * penalty.mean()
                total = loss + weighted
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        loss_sum += float(loss.detach()) * len(labels)
        correct += int((logits.detach().argmax(1) == labels).sum())
        seen += len(labels)
        if penalised is not None:
            penalty_sum += float(penalty.detach().sum())
            weighted_sum += float(weighted.detach()) * len(labels)
            total_sum += float(total.detach()) * len(labels)
            zero_maps += int(zero.sum())
    stats = EpochStats(loss_sum / seen, correct / seen, lr)
    if penalised is not None:
        stats.penalty = penalty_sum / seen
        stats.penalty_share = weighted_sum / total_sum if total_sum > 0 else 0.0
        stats.zero_maps = float(zero_maps)
    return stats


# --------------------------------------------------------------------------- the whole stage


def train_classifier(
    wells: pd.DataFrame,
    settings: TrainSettings,
    channels: Sequence[str],
    crop_shape: Sequence[int],
    device: torch.device | str = "cpu",
    resume_path: str | os.PathLike | None = None,
    audit: ValidationAudit | None = None,
) -> TrainResult:
    """Train a 3D EfficientNet to predict each cell's treatment from its crop.

    Parameters
    ----------
    wells: one row per well with columns ``plate, well, treatment, split`` (``train``,
        ``val`` or ``test``) and ``store`` (its crop store folder).
    settings: training settings.
    channels: channel names; every store must have them in this order.
    crop_shape: ``(Z, Y, X)``; every store must have it.
    device: where to train.
    resume_path: the resume state file, written after every epoch; None: no resuming.
    audit: the plates' neutral fills for the per-epoch audit of ``settings.audit_cells``
        validation cells (needed by ``select_by: cell_accuracy``); None: no audit.

    Returns
    -------
    :class:`TrainResult` with the best epoch's weights and metrics computed with them.
    """
    device = torch.device(device)
    wells = wells.reset_index(drop=True)
    classes = sorted(wells["treatment"].astype(str).unique())
    stores, cells = cell_table(wells)
    normalization = check_stores(stores, channels, crop_shape)
    labels = cells["treatment"].map({name: i for i, name in enumerate(classes)}).to_numpy(np.int64)
    rows = {name: np.flatnonzero(cells["split"].to_numpy() == name) for name in SPLITS}
    _check_splits(cells, rows, classes)

    def dataset(split: str, augmented: bool) -> CropCells:
        return CropCells(
            stores,
            cells["store"].to_numpy()[rows[split]],
            cells["row"].to_numpy()[rows[split]],
            labels[rows[split]],
            augmentation=settings.augmentation if augmented else None,
            seed=settings.seed,
            context_swap=settings.context_swap if augmented else None,
            with_masks=augmented and settings.attention_penalty.active,
        )

    if audit is None and settings.select_by == "cell_accuracy":
        raise InputError(
            "train.select_by 'cell_accuracy' needs the plates' neutral fills (the validation audit)"
        )
    counterfactuals = None
    if audit is not None and settings.audit_cells > 0 and len(rows["val"]):
        counterfactuals = validation_counterfactuals(
            dataset("val", augmented=False), audit, settings.audit_cells, settings.seed
        )

    extra = {"channels": list(channels), "crop_shape": [int(s) for s in crop_shape]}
    key = fingerprint(settings, wells, classes, extra)
    amp = autocast_dtype(device, settings.mixed_precision)
    environment = numerics(device)
    log.info("numerics: %s", ", ".join(f"{name} {value}" for name, value in environment.items()))
    with reproducible(device):
        model, progress = _fit(
            dataset("train", augmented=True),
            dataset("val", augmented=False),
            len(classes),
            settings,
            channels,
            crop_shape,
            device,
            key,
            resume_path,
            counterfactuals,
        )
        metrics = {}
        for split in SPLITS:
            data = dataset(split, augmented=False)
            batch = evaluation_batch_size(settings.batch_size)
            logits = predict(model, data, batch, device, amp, settings.num_workers)
            metrics[split] = classification_metrics(data.labels, logits.argmax(1), classes)
            metrics[split]["n_wells"] = int((wells["split"] == split).sum())
    meta = {
        "variant": settings.variant,
        "norm": settings.norm,
        **extra,
        "classes": classes,
        "normalization": normalization,
        "best_epoch": progress.best_epoch,
        "epochs_run": len(progress.history),
        "config": settings.as_dict(),
        "fingerprint": key,
        "numerics": environment,
    }
    history = pd.DataFrame(progress.history, columns=list(HISTORY_COLUMNS))
    return TrainResult(model=model.cpu().eval(), meta=meta, history=history, metrics=metrics)


def one_cycle_schedule(
    optimizer: torch.optim.Optimizer, settings: TrainSettings, steps_per_epoch: int
) -> torch.optim.lr_scheduler.OneCycleLR:
    """The learning-rate schedule over ``settings.epochs`` x ``steps_per_epoch`` steps: up to
    ``settings.learning_rate`` over the first ``settings.warmup_fraction`` of them, then a
    cosine down (momentum is left to AdamW)."""
    total = settings.epochs * steps_per_epoch
    warmup = settings.warmup_fraction
    # OneCycleLR divides by its warm-up's step count minus one: a warm-up of exactly one step
    # (0.25 of 4 steps) is 0/0 at the first step, so it takes two steps instead
    if math.isclose(warmup * total, 1.0):
        warmup = min(2.0 / total, 0.99)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=settings.learning_rate,
        total_steps=total,
        pct_start=warmup,
        anneal_strategy="cos",
        cycle_momentum=False,
    )


def _check_splits(cells: pd.DataFrame, rows: Mapping[str, np.ndarray], classes: Sequence[str]) -> None:
    """Refuse training without cells; warn about splits that lack a treatment."""
    if len(rows["train"]) < 2:
        raise InputError(f"the training wells hold {len(rows['train'])} cell(s): training needs at least 2")
    if len(rows["val"]) == 0:
        log.warning("no validation cells: early stopping is off, the last epoch is kept")
    for split in SPLITS:
        present = set(cells["treatment"].iloc[rows[split]])
        absent = [c for c in classes if c not in present]
        if absent and len(rows[split]):
            log.warning(
                "%s split has no cells of treatment(s) %s; its accuracy covers the other %d",
                split,
                ", ".join(absent),
                len(classes) - len(absent),
            )


def _fit(
    train_data: CropCells,
    val_data: CropCells,
    num_classes: int,
    settings: TrainSettings,
    channels: Sequence[str],
    crop_shape: Sequence[int],
    device: torch.device,
    key: str,
    resume_path: str | os.PathLike | None,
    counterfactuals: Counterfactuals | None = None,
) -> tuple[nn.Module, Progress]:
    """The epoch loop; returns the model with its best weights, and the progress."""
    torch.manual_seed(settings.seed)
    model = build_model(settings.variant, len(channels), num_classes, crop_shape, settings.norm)
    set_drop_connect_rate(model, settings.drop_connect_rate)
    model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    steps_per_epoch = max(1, len(train_data) // settings.batch_size)
    draws_per_epoch = steps_per_epoch * settings.batch_size
    scheduler = one_cycle_schedule(optimizer, settings, steps_per_epoch)
    amp = autocast_dtype(device, settings.mixed_precision)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    progress = Progress()
    penalty = settings.attention_penalty
    penalised = PenalisedModel(model, penalty, penalty.layer(model, crop_shape)) if penalty.active else None

    state = load_resume_state(resume_path, key) if resume_path is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler.is_enabled() and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        progress = Progress(**state["progress"])
        log.info(
            "resuming from %s after epoch %d of %d",
            resume_path,
            len(progress.history),
            settings.epochs,
        )
    log.info(
        "training %s on %s (%s): %d train cells (%d draws/epoch), %d validation cells, %d classes",
        settings.variant,
        device,
        f"autocast {amp}" if amp else "fp32",
        len(train_data),
        draws_per_epoch,
        len(val_data),
        num_classes,
    )
    if penalised is not None:
        log.info(
            "attention penalty: weight %g x %s outside the cell mask widened by %d voxel(s), at %s",
            penalty.weight,
            "input gradient² (Right for the Right Reasons)"
            if penalty.method == "rrr"
            else f"the share of the {penalty.method} map",
            penalty.dilation,
            penalised.layer,
        )
    if counterfactuals is not None:
        log.info(
            "validation audit: %d validation cells, each predicted from the cell alone and from its "
            "context alone every epoch; the best epoch is the one with the best %s",
            len(counterfactuals.labels),
            "accuracy from the cell alone"
            if settings.select_by == "cell_accuracy"
            else "validation accuracy",
        )
    if train_data.context_swap is not None:
        log.info(
            "context swap: %.0f %% of draws take another cell's context (cell widened by %d voxel(s))",
            100 * train_data.context_swap.probability,
            train_data.context_swap.margin,
        )

    order = np.random.default_rng(settings.seed).permutation(len(train_data))
    bn_data = train_data.subset(np.sort(order[:BATCH_NORM_CELLS]))
    eval_batch = evaluation_batch_size(settings.batch_size)
    for epoch in range(len(progress.history) + 1, settings.epochs + 1):
        if progress.stopped:
            break
        start = time.perf_counter()
        draws = BalancedDraws(train_data.labels, draws_per_epoch, settings.seed, epoch)
        loader = cell_loader(
            train_data,
            settings.batch_size,
            settings.num_workers,
            device,
            seed=settings.seed + epoch,
            sampler=draws,
            drop_last=True,
        )
        stats = train_one_epoch(model, loader, optimizer, scheduler, scaler, device, amp, penalised)
        refresh_batch_norm(model, bn_data, eval_batch, device, amp)
        val_logits = predict(model, val_data, eval_batch, device, amp, settings.num_workers)
        val_loss, val_acc = loss_and_accuracy(val_logits, val_data.labels)
        cell_acc, context_acc = audit_accuracies(model, counterfactuals, eval_batch, device, amp)
        seconds = time.perf_counter() - start
        row = (
            epoch,
            stats.loss,
            stats.accuracy,
            stats.penalty,
            stats.penalty_share,
            stats.zero_maps,
            val_loss,
            val_acc,
            cell_acc,
            context_acc,
            stats.learning_rate,
            seconds,
        )
        # Without validation cells every epoch counts as the best: the last one is kept.
        score = (
            selection_score(settings.select_by, val_acc, val_loss, cell_acc)
            if len(val_data)
            else (float(epoch), 0.0)
        )
        progress.record(dict(zip(HISTORY_COLUMNS, row)), score, model, settings.patience)
        penalty_text = (
            f" | penalty {stats.penalty:.4f} ({100 * stats.penalty_share:.1f} % of the loss, "
            f"{int(stats.zero_maps)} zero maps)"
            if penalised is not None
            else ""
        )
        audit_text = ""
        if counterfactuals is not None:
            audit_text = f" (cell alone {cell_acc:.3f}, context alone {context_acc:.3f})"
        log.info(
            "epoch %d/%d  train loss %.4f acc %.3f%s | val loss %.4f acc %.3f%s | lr %.2e | "
            "%.1f s (%.1f cells/s) | best epoch %d%s",
            epoch,
            settings.epochs,
            stats.loss,
            stats.accuracy,
            penalty_text,
            val_loss,
            val_acc,
            audit_text,
            stats.learning_rate,
            seconds,
            draws_per_epoch / seconds,
            progress.best_epoch,
            "  -> early stop" if progress.stopped else "",
        )
        if resume_path is not None:
            save_resume_state(
                resume_path,
                {
                    "format": RESUME_FORMAT,
                    "fingerprint": key,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": rng_state(),
                    "progress": dict(vars(progress)),
                },
            )
    model.load_state_dict(progress.best_state)
    return model, progress


# --------------------------------------------------------------------------- outputs


def write_training_outputs(
    result: TrainResult,
    model_path: str | os.PathLike,
    history_path: str | os.PathLike,
    metrics_path: str | os.PathLike,
) -> None:
    """Write the checkpoint, the history TSV and the metrics JSON, each atomically."""
    with atomic_path(model_path) as tmp:
        save_checkpoint(tmp, result.model, result.meta)
    with atomic_path(history_path) as tmp:
        result.history.to_csv(tmp, sep="\t", index=False)
    config = result.meta.get("config", {})
    metrics = {
        "classes": result.meta["classes"],
        "best_epoch": result.meta["best_epoch"],
        "epochs_run": result.meta["epochs_run"],
        # how the model was pushed to look at the cell, if it was (the run summary reports it)
        "attention_penalty": config.get("attention_penalty"),
        "context_swap": config.get("context_swap"),
        # what decides the float rounding: two runs agree to the bit only where this agrees
        "numerics": result.meta.get("numerics"),
        "splits": result.metrics,
    }
    with atomic_path(metrics_path) as tmp:
        Path(tmp).write_text(json.dumps(metrics, indent=2))
