"""Benchmark: one-pass Grad-CAM profiling against a library Grad-CAM and a plain forward.

On the same model (3D EfficientNet-b0, 5 channels, BatchNorm statistics refitted on random
data so activations have realistic magnitudes), the same batch and the same device, times:

  ours             GradCamProfiler (trunk without autograd, ONE forward of the tail and ONE
                   backward per batch) + trilinear upsampling: embedding, logits, maps
  ours+audit       what the profile stage does per batch: ours, plus the counterfactual
                   audit (the crops with the cell, and with its context, replaced by a
                   neutral fill on the CPU, and one eval forward of each)
  ixg, ixg+audit   the same with input x gradient: the backward runs through the whole
                   network, down to the input
  ig, ig+audit     the same with integrated gradients (profile.attribution_method's default) at 8
                   steps (profile.ig_steps): 8 forwards and backwards to the input
  ig/smoothed      ig with its map smoothed (profile.smoothing_sigma 1 at the mini voxel
                   size): what the smoothing costs
  monai/cell       the paper's setup (pytorch-grad-cam's per-image loop), with MONAI's
                   GradCAM: one library call per cell (full forward + full backward each),
                   plus a separate batched inference forward for the embedding
  monai/batch      one MONAI GradCAM call for the whole batch + the embedding forward.
                   Faster, but NOT a correct baseline: MONAI's ``class_score`` indexes
                   ``logits[:, class_idx]`` with the per-cell argmax, so each cell's map is
                   the gradient of the sum of all cells' predicted logits
  floor            plain eval forward under torch.inference_mode (logits only)

MONAI is given an identity postprocessing (its default min-max inverting normaliser would
only add time). Time: median of ``--repeats`` rounds (each round runs every method once)
after one warm-up round, cells/s. Memory: each method runs once in a fresh subprocess; on
CPU the peak resident-set growth of that call (the kernel's VmHWM, reset through
``/proc/self/clear_refs`` after building the model and trimming the heap, minus VmRSS
before; falls back to ``ru_maxrss`` growth), on CUDA ``torch.cuda.max_memory_allocated``
above the memory allocated before the call. Also prints how far our maps are from MONAI's
per-cell maps.

    .venv/bin/python bench/bench_gradcam.py                 # 12×32×32, batch 32, 1 thread
    .venv/bin/python bench/bench_gradcam.py --paper         # also 21×128×128, batch 4
    .venv/bin/python bench/bench_gradcam.py --layer _blocks.3 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
from gradcamo.attribution_methods import smoothing_sigmas
from gradcamo.audit import counterfactual_crops, target_probabilities
from gradcamo.gradcam import GradCamProfiler, upsample_cam
from gradcamo.model import build_model
from monai.transforms import ScaleIntensity
from monai.visualize import GradCAM

METHODS = (
    "ours",
    "ours+audit",
    "ixg",
    "ixg+audit",
    "ig",
    "ig+audit",
    "ig/smoothed",
    "monai/cell",
    "monai/batch",
    "floor",
)
#: The profiler's map behind each of our rows (name before "+audit").
CAM_METHOD = {
    "ours": "gradcam",
    "ixg": "input_x_gradient",
    "ig": "integrated_gradients",
    "ig/smoothed": "integrated_gradients",
}
IG_STEPS = 8
#: profile.smoothing_sigma 1 (Y/X voxel) at the mini dataset's voxel size, for "ig/smoothed".
IG_SMOOTHING = smoothing_sigmas(1.0, (1.0, 0.65, 0.65))


def realistic_model(crop_shape, n_classes=3, seed=0) -> torch.nn.Module:
    """b0 with random weights and BatchNorm running statistics refitted on random crops."""
    torch.manual_seed(seed)
    model = build_model("b0", 5, n_classes, crop_shape)
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm3d):
            bn.reset_running_stats()
            bn.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 5, *crop_shape))
    return model.eval()


def make_method(name: str, model: torch.nn.Module, layer: str):
    """A callable ``f(x)`` computing what the method computes for the batch ``x``."""

    def embed(x):
        pooled = {}
        hook = model._avg_pooling.register_forward_hook(lambda m, i, o: pooled.update(out=o))
        with torch.inference_mode():
            model(x)
        hook.remove()
        return pooled["out"].flatten(1)

    baseline = np.full(5, 0.1, np.float32)  # a fill's mean: dim background in every channel
    if name in CAM_METHOD:
        smoothing = IG_SMOOTHING if name == "ig/smoothed" else (0.0, 0.0, 0.0)
        profiler = GradCamProfiler(model, layer, CAM_METHOD[name], baseline, IG_STEPS, smoothing)

        def run(x):
            out = profiler(x)
            return upsample_cam(out["cam"], x.shape[2:]), out["embedding"]

    elif name.endswith("+audit"):
        profiler = GradCamProfiler(model, layer, CAM_METHOD[name.removesuffix("+audit")], baseline, IG_STEPS)
        fill = torch.randn(10_000, 5, generator=torch.Generator().manual_seed(2)).numpy()

        def run(x):
            out = profiler(x)
            maps = upsample_cam(out["cam"], x.shape[2:])
            images, masks = x.cpu().numpy(), central_cell_masks(len(x), x.shape[2:])
            crops = counterfactual_crops(images, masks, fill, 1, range(len(x)))
            for crop in crops:
                target_probabilities(model, torch.from_numpy(crop).to(x.device), out["target"])
            return maps, out["embedding"]

    elif name.startswith("monai"):
        # MONAI hooks the module it wraps for good: give it its own copy.
        cam = GradCAM(copy.deepcopy(model), target_layers=layer, postprocessing=lambda m: m)
        if name == "monai/cell":

            def run(x):
                maps = torch.cat([cam(x[i : i + 1]) for i in range(len(x))])
                return maps, embed(x)

        else:

            def run(x):
                return cam(x), embed(x)

    elif name == "floor":

        def run(x):
            with torch.inference_mode():
                return model(x)

    else:
        raise ValueError(name)
    return run


def central_cell_masks(n: int, shape) -> "np.ndarray":
    """``(n, Z, Y, X)`` crop masks: an ellipsoid cell of interest (1) filling about a sixth
    of the crop, as on the mini dataset, the rest background (0)."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    cell = ((grid / np.array([0.5, 0.6, 0.6])[:, None, None, None]) ** 2).sum(0) <= 1
    return np.broadcast_to(cell.astype(np.uint8), (n, *shape)).copy()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_methods(runs: dict, x, repeats, device) -> dict[str, float]:
    """Median seconds per batch of each method over ``repeats`` rounds after one warm-up.

    Rounds go through all methods in turn, so drifting load on a shared machine affects
    every method alike.
    """
    times = {name: [] for name in runs}
    for round_ in range(repeats + 1):
        for name, run in runs.items():
            sync(device)
            start = time.perf_counter()
            run(x)
            sync(device)
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key + ":"))


