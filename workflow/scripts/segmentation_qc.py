"""Segmentation QC of one plate: cells and foreground per site, sites far off the plate flagged."""

import pandas as pd
from gradcamo.io import atomic_path, read_labels
from gradcamo.logs import log_to
from gradcamo.qc import flag_segmentations

log = log_to(snakemake.log[0])
rows = []
for site, path in zip(snakemake.params.sites, snakemake.params.labels):
    labels = read_labels(path)
    rows.append(
        {
            **site,
            "n_cells": int(len(set(labels[labels > 0].ravel().tolist()))),
            "foreground": float((labels > 0).mean()),
        }
    )
table = flag_segmentations(pd.DataFrame(rows), snakemake.params.max_z)
for row in table[table.flagged].itertuples(index=False):
    log.warning("flagged %s/%s site %s: %s", row.plate, row.well, row.site, row.reason)
with atomic_path(snakemake.output[0]) as tmp:
    table.to_parquet(tmp, index=False)
log.info("plate %s: %d sites, %d flagged", snakemake.wildcards.plate, len(table), int(table.flagged.sum()))
