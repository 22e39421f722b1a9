"""One variant of the mini dataset through the main workflow's rules, to the crops and split.

Writes the variant's project folder (config/config.yaml: the main config; config/samples.tsv:
the variant's sheet with absolute paths, the first ``sites_per_well`` sites of each well), runs
workflow/Snakefile there to every well's crop store, the plates' fills and the split, and
writes the split with each well's store and fill (the table every study job reads).
"""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml
from gradcamo.logs import log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = log_to(sm.log[0])
project = Path(sm.params.project).absolute()
sheet_path = Path(sm.input.sheet)
sheet = pd.read_csv(sheet_path, sep="\t")
for column in ("image", "labels"):
    if column in sheet:
        sheet[column] = [p if pd.isna(p) else str((sheet_path.parent / p).absolute()) for p in sheet[column]]
if sm.params.sites_per_well is not None:
    sheet = (
        sheet.sort_values(["plate", "well", "site"]).groupby(["plate", "well"]).head(sm.params.sites_per_well)
    )
(project / "config").mkdir(parents=True, exist_ok=True)
sheet.to_csv(project / "config" / "samples.tsv", sep="\t", index=False)
config = {**sm.params.main_config, "samples": "config/samples.tsv"}
(project / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

wells = sheet.drop_duplicates(["plate", "well"])
plates = sorted(set(wells.plate))
targets = (
    ["results/split/wells.tsv"]
    + [f"results/crops/{p}/{w}/store.json" for p, w in zip(wells.plate, wells.well)]
    + [f"results/crops/{p}/fill.npy" for p in plates]
)
command = [
    sys.executable, "-m", "snakemake", *targets,
    "--snakefile", sm.params.snakefile,
    "--directory", str(project),
    "--cores", str(sm.threads),
    # only this job runs in the variant's folder: a run killed by the cluster (preemption,
    # time limit) leaves a lock and incomplete files that must not stop the retry
    "--nolock", "--rerun-incomplete",
    *sm.params.deployment,
]  # fmt: skip
log.info("the main workflow on %d wells of %s: %s", len(wells), sheet_path, " ".join(command))
with open(sm.log[0], "a") as stream:
    subprocess.run(command, check=True, stdout=stream, stderr=subprocess.STDOUT)

split = pd.read_csv(project / "results/split/wells.tsv", sep="\t", dtype=str)
split["store"] = [str(project / "results/crops" / p / w) for p, w in zip(split.plate, split.well)]
split["fill"] = [str(project / "results/crops" / p / "fill.npy") for p in split.plate]
split.to_csv(sm.output[0], sep="\t", index=False)
log.info("%d wells: %s", len(split), split.split.value_counts().to_dict())
