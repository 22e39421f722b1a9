"""One well's crop store: results/crops/{plate}/{well}/{images.npy,masks.npy,cells.parquet,store.json}."""

import json
from pathlib import Path

import numpy as np

from gradcamo.crops import SiteFiles, write_well_store
from gradcamo.logs import log_to

log = log_to(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
sm = snakemake  # noqa: F821
settings = sm.params.settings
norm = settings["normalization"]
rows = sm.params.sites
sites = [
    SiteFiles(site=int(row["site"]), image=image, labels=str(Path(sm.input.segments) / f"site{row['site']}.tif"))
    for row, image in zip(rows, sm.input.images)
]
metadata = {k: rows[0][k] for k in ("plate", "well", "treatment", "concentration", "control")}
bounds = np.asarray(json.loads(Path(sm.input.bounds).read_text())["bounds"]) if norm["scope"] == "plate" else None
summary = write_well_store(
    Path(sm.output.store_json).parent,
    sites,
    metadata,
    sm.params.channels,
    settings["shape"],
    lower_percentile=norm["lower_percentile"],
    upper_percentile=norm["upper_percentile"],
    scope=norm["scope"],
    bounds=bounds,
    filters=settings["filters"],
)
log.info("wrote %d cells (%s)", summary["n_cells"], summary)
