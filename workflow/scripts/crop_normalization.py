"""Per-channel robust intensity percentiles of one plate (results/crops/{plate}/normalization.json)."""

import json

from gradcamo.crops import PLATE_SAMPLE_VOXELS, plate_bounds
from gradcamo.io import atomic_path
from gradcamo.logs import log_to

log = log_to(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
sm = snakemake  # noqa: F821
channels = list(sm.params.channels)
lower, upper = sm.params.lower_percentile, sm.params.upper_percentile
bounds = plate_bounds(list(sm.input.images), len(channels), lower, upper)
result = {
    "plate": sm.wildcards.plate,
    "channels": channels,
    "lower_percentile": lower,
    "upper_percentile": upper,
    "sampled_voxels_per_channel": PLATE_SAMPLE_VOXELS,
    "n_sites": len(sm.input.images),
    "bounds": bounds.tolist(),
}
with atomic_path(sm.output[0]) as tmp:
    tmp.write_text(json.dumps(result, indent=2))
for name, (low, high) in zip(channels, bounds):
    log.info("%s: %.1f .. %.1f", name, low, high)
