"""What makes training resumable: a fingerprint of its settings and data, the resume state
written after every epoch, the random-number state and the early-stopping progress.

A rerun with the same fingerprint continues from the state (and on the CPU ends
bitwise-identical to an uninterrupted run); a state made with other settings or data is
ignored with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from gradcamo.io import atomic_path
from gradcamo.store import CropStore
from gradcamo.train_settings import TrainSettings

log = logging.getLogger(__name__)

RESUME_FORMAT = 1


def fingerprint(settings: TrainSettings, wells: pd.DataFrame, classes: Sequence[str], extra: Mapping) -> str:
    """SHA-256 of everything that determines the training result.

    Settings (without ``num_workers``, which does not change results), classes, ``extra``
    (channels, crop shape), the split of wells, and per store its ``store.json`` and
    ``cells.parquet`` bytes and image array shape (images are not hashed: too large).
    """
    digest = hashlib.sha256()
    result_settings = settings.as_dict()
    result_settings.pop("num_workers")
    header = [result_settings, list(classes), dict(extra)]
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for row in wells.itertuples(index=False):
        digest.update(f"{row.plate}\t{row.well}\t{row.treatment}\t{row.split}\n".encode())
        store = Path(row.store)
        for name in ("store.json", "cells.parquet"):
            digest.update(hashlib.sha256((store / name).read_bytes()).digest())
        digest.update(str(CropStore.open(store).images.shape).encode())
    return digest.hexdigest()


def save_resume_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write the resume state atomically (:func:`gradcamo.io.atomic_path`)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_resume_state(path: str | os.PathLike, expected_fingerprint: str) -> dict[str, Any] | None:
    """The resume state at ``path`` if it exists and was made with the same settings and data."""
    path = Path(path)
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):  # from a run killed mid-write
        leftover.unlink(missing_ok=True)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: start afresh, and say so
        log.warning("%s: unreadable resume state (%s); training starts afresh", path, exc)
        return None
    if state.get("format") != RESUME_FORMAT or state.get("fingerprint") != expected_fingerprint:
        log.warning("%s was made with other training settings or data; training starts afresh", path)
        return None
    return state


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Progress:
    """History and early-stopping bookkeeping; part of the resume state.

    ``best_score``: ``(val accuracy, -val loss)`` of the best epoch, compared as a tuple.
    ``stale_epochs``: epochs since the best one.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None
    best_score: tuple[float, float] | None = None
    best_epoch: int = 0
    stale_epochs: int = 0
    stopped: bool = False

    def record(
        self, row: dict[str, float], score: tuple[float, float], model: nn.Module, patience: int
    ) -> None:
        """Add an epoch's history row; keep the weights if ``score`` is the best so far."""
        self.history.append(row)
        if self.best_score is None or score > self.best_score:
            self.best_score, self.best_epoch, self.stale_epochs = score, int(row["epoch"]), 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            self.stale_epochs += 1
        self.stopped = self.stale_epochs >= patience
