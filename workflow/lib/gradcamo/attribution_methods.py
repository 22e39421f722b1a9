"""The attribution methods by name, and the smoothing's per-axis sigmas: what configurations,
figures and the studies' workflow need to know about the maps without importing torch
(:mod:`gradcamo.gradcam` computes them)."""

from __future__ import annotations

from typing import Sequence

from gradcamo.errors import InputError

#: Methods that explain the activations of a named layer.
LAYER_METHODS = ("gradcam", "gradcampp", "hirescam", "layercam")
#: Methods that explain the input voxels (no target layer).
INPUT_METHODS = ("input_x_gradient", "integrated_gradients")
METHODS = LAYER_METHODS + INPUT_METHODS
#: Methods whose map comes from one gradient (the others integrate along a path).
SINGLE_GRADIENT_METHODS = LAYER_METHODS + ("input_x_gradient",)


def smoothing_sigmas(sigma: float, voxel_size: Sequence[float]) -> tuple[float, float, float]:
    """Per-axis Gaussian sigmas ``(Z, Y, X)`` in voxels for a sigma of ``sigma`` Y/X voxels:
    the same physical width along Z (``voxel_size`` is ``(Z, Y, X)`` in micrometres)."""
    if sigma < 0:
        raise InputError(f"a smoothing sigma must be at least 0, got {sigma}")
    vz, vy, vx = (float(v) for v in voxel_size)
    return (sigma * vy / vz, float(sigma), sigma * vy / vx)
