"""The training data path at the paper's crop size: loader cells/s against the model's.

In one process, on real on-disk crop stores (float16, memory-mapped, written by
CropStoreWriter in a temporary folder):

- loader: :func:`gradcamo.data.cell_loader` over class-balanced draws with augmentation
  on, 0, 2 and 4 workers; its CPU side only reads and stacks the float16 crops (augmentation
  runs on the device after the transfer, so it is not part of the CPU's work), in cells/s;
- bytes read per cell from the stores;
- model: b0 training steps (forward, backward, AdamW) on a batch in memory, cells/s, on
  this machine's device;
- the ratio loader / model; the last line names the best setting:
  ``loader 5x21x128x128: <cells/s> cells/s (<workers> workers)``.

Usage: .venv/bin/python bench/bench_loader.py [--cells 256] [--crop 21 128 128] [--batch 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch
from bench_training import CHANNELS, model_cells_per_second, write_stores
from gradcamo.data import Augmentation, BalancedDraws, CropCells, cell_loader, cell_table
from gradcamo.store import CropStore


def loader_cells_per_second(wells, batch, workers, device, epochs=3) -> tuple[float, int]:
    """Cells/s of the CPU side of the training loader, and bytes read per cell."""
    stores, cells = cell_table(wells)
    labels = cells["treatment"].str[1:].astype(int).to_numpy()
    augmentation = Augmentation(flip_z=False, intensity_jitter=0.1)
    data = CropCells(stores, cells["store"], cells["row"], labels, augmentation, seed=0)
    n_draws = (len(data) // batch) * batch
    seen, read = 0, 0
    for epoch in range(epochs + 1):  # epoch 0 warms the page cache and the workers' start
        if epoch == 1:
            start = time.perf_counter()
        sampler = BalancedDraws(labels, n_draws, 0, epoch)
        for batch_ in cell_loader(data, batch, workers, device, seed=epoch, sampler=sampler, drop_last=True):
            if epoch:
                seen += len(batch_.images)
                read += batch_.images.numel() * batch_.images.element_size()
    return seen / (time.perf_counter() - start), read // max(seen, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=256)
    parser.add_argument("--crop", type=int, nargs=3, default=(21, 128, 128), metavar=("Z", "Y", "X"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--model-batch", type=int, default=4, help="cells per timed training step")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    crop_shape = tuple(args.crop)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    shape = "x".join(str(s) for s in (len(CHANNELS), *crop_shape))
    print(f"crops {shape}, loader batch {args.batch}, {args.cells} cells on disk, {where}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        wells = write_stores(Path(tmp), args.cells, crop_shape)
        row_bytes = CropStore.open(wells.store[0]).images[0].nbytes
        speeds = {}
        for workers in args.workers:
            speeds[workers], per_cell = loader_cells_per_second(wells, args.batch, workers, device)
            assert per_cell == row_bytes, (per_cell, row_bytes)
    model = model_cells_per_second("b0", crop_shape, args.model_batch, device, None, args.steps, "batch")
    print(f"{'what':<34}{'cells/s':>10}{'vs model':>10}")
    print(f"{'model train step, b0 fp32':<34}{model:>10.1f}")
    for workers, speed in speeds.items():
        print(f"{f'loader, {workers} workers':<34}{speed:>10.1f}{speed / model:>9.1f}x")
    print(f"bytes read per cell: {row_bytes} ({row_bytes / 2**20:.2f} MiB, float16 as stored, one copy)")
    best = max(speeds, key=speeds.get)
    print(f"loader {shape}: {speeds[best]:.0f} cells/s ({best} workers)")


if __name__ == "__main__":
    # 4 workers on a 2-core machine is the point of one row, not a mistake to warn about.
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    main()