def peak_memory_mb(name, model, x, layer, device) -> float:
    """Extra peak memory (MB) of one call, measured in this (fresh) process."""
    run = make_method(name, model, layer)
    if device.type == "cuda":
        sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run(x)
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    # Hand memory freed while building the model back to the OS, then reset the kernel's
    # peak-RSS counter (VmHWM) so that only this call's peak counts.
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        before = _proc_status_kb("VmRSS")
        run(x)
        return (_proc_status_kb("VmHWM") - before) / 1024
    except OSError:  # no resettable counter: the process's peak so far is the floor
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        run(x)
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # KiB


def peer_difference(model, x, layer) -> tuple[float, float | None]:
    """Ours against MONAI's GradCAM called per cell, on upsampled maps.

    Returns the largest difference relative to each map's maximum, and the largest
    difference of min-max normalised maps (None for a one-voxel layer map: min-max of an
    upsampled constant only magnifies rounding noise).
    """
    scale = ScaleIntensity(minv=0.0, maxv=1.0)
    out = GradCamProfiler(model, layer)(x)
    ours = upsample_cam(out["cam"], x.shape[2:]).cpu()
    cam = GradCAM(copy.deepcopy(model), target_layers=layer, postprocessing=lambda m: m)
    theirs = torch.cat([cam(x[i : i + 1], class_idx=int(k)).detach() for i, k in enumerate(out["target"])])[
        :, 0
    ].cpu()
    peak = theirs.flatten(1).amax(1).clamp(min=1e-30)[:, None, None, None]
    relative = float(((ours - theirs).abs() / peak).max())
    if out["cam"][0].numel() == 1:
        return relative, None
    ours, theirs = (torch.stack([torch.as_tensor(scale(m)) for m in maps]) for maps in (ours, theirs))
    return relative, float((ours - theirs).abs().max())


