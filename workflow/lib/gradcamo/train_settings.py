"""The training settings: the ``train`` section of the configuration as :class:`TrainSettings`,
read and checked once (:meth:`TrainSettings.from_config`), and what ``select_by`` can keep
the best epoch by (``SELECTION_CRITERIA``).

A module of its own so that :mod:`gradcamo.resume` (which fingerprints the settings) and
:mod:`gradcamo.training` (which trains with them) both import it, neither importing the
other back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from gradcamo.data import Augmentation, ContextSwap
from gradcamo.errors import InputError
from gradcamo.penalty import PENALTY_METHODS, AttentionPenalty

#: What ``select_by`` can keep the best epoch by.
SELECTION_CRITERIA = ("accuracy", "cell_accuracy")


@dataclass(frozen=True)
class TrainSettings:
    """The ``train`` section of the configuration, minus cluster resources.

    ``drop_connect_rate``: stochastic depth of the last block (MONAI's b0 uses 0.2). With
    small crops the last blocks see 1×1×1 maps, and dropping residual branches per cell then
    shifts the batch statistics batch norm learns from; evaluation became unstable here
    (validation losses of 20-400 at 90 % accuracy), hence 0 by default (in the schema).
    """

    variant: str
    norm: str
    epochs: int
    batch_size: int
    learning_rate: float
    warmup_fraction: float
    weight_decay: float
    patience: int
    select_by: str
    audit_cells: int
    seed: int
    num_workers: int
    mixed_precision: bool
    drop_connect_rate: float
    augmentation: Augmentation
    context_swap: ContextSwap
    attention_penalty: AttentionPenalty

    @classmethod
    def from_config(cls, train: Mapping[str, Any]) -> "TrainSettings":
        """Read the ``train`` config section (schema-validated, so with every default filled
        in: the schema is the one home of the defaults); resource keys (gpu, threads, ...)
        are ignored."""
        sections = ("augmentation", "context_swap", "attention_penalty")
        names = [f.name for f in dataclasses.fields(cls) if f.name not in sections]
        augment = train.get("augment") or {}
        swap = augment.get("context_swap") or {}
        penalty = train.get("attention_penalty") or {}
        missing = (
            [name for name in names if name not in train]
            + [f"augment.{name}" for name in ("flip_z", "intensity_jitter") if name not in augment]
            + [f"augment.context_swap.{name}" for name in ("probability", "margin") if name not in swap]
            + [
                f"attention_penalty.{f.name}"
                for f in dataclasses.fields(AttentionPenalty)
                if f.name not in penalty
            ]
        )
        if missing:
            raise InputError(f"config section train lacks key(s) {', '.join(missing)}")
        settings = cls(
            **{name: train[name] for name in names},
            augmentation=Augmentation(
                flip_z=bool(augment["flip_z"]),
                intensity_jitter=float(augment["intensity_jitter"]),
            ),
            context_swap=ContextSwap(probability=float(swap["probability"]), margin=int(swap["margin"])),
            attention_penalty=AttentionPenalty(
                weight=float(penalty["weight"]),
                method=str(penalty["method"]),
                target_layer=str(penalty["target_layer"]),
                target_resolution=(
                    None if penalty["target_resolution"] is None else int(penalty["target_resolution"])
                ),
                dilation=int(penalty["dilation"]),
            ),
        )
        if settings.attention_penalty.method not in PENALTY_METHODS:
            raise InputError(
                f"config key train.attention_penalty.method is {settings.attention_penalty.method!r}, "
                f"not one of {', '.join(PENALTY_METHODS)}"
            )
        if settings.select_by not in SELECTION_CRITERIA:
            raise InputError(
                f"config key train.select_by is {settings.select_by!r}, "
                f"not one of {', '.join(SELECTION_CRITERIA)}"
            )
        if settings.select_by == "cell_accuracy" and settings.audit_cells < 1:
            raise InputError(
                "config key train.select_by is 'cell_accuracy' but train.audit_cells is 0: "
                "selecting by the accuracy from the cell alone needs the validation audit"
            )
        if settings.batch_size < 2:
            raise InputError("config key train.batch_size must be at least 2 (batch norm)")
        if settings.epochs < 1 or settings.patience < 1:
            raise InputError("config keys train.epochs and train.patience must be at least 1")
        if not 0 < settings.warmup_fraction < 1:
            raise InputError(
                f"config key train.warmup_fraction is {settings.warmup_fraction}, not between 0 and 1"
            )
        return settings

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
