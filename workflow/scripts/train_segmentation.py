"""Train a Cellpose 3 model on 2D z-planes of the annotated sites (results/segmentation/model/)."""

import torch
from gradcamo.devices import choose_device, device_name
from gradcamo.io import atomic_path, read_labels, read_zstack
from gradcamo.logs import log_to
from gradcamo.segmentation import resolve_model, train_model, training_planes

log = log_to(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
sm = snakemake  # noqa: F821
torch.set_num_threads(sm.threads)
settings = sm.params.settings
channels = list(sm.params.channels)
nucleus = sm.params.nucleus_channel
channel_indices = (
    channels.index(sm.params.cytoplasm_channel),
    channels.index(nucleus) if nucleus else None,
)
# Fail at once (before reading images) when a built-in starting model is not available offline.
pretrained = resolve_model(settings["pretrained_model"]) if settings["pretrained_model"] else None
device = choose_device()
log.info("training on %s", device_name(device, sm.threads))

images, labels = [], []
for name, image_path, label_path in zip(sm.params.sites, sm.input.images, sm.input.labels):
    zstack = read_zstack(image_path, len(channels), sm.params.page_order)
    truth = read_labels(label_path, shape=(zstack.shape[0], *zstack.shape[2:]))
    site_images, site_labels = training_planes(zstack, truth, channel_indices, settings["planes_per_site"])
    images += site_images
    labels += site_labels
    log.info(
        "site %s: %d planes, %d cells in the chosen planes",
        name,
        len(site_images),
        sum(len(set(plane.ravel())) - 1 for plane in site_labels),
    )

with atomic_path(sm.output[0]) as tmp:
    summary = train_model(
        images,
        labels,
        tmp,
        pretrained=pretrained,
        epochs=settings["epochs"],
        learning_rate=settings["learning_rate"],
        weight_decay=settings["weight_decay"],
        batch_size=settings["batch_size"],
        seed=settings["seed"],
        device=device,
    )
log.info("trained: %s", summary)
