"""Planted-shortcut control: markers coded by treatment planted in the context of one
treatment's crops, a copy of the model fine-tuned on them, and what the audit and Grad-CAMO
say of it on planted test cells (results/checks/planted.*)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from gradcamo.devices import choose_device
from gradcamo.errors import InputError
from gradcamo.io import atomic_path
from gradcamo.logs import log_to
from gradcamo.model import load_checkpoint
from gradcamo.planted import (
    cell_statistics,
    debris_intensity,
    fine_tune,
    in_memory_store,
    plant_markers,
    planted_verdict,
    predicted_classes,
    sample_cells,
)
from gradcamo.profiles import build_profiler, profile_store, profile_table_of, split_stores
from gradcamo.store import CropStore

log = log_to(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
sm = snakemake  # noqa: F821
torch.set_num_threads(sm.threads)
device = choose_device(sm.resources.gpu)
settings = sm.params.settings
margin = sm.params.cell_margin

model, meta = load_checkpoint(sm.input.model, map_location=device)
classes = list(meta["classes"])
planted = settings["treatment"] or next((c for c in classes if c != sm.params.control), None)
if planted not in classes:
    raise InputError(f"checks.planted.treatment {planted!r} is not one of the model's classes {classes}")
wells = pd.read_csv(sm.input.split, sep="\t", dtype=str)
fill = np.concatenate([np.load(path) for path in sm.input.fills])
voxel = np.asarray(sm.params.voxel_size, float)
radius = (max(1.0, settings["radius"] * voxel[1] / voxel[0]), settings["radius"], settings["radius"])


def cells_of(split, per_treatment, seed):
    rows = wells[wells["split"] == split]
    stores = [CropStore.open(s) for s in split_stores(rows, sm.input.store_json, sm.input.split)]
    return sample_cells(stores, list(rows["treatment"]), per_treatment, seed)


def plant(images, masks, treatments, intensity, seed):
    where = np.flatnonzero(treatments == planted)
    out = np.array(images, np.float32)
    out[where], count = plant_markers(
        images[where],
        masks[where],
        intensity,
        settings["markers"],
        radius,
        margin,
        [(seed, int(i)) for i in where],
    )
    return out, count


train_images, train_masks, _, train_treatments = cells_of("train", settings["train_cells"], settings["seed"])
intensity = debris_intensity(train_images, train_masks, settings["intensity_percentile"], margin)
log.info(
    "planting %d markers of radius %s voxels (Z, Y, X) at the background's %g th percentile %s in "
    "the context of %s crops",
    settings["markers"],
    tuple(round(r, 2) for r in radius),
    settings["intensity_percentile"],
    np.round(intensity, 3).tolist(),
    planted,
)
planted_train, count = plant(train_images, train_masks, train_treatments, intensity, settings["seed"])
labels = np.array([classes.index(t) for t in train_treatments])
log.info(
    "fine-tuning on %d training cells (%d planted, %d markers)",
    len(labels),
    int((train_treatments == planted).sum()),
    int(count.sum()),
)
tuned = fine_tune(
    model,
    planted_train,
    labels,
    settings["epochs"],
    sm.params.batch_size,
    settings["learning_rate"],
    settings["seed"],
    device,
    log.info,
)
del planted_train, train_images, train_masks

test_images, test_masks, test_cells, test_treatments = cells_of(
    "test", settings["test_cells"], settings["seed"] + 1
)
planted_test, count = plant(test_images, test_masks, test_treatments, intensity, settings["seed"] + 1)
store = in_memory_store(planted_test, test_masks, test_cells, meta["channels"])
mine = test_treatments == planted
tables = {}
for name, m in (("trained", model), ("fine_tuned", tuned)):
    profiler = build_profiler(m, store.crop_shape, sm.params.attribution, sm.params.voxel_size, fill)
    result = profile_store(
        profiler,
        store,
        "predicted",
        sm.params.batch_size,
        device,
        fill=fill,
        cell_margin=margin,
        seed=settings["seed"],
    )
    table = profile_table_of(result, store.cells, "test", classes, meta["channels"], sm.params.min_evidence)
    tables[name] = table.assign(Metadata_Model=name, Metadata_Planted=mine)
before = cell_statistics(tables["trained"][mine], sm.params.threshold)
after = cell_statistics(tables["fine_tuned"][mine], sm.params.threshold)
unplanted = predicted_classes(tuned, test_images[mine], sm.params.batch_size, device)
without = float(np.mean(np.asarray(classes)[unplanted] == planted)) if mine.any() else None
verdict = planted_verdict(before, after, without, settings["margin"])
summary = {
    "treatment": planted,
    "markers": {
        "per_crop": settings["markers"],
        "planted_test_crops": int((count > 0).sum()),
        "radius_zyx": list(radius),
        "intensity_percentile": settings["intensity_percentile"],
        "intensity": intensity.tolist(),
        "channels": list(meta["channels"]),
    },
    "fine_tune": {
        "epochs": settings["epochs"],
        "train_cells": int(len(labels)),
        "learning_rate": settings["learning_rate"],
    },
    "trained": before,
    "fine_tuned": after,
    "fine_tuned_accuracy_without_markers": without,
    "others": {name: cell_statistics(t[~mine], sm.params.threshold) for name, t in tables.items()},
    "threshold": sm.params.threshold,
    **verdict,
}
log.info("planted %s: trained %s; fine-tuned %s; verdict %s", planted, before, after, verdict)
with atomic_path(sm.output.cells) as tmp:
    pd.concat(tables.values(), ignore_index=True).drop(
        columns=[c for c in tables["trained"] if c.startswith("emb_")]
    ).to_parquet(tmp)
with atomic_path(sm.output.summary) as tmp:
    Path(tmp).write_text(json.dumps(summary, indent=2) + "\n")
