"""Profile one well: embeddings and predictions for every cell, cropped from the site images as
they are read; attribution maps, Grad-CAMO and the audit for every cell or the well's sample."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from gradcamo.columns import UNDEFINED_COLUMN, UNDEFINED_REASONS
from gradcamo.crops import (
    crop_batches,
    normalization_record,
    prefetched,
    sample_mask,
    well_cell_table,
    without_flagged_sites,
)
from gradcamo.devices import choose_device, device_name
from gradcamo.errors import InputError
from gradcamo.gradcam import map_shapes
from gradcamo.io import atomic_path
from gradcamo.logs import log_to
from gradcamo.model import load_checkpoint
from gradcamo.profiles import (
    ATTENTION_COLUMNS,
    SHUFFLED_COLUMN,
    UNIFORM_COLUMN,
    build_profiler,
    check_crops_match,
    profile_batches,
    profile_table_of,
    target_class_index,
    well_split,
    write_profile_table,
)
from gradcamo.readers import ImageSettings, Site, labelled_sites, open_reader

log = log_to(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
sm = snakemake  # noqa: F821
plate, well = sm.wildcards.plate, sm.wildcards.well
torch.set_num_threads(sm.threads)
device = choose_device()
if device.type == "cuda":
    # PyTorch lets cuDNN convolutions run in TF32 (10-bit mantissa) by default. Grad-CAM maps
    # are differences of small gradients: on an H100 (bench/bench_gradcam.py, _blocks.2) TF32
    # moved min-max normalised maps by up to 0.61 from MONAI's; in float32, by 8.3e-4.
    torch.backends.cudnn.allow_tf32 = False
log.info("profiling %s/%s on %s", plate, well, device_name(device, sm.threads))

crop_settings = dict(sm.params.crops)
images = ImageSettings.from_dict(sm.params.images)
metadata = dict(sm.params.well)
drop = crop_settings["filters"]["drop_flagged_sites"]
records, flagged = without_flagged_sites(
    sm.params.sites, pd.read_parquet(sm.input.segmentation_qc), well, drop
)
if drop and len(flagged):
    log.warning(
        "crops.filters.drop_flagged_sites: site(s) %s not profiled", ", ".join(map(str, flagged.site))
    )
sites = labelled_sites(
    open_reader(images, sm.input.index),
    [Site.from_record(r) for r in records],
    [r["labels"] for r in records],
)
crop_shape = tuple(crop_settings["shape"])
# Pass 1: the well's cells (the label images only), the same table as its crop store's before
# the store keeps its training sample.
cells, counts = well_cell_table(sites, metadata, crop_shape, crop_settings["filters"])
norm = {
    k: crop_settings["normalization"][k]
    for k in ("scope", "reference", "lower_percentile", "upper_percentile")
}
reference = json.loads(Path(sm.input.bounds).read_text())
bounds = None if reference["bounds"] is None else np.asarray(reference["bounds"])
context, cell_margin = crop_settings["context"], crop_settings["cell_margin"]
fill_seed = crop_settings["fill"]["seed"]
model, meta = load_checkpoint(sm.input.model, map_location=device)
check_crops_match(
    meta,
    images.channels,
    crop_shape,
    normalization_record(norm, bounds, context, cell_margin),
    f"the crops of {plate}/{well} (config crops)",
    sm.input.model,
)
sample = crop_settings["sample"]
mapped = sample_mask(len(cells), sm.params.attribution_cells_per_well, plate, well, sample["seed"])
splits = pd.read_csv(sm.input.split, sep="\t", dtype=str)
row = well_split(splits, plate, well, source=sm.input.split)
target = target_class_index(sm.params.target_class, row["treatment"], meta["classes"])
settings = dict(sm.params.attribution)
method = settings["attribution_method"]
fill = np.load(sm.input.fill)
if len(fill) == 0 and (sm.params.audit or method == "integrated_gradients" or context == "cell"):
    raise InputError(
        f"{sm.input.fill}: the plate's neutral fill is empty (no background in its reference sites)"
    )
# Integrated gradients start from "nothing here": the fill's mean intensity per channel.
profiler = build_profiler(model, crop_shape, settings, sm.params.voxel_size, fill)
layer, smoothing = profiler.target_layer, profiler.smoothing_sigma
log.info(
    "%d cells (%d mapped: profile.attribution_cells_per_well %s), crop shape %s, %s at %s (map %s) "
    "for the %s class",
    len(cells),
    int(mapped.sum()),
    sm.params.attribution_cells_per_well,
    crop_shape,
    method
    + (f" ({settings['ig_steps']} steps from the fill's mean)" if method == "integrated_gradients" else "")
    + (
        " smoothed by a Gaussian of sigma %s voxels (Z, Y, X)" % ", ".join(f"{v:.2f}" for v in smoothing)
        if max(smoothing) > 0
        else ""
    ),
    profiler.target_layer,
    "full resolution"
    if profiler.target_layer == "input"
    else "x".join(map(str, map_shapes(model, crop_shape)[layer])),
    sm.params.target_class,
)
penalty = meta.get("config", {}).get("attention_penalty") or {}
if penalty.get("weight", 0) > 0 and penalty.get("method") == method:
    log.warning(
        "the model was trained to keep its %s map on the cell (train.attention_penalty weight %g): "
        "Grad-CAMO under the same map is partly what training optimised; read it with the audit "
        "and another profile.attribution_method",
        method,
        penalty["weight"],
    )


def run(cams_out=None):
    # Pass 2: the crops, made from each site as it is read, one batch ahead of the model.
    batches = crop_batches(
        sites,
        cells,
        crop_shape,
        sm.params.batch_size,
        normalization=norm,
        bounds=bounds,
        context_fill=fill if context == "cell" else None,
        cell_margin=cell_margin,
        seed=fill_seed,
    )
    result = profile_batches(
        profiler,
        prefetched(batches),
        cells,
        crop_shape,
        len(images.channels),
        target,
        device,
        cams_out,
        fill=fill if sm.params.audit else None,
        cell_margin=cell_margin,
        seed=fill_seed,
        mapped=mapped,
    )
    table = profile_table_of(
        result, cells, row["split"], meta["classes"], sm.params.channels, sm.params.min_evidence
    )
    write_profile_table(table, sm.output.table)
    return table


if "attributions" in sm.output.keys():
    cams_shape = (len(cells), *crop_shape)
    with atomic_path(sm.output.attributions) as tmp:
        if len(cells):
            cams = np.lib.format.open_memmap(tmp, "w+", np.float16, cams_shape)
            table = run(cams)
            cams.flush()
            del cams
        else:  # a zero-length file cannot be memory-mapped
            np.save(tmp, np.zeros(cams_shape, np.float16))
            table = run()
else:
    table = run()
if sm.params.audit and len(table):
    log.info(
        "audit: mean reliance on the cell %.3f, on its context %.3f",
        table["Metadata_CellReliance"].mean(),
        table["Metadata_ContextReliance"].mean(),
    )
reasons = table[UNDEFINED_COLUMN].value_counts()
log.info(
    "Grad-CAMO undefined for %d of %d cells: %s",
    int(reasons.sum()),
    len(table),
    "; ".join(f"{n} {UNDEFINED_REASONS[r]}" for r, n in reasons.items())
    or f"every map had evidence >= {sm.params.min_evidence}",
)
log.info(
    "wrote %d cells; Grad-CAMO > 0.5 for %.1f %% of those with a score (NaN for %d); mean attention share: "
    "cell %.3f (a uniform map: %.3f; each mask on another cell's map: %.3f), neighbours %.3f, "
    "background %.3f",
    len(table),
    100 * float((table["Metadata_GradCAMO"].dropna() > 0.5).mean())
    if table["Metadata_GradCAMO"].notna().any()
    else 0.0,
    int(table["Metadata_GradCAMO"].isna().sum()),
    *(
        table[c].mean()
        for c in ("Metadata_GradCAMO", UNIFORM_COLUMN, SHUFFLED_COLUMN, *ATTENTION_COLUMNS.values())
    ),
)
