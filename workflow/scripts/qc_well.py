"""Image QC of one well: one row per (site, channel) into a Parquet table."""

import pandas as pd
from gradcamo.io import atomic_path, read_labels, read_zstack
from gradcamo.logs import log_to
from gradcamo.qc import site_qc

log = log_to(snakemake.log[0])
channels = snakemake.params.channels
tables = []
for site, path, labels in zip(snakemake.params.sites, snakemake.input.images, snakemake.params.labels):
    image = read_zstack(path, len(channels), snakemake.params.page_order)
    if labels:  # a ground-truth label image must match its z-stack (named if it does not)
        read_labels(labels, shape=(image.shape[0], *image.shape[2:]))
    table = site_qc(image, channels, snakemake.params.saturation_value)
    table.insert(0, "Metadata_Site", site)
    tables.append(table)
    log.info("site %s: %s, ZCYX %s", site, path, image.shape)
qc = pd.concat(tables, ignore_index=True)
qc.insert(0, "Metadata_Well", snakemake.wildcards.well)
qc.insert(0, "Metadata_Plate", snakemake.wildcards.plate)
with atomic_path(snakemake.output[0]) as tmp:
    qc.to_parquet(tmp, index=False)
log.info("wrote %d rows to %s", len(qc), snakemake.output[0])
