"""The 3D EfficientNet classifier and its checkpoints.

``efficientnet-pytorch-3d`` (the paper's model) is on no package registry; MONAI's
:class:`monai.networks.nets.EfficientNetBN` with ``spatial_dims=3`` is the maintained 3D
EfficientNet and stands in for it. MONAI computes its static TensorFlow-style "same"
padding for a cubic ``image_size`` fixed per variant (224 for b0), which rejects small and
anisotropic crops; :func:`build_model` recomputes every padder for the real crop shape
(Z, Y, X) with MONAI's own padding helper.

Layer names (b0): ``_conv_stem`` → ``_blocks`` (7 stacks) → ``_conv_head`` (320→1280) →
``_bn1`` + swish → ``_avg_pooling`` → pooled 1280-d embedding → ``_dropout`` → ``_fc``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from monai.networks.nets import EfficientNetBN
from monai.networks.nets.efficientnet import (
    _calculate_output_image_size,
    _make_same_padder,
    efficientnet_params,
)
from torch import nn

from gradcamo.errors import InputError

VARIANTS = tuple(f"b{i}" for i in range(8))

#: Normalisation layers by name, as MONAI's ``norm`` argument. ``batch`` is the paper's
#: (TensorFlow's eps and momentum, MONAI's default). ``group`` (8 groups; every EfficientNet
#: width is a multiple of 8) normalises each cell on its own, so small batches, as on a CPU
#: or with large 3D crops on a GPU, train and evaluate alike.
NORMS = {
    "batch": ("batch", {"eps": 1e-3, "momentum": 0.01}),
    "group": ("group", {"num_groups": 8, "eps": 1e-3}),
}


def _rebuild_same_padding(model: EfficientNetBN, crop_shape: Sequence[int]) -> None:
    """Replace each static "same" padder by one computed for ``crop_shape`` (Z, Y, X).

    Mirrors the size bookkeeping of ``EfficientNet.__init__`` / ``MBConvBlock.__init__``,
    per axis instead of for one cubic size.
    """
    size = [int(s) for s in crop_shape]
    model._conv_stem_padding = _make_same_padder(model._conv_stem, size)
    size = _calculate_output_image_size(size, model._conv_stem.stride)
    for stack in model._blocks:
        for block in stack:
            if not isinstance(block._expand_conv, nn.Identity):
                block._expand_conv_padding = _make_same_padder(block._expand_conv, size)
            block._depthwise_conv_padding = _make_same_padder(block._depthwise_conv, size)
            size = _calculate_output_image_size(size, block._depthwise_conv.stride)
            block._project_conv_padding = _make_same_padder(block._project_conv, size)
    model._conv_head_padding = _make_same_padder(model._conv_head, size)


def build_model(
    variant: str,
    in_channels: int,
    num_classes: int,
    crop_shape: Sequence[int],
    norm: str = "batch",
) -> EfficientNetBN:
    """A randomly initialised 3D EfficientNet for crops of ``crop_shape`` (Z, Y, X).

    Input ``(N, in_channels, Z, Y, X)``, output logits ``(N, num_classes)``. ``norm`` names
    the normalisation layers (:data:`NORMS`).
    """
    if variant not in VARIANTS:
        raise InputError(f"model variant {variant!r} is not one of {', '.join(VARIANTS)}")
    if norm not in NORMS:
        raise InputError(f"model norm {norm!r} is not one of {', '.join(NORMS)}")
    if len(crop_shape) != 3 or min(crop_shape) < 1:
        raise InputError(f"crop shape must be three positive sizes (Z, Y, X), got {crop_shape}")
    name = f"efficientnet-{variant}"
    assert name in efficientnet_params
    model = EfficientNetBN(
        name,
        pretrained=False,
        spatial_dims=3,
        in_channels=in_channels,
        num_classes=num_classes,
        norm=NORMS[norm],
    )
    _rebuild_same_padding(model, crop_shape)
    # MONAI initialises the classifier TensorFlow-style, U(±1/sqrt(num_classes)): with a
    # handful of treatments that gives logits of ~±10 and a loss that first explodes.
    # PyTorch's fan-in initialisation keeps the initial logits small.
    model._fc.reset_parameters()
    return model


def set_drop_connect_rate(model: EfficientNetBN, rate: float) -> None:
    """Set stochastic depth ("drop connect") for training, ramped over blocks as MONAI does.

    Block ``i`` of ``n`` drops its residual branch for a sample with probability
    ``rate * i / n`` in training mode (MONAI's b0 uses ``rate`` = 0.2); evaluation is unaffected.
    """
    blocks = [block for stack in model._blocks for block in stack]
    for i, block in enumerate(blocks):
        block.drop_connect_rate = rate * i / len(blocks)
    model.drop_connect_rate = rate


def embedding_dim(model: EfficientNetBN) -> int:
    """Length of the pooled penultimate embedding (1280 for b0)."""
    return model._fc.in_features


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict[str, Any]) -> None:
    """Save weights plus everything inference needs.

    ``meta`` must hold ``variant``, ``channels``, ``classes``, ``crop_shape`` (Z, Y, X) and
    ``normalization`` (of the crops); ``norm`` (the layers', default ``batch``) and anything
    else (epoch, metrics) is kept too.
    """
    required = {"variant", "channels", "classes", "crop_shape", "normalization"}
    missing = required - set(meta)
    if missing:
        raise ValueError(f"checkpoint metadata lacks {sorted(missing)}")
    torch.save({"state_dict": model.state_dict(), "meta": dict(meta)}, path)


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[EfficientNetBN, dict[str, Any]]:
    """Rebuild the model from a checkpoint; returns ``(model in eval mode, meta)``."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
        meta = ckpt["meta"]
    except FileNotFoundError:
        raise InputError(f"{path}: checkpoint does not exist") from None
    except Exception as exc:
        raise InputError(f"{path}: not a gradcamo checkpoint ({type(exc).__name__}: {exc})") from None
    model = build_model(
        meta["variant"],
        len(meta["channels"]),
        len(meta["classes"]),
        meta["crop_shape"],
        norm=meta.get("norm", "batch"),
    )
    model.load_state_dict(ckpt["state_dict"])
    model.to(map_location).eval()
    return model, meta
