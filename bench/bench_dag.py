"""Benchmark: parse + DAG of a dry run for a screen-sized sample sheet.

Generates a sheet of ``plates`` x 384 wells x 9 sites whose images are hard links to one
bundled mini z-stack (no disk cost), then times ``snakemake -n`` (parse, validation, DAG) in
a fresh process per plate count, with its peak memory (``/usr/bin/time``-free: the child's
``ru_maxrss``). Target: 10 plates within 60 s on 2 cores, linear in plates.

    .venv/bin/python bench/bench_dag.py                  # 1, 2, 5, 10 plates
    .venv/bin/python bench/bench_dag.py --plates 1 2
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml
from gradcamo.config import load_config

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
ROWS, COLUMNS, SITES = "ABCDEFGHIJKLMNOP", range(1, 25), range(1, 10)


def screen(folder: Path, plates: int) -> Path:
    """A project folder: config (the repo's, segmentation by a built-in model name) and a
    sheet of ``plates`` x 384 wells x 9 sites, images hard-linked to one z-stack."""
    source = REPO / "resources" / "mini" / "images" / "P1_B02_s1.tif"
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in range(1, plates + 1):
        for r, row in enumerate(ROWS):
            for c in COLUMNS:
                well = f"{row}{c:02d}"
                treatment = "DMSO" if c in (1, 24) else f"cpd{(r * 24 + c) % 40}"
                for site in SITES:
                    image = images / f"P{p}_{well}_s{site}.tif"
                    if not image.exists():
                        os.link(source, image)
                    rows.append(
                        {
                            "plate": f"P{p}",
                            "well": well,
                            "site": site,
                            "image": str(image),
                            "treatment": treatment,
                            "control": treatment == "DMSO",
                        }
                    )
    (folder / "config").mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "config" / "samples.tsv", sep="\t", index=False)
    config = load_config(REPO / ".test" / "config" / "config.yaml")
    config["samples"] = "config/samples.tsv"
    config["segmentation"]["model"] = "cyto3"  # no annotated sites needed for a dry run
    config["segmentation"]["train"]["sites"] = []
    (folder / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def dry_run(folder: Path) -> tuple[float, float, int]:
    """Seconds and peak MB of ``snakemake -n`` in a fresh process; the number of jobs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run(
        [SNAKEMAKE, "-n", "-s", str(REPO / "workflow" / "Snakefile"), "-d", str(folder), "--quiet", "rules"],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    peak = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024
    jobs = sum(
        int(line.split()[-1])
        for line in proc.stdout.split("Job stats:")[-1].splitlines()
        if line.split() and line.split()[0] == "total"
    )
    return seconds, peak, jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plates", type=int, nargs="*", default=[1, 2, 5, 10])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gradcamo-dag-") as tmp:
        print(f"{'plates':>6} {'sites':>7} {'jobs':>7} {'seconds':>8} {'s/plate':>8} {'peak MB':>8}")
        for plates in args.plates:
            folder = screen(Path(tmp) / f"p{plates}", plates)
            seconds, peak, jobs = dry_run(folder)
            print(
                f"{plates:>6} {plates * 384 * 9:>7} {jobs:>7} {seconds:>8.1f} {seconds / plates:>8.1f} "
                f"{peak:>8.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
