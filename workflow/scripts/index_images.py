"""A plate's plane index (per-plane layouts): results/images/{plate}.parquet."""

from gradcamo.io import atomic_path
from gradcamo.logs import log_to
from gradcamo.readers import ImageSettings, Site, index_sites

log = log_to(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
sm = snakemake  # noqa: F821
settings = ImageSettings.from_dict(sm.params.images)
sites = [Site.from_record(r) for r in sm.params.sites]
planes = index_sites(sites, settings)
with atomic_path(sm.output[0]) as tmp:
    planes.to_parquet(tmp, index=False)
log.info(
    "plate %s: %d sites, %d planes each, channels %s: %d images indexed",
    sm.wildcards.plate,
    len(sites),
    planes["z"].max() + 1,
    ", ".join(settings.channels),
    len(planes),
)
