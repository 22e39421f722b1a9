"""Train a Cellpose 3 model on 2D z-planes of the annotated sites (results/segmentation/model/)."""

import torch
from gradcamo.devices import choose_device, device_name
from gradcamo.io import atomic_path, read_labels
from gradcamo.logs import log_to
from gradcamo.readers import ImageSettings, Site, open_reader
from gradcamo.segmentation import resolve_model, train_model, training_planes

log = log_to(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
sm = snakemake  # noqa: F821
torch.set_num_threads(sm.threads)
settings = sm.params.settings
images = ImageSettings.from_dict(sm.params.images)
channels = list(images.channels)
nucleus = sm.params.nucleus_channel
channel_indices = (
    channels.index(sm.params.cytoplasm_channel),
    channels.index(nucleus) if nucleus else None,
)
# Fail at once (before reading images) when a built-in starting model is not available offline.
pretrained = resolve_model(settings["pretrained_model"]) if settings["pretrained_model"] else None
device = choose_device()
log.info("training on %s", device_name(device, sm.threads))

reader = open_reader(images, sm.input.index)
planes, labels = [], []
for record, label_path in zip(sm.params.sites, sm.input.labels):
    site = Site.from_record(record)
    zstack = reader.read(site)
    truth = read_labels(label_path, shape=(zstack.shape[0], *zstack.shape[2:]))
    site_images, site_labels = training_planes(zstack, truth, channel_indices, settings["planes_per_site"])
    planes += site_images
    labels += site_labels
    log.info(
        "site %s: %d planes, %d cells in the chosen planes",
        site.name,
        len(site_images),
        sum(len(set(plane.ravel())) - 1 for plane in site_labels),
    )

with atomic_path(sm.output[0]) as tmp:
    summary = train_model(
        planes,
        labels,
        tmp,
        pretrained=pretrained,
        epochs=settings["epochs"],
        learning_rate=settings["learning_rate"],
        weight_decay=settings["weight_decay"],
        batch_size=settings["batch_size"],
        seed=settings["seed"],
        device=device,
        diam_mean=settings["diam_mean"],
    )
log.info("trained: %s", summary)
