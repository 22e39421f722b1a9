"""Crop-stage throughput and peak memory, and how both scale with the sites per well.

Each configuration runs in a fresh subprocess (so ``ru_maxrss`` is that run's peak) on
synthetic sites: touching box-shaped cells in a (Z, C, Y, X) uint16 z-stack. The baseline is
1 site per well; the table gives cells per second and peak RSS for 1, 2 and 4 sites per
well, and both as ratios to the baseline. Bounded memory means peak RSS stays about flat
while the number of cells grows with the sites.

Usage: ``.venv/bin/python bench/bench_crops.py [--shape Z Y X] [--crop Z Y X]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHANNELS = ["DNA", "ER", "RNA", "AGP", "Mito"]


def synthetic_site(shape, cell_size, seed):
    """A ZCYX uint16 z-stack and ZYX labels of a grid of touching box-shaped cells."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    n = 0
    for y in range(0, shape[1] - cell_size + 1, cell_size):
        for x in range(0, shape[2] - cell_size + 1, cell_size):
            n += 1
            labels[1 : shape[0] - 1, y : y + cell_size, x : x + cell_size] = n
    image = rng.integers(100, 4000, (shape[0], len(CHANNELS), shape[1], shape[2]), dtype=np.uint16)
    return image, labels


def make_sites(folder: Path, n_sites: int, shape, cell_size) -> None:
    from gradcamo.io import write_labels, write_zstack

    for site in range(1, n_sites + 1):
        image, labels = synthetic_site(shape, cell_size, site)
        write_zstack(folder / f"s{site}.tif", image, CHANNELS)
        write_labels(folder / f"s{site}_labels.tif", labels)


def run_one(folder: Path, n_sites: int, crop) -> dict:
    """Child process: the crop stage alone on the first ``n_sites`` sites; its peak RSS."""
    from gradcamo.crops import write_well_store
    from gradcamo.readers import ImageSettings, Site, labelled_sites, open_reader

    # write_zstack's voxel size (1 µm) is what the files say.
    settings = ImageSettings(tuple(CHANNELS), "tiff", None, {}, (1.0, 1.0, 1.0), 0.02)
    sites = labelled_sites(
        open_reader(settings),
        [Site("P1", "B02", s, image=str(folder / f"s{s}.tif")) for s in range(1, n_sites + 1)],
        [str(folder / f"s{s}_labels.tif") for s in range(1, n_sites + 1)],
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tic = time.perf_counter()
    summary = write_well_store(
        folder / f"store{n_sites}",
        sites,
        {"plate": "P1", "well": "B02", "treatment": "DMSO"},
        CHANNELS,
        crop,
        normalization={
            "scope": "site",
            "reference": "all",
            "lower_percentile": 1.0,
            "upper_percentile": 99.8,
        },
    )
    seconds = time.perf_counter() - tic
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "sites": n_sites,
        "cells": summary["n_cells"],
        "seconds": seconds,
        "peak_rss_mb": rss / 1024,
        "rss_before_mb": rss_before / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(24, 512, 512), help="site Z Y X")
    parser.add_argument("--crop", type=int, nargs=3, default=(12, 32, 32), help="crop Z Y X")
    parser.add_argument("--cell-size", type=int, default=24, help="cell edge in Y/X (voxels)")
    parser.add_argument("--sites", type=int, nargs="+", default=(1, 2, 4))
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--make", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make is not None:
        make_sites(args.folder, args.make, tuple(args.shape), args.cell_size)
        return
    if args.child is not None:
        print(json.dumps(run_one(args.folder, args.child, tuple(args.crop))))
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # Sites are made in their own process too: Linux children start with their parent's
        # peak RSS as their own, so the parent must stay small for ru_maxrss to mean anything.
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--make",
                str(max(args.sites)),
                "--folder",
                tmp,
                "--shape",
                *map(str, args.shape),
                "--cell-size",
                str(args.cell_size),
            ],
            check=True,
        )
        for n_sites in args.sites:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                str(n_sites),
                "--folder",
                tmp,
                "--crop",
                *map(str, args.crop),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    site_mb = np.prod(args.shape) * len(CHANNELS) * 2 / 2**20
    crop_mb = np.prod(args.crop) * len(CHANNELS) * 4 / 2**20
    print(
        f"site ZCYX {args.shape[0]}x{len(CHANNELS)}x{args.shape[1]}x{args.shape[2]} uint16 "
        f"({site_mb:.0f} MB), "
        f"crop {tuple(args.crop)} ({crop_mb:.2f} MB float32 per cell); fresh process per row, "
        f"peak = ru_maxrss (imports alone: {rows[0]['rss_before_mb']:.0f} MB)"
    )
    print(f"{'sites':>5} {'cells':>6} {'s':>7} {'cells/s':>8} {'peak MB':>8} {'x cells/s':>9} {'x peak':>7}")
    base = rows[0]
    for r in rows:
        rate, base_rate = r["cells"] / r["seconds"], base["cells"] / base["seconds"]
        print(
            f"{r['sites']:>5} {r['cells']:>6} {r['seconds']:>7.2f} {rate:>8.0f} {r['peak_rss_mb']:>8.0f} "
            f"{rate / base_rate:>9.2f} {r['peak_rss_mb'] / base['peak_rss_mb']:>7.2f}"
        )


if __name__ == "__main__":
    main()
