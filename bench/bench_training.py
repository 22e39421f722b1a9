"""Training throughput: what the model consumes vs what the data loader feeds (cells/s).

Writes real on-disk crop stores (CropStoreWriter, float16 memory-mapped) in a temporary
folder, then measures in one process:

- model: AdamW training steps (forward, backward, step) of a 3D EfficientNet on a batch held
  in memory, in cells per second; on CUDA with mixed precision off and on;
- loader: the training data path alone (bench_loader.loader_cells_per_second: class-balanced
  draws, float16 reads from the memory maps; augmentation runs on the device), for 0 and 2
  workers, in cells per second;
- ratio: loader / model (the loader should feed at least 2× what the model consumes).

Usage: .venv/bin/python bench/bench_training.py [--cells 512] [--variant b0] [--batch 32]
       [--norm batch|group]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from gradcamo.devices import autocast_dtype
from gradcamo.model import build_model
from gradcamo.store import CropStoreWriter

CHANNELS = ["DNA", "ER", "RNA", "AGP", "Mito"]


def write_stores(
    root: Path, n_cells: int, crop_shape: tuple[int, int, int], n_wells: int = 8
) -> pd.DataFrame:
    """``n_wells`` crop stores of random cells; returns the well table (4 treatments)."""
    rng = np.random.default_rng(0)
    rows = []
    per_well = n_cells // n_wells
    for w in range(n_wells):
        path = root / "P1" / f"B{w:02d}"
        writer = CropStoreWriter(path, per_well, CHANNELS, crop_shape, {"scope": "site"})
        for start in range(0, per_well, 64):
            n = min(64, per_well - start)
            writer.write(
                rng.random((n, len(CHANNELS), *crop_shape), np.float32),
                rng.integers(0, 3, (n, *crop_shape), np.uint8),
            )
        writer.close(pd.DataFrame({"Metadata_Well": [f"B{w:02d}"] * per_well}))
        rows.append(
            {
                "plate": "P1",
                "well": f"B{w:02d}",
                "treatment": f"T{w % 4}",
                "split": "train",
                "store": str(path),
            }
        )
    return pd.DataFrame(rows)


def model_cells_per_second(
    variant, crop_shape, batch, device, amp, steps, norm, channels_last=False
) -> float:
    """Training steps' cells/s; ``channels_last``: model and batch in ``torch.channels_last_3d``
    (NDHWC) memory, which cuDNN's bfloat16 3D convolutions may prefer. On CUDA the peak
    memory of the steps is printed."""
    torch.manual_seed(0)
    model = build_model(variant, len(CHANNELS), 4, crop_shape, norm).to(device).train()
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    images = torch.randn(batch, len(CHANNELS), *crop_shape, device=device).to(memory_format=fmt)
    labels = torch.randint(0, 4, (batch,), device=device)

    def step():
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        print(
            f"  peak GPU memory, batch {batch}, {amp or 'fp32'}"
            f"{', channels_last_3d' if channels_last else ''}: {peak:.1f} GiB"
        )
        torch.cuda.reset_peak_memory_stats(device)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=512)
    parser.add_argument("--variant", default="b0")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--crop", type=int, nargs=3, default=(12, 32, 32), metavar=("Z", "Y", "X"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--norm", default="batch", choices=["batch", "group"])
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[0, 2],
        help="DataLoader worker counts to time (a GPU node has more cores)",
    )
    args = parser.parse_args()
    crop_shape = tuple(args.crop)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"CPU, {torch.get_num_threads()} threads"
    shape = "×".join(str(s) for s in (len(CHANNELS), *crop_shape))
    print(f"{args.variant} ({args.norm} norm), crops {shape}, batch {args.batch}, {where}")

    amps = [None] if device.type == "cpu" else [None, autocast_dtype(device, True)]
    model_speed = {}
    for amp in amps:
        name = "fp32" if amp is None else str(amp).replace("torch.", "")
        model_speed[name] = model_cells_per_second(
            args.variant, crop_shape, args.batch, device, amp, args.steps, args.norm
        )
        if device.type == "cuda" and amp is not None:
            model_speed[f"{name}, channels_last_3d"] = model_cells_per_second(
                args.variant, crop_shape, args.batch, device, amp, args.steps, args.norm, channels_last=True
            )
    from bench_loader import loader_cells_per_second  # it imports this module's helpers

    loader_speed = {}
    with tempfile.TemporaryDirectory() as tmp:
        wells = write_stores(Path(tmp), args.cells, crop_shape)
        for workers in args.workers:
            loader_speed[workers] = loader_cells_per_second(wells, args.batch, workers, device)[0]

    # The loader must keep up with the fastest way the model is trained.
    fastest = max(model_speed.values())
    print(f"{'what':<34}{'cells/s':>10}{'loader / model':>16}")
    for name, speed in model_speed.items():
        print(f"{'model train step, ' + name:<34}{speed:>10.1f}")
    for workers, speed in loader_speed.items():
        print(f"{f'loader, {workers} workers':<34}{speed:>10.1f}{speed / fastest:>15.1f}×")
    for name in model_speed:
        if name != "fp32":
            print(f"{name} vs fp32: {model_speed[name] / model_speed['fp32']:.2f}×")


if __name__ == "__main__":
    main()
