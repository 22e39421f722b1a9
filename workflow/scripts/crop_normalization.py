"""A plate's reference: results/crops/{plate}/normalization.json (bounds) and fill.npy."""

import json

import numpy as np
from gradcamo.io import atomic_path
from gradcamo.logs import log_to
from gradcamo.normalization import plate_reference
from gradcamo.readers import ImageSettings, Site, labelled_sites, open_reader

log = log_to(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
sm = snakemake  # noqa: F821
images = ImageSettings.from_dict(sm.params.images)
channels = list(images.channels)
norm, fill_settings = sm.params.normalization, sm.params.fill
records = sm.params.sites
sites = [Site.from_record(r) for r in records]
log.info(
    "plate %s: reference (%s) = %d sites: %s",
    sm.wildcards.plate,
    norm["reference"],
    len(sites),
    ", ".join(f"{s.well}/{s.site}" for s in sites),
)
bounds, fill = plate_reference(
    labelled_sites(open_reader(images, sm.input.index), sites, [r["labels"] for r in records]),
    norm["lower_percentile"],
    norm["upper_percentile"],
    norm["scope"],
    norm["sample_voxels"],
    fill_settings["voxels"],
    fill_settings["seed"],
)
result = {
    "plate": sm.wildcards.plate,
    "channels": channels,
    **norm,
    "reference_sites": [f"{s.plate}/{s.well}/{s.site}" for s in sites],
    "n_sites": len(sites),
    "bounds": None if bounds is None else bounds.tolist(),
}
with atomic_path(sm.output.bounds) as tmp:
    tmp.write_text(json.dumps(result, indent=2))
with atomic_path(sm.output.fill) as tmp:
    np.save(tmp, fill)
if bounds is not None:
    for name, (low, high) in zip(channels, bounds):
        log.info("%s: %.1f .. %.1f", name, low, high)
log.info(
    "fill: %d background voxels; mean per channel %s",
    len(fill),
    np.round(fill.mean(0), 3).tolist() if len(fill) else [],
)
