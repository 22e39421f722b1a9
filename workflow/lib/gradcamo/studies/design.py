"""The studies' design, without torch (the studies' workflow reads it when it builds its jobs):
how a study model's ``train`` section is made (:func:`merged`, :func:`setting_train`) and the
attribution study's grid of maps (:func:`grid`)."""

from __future__ import annotations

import copy
from typing import Sequence

from gradcamo.attribution_methods import INPUT_METHODS, LAYER_METHODS, smoothing_sigmas

#: The study's layers (of the layer methods) and Y/X smoothing sigmas (of the input methods).
LAYERS = ("_blocks.0", "_blocks.1", "_blocks.2")
SMOOTHING = (0.0, 1.0)
UNSMOOTHED = (0.0, 0.0, 0.0)


def grid(
    voxel_size,
    methods: Sequence[str] | None = None,
    layers: Sequence[str] = LAYERS,
    smoothing: Sequence[float] = SMOOTHING,
) -> list[tuple[str, str, tuple[float, float, float]]]:
    """``(method, layer label, smoothing sigmas (Z, Y, X))`` of the study: every layer method
    of ``methods`` (default: all) at every layer, and the input-level methods at every sigma
    of ``smoothing`` (labelled ``input`` or ``input, sigma 1``)."""
    chosen = set(LAYER_METHODS) | set(INPUT_METHODS) if methods is None else set(methods)
    rows = [(m, layer, UNSMOOTHED) for m in LAYER_METHODS if m in chosen for layer in layers]
    for method in INPUT_METHODS:
        if method not in chosen:
            continue
        for sigma in smoothing:
            label = "input" if sigma == 0 else f"input, sigma {sigma:g}"
            rows.append((method, label, smoothing_sigmas(sigma, voxel_size)))
    return rows


def merged(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in top.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def setting_train(train: dict, overrides: dict, seed: int) -> dict:
    """The ``train`` settings of one model of the study: the base ``train`` section with the
    setting's ``overrides`` and the seed."""
    return merged(train, {**overrides, "seed": seed})
