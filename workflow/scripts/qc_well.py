"""Image QC of one well: one row per (site, channel) into a Parquet table."""

import pandas as pd
from gradcamo.io import atomic_path, read_labels
from gradcamo.logs import log_to
from gradcamo.qc import site_qc
from gradcamo.readers import ImageSettings, Site, open_reader

log = log_to(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
sm = snakemake  # noqa: F821
settings = ImageSettings.from_dict(sm.params.images)
reader = open_reader(settings, sm.input.index)
tables = []
for record, labels in zip(sm.params.sites, sm.params.labels):
    site = Site.from_record(record)
    image = reader.read(site)
    if labels:  # a ground-truth label image must match its z-stack (named if it does not)
        read_labels(labels, shape=(image.shape[0], *image.shape[2:]))
    table = site_qc(image, list(settings.channels), sm.params.saturation_value)
    table.insert(0, "Metadata_Site", site.site)
    tables.append(table)
    log.info("site %s: ZCYX %s", site.site, image.shape)
qc = pd.concat(tables, ignore_index=True)
qc.insert(0, "Metadata_Well", sm.wildcards.well)
qc.insert(0, "Metadata_Plate", sm.wildcards.plate)
with atomic_path(sm.output[0]) as tmp:
    qc.to_parquet(tmp, index=False)
log.info("wrote %d rows to %s", len(qc), sm.output[0])
