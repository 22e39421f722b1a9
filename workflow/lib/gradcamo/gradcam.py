"""3D attribution maps and the Grad-CAMO score, with embeddings and logits from the same pass.

At a layer with activations ``A`` (N×K×Z'×Y'×X') and gradients ``G = dy/dA`` of the target
logit ``y`` (:data:`METHODS`, each a map N×Z'×Y'×X', non-negative):

- ``gradcam`` (Selvaraju et al., 2017; the paper's): ``ReLU(sum_k mean(G_k) A_k)``;
- ``gradcampp`` (Chattopadhay et al., 2018), as :class:`monai.visualize.GradCAMpp`: weights
  ``sum_v alpha_kv ReLU(G_kv)`` with ``alpha = G² / (2 G² + sum_v A_kv G_kv³)``;
- ``hirescam`` (Draelos & Carin, 2020): ``ReLU(sum_k G_k ⊙ A_k)``, no spatial averaging;
- ``layercam`` (Jiang et al., 2021): ``ReLU(sum_k ReLU(G_k) ⊙ A_k)``;
- ``input_x_gradient`` (Shrikumar et al., 2016): at the input, ``sum_c |x_c ⊙ dy/dx_c|``,
  at full crop resolution (the whole network is differentiated);
- ``integrated_gradients`` (Sundararajan et al., 2017; :class:`captum.attr.IntegratedGradients`):
  at the input, ``ReLU(sum_c IG_c)`` with ``IG = (x - b) ⊙ mean_k dp/dx (b + α_k (x - b))``,
  ``p`` the target class's *probability*, ``b`` a per-channel baseline (the profile stage uses
  the plate's neutral fill, the audit's "nothing here") and ``α_k`` the midpoints of ``steps``
  equal intervals. Its attributions sum to ``p(x) - p(b)`` (completeness) up to the Riemann
  error, which it reports; the positive part is the evidence *for* the class, as Grad-CAM's
  ReLU keeps it. It runs ``steps`` forward and backward passes per batch.

The two input-level maps can be smoothed (``smoothing_sigma``, a Gaussian in voxels per
axis, :func:`smooth_map`): for ``integrated_gradients`` before the ReLU, so that the
attributions of the crop's voxel noise, of either sign and independent from voxel to
voxel, cancel instead of each adding its positive part to the map's total; for
``input_x_gradient`` after its absolute value (that map has no sign left to cancel).

Grad-CAMO (Gopalakrishnan et al., 2024) is the share of the upsampled map that falls on the
cell of interest; it is scale-free, so it is computed on the raw non-negative map (no
min-max step).

Why not call a Grad-CAM library per batch: :class:`monai.visualize.GradCAM` (and
pytorch-grad-cam) run the whole model with autograd on and back-propagate through every
layer, and a separate forward pass is needed for the embedding. The gradient at a layer only
depends on the layers *after* it, so :class:`GradCamProfiler` runs the trunk up to the
target layer without autograd, re-enters autograd at the target activation, runs the short
remainder once (giving the pooled embedding and the logits), and takes ONE backward of the
sum of the selected logits. In eval mode the cells of a batch do not interact, so the
gradient of that sum w.r.t. each cell's activation is the gradient of that cell's own logit.
MONAI's batched call is not usable here anyway: ``ModelWithHooks.class_score`` indexes
``logits[:, class_idx]`` with a per-cell index tensor, which selects an N×N block and mixes
the target classes of all cells of the batch.

One module because the maps, the profiler that makes them in one pass
(:class:`GradCamProfiler`, about 150 lines) and the shares of a map on the cell (Grad-CAMO
and its baselines) are one computation over the same layer steps and map shapes; this
docstring, the methods' maths, is a tenth of its length.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients
from monai.networks.layers import separable_filtering
from monai.networks.layers.convutils import gaussian_1d
from monai.networks.nets.efficientnet import EfficientNet
from torch import nn

# The methods' names and the smoothing's sigmas live in a torch-free module (configs,
# figures and the studies' workflow read them); the maps are computed here.
from gradcamo.attribution_methods import INPUT_METHODS, METHODS, SINGLE_GRADIENT_METHODS
from gradcamo.errors import InputError
from gradcamo.store import MASK_BACKGROUND, MASK_CELL, MASK_OTHER

Step = tuple[tuple[str, ...], Callable[[torch.Tensor], torch.Tensor]]


def _padded(conv: nn.Module, padding: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: conv(padding(x))


def efficientnet_steps(model: EfficientNet) -> list[Step]:
    """MONAI EfficientNet's forward pass up to the pooled embedding, as a list of steps.

    Each step is ``(names, function)``; ``names`` are the module names (as in
    ``model.named_modules()``) whose output the step produces, empty for unnamed steps (the
    shared swish). The last block of a stack also carries its stack's name (``_blocks.6.15``
    and ``_blocks.6`` for b0; MONAI numbers blocks across stacks). Chaining all steps on
    ``(N, C, Z, Y, X)`` gives the ``(N, D, 1, 1, 1)`` pooled features, and
    ``model._fc(model._dropout(features.flatten(1)))`` the logits. Mirrors
    ``EfficientNet.forward`` (checked against it in the tests).
    """
    if not isinstance(model, EfficientNet):
        raise TypeError(f"expected a MONAI EfficientNet, got {type(model).__name__}")
    steps: list[Step] = [
        (("_conv_stem",), _padded(model._conv_stem, model._conv_stem_padding)),
        (("_bn0",), model._bn0),
        ((), model._swish),
    ]
    for stack_name, stack in model._blocks.named_children():
        # MONAI numbers blocks across stacks: _blocks.0.0, _blocks.1.1, _blocks.1.2, ...
        blocks = list(stack.named_children())
        for k, (block_name, block) in enumerate(blocks):
            names = (f"_blocks.{stack_name}.{block_name}",)
            if k == len(blocks) - 1:
                names += (f"_blocks.{stack_name}",)
            steps.append((names, block))
    steps += [
        (("_conv_head",), _padded(model._conv_head, model._conv_head_padding)),
        (("_bn1",), model._bn1),
        ((), model._swish),
        ((), model._avg_pooling),
    ]
    return steps


def layer_names(model: EfficientNet) -> list[str]:
    """The names of the model's sequential layers, input side first (``_conv_stem`` ...
    ``_blocks.6`` ... ``_avg_pooling`` is unnamed): the choices of a target layer."""
    return [name for names, _ in efficientnet_steps(model) for name in names]


def split_steps(model: EfficientNet, target_layer: str) -> tuple[list[Step], list[Step]]:
    """``(trunk, tail)``: the steps up to and including ``target_layer``, and the rest.

    ``target_layer`` ``"input"`` gives an empty trunk (the input-level methods). Running the
    trunk, then the tail, then ``model._fc(model._dropout(...flatten(1)))`` is the model's
    forward pass (in either mode). Raises :class:`InputError` for an unknown layer name.
    """
    steps = efficientnet_steps(model)
    if target_layer == "input":
        return [], steps
    at = [k for k, (names, _) in enumerate(steps) if target_layer in names]
    if not at:
        raise InputError(
            f"Grad-CAM target layer {target_layer!r} is not one of the model's sequential "
            f"layers: {', '.join(layer_names(model))}"
        )
    return steps[: at[0] + 1], steps[at[0] + 1 :]


def run_steps(steps: Sequence[Step], x: torch.Tensor) -> torch.Tensor:
    """Chain ``steps`` (:func:`efficientnet_steps`) on ``x``."""
    for _, step in steps:
        x = step(x)
    return x


def signed_attribution_map(method: str, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """The map of ``method`` before its final rectification: ``(N, Z', Y', X')``.

    ``activations``, ``gradients``: ``(N, K, Z', Y', X')``. For the layer methods this is the
    weighted sum over channels, of either sign (Grad-CAM's map is its ReLU); for
    ``input_x_gradient`` it is already ``sum_c |x_c ⊙ g_c|``. Differentiable, so the
    training penalty (:mod:`gradcamo.penalty`) can back-propagate through it; Grad-CAM++
    leaves out MONAI's ``exp(score)`` factor on the gradients: a positive constant per cell,
    which scales its map and changes no share of it.
    """
    a, g = activations, gradients
    if method == "gradcam":
        return torch.einsum("nk,nk...->n...", g.flatten(2).mean(2), a)
    if method == "gradcampp":
        spatial = (1,) * (g.ndim - 2)
        numerator = g.pow(2)
        denominator = 2 * numerator + (a * g.pow(3)).flatten(2).sum(2).view(*g.shape[:2], *spatial)
        denominator = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        alpha = numerator / (denominator + 1e-7)
        weights = (alpha * F.relu(g)).flatten(2).sum(2)
        return torch.einsum("nk,nk...->n...", weights, a)
    if method == "hirescam":
        return (g * a).sum(1)
    if method == "layercam":
        return (F.relu(g) * a).sum(1)
    if method == "input_x_gradient":
        return (g * a).abs().sum(1)
    raise ValueError(f"no single-gradient map for {method!r}; one of {', '.join(SINGLE_GRADIENT_METHODS)}")


def attribution_map(method: str, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """The map of ``method`` from a layer's (or the input's) activations and gradients.

    ``activations``, ``gradients``: ``(N, K, Z', Y', X')``; returns ``(N, Z', Y', X')``,
    non-negative: the ReLU of :func:`signed_attribution_map` (a no-op for
    ``input_x_gradient``, non-negative already).
    """
    return F.relu(signed_attribution_map(method, activations, gradients))


def _checked_sigmas(sigma_zyx: Sequence[float]) -> tuple[float, float, float]:
    """``sigma_zyx`` as three floats, all 0 or all > 0, or an :class:`InputError`."""
    sigma = tuple(float(s) for s in sigma_zyx)
    if len(sigma) != 3 or min(sigma) < 0:
        raise InputError(f"smoothing sigmas must be three values >= 0 (Z, Y, X), got {sigma_zyx}")
    if 0 < max(sigma) and min(sigma) == 0:
        raise InputError(f"smoothing sigmas must be all 0 or all > 0, got {sigma}")
    return sigma


def smooth_map(maps: torch.Tensor, sigma_zyx: Sequence[float]) -> torch.Tensor:
    """Gaussian smoothing of maps ``(N, Z, Y, X)`` with sigmas ``(Z, Y, X)`` in voxels.

    MONAI's separable filtering with its erf-sampled Gaussian kernels (truncated at 4 sigma),
    **mirrored at the crop's faces**: zero padding (MONAI's ``GaussianFilter``) would shrink
    the map near the faces, which are mostly background, and so raise the cell's share. All
    sigmas 0 returns ``maps`` unchanged. Signs are kept: smooth a signed map before its ReLU.
    """
    sigma = _checked_sigmas(sigma_zyx)
    if max(sigma) == 0:
        return maps
    kernels = [gaussian_1d(s, truncated=4.0, approx="erf").to(maps) for s in sigma]
    for kernel, size, s in zip(kernels, maps.shape[1:], sigma):
        if len(kernel) // 2 >= size:
            raise InputError(
                f"a smoothing sigma of {s:g} voxels needs more than {len(kernel) // 2} voxels along "
                f"each axis; the maps are {tuple(maps.shape[1:])}"
            )
    return separable_filtering(maps[:, None], kernels, mode="reflect")[:, 0]


def map_shapes(model: EfficientNet, crop_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """Every sequential layer name of the model -> its map shape ``(Z', Y', X')`` for crops
    of ``crop_shape`` (Z, Y, X), from one forward pass of an empty crop."""
    steps = efficientnet_steps(model)
    was_training = model.training
    model.eval()
    x = torch.zeros(1, model._conv_stem.in_channels, *map(int, crop_shape))
    x = x.to(next(model.parameters()).device)
    shapes = {}
    with torch.no_grad():
        for names, step in steps:
            x = step(x)
            for name in names:
                shapes[name] = tuple(x.shape[2:])
    model.train(was_training)
    return shapes


def layer_for_resolution(model: EfficientNet, crop_shape: Sequence[int], voxels: int) -> str:
    """The deepest layer whose map has at least ``voxels`` voxels along Y and along X.

    One setting then serves every crop size: at ``voxels=8``, ``_blocks.1`` (3×8×8) for
    12×32×32 crops and a block at stride 16 (2×8×8) for 21×128×128 ones. Raises
    :class:`InputError` when even the first layer is coarser.
    """
    shapes = map_shapes(model, crop_shape)
    fine = [name for name, shape in shapes.items() if min(shape[1:]) >= int(voxels)]
    if not fine:
        raise InputError(
            f"no layer's map reaches {voxels} voxels in Y and X for crops {tuple(crop_shape)} "
            f"(the finest is {max(shapes.values(), key=lambda s: min(s[1:]))})"
        )
    return fine[-1]


class GradCamProfiler:
    """Embedding, logits and a 3D attribution map of a batch in one forward and one backward.

    Parameters
    ----------
    model: a MONAI ``EfficientNet`` (e.g. from :func:`gradcamo.model.build_model`); it is
        put in eval mode (BatchNorm uses running statistics, so cells are independent).
    target_layer: module name whose output the map explains, one of
        :attr:`target_layers` (``_conv_head`` = the last conv block; ``_blocks.6``,
        ``_blocks.5.13``, ... earlier ones, at finer resolution); ignored by input-level
        methods.
    method: one of :data:`METHODS` (default ``gradcam``, the paper's).
    baseline: ``(C,)`` per-channel intensities that ``integrated_gradients`` integrates from
        (required by it, ignored by the others); the profile stage passes the mean of the
        plate's neutral fill (:mod:`gradcamo.context`).
    steps: path points of ``integrated_gradients`` (midpoint rule).
    smoothing_sigma: ``(Z, Y, X)`` Gaussian sigmas in voxels for the input-level maps
        (:func:`smooth_map`, :func:`smoothing_sigmas`); all 0: none. An error for a layer method.

    Calling it with ``x`` (N×C×Z×Y×X) returns a dict of detached tensors:
    ``embedding`` (N×D, pooled penultimate features, D = 1280 for b0), ``logits`` (N×K),
    ``target`` (N, the class each map explains) and ``cam`` (N×Z'×Y'×X', non-negative, at
    the target layer's resolution; see :func:`upsample_cam`); with a ``baseline``, also
    ``evidence`` (N, :func:`attribution_evidence`) and ``baseline_class`` (N, the class the
    baseline crop itself is predicted as); ``integrated_gradients`` adds
    ``completeness_gap`` (N, ``|sum(IG) - (p(x) - p(b))|``: how far its ``steps`` are from
    the exact integral).
    """

    def __init__(
        self,
        model: EfficientNet,
        target_layer: str = "_conv_head",
        method: str = "gradcam",
        baseline: np.ndarray | torch.Tensor | None = None,
        steps: int = 8,
        smoothing_sigma: Sequence[float] = (0.0, 0.0, 0.0),
    ) -> None:
        if method not in METHODS:
            raise InputError(f"attribution method {method!r} is not one of {', '.join(METHODS)}")
        self.smoothing_sigma = _checked_sigmas(smoothing_sigma)
        if max(self.smoothing_sigma) > 0 and method not in INPUT_METHODS:
            raise InputError(
                f"map smoothing is for the input-level maps ({', '.join(INPUT_METHODS)}); "
                f"{method} maps at a layer are coarser than the crop already"
            )
        if method == "integrated_gradients" and baseline is None:
            raise InputError("integrated_gradients needs a baseline: one intensity per channel")
        if baseline is not None:
            baseline = torch.as_tensor(np.asarray(baseline, np.float32))
            if baseline.shape != (model._conv_stem.in_channels,):
                raise InputError(
                    f"the attribution baseline has shape {tuple(baseline.shape)}, expected "
                    f"one value per channel ({model._conv_stem.in_channels},)"
                )
        if method == "integrated_gradients":
            if int(steps) < 1:
                raise InputError(f"integrated_gradients needs at least 1 step, got {steps}")
            # captum's IntegratedGradients: the target class's probability, not its logit, so
            # that the attributions add up to the quantity the audit's reliance measures.
            self._integrated = IntegratedGradients(lambda x: torch.softmax(model(x), 1))
        self.baseline, self.steps = baseline, int(steps)
        self.target_layers = layer_names(model)
        self.model = model.eval()
        self.method = method
        if method in INPUT_METHODS:  # differentiate the whole network, down to the input
            target_layer = "input"
        self.target_layer = target_layer
        self._trunk, self._tail = split_steps(model, target_layer)

    def __call__(self, x: torch.Tensor, target: str | torch.Tensor = "predicted") -> dict[str, torch.Tensor]:
        """Profile a batch ``x`` (N×C×Z×Y×X).

        ``target``: ``"predicted"`` (each cell's arg-max class) or a LongTensor (N,) of class
        indices, one per cell.
        """
        if torch.is_inference_mode_enabled():
            raise RuntimeError("GradCamProfiler needs autograd: do not call it in inference_mode")
        if self.model.training:
            raise RuntimeError("the model must stay in eval mode (BatchNorm couples the batch)")
        if self.method == "integrated_gradients":
            return self._with_evidence(self._integrated_gradients(x, target), x)
        with torch.no_grad():
            acts = run_steps(self._trunk, x)
        acts = acts.detach().requires_grad_(True)
        with torch.enable_grad():
            embedding = run_steps(self._tail, acts).flatten(1)
            logits = self.model._fc(self.model._dropout(embedding))
            target = _targets(target, logits)
            selected = logits.gather(1, target[:, None]).sum()
            # Only the gradient w.r.t. the activation: no parameter gradients are computed.
            (grads,) = torch.autograd.grad(selected, acts)
        with torch.no_grad():
            cam = smooth_map(attribution_map(self.method, acts.detach(), grads), self.smoothing_sigma)
        out = {"embedding": embedding.detach(), "logits": logits.detach(), "target": target, "cam": cam}
        return self._with_evidence(out, x)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, target: str | torch.Tensor = "predicted") -> dict[str, torch.Tensor]:
        """What :meth:`__call__` returns but the map, from one forward pass: for the cells
        outside the attribution sample (``profile.attribution_cells_per_well``)."""
        embedding = run_steps([*self._trunk, *self._tail], x).flatten(1)
        logits = self.model._fc(self.model._dropout(embedding))
        out = {"embedding": embedding, "logits": logits, "target": _targets(target, logits)}
        return self._with_evidence(out, x)

    def baseline_probabilities(self, like: torch.Tensor) -> torch.Tensor:
        """``(K,)`` class probabilities of the baseline crop (every voxel at the baseline's
        intensities, shaped like one cell of ``like``); one forward, cached per crop shape."""
        key = (tuple(like.shape[1:]), like.device, like.dtype)
        if getattr(self, "_baseline_key", None) != key:
            one = self.baseline.to(like)[None, :, None, None, None].expand(1, *like.shape[1:])
            with torch.no_grad():
                self._baseline_p = torch.softmax(self.model(one).float(), 1)[0]
            self._baseline_key = key
        return self._baseline_p

    def _with_evidence(self, out: dict, x: torch.Tensor) -> dict:
        if self.baseline is None:
            return out
        p_baseline = self.baseline_probabilities(x)
        out["evidence"] = attribution_evidence(out["logits"], p_baseline, out["target"])
        out["baseline_class"] = torch.full_like(out["target"], int(p_baseline.argmax()))
        return out

    def _integrated_gradients(self, x: torch.Tensor, target) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            embedding = run_steps(self._tail, x).flatten(1)
            logits = self.model._fc(self.model._dropout(embedding))
        target = _targets(target, logits)
        one = self.baseline.to(x)[None, :, None, None, None].expand(1, *x.shape[1:])
        attributions = self._integrated.attribute(
            x,
            baselines=one.expand_as(x),
            target=target,
            n_steps=self.steps,
            method="riemann_middle",
            internal_batch_size=len(x),
        )
        # The completeness gap by hand, not captum's return_convergence_delta: that runs the
        # model again on the batch and on N copies of the baseline, while p(x) is in the
        # logits above and the constant baseline crop needs one (cached) forward (eval mode:
        # cells are independent).
        evidence = attribution_evidence(logits, self.baseline_probabilities(x), target)
        total = attributions.detach().flatten(1).sum(1)
        return {
            "embedding": embedding,
            "logits": logits,
            "target": target,
            "cam": F.relu(smooth_map(attributions.detach().sum(1), self.smoothing_sigma)),
            "completeness_gap": (total - evidence).abs(),
        }


def attribution_evidence(
    logits: torch.Tensor, p_baseline: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """The evidence a map shares out: ``p(x) - p(baseline)`` of each cell's explained class.

    ``logits``: ``(N, K)`` of the crops; ``p_baseline``: ``(K,)`` class probabilities of the
    baseline crop (the plate's neutral fill, "nothing here"); ``target``: ``(N,)`` explained
    classes. Returns ``(N,)`` float32 in [-1, 1].

    For integrated gradients this is exactly what the map distributes (completeness: its
    attributions sum to it). The layer maps have no such total, and the same quantity is
    used for them: how much the crop's content, rather than an empty crop, raises the class.
    Where it is near 0 -- a control cell predicted as control while the empty crop is
    predicted as control too -- there is nothing for a map to place, and Grad-CAMO measures
    the map's noise, not where the model looks.
    """
    p = torch.softmax(logits.float(), 1).gather(1, target[:, None])[:, 0]
    return p - p_baseline.to(p)[target]


def _targets(target: str | torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The class each cell's map explains: ``"predicted"`` (arg-max) or one index per cell."""
    if isinstance(target, str):
        if target != "predicted":
            raise ValueError(f"target must be 'predicted' or a tensor, got {target!r}")
        target = logits.detach().argmax(1)
    target = torch.as_tensor(target, dtype=torch.long, device=logits.device)
    if target.shape != (len(logits),):
        raise ValueError(f"target must hold one class per cell, got {tuple(target.shape)}")
    return target


def upsample_cam(cam: torch.Tensor, crop_shape: Sequence[int]) -> torch.Tensor:
    """Trilinear upsampling of maps ``(N, Z', Y', X')`` to ``(N, Z, Y, X)`` = ``crop_shape``.

    Same convention as MONAI's ``default_upsampler`` (``align_corners=False``); a convex
    combination of neighbours, so non-negative maps stay non-negative.
    """
    size = tuple(int(s) for s in crop_shape)
    return F.interpolate(cam[:, None], size=size, mode="trilinear", align_corners=False)[:, 0]


#: Mask values of a crop (:mod:`gradcamo.store`): where a map's attention can fall.
MASK_REGIONS = {"cell": MASK_CELL, "neighbours": MASK_OTHER, "background": MASK_BACKGROUND}


def _flat_maps_and_masks(cam, mask) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(N, Z, Y, X)`` maps and masks as ``(N, V)`` float64 / integer tensors, and whether
    ``cam`` came as NumPy."""
    as_numpy = not isinstance(cam, torch.Tensor)
    if as_numpy:  # copies: memory-mapped inputs are read-only
        cam_t, mask_t = torch.from_numpy(np.array(cam, np.float64)), torch.from_numpy(np.array(mask))
    else:
        cam_t, mask_t = cam.double(), torch.as_tensor(mask, device=cam.device)
    if cam_t.shape != mask_t.shape or cam_t.ndim < 2:
        raise ValueError(f"cam {tuple(cam_t.shape)} and mask {tuple(mask_t.shape)} must both be (N, Z, Y, X)")
    return cam_t.flatten(1), mask_t.flatten(1), as_numpy


def _shares(cam, mask, values: dict[str, int]) -> dict:
    """Per name, the share of each map's attention where ``mask`` equals its value; the map
    totals are summed once for all regions. NaN for an all-zero map, without a warning."""
    cam_t, mask_t, as_numpy = _flat_maps_and_masks(cam, mask)
    total = cam_t.sum(1)
    has_attention = total > 0
    denominator = torch.where(has_attention, total, 1.0)
    out = {}
    for name, value in values.items():
        inside = (cam_t * (mask_t == value)).sum(1)
        share = torch.where(has_attention, inside / denominator, torch.nan)
        out[name] = share.cpu().numpy() if as_numpy else share
    return out


def region_share(cam: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray, value: int):
    """Share of each map's attention on the voxels where ``mask == value``.

    Parameters
    ----------
    cam: ``(N, Z, Y, X)`` non-negative maps at crop resolution.
    mask: ``(N, Z, Y, X)`` crop masks (0 background, 1 the cell of interest, 2 other cells).
    value: the mask value of the region.

    Returns
    -------
    ``(N,)`` shares in [0, 1] (float64, NumPy or torch like ``cam``); NaN where a map is zero
    everywhere (no attention to measure), without a division warning.
    """
    return _shares(cam, mask, {"region": value})["region"]


def gradcamo_score(cam: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray):
    """Grad-CAMO per cell: ``sum(A * [M == 1]) / sum(A)`` over the voxels of each crop.

    ``cam`` and ``mask`` are ``(N, Z, Y, X)``; returns ``(N,)`` scores in [0, 1], NaN where a
    map is zero everywhere (see :func:`region_share`).
    """
    return region_share(cam, mask, MASK_CELL)


def attention_shares(cam: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray) -> dict:
    """Where each map's attention falls: ``{"cell", "neighbours", "background"}`` -> ``(N,)``.

    The three shares of a map sum to 1; ``cell`` is Grad-CAMO. ``neighbours`` (other cells in
    the crop) and ``background`` (no cell) say what a low Grad-CAMO looks at instead.
    """
    return _shares(cam, mask, MASK_REGIONS)


def uniform_gradcamo(mask: torch.Tensor) -> torch.Tensor:
    """The Grad-CAMO a uniform map would get: each cell's share of its crop's voxels.

    ``mask``: ``(N, Z, Y, X)``; returns ``(N,)`` float64, the baseline to read Grad-CAMO against.
    """
    return (mask == MASK_CELL).flatten(1).double().mean(1)
