"""Benchmark: what a screen costs at the paper's geometry (5 channels x 21 x 128 x 128 crops).

In one process, on one synthetic well (``--sites`` sites of ``--shape``, box-shaped cells of
``--cell-size`` voxels in Y/X) and a 3D EfficientNet-b0 with random weights:

1. **Bytes on disk per profiled cell**, today's layout (a crop store of every cell, then the
   profile table) against the new one (a store of ``crops.sample.cells_per_well`` cells per
   well, the profile stage cropping every cell from the site images as it goes), and what
   each comes to for a 10-plate screen (384 wells x 9 fields, about 1.7 million cells, 443
   per well). Images and labels are the same in both and not counted.
2. **The profile job per cell**: today's (crops read from the well's store) against the new
   (crops made from the sites as they are read, one batch ahead in a thread), same model,
   same cells, a plain forward for every cell (``profile.attribution_cells_per_well: 0``,
   where the crop work weighs most) at ``profile.batch_size`` 32. Today's total is the profile
   job plus the crop job that wrote the store.
3. **The profile pass against its floor** at batch 4: a plain forward, the default map's pass
   with the audit (integrated gradients, 8 steps from the fill's mean, evidence, the two
   counterfactual forwards), and the floor of that arithmetic: 8 forward-and-backward
   passes to the input plus the audit's two forwards. Then forwards per cell and H100
   GPU-hours per 100k cells for each choice of ``profile.attribution_cells_per_well``.

    .venv/bin/python bench/bench_screen.py            # 2 sites of 21x1024x1024, 64 px cells
    .venv/bin/python bench/bench_screen.py --quick    # 1 site of 21x512x512 (a smoke run)

Times are medians of ``--repeats`` rounds after a warm-up, on ``--threads`` threads; the
store is read through the page cache (it was just written), which favours today's layout.
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
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_crops import CHANNELS, make_sites  # noqa: E402

CROP = (21, 128, 128)
# The template's normalisation: the plate's percentiles, computed once per plate (here: of the
# first site) and handed to every well's jobs.
NORMALIZATION = {"scope": "plate", "reference": "controls", "lower_percentile": 1.0, "upper_percentile": 99.8}
METADATA = {"plate": "P1", "well": "B02", "treatment": "DMSO"}
SCREEN_CELLS, SCREEN_WELLS = 1_700_000, 3840
# The H100's training rate at the paper's size (docs/benchmarks.md, 2026-11-27), and a
# forward at 3x a training step's rate: the sizing table's assumption until bench/gpu_check.sh
# measures the profile pass on a GPU.
H100_FORWARDS_PER_S = 3 * 198


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def profile_table_bytes(n_cells: int, folder: Path) -> int:
    """A profile table's Parquet size for ``n_cells`` cells (1,280 float32 features, the
    profile stage's metadata columns), written as the profile stage writes it."""
    from gradcamo.profiles import profile_table, write_profile_table

    rng = np.random.default_rng(0)
    cells = pd.DataFrame(
        {
            "Metadata_Plate": ["P1"] * n_cells,
            "Metadata_Well": ["B02"] * n_cells,
            "Metadata_Site": np.ones(n_cells, np.int64),
            "Metadata_ObjectNumber": np.arange(1, n_cells + 1),
        }
    )
    classes = ["DMSO", "A", "B", "C"]
    table = profile_table(
        cells,
        "test",
        rng.random((n_cells, 1280), np.float32),
        rng.dirichlet(np.ones(4), n_cells).astype(np.float32),
        rng.random(n_cells),
        classes,
        channels=CHANNELS,
        background=rng.random((n_cells, len(CHANNELS))),
    )
    write_profile_table(table, folder / "profile.parquet")
    return (folder / "profile.parquet").stat().st_size


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(21, 1024, 1024), help="site Z Y X")
    parser.add_argument("--cell-size", type=int, default=64)
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--cells-per-well", type=int, default=100, help="crops.sample.cells_per_well")
    parser.add_argument(
        "--profile-cells", type=int, default=96, help="cells the profile job timing runs over"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 site of 21x512x512, 32 cells, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.shape, args.sites, args.profile_cells, args.repeats = (21, 512, 512), 1, 32, 1
    torch.set_num_threads(args.threads)
    from gradcamo.crops import crop_batches, prefetched, well_cell_table, write_well_store
    from gradcamo.readers import ImageSettings, Site, labelled_sites, open_reader
    from gradcamo.store import CropStore

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_sites(tmp, args.sites, tuple(args.shape), args.cell_size)
        settings = ImageSettings(tuple(CHANNELS), "tiff", None, {}, (1.0, 1.0, 1.0), 0.02)
        sites = labelled_sites(
            open_reader(settings),
            [Site("P1", "B02", s, image=str(tmp / f"s{s}.tif")) for s in range(1, args.sites + 1)],
            [str(tmp / f"s{s}_labels.tif") for s in range(1, args.sites + 1)],
        )
        from gradcamo.normalization import percentile_bounds

        bounds = percentile_bounds(sites[0].zstack(), 1.0, 99.8)
        common = dict(normalization=NORMALIZATION, bounds=bounds)

        # 1. Bytes on disk.
        tic = time.perf_counter()
        every = write_well_store(tmp / "every", sites, METADATA, CHANNELS, CROP, **common)
        crop_job_today = time.perf_counter() - tic
        tic = time.perf_counter()
        write_well_store(
            tmp / "sample", sites, METADATA, CHANNELS, CROP, cells_per_well=args.cells_per_well, **common
        )
        crop_job_new = time.perf_counter() - tic
        n = every["n_cells"]
        profile_bytes = profile_table_bytes(n, tmp)
        today = (folder_bytes(tmp / "every") + profile_bytes) / n
        new = (folder_bytes(tmp / "sample") + profile_bytes) / n
        store_per_cell = folder_bytes(tmp / "every") / n
        screen_today = SCREEN_CELLS * (store_per_cell + profile_bytes / n)
        per_well = min(args.cells_per_well, SCREEN_CELLS / SCREEN_WELLS)
        screen_new = SCREEN_WELLS * per_well * store_per_cell + SCREEN_CELLS * profile_bytes / n
        print(f"one well: {args.sites} site(s) of {tuple(args.shape)}, {n} cells, crops {CROP}")
        print("\n1. bytes on disk per profiled cell (crop stores + profile table; images, labels apart)")
        print("| layout | bytes per profiled cell | 10-plate screen (1.7 M cells, 3,840 wells) | vs today |")
        print("|---|---|---|---|")
        print(
            f"| today: every cell in the store | {today / 2**20:.2f} MiB "
            f"| {screen_today / 1e12:.2f} TB | 1.00 |"
        )
        print(
            f"| new: {args.cells_per_well} cells per well stored, profile crops on the fly "
            f"| {new / 2**20:.2f} MiB (this well) | {screen_new / 1e12:.2f} TB "
            f"| {screen_new / screen_today:.3f} |"
        )
        print(f"crop job: every cell {crop_job_today:.1f} s, the sample {crop_job_new:.1f} s")

        # 2. The profile job per cell, plain forward, store against crops on the fly.
        from gradcamo.gradcam import GradCamProfiler
        from gradcamo.model import build_model
        from gradcamo.profiles import profile_batches, store_batches

        torch.manual_seed(0)
        model = build_model("b0", len(CHANNELS), 4, CROP).eval()
        fill = np.random.default_rng(0).normal(0.1, 0.05, (1000, len(CHANNELS))).astype(np.float32)
        profiler = GradCamProfiler(model, "input", "integrated_gradients", fill.mean(0), 8)
        store = CropStore.open(tmp / "every")
        k = min(args.profile_cells, n)
        cells, _ = well_cell_table(sites, METADATA, CROP)
        cells = cells.iloc[:k]
        none = np.zeros(k, bool)

        def from_store():  # what profile_store does, over the first k cells
            return profile_batches(
                profiler, store_batches(store, 32, k), cells, CROP, len(CHANNELS), mapped=none
            )

        def on_the_fly():
            batches = prefetched(crop_batches(sites, cells, CROP, 32, **common))
            return profile_batches(profiler, batches, cells, CROP, len(CHANNELS), mapped=none)

        a, b = from_store(), on_the_fly()
        assert np.array_equal(a["embedding"], b["embedding"]), (
            "on-the-fly crops must give the store's profiles"
        )
        t_store = timed(from_store, args.repeats) / k
        t_fly = timed(on_the_fly, args.repeats) / k
        crop_per_cell = crop_job_today / n
        print(f"\n2. the profile job per cell ({k} cells, plain forward, batch 32, {args.threads} threads)")
        print("| profile job | s per cell | vs today's profile job | vs today's crop + profile jobs |")
        print("|---|---|---|---|")
        print(
            f"| today: crops from the store | {t_store:.3f} | 1.00 "
            f"| {t_store / (t_store + crop_per_cell):.2f} |"
        )
        print(
            f"| new: crops from the sites, prefetched | {t_fly:.3f} | {t_fly / t_store:.2f} "
            f"| {t_fly / (t_store + crop_per_cell):.2f} |"
        )
        print(f"(today's crop job: {crop_per_cell:.3f} s per cell)")

        # 3. The profile pass against its floor, batch 4.
        x = torch.from_numpy(np.asarray(store.images[:4], np.float32))
        masks = np.asarray(store.masks[:4])
        from gradcamo.audit import counterfactual_crops, target_probabilities

        def forward():
            with torch.inference_mode():
                model(x)

        def default_map():
            result = profiler(x, "predicted")
            crops = counterfactual_crops(x.numpy(), masks, fill, 2, [(0, i) for i in range(4)])
            for c in crops:
                target_probabilities(model, torch.from_numpy(c), result["target"])

        def floor():
            for _ in range(8):  # the gradient to the input only, as integrated gradients takes it
                xi = x.clone().requires_grad_(True)
                torch.autograd.grad(model(xi).sum(), xi)
            with torch.no_grad():
                model(x)
                model(x)

        t_fwd = timed(forward, args.repeats)
        t_map = timed(default_map, args.repeats)
        t_floor = timed(floor, args.repeats)
        ratio = t_map / t_fwd
        print(f"\n3. the profile pass at {CROP}, batch 4, {args.threads} threads")
        print("| pass | s per batch | vs plain forward | vs floor |")
        print("|---|---|---|---|")
        print(f"| plain forward | {t_fwd:.3f} | 1.0 | |")
        print(
            f"| default map (integrated gradients, 8 steps) + audit | {t_map:.3f} | {ratio:.1f} "
            f"| {t_map / t_floor:.2f} |"
        )
        print(
            f"| floor: 8 forward+backward to the input + 2 forwards | {t_floor:.3f} "
            f"| {t_floor / t_fwd:.1f} | 1.00 |"
        )
        print("\nforwards per cell and H100 GPU-hours per 100k cells (a forward at 3x the measured")
        print(f"training rate, {H100_FORWARDS_PER_S} cells/s; 443 cells per well):")
        print("| profile.attribution_cells_per_well | forwards per cell | GPU-hours per 100k cells |")
        print("|---|---|---|")
        for choice in (None, 100, 50, 20, 0):
            share = 1.0 if choice is None else min(choice, 443) / 443
            forwards = 1 + (ratio - 1) * share
            hours = 1e5 * forwards / H100_FORWARDS_PER_S / 3600
            print(
                f"| {choice if choice is not None else 'null (every cell)'} | {forwards:.1f} | {hours:.2f} |"
            )


if __name__ == "__main__":
    main()
