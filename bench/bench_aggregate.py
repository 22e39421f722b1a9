"""Benchmark of the aggregate stage's heavy steps on synthetic 1,280-d cell profiles.

    .venv/bin/python bench/bench_aggregate.py [--sizes 10000 100000] [--full-umap]

Steps, each timed in a fresh subprocess so that its peak resident memory (ru_maxrss) is its
own; "data MB" is the peak of the same process right after building the table:

- ``well_profiles``  median profile of 100 wells;
- ``sphering``       ZCA fitted on the control cells (25 %) and applied to every cell;
- ``pycytominer``    the baseline: pycytominer's ``Spherize`` on the same control cells
  (its full SVD builds an n x n matrix, so it is skipped above 15,000 control cells);
  column "pyc/ours" = its time / ours;
- ``umap``           PCA to 50 components + UMAP of at most ``--umap-max-cells`` cells
  (the workflow's ``aggregate.umap.max_cells``), ``--full-umap`` for every cell;
- ``map``            copairs mAP of 4 treatments, 500 cells per treatment.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pandas as pd

N_FEATURES = 1280
N_WELLS = 100
TREATMENTS = ["DMSO", "T1", "T2", "T3", "T4"]


def synthetic_cells(n_cells: int, seed: int = 0) -> pd.DataFrame:
    """``n_cells`` x 1,280 float32 features with 10-d latent structure and treatment shifts;
    wells of 5 treatments (DMSO = 20 wells of 100), 25 % of cells in the test split."""
    rng = np.random.default_rng(seed)
    well = rng.integers(0, N_WELLS, n_cells)
    treatment = np.where(well < 20, 0, 1 + well % 4)
    loadings = rng.normal(size=(10, N_FEATURES)).astype(np.float32)
    effects = rng.normal(size=(len(TREATMENTS), N_FEATURES)).astype(np.float32)
    effects[0] = 0
    features = rng.standard_normal((n_cells, N_FEATURES), dtype=np.float32)
    features += rng.standard_normal((n_cells, 10), dtype=np.float32) @ loadings
    features += effects[treatment]
    meta = pd.DataFrame(
        {
            "Metadata_Plate": "P1",
            "Metadata_Well": [f"W{w:03d}" for w in well],
            "Metadata_Treatment": np.array(TREATMENTS)[treatment],
            "Metadata_Split": np.where(well % 4 == 0, "test", "train"),
            "Metadata_GradCAMO": rng.beta(2, 3, n_cells),
        }
    )
    columns = [f"emb_{i:04d}" for i in range(N_FEATURES)]
    return pd.concat([meta, pd.DataFrame(features, columns=columns)], axis=1)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_step(step: str, n_cells: int, umap_max_cells: int | None) -> dict:
    """One step on fresh synthetic data; returns seconds, peak MB, data MB and a note."""
    from gradcamo.aggregate import control_mask, feature_columns, well_profiles
    from gradcamo.sphering import apply_sphering, fit_control_sphering

    cells = synthetic_cells(n_cells)
    data_mb = peak_mb()
    features = feature_columns(cells)
    note = ""
    start = time.perf_counter()
    if step == "well_profiles":
        wells = well_profiles(cells)
        note = f"{len(wells)} wells"
    elif step == "sphering":
        sphering = fit_control_sphering(cells, "DMSO", 1e-6, "ZCA", "cells")
        sphered = apply_sphering(cells, sphering)
        note = f"fit on {sphering.n_fit} control cells, applied to {len(sphered)}"
    elif step == "pycytominer":
        from pycytominer.operations import Spherize

        controls = cells.loc[control_mask(cells, "DMSO"), features]
        if len(controls) > 15000:
            return {
                "seconds": None,
                "peak_mb": None,
                "data_mb": data_mb,
                "note": f"skipped: n x n U of {len(controls)} controls = "
                f"{len(controls) ** 2 * 8 / 1e9:.0f} GB",
            }
        spherize = Spherize(epsilon=1e-6, center=True, method="ZCA", return_numpy=True)
        spherize.fit(controls)
        sphered = spherize.transform(cells[features])
        note = f"fit on {len(controls)} control cells, applied to {len(sphered)}"
    elif step == "umap":
        from gradcamo.figures import subsample, umap_embedding

        keep = subsample(n_cells, umap_max_cells, seed=0)
        embedding = umap_embedding(cells[features].to_numpy()[keep], 15, 0.1, 0, 50)
        note = f"{len(embedding)} cells (PCA 50 -> UMAP)"
    elif step == "map":
        from gradcamo.evaluation import phenotypic_activity, sample_per_treatment

        sample = sample_per_treatment(cells, 500, seed=0)
        result = phenotypic_activity(sample, sample[features].to_numpy(), "DMSO", null_size=10000)
        note = f"{len(sample)} cells, mAP " + ", ".join(
            f"{t}={m:.2f}" for t, m in zip(result.treatment, result.mean_average_precision)
        )
    else:
        raise ValueError(step)
    return {"seconds": time.perf_counter() - start, "peak_mb": peak_mb(), "data_mb": data_mb, "note": note}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--umap-max-cells", type=int, default=20000)
    parser.add_argument("--full-umap", action="store_true", help="UMAP of every cell")
    parser.add_argument(
        "--steps", nargs="+", default=["well_profiles", "sphering", "pycytominer", "umap", "map"]
    )
    parser.add_argument("--worker", nargs=2, metavar=("STEP", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    umap_cap = None if args.full_umap else args.umap_max_cells
    if args.worker:
        print(json.dumps(run_step(args.worker[0], int(args.worker[1]), umap_cap)))
        return
    env = dict(os.environ)
    for var, sub in (("NUMBA_CACHE_DIR", "numba"), ("MPLCONFIGDIR", "matplotlib")):
        env.setdefault(var, f"/tmp/gradcamo-bench-cache/{sub}")
    print(f"{'cells':>7} {'step':<14} {'seconds':>8} {'pyc/ours':>8} {'peak MB':>8} {'data MB':>8}  note")
    for n in args.sizes:
        sphering_seconds = None
        for step in args.steps:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                step,
                str(n),
                "--umap-max-cells",
                str(args.umap_max_cells),
            ]
            if args.full_umap:
                cmd.append("--full-umap")
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                print(f"{n:>7} {step:<14} failed: {proc.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            ratio = ""
            if step == "sphering":
                sphering_seconds = r["seconds"]
            if step == "pycytominer" and r["seconds"] and sphering_seconds:
                ratio = f"{r['seconds'] / sphering_seconds:7.1f}x"
            secs = f"{r['seconds']:8.1f}" if r["seconds"] is not None else f"{'-':>8}"
            peak = f"{r['peak_mb']:8.0f}" if r["peak_mb"] is not None else f"{'-':>8}"
            print(f"{n:>7} {step:<14} {secs} {ratio:>8} {peak} {r['data_mb']:8.0f}  {r['note']}", flush=True)


if __name__ == "__main__":
    main()
