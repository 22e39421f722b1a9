"""One well's crop store: results/crops/{plate}/{well}/{images.npy,masks.npy,cells.parquet,store.json},
its cells the well's training sample (crops.sample)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
from gradcamo.crops import without_flagged_sites, write_well_store
from gradcamo.logs import log_to
from gradcamo.readers import ImageSettings, Site, labelled_sites, open_reader

log = log_to(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
sm = snakemake  # noqa: F821
settings = sm.params.settings
images = ImageSettings.from_dict(sm.params.images)
records = sm.params.sites
metadata = dict(sm.params.well)
drop = settings["filters"]["drop_flagged_sites"]
records, flagged = without_flagged_sites(
    records, pd.read_parquet(sm.input.segmentation_qc), metadata["well"], drop
)
for row in flagged.itertuples(index=False):
    log.warning("site %s is flagged by the segmentation QC: %s", row.site, row.reason)
if drop and len(flagged):
    log.warning("crops.filters.drop_flagged_sites: dropped site(s) %s", ", ".join(map(str, flagged.site)))
sites = labelled_sites(
    open_reader(images, sm.input.index),
    [Site.from_record(r) for r in records],
    [r["labels"] for r in records],
)
reference = json.loads(Path(sm.input.bounds).read_text())
norm = settings["normalization"]
summary = write_well_store(
    Path(sm.output.store_json).parent,
    sites,
    metadata,
    list(images.channels),
    settings["shape"],
    normalization={k: norm[k] for k in ("scope", "reference", "lower_percentile", "upper_percentile")},
    bounds=None if reference["bounds"] is None else np.asarray(reference["bounds"]),
    filters=settings["filters"],
    context=settings["context"],
    context_fill=np.load(sm.input.fill) if settings["context"] == "cell" else None,
    cell_margin=settings["cell_margin"],
    seed=settings["fill"]["seed"],
    cells_per_well=settings["sample"]["cells_per_well"],
    sample_seed=settings["sample"]["seed"],
)
log.info(
    "wrote %d of the well's %d cells (%s), context %s (crops.shape %s)",
    summary["n_cells"],
    summary["well_cells"],
    summary,
    settings["context"],
    settings["shape"],
)
