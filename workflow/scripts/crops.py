"""One well's crop store: results/crops/{plate}/{well}/{images.npy,masks.npy,cells.parquet,store.json}."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
from gradcamo.crops import SiteFiles, write_well_store
from gradcamo.logs import log_to

log = log_to(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
sm = snakemake  # noqa: F821
settings = sm.params.settings
rows = sm.params.sites
sites = [
    SiteFiles(site=int(row["site"]), image=image, labels=row["labels"])
    for row, image in zip(rows, sm.input.images)
]
metadata = {k: rows[0][k] for k in ("plate", "well", "treatment", "concentration", "control")}
qc = pd.read_parquet(sm.input.segmentation_qc)
flagged = qc[qc.flagged & (qc.well == metadata["well"])]
for row in flagged.itertuples(index=False):
    log.warning("site %s is flagged by the segmentation QC: %s", row.site, row.reason)
if settings["filters"]["drop_flagged_sites"] and len(flagged):
    sites = [s for s in sites if s.site not in set(flagged.site)]
    log.warning("crops.filters.drop_flagged_sites: dropped site(s) %s", ", ".join(map(str, flagged.site)))
reference = json.loads(Path(sm.input.bounds).read_text())
norm = settings["normalization"]
summary = write_well_store(
    Path(sm.output.store_json).parent,
    sites,
    metadata,
    sm.params.channels,
    settings["shape"],
    normalization={k: norm[k] for k in ("scope", "reference", "lower_percentile", "upper_percentile")},
    bounds=None if reference["bounds"] is None else np.asarray(reference["bounds"]),
    filters=settings["filters"],
    context=settings["context"],
    context_fill=np.load(sm.input.fill) if settings["context"] == "cell" else None,
    cell_margin=settings["cell_margin"],
    seed=settings["fill"]["seed"],
    page_order=sm.params.page_order,
)
log.info(
    "wrote %d cells (%s), context %s (crops.shape %s)",
    summary["n_cells"],
    summary,
    settings["context"],
    settings["shape"],
)
