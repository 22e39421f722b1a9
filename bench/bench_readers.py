"""Reading one paper-sized site (20 planes x 5 channels x 1080 x 1080 uint16) from per-plane
TIFFs (as Opera Phenix / ImageXpress / CellVoyager write them, read through the plane index)
against one OME-TIFF holding the same pixels with the same compression, in one process.

    python bench/bench_readers.py [--repeats 3] [--shape 20 1080 1080]

Prints seconds per site (median of the repeats) and the per-plane / single-file ratio, for
uncompressed and LZW-compressed files (LZW: as Harmony writes its planes). Files are read
from the page cache (each is read once before timing): the ratio is the readers' own cost,
not the file system's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "lib"))
from gradcamo.readers import ImageSettings, Site, open_reader  # noqa: E402
from gradcamo.readers.planes import SITE_PLANE_COLUMNS  # noqa: E402

CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")


def synthetic_site(shape, seed=0) -> np.ndarray:
    """ZCYX uint16 with cell-like blobs over camera noise (so compression behaves as on data)."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    yy, xx = np.mgrid[:y, :x]
    site = rng.normal(400, 20, (z, len(CHANNELS), y, x))
    for _ in range(150):
        cy, cx, r = rng.uniform(0, y), rng.uniform(0, x), rng.uniform(15, 30)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
        site += blob[None, None] * rng.uniform(500, 3000, (1, len(CHANNELS), 1, 1))
    return np.clip(site, 0, 65535).astype(np.uint16)


def write_layouts(site: np.ndarray, folder: Path, compression: str | None):
    single = folder / f"site_{compression}.ome.tif"
    tifffile.imwrite(
        single,
        site,
        ome=True,
        compression=compression,
        metadata={"axes": "ZCYX", "Channel": {"Name": list(CHANNELS)}},
    )
    rows = []
    for z in range(site.shape[0]):
        for c, channel in enumerate(CHANNELS):
            path = folder / f"{compression}_p{z + 1:02d}-ch{c + 1}.tiff"
            tifffile.imwrite(path, site[z, c], compression=compression)
            rows.append(
                {
                    "plate": "P1",
                    "well": "B02",
                    "site": 1,
                    "z": z,
                    "channel": channel,
                    "path": str(path),
                    "frame": 0,
                }
            )
    index = folder / f"{compression}.parquet"
    pd.DataFrame(rows, columns=SITE_PLANE_COLUMNS).to_parquet(index)
    return single, index


def timed(read, repeats: int) -> float:
    read()  # into the page cache
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        read()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=3, default=(20, 1080, 1080), metavar=("Z", "Y", "X"))
    args = parser.parse_args()
    site = synthetic_site(tuple(args.shape))
    base = dict(page_order=None, channel_names={}, voxel_size=(1.0, 1.0, 1.0), voxel_size_tolerance=0.02)
    tiff = open_reader(ImageSettings(CHANNELS, "tiff", **base))
    print(f"one site: ZCYX {site.shape} uint16, {site.nbytes / 2**20:.0f} MiB; median of {args.repeats}")
    print(
        "| compression | one OME-TIFF (s) | per-plane TIFFs (s) | per-plane / single file "
        "| MiB on disk (single, planes) |"
    )
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for compression in (None, "lzw"):
            single, index = write_layouts(site, Path(tmp), compression)
            planes = open_reader(ImageSettings(CHANNELS, "harmony", **base), [index])
            np.testing.assert_array_equal(
                planes.read(Site("P1", "B02", 1)), tiff.read(Site("P1", "B02", 1, image=str(single)))
            )
            t_single = timed(lambda: tiff.read(Site("P1", "B02", 1, image=str(single))), args.repeats)
            t_planes = timed(lambda: planes.read(Site("P1", "B02", 1)), args.repeats)
            size_planes = sum(p.stat().st_size for p in Path(tmp).glob(f"{compression}_p*.tiff")) / 2**20
            print(
                f"| {compression or 'none'} | {t_single:.3f} | {t_planes:.3f} | {t_planes / t_single:.2f} | "
                f"{single.stat().st_size / 2**20:.0f}, {size_planes:.0f} |"
            )


if __name__ == "__main__":
    main()
