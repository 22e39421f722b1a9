"""Where a job computes: the device, its float precision and its determinism.

One place for the choice every torch stage makes (segmentation, training, profiling): the
job's GPU when it has one, else the CPU.
"""

from __future__ import annotations

import contextlib
import logging
import platform
from pathlib import Path
from typing import Iterator

import torch

log = logging.getLogger(__name__)


def choose_device(requested_gpus: int | None = None) -> torch.device:
    """CUDA when a device is visible (and, if ``requested_gpus`` is given, requested); else
    the CPU, with a warning when GPUs were requested but none is visible."""
    if torch.cuda.is_available() and (requested_gpus is None or requested_gpus > 0):
        return torch.device("cuda")
    if requested_gpus:
        log.warning("%d GPU(s) requested but no CUDA device is visible: running on the CPU", requested_gpus)
    return torch.device("cpu")


def device_name(device: torch.device, threads: int | None = None) -> str:
    """``"GPU <name>"`` or ``"CPU (<threads> threads)"``, for the job's log."""
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    return f"CPU ({threads or torch.get_num_threads()} threads)"


def numerics(device: torch.device) -> dict:
    """What decides a run's float rounding besides its inputs and seed: the torch version, the
    device, the CPU's instruction set that torch's kernels dispatch to (``AVX2``,
    ``AVX512``...), the CPU's model and the thread count. Two CPU trainings of the same inputs
    agree to the bit only where these agree; recorded with every model so that a run that
    differs can be told apart from one that should not."""
    cpu_model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        cpu_model = names[0] if names else cpu_model
    return {
        "torch": torch.__version__,
        "device": device_name(device),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_model": cpu_model,
        "threads": torch.get_num_threads(),
    }


def autocast_dtype(device: torch.device, mixed_precision: bool) -> torch.dtype | None:
    """bf16 on CUDA devices that support it, else fp16 on CUDA; None (fp32) on the CPU."""
    if not mixed_precision or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def reproducible(device: torch.device) -> Iterator[None]:
    """Deterministic algorithms on the CPU for the duration; restores the global flags.

    On CUDA, cuDNN autotuning is enabled instead: bitwise repeatability there would need
    deterministic 3D depthwise-convolution kernels, which are much slower.
    """
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    try:
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        else:
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]
