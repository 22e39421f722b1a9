"""Plate-layout QC heatmaps of one plate."""

import pandas as pd
from gradcamo.io import atomic_path
from gradcamo.logs import log_to
from gradcamo.qc import plot_plate_layout

log = log_to(snakemake.log[0])
qc = pd.concat([pd.read_parquet(p) for p in snakemake.input], ignore_index=True)
with atomic_path(snakemake.output[0]) as tmp:
    plot_plate_layout(qc, snakemake.wildcards.plate, tmp)
log.info(
    "plate %s: %d wells -> %s", snakemake.wildcards.plate, qc.Metadata_Well.nunique(), snakemake.output[0]
)
