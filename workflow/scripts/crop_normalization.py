"""A plate's reference: results/crops/{plate}/normalization.json (bounds) and fill.npy."""

import json
from pathlib import Path

import numpy as np
from gradcamo.io import atomic_path
from gradcamo.logs import log_to
from gradcamo.normalization import plate_reference

log = log_to(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
sm = snakemake  # noqa: F821
channels = list(sm.params.channels)
norm, fill_settings = sm.params.normalization, sm.params.fill
sites = [tuple(pair) for pair in sm.params.sites]
log.info(
    "plate %s: reference (%s) = %d sites: %s",
    sm.wildcards.plate,
    norm["reference"],
    len(sites),
    ", ".join(Path(image).name for image, _ in sites),
)
bounds, fill = plate_reference(
    sites,
    len(channels),
    norm["lower_percentile"],
    norm["upper_percentile"],
    norm["scope"],
    norm["sample_voxels"],
    fill_settings["voxels"],
    fill_settings["seed"],
    sm.params.page_order,
)
result = {
    "plate": sm.wildcards.plate,
    "channels": channels,
    **norm,
    "reference_sites": [image for image, _ in sites],
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
