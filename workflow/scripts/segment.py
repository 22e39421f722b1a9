"""Segment every site of one well with Cellpose 3: results/segment/{plate}/{well}/site{site}.tif."""

import time
from pathlib import Path

import torch
from gradcamo.devices import choose_device, device_name
from gradcamo.io import atomic_path, write_labels
from gradcamo.logs import log_to
from gradcamo.readers import ImageSettings, Site, open_reader
from gradcamo.segmentation import load_model, resolve_model, segment_zstack

log = log_to(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
sm = snakemake  # noqa: F821
torch.set_num_threads(sm.threads)
settings = sm.params.settings
images = ImageSettings.from_dict(sm.params.images)
channels = list(images.channels)
nucleus = settings["nucleus_channel"]
channel_indices = (
    channels.index(settings["cytoplasm_channel"]),
    channels.index(nucleus) if nucleus else None,
)
# Fail at once (before reading any image) when the weights are not available offline.
source = resolve_model(sm.input.model if settings["model"] == "trained" else settings["model"])
device = choose_device()
log.info("segmenting on %s", device_name(device, sm.threads))
model = load_model(source, device)
voxel_z, voxel_y, _ = images.voxel_size
reader = open_reader(images, sm.input.index)

with atomic_path(sm.output[0]) as tmp:
    tmp.mkdir()
    for record in sm.params.sites:
        site = Site.from_record(record)
        tic = time.perf_counter()
        zstack = reader.read(site)
        labels = segment_zstack(
            model,
            zstack,
            channel_indices,
            mode=settings["mode"],
            diameter=settings["diameter"],
            flow_threshold=settings["flow_threshold"],
            cellprob_threshold=settings["cellprob_threshold"],
            stitch_threshold=settings["stitch_threshold"],
            min_size=settings["min_size"],
            anisotropy=voxel_z / voxel_y,
        )
        write_labels(tmp / Path(record["labels"]).relative_to(sm.output[0]), labels)
        log.info(
            "site %s: %d cells, ZCYX %s, %.1f s",
            site.site,
            labels.max(),
            zstack.shape,
            time.perf_counter() - tic,
        )
