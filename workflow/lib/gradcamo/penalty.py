"""Attention penalties for training: a classifier pushed to look at the cell of interest.

The Grad-CAMO paper names it as future work: penalise, during supervised training, the share
of the attribution map that falls outside the cell. For a batch ``x`` (N×C×Z×Y×X) with
labels ``y`` and crop masks ``M`` (N×Z×Y×X, 1 = the cell of interest):

- ``gradcam``, ``gradcampp``, ``hirescam``, ``layercam``, ``input_x_gradient``: the map ``m``
  of the method (:func:`gradcamo.gradcam.signed_attribution_map`) for each cell's *true*
  class, from the same train-mode forward pass as the cross-entropy; the penalty is
  ``sum(|m| · outside) / sum(|m|)`` per cell, with ``outside`` everything beyond the cell
  mask widened by ``dilation`` voxels, and layer maps upsampled to the crop first.
  Normalising by the total *absolute* map means attention of either sign counts, and
  inflating attention inside the mask cannot hide what lies outside: only moving
  attention from outside to inside lowers it.
- ``rrr`` ("Right for the Right Reasons", Ross et al., 2017): ``sum over outside voxels and
  channels of (d sum_k log p_k / dx)²`` per cell, the input-gradient baseline.

The map's gradient is taken with ``torch.autograd.grad(..., create_graph=True)`` with
respect to the target activation only (no parameter gradients), so the loss's backward
differentiates it again ("double backpropagation") through exactly what the penalty needs.
The model stays in training mode: switching to eval inside a step would change what batch
norm computes. A map that is zero everywhere has no share to measure: its penalty is 0
(without a 0/0) and it is counted.

Axes: crops ``(N, C, Z, Y, X)``, masks ``(N, Z, Y, X)``, maps ``(N, Z', Y', X')``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets.efficientnet import EfficientNet

from gradcamo.attribution_methods import INPUT_METHODS, SINGLE_GRADIENT_METHODS
from gradcamo.gradcam import (
    layer_for_resolution,
    run_steps,
    signed_attribution_map,
    split_steps,
    upsample_cam,
)
from gradcamo.store import MASK_CELL

#: The penalised maps and the input-gradient baseline. Integrated gradients is left out: its
#: map takes ``steps`` backward passes, each to be differentiated again.
PENALTY_METHODS = SINGLE_GRADIENT_METHODS + ("rrr",)


@dataclass(frozen=True)
class AttentionPenalty:
    """The ``train.attention_penalty`` config section.

    ``weight``: multiplies the penalty in the loss (0: off). ``method``: one of
    :data:`PENALTY_METHODS`. ``target_layer`` / ``target_resolution``: the layer of a layer
    method, by name or as the deepest one whose map reaches that many voxels in Y and X
    (:func:`gradcamo.gradcam.layer_for_resolution`; null: by name). ``dilation``: voxels
    (Z, Y, X) by which the cell mask is widened before "outside" is measured.
    """

    weight: float
    method: str
    target_layer: str
    target_resolution: int | None
    dilation: int

    @property
    def active(self) -> bool:
        return self.weight > 0

    def layer(self, model: EfficientNet, crop_shape: Sequence[int]) -> str:
        """The layer the penalty differentiates to: ``"input"`` for input-level methods."""
        if self.method == "rrr" or self.method in INPUT_METHODS:
            return "input"
        if self.target_resolution is not None:
            return layer_for_resolution(model, crop_shape, self.target_resolution)
        return self.target_layer


class PenalisedOutput(NamedTuple):
    """``logits`` (N, K) of the train-mode pass, the per-cell ``penalty`` (N,) before the
    weight, differentiable, and ``zero_maps`` (N,) bool: maps with no attention (penalty 0)."""

    logits: torch.Tensor
    penalty: torch.Tensor
    zero_maps: torch.Tensor


def dilate_masks(region: torch.Tensor, margin: int) -> torch.Tensor:
    """``region`` (N, Z, Y, X) bool widened by ``margin`` 6-connected steps, on its device.

    The same as :func:`gradcamo.context.dilate` (scipy's binary dilation with a cross) --
    the audit's and the crop stage's cell -- without leaving the GPU: each step is the union
    of the three axis-wise 3-voxel maxima, i.e. the cross.
    """
    out = region[:, None].float()
    for _ in range(int(margin)):
        out = torch.maximum(
            torch.maximum(
                F.max_pool3d(out, (3, 1, 1), stride=1, padding=(1, 0, 0)),
                F.max_pool3d(out, (1, 3, 1), stride=1, padding=(0, 1, 0)),
            ),
            F.max_pool3d(out, (1, 1, 3), stride=1, padding=(0, 0, 1)),
        )
    return out[:, 0] > 0


def outside_share(maps: torch.Tensor, outside: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per cell, the share of ``|maps|`` (N, Z, Y, X) where ``outside`` (N, Z, Y, X) is
    true; ``(share (N,), zero (N,) bool)``. An all-zero map gets share 0 and ``zero`` True,
    with no 0/0 in the forward pass or its gradient."""
    absolute = maps.abs().flatten(1)
    total = absolute.sum(1)
    zero = ~(total > 0)
    denominator = torch.where(zero, torch.ones_like(total), total)
    share = (absolute * outside.flatten(1)).sum(1) / denominator
    return torch.where(zero, torch.zeros_like(share), share), zero


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Maps and shares in float32 under autocast (half-precision sums lose small shares),
    float64 stays float64."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()


class PenalisedModel:
    """Logits and the attention penalty of a batch from one train-mode forward pass.

    Parameters
    ----------
    model: a MONAI ``EfficientNet`` (in training mode when called, as in a training step).
    penalty: the settings; ``layer``: the layer its map explains (:meth:`AttentionPenalty.layer`).
    """

    def __init__(self, model: EfficientNet, penalty: AttentionPenalty, layer: str) -> None:
        self.model, self.penalty, self.layer = model, penalty, layer
        self._trunk, self._tail = split_steps(model, layer)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> PenalisedOutput:
        """``images`` (N, C, Z, Y, X) float, ``labels`` (N,) int64, ``masks`` (N, Z, Y, X)."""
        if not torch.is_grad_enabled():
            raise RuntimeError("the attention penalty needs autograd (double backpropagation)")
        if self.layer == "input":
            acts = images.detach().requires_grad_(True)
        else:
            acts = run_steps(self._trunk, images)
        logits = self.model._fc(self.model._dropout(run_steps(self._tail, acts).flatten(1)))
        outside = ~dilate_masks(masks == MASK_CELL, self.penalty.dilation)
        if self.penalty.method == "rrr":
            score = torch.log_softmax(_at_least_float32(logits), 1).sum()
            (grads,) = torch.autograd.grad(score, acts, create_graph=True)
            penalty = (_at_least_float32(grads).pow(2) * outside[:, None]).flatten(1).sum(1)
            return PenalisedOutput(logits, penalty, torch.zeros_like(penalty, dtype=torch.bool))
        score = logits.gather(1, labels[:, None]).sum()
        (grads,) = torch.autograd.grad(score, acts, create_graph=True)
        maps = signed_attribution_map(self.penalty.method, _at_least_float32(acts), _at_least_float32(grads))
        if tuple(maps.shape[1:]) != tuple(masks.shape[1:]):
            # Upsampled as the profile stage does, so the penalty measures the profiled map.
            maps = upsample_cam(maps.abs(), masks.shape[1:])
        penalty, zero = outside_share(maps, outside)
        return PenalisedOutput(logits, penalty, zero)