def setup(args):
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # As the profile rule does: cuDNN's default TF32 convolutions move Grad-CAM maps visibly.
    torch.backends.cudnn.allow_tf32 = args.tf32
    model = realistic_model(args.shape).to(device)
    x = torch.randn(args.batch, 5, *args.shape, generator=torch.Generator().manual_seed(1))
    x = x.to(device)
    return device, model, x


def child(args) -> None:
    device, model, x = setup(args)
    print(json.dumps({"peak_mb": peak_memory_mb(args.memory, model, x, args.layer, device)}))


def measure(args) -> list[dict]:
    """Time every method in this process; memory in one subprocess per method."""
    device, model, x = setup(args)
    runs = {name: make_method(name, model, args.layer) for name in METHODS}
    seconds = time_methods(runs, x, args.repeats, device)
    rows = []
    for name in METHODS:
        cmd = [
            sys.executable,
            __file__,
            "--memory",
            name,
            "--layer",
            args.layer,
            "--shape",
            *map(str, args.shape),
            "--batch",
            str(args.batch),
            "--threads",
            str(args.threads),
            "--device",
            args.device,
        ]
        peak = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        rows.append({"method": name, "seconds": seconds[name], "peak_mb": peak["peak_mb"]})
    relative, minmax = peer_difference(model, x, args.layer)
    by_name = {r["method"]: r for r in rows}
    layer_shape = tuple(GradCamProfiler(model, args.layer)(x[:1])["cam"].shape[1:])
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"CPU, {args.threads} thread(s)"
    print(
        f"\nb0, 5 channels, crop {'×'.join(map(str, args.shape))}, batch {args.batch}, "
        f"layer {args.layer} (map {'×'.join(map(str, layer_shape))}), {device_name}, "
        f"median of {args.repeats}"
    )
    print(
        f"{'method':<12} {'ms/batch':>9} {'cells/s':>9} {'ours ×faster':>13} "
        f"{'÷ floor time':>13} {'peak MB':>8}"
    )
    ours = by_name["ours"]["seconds"]
    floor = by_name["floor"]["seconds"]
    for r in rows:
        print(
            f"{r['method']:<12} {1e3 * r['seconds']:>9.1f} {args.batch / r['seconds']:>9.1f} "
            f"{r['seconds'] / ours:>13.2f} {r['seconds'] / floor:>13.2f} {r['peak_mb']:>8.1f}"
        )
    print(f"peer check vs MONAI GradCAM per cell: max |diff| / map max = {relative:.1e}", end="")
    print(
        f", min-max normalised maps max |diff| = {minmax:.1e}"
        if minmax is not None
        else " (one-voxel map: min-max comparison not meaningful)"
    )
    mem = (
        "torch.cuda.max_memory_allocated"
        if device.type == "cuda"
        else "peak RSS growth (VmHWM reset via /proc/self/clear_refs)"
    )
    print(f"peak MB: {mem} of one first call in a fresh subprocess")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[12, 32, 32], metavar=("Z", "Y", "X"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--layer", default="_conv_head")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="let cuDNN convolutions use TF32 (PyTorch's default; the profile rule turns it off)",
    )
    parser.add_argument("--paper", action="store_true", help="also the paper's 21×128×128 at batch 4")
    parser.add_argument("--memory", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # MONAI's ModelWithHooks turns the logit tensor into a Python int (harmless here).
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")
    if args.memory:
        child(args)
        return
    measure(args)
    if args.paper:
        args.shape, args.batch = [21, 128, 128], 4
        measure(args)


if __name__ == "__main__":
    main()
