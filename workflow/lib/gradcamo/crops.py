"""Single-cell 3D crops: the cell table, crop boxes, cell-of-interest masks, normalisation.

For every labelled cell a box of a fixed shape (Z, Y, X) is centred on the cell's centroid;
where the box leaves the image it is zero-padded. The crop keeps all channels, normalised
per channel with robust percentiles (of the site, or of the plate); its mask says which
voxels belong to the cell (1), to other cells (2) or to neither (0).

Normalisation scope "site" uses each site's own percentiles; scope "plate" uses one set per
plate, estimated by :func:`plate_bounds` from an equal, strided voxel sample of every site of
the plate (exact percentiles would need the whole plate in memory; the workflow computes them
once per plate and hands them to every well of it).

A well is written into one crop store (:mod:`gradcamo.store`) site by site in two passes --
first the cell tables from the label images (so the number of cells is known), then the
crops of each site straight into the memory-mapped store -- so peak memory is one site's
z-stack plus its crops, whatever the number of sites.

A store need not hold every cell: training reads a bounded sample per well (the DeepProfiler
practice), so a store keeps a seeded sample of ``cells_per_well`` cells (:func:`sample_order`)
and the profile stage crops every cell from the site images as it goes
(:func:`crop_batches`), the same crops to the last bit (:func:`store_precision`). A screen's
intermediate files are then bounded by wells x ``cells_per_well``, not by its cells.

Axes: z-stacks ``(Z, C, Y, X)``, labels ``(Z, Y, X)``, crops ``(N, C, Z, Y, X)``, masks
``(N, Z, Y, X)``.

One module because the crop geometry, the cell table, the sample and the well's two-pass
store writer (:func:`write_well_store`, over 100 lines) are the one path from a labelled
site to its crops, and the profile stage's :func:`crop_batches` must make the stored crops
to the last bit: split, the two would drift apart.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import zlib
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from skimage.measure import regionprops_table

from gradcamo.context import context_seeds, replace_context
from gradcamo.io import atomic_path
from gradcamo.normalization import normalize, percentile_bounds
from gradcamo.sites import SiteSource
from gradcamo.store import MASK_BACKGROUND, MASK_CELL, MASK_OTHER, CropStoreWriter

log = logging.getLogger(__name__)

CONTEXTS = ("full", "cell")
AXES = ("Z", "Y", "X")

# Columns of the per-site cell table (from the label image alone); the well's metadata
# columns (plate, well, site, treatment...) are added in front by :func:`write_well_store`.
GEOMETRY_COLUMNS = [
    "Metadata_ObjectNumber",
    *(f"Metadata_Centroid_{a}" for a in AXES),
    "Metadata_Volume",
    *(f"Metadata_BBox_{a}Min" for a in AXES),
    *(f"Metadata_BBox_{a}Max" for a in AXES),
    "Metadata_BorderContact",
    "Metadata_PaddingShare",
]
METADATA_COLUMNS = [
    "Metadata_Plate",
    "Metadata_Well",
    "Metadata_Site",
    "Metadata_Treatment",
    "Metadata_Concentration",
    "Metadata_Control",
]
CELL_COLUMNS = METADATA_COLUMNS[:3] + GEOMETRY_COLUMNS[:1] + METADATA_COLUMNS[3:] + GEOMETRY_COLUMNS[1:]

# ----------------------------------------------------------------------------- geometry


def crop_origin(centroid: Sequence[float], crop_shape: Sequence[int]) -> np.ndarray:
    """First voxel (Z, Y, X) of the box of ``crop_shape`` centred on ``centroid``.

    The centroid's voxel (rounded half up) lands at index ``size // 2`` of each axis: the
    exact centre for odd sizes, the first of the two central voxels for even sizes.
    """
    centre = np.floor(np.asarray(centroid, dtype=float) + 0.5).astype(int)
    return centre - np.asarray(crop_shape, dtype=int) // 2


def box_slices(
    origin: Sequence[int], crop_shape: Sequence[int], image_shape: Sequence[int]
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Where a box overlaps the image: ``(slices into the image, slices into the box)``.

    Hand-written (NumPy has no padded window read): the two slice tuples copy the part of
    the box inside the image; the rest of the box stays as padding. A box entirely outside
    gives empty slices.
    """
    src, dst = [], []
    for start, size, extent in zip(origin, crop_shape, image_shape):
        lo, hi = max(int(start), 0), min(int(start) + int(size), int(extent))
        hi = max(hi, lo)
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(start), hi - int(start)))
    return tuple(src), tuple(dst)


def padding_share(origin: Sequence[int], crop_shape: Sequence[int], image_shape: Sequence[int]) -> float:
    """Share (0..1) of the box's voxels that lie outside the image (zero padding)."""
    src, _ = box_slices(origin, crop_shape, image_shape)
    inside = np.prod([s.stop - s.start for s in src])
    return float(1.0 - inside / np.prod(crop_shape))


def extract_box(
    volume: np.ndarray, origin: Sequence[int], crop_shape: Sequence[int], fill: float = 0
) -> np.ndarray:
    """The box of ``crop_shape`` at ``origin`` over the last three axes of ``volume``.

    Parameters
    ----------
    volume: ``(..., Z, Y, X)``; leading axes (e.g. channels) are kept.

    Returns
    -------
    ``(..., *crop_shape)`` in ``volume``'s dtype, ``fill`` outside the image.
    """
    lead = volume.shape[:-3]
    out = np.full((*lead, *crop_shape), fill, dtype=volume.dtype)
    src, dst = box_slices(origin, crop_shape, volume.shape[-3:])
    out[(Ellipsis, *dst)] = volume[(Ellipsis, *src)]
    return out


def cell_mask(label_box: np.ndarray, object_number: int) -> np.ndarray:
    """Mask of a crop's labels: 1 the cell of interest, 2 other cells, 0 background (uint8)."""
    mask = np.full(label_box.shape, MASK_BACKGROUND, np.uint8)
    mask[label_box > 0] = MASK_OTHER
    mask[label_box == object_number] = MASK_CELL
    return mask


def cell_table(labels: np.ndarray, crop_shape: Sequence[int]) -> pd.DataFrame:
    """Geometry of every labelled cell of one site (skimage ``regionprops_table``).

    Parameters
    ----------
    labels: ``(Z, Y, X)`` integer labels, 0 = background.
    crop_shape: ``(Z, Y, X)`` of the crops, for the padding share.

    Returns
    -------
    One row per cell in label order, columns :data:`GEOMETRY_COLUMNS`: object number (the
    label), centroid (voxels), volume (voxels), bounding box (min inclusive, max exclusive),
    border contact (the cell touches the image's Y/X border) and padding share of its crop.
    """
    props = regionprops_table(labels, properties=("label", "centroid", "area", "bbox"))
    table = pd.DataFrame(
        {
            "Metadata_ObjectNumber": props["label"].astype(np.int64),
            **{f"Metadata_Centroid_{a}": props[f"centroid-{i}"] for i, a in enumerate(AXES)},
            "Metadata_Volume": props["area"].astype(np.int64),
            **{f"Metadata_BBox_{a}Min": props[f"bbox-{i}"].astype(np.int64) for i, a in enumerate(AXES)},
            **{f"Metadata_BBox_{a}Max": props[f"bbox-{i + 3}"].astype(np.int64) for i, a in enumerate(AXES)},
        }
    )
    _, ny, nx = labels.shape
    table["Metadata_BorderContact"] = (
        (table["Metadata_BBox_YMin"] == 0)
        | (table["Metadata_BBox_XMin"] == 0)
        | (table["Metadata_BBox_YMax"] == ny)
        | (table["Metadata_BBox_XMax"] == nx)
    ).astype(bool)
    centroids = table[[f"Metadata_Centroid_{a}" for a in AXES]].to_numpy()
    table["Metadata_PaddingShare"] = np.array(
        [padding_share(crop_origin(c, crop_shape), crop_shape, labels.shape) for c in centroids],
        dtype=np.float64,
    )
    return table[GEOMETRY_COLUMNS]


def filter_cells(
    table: pd.DataFrame,
    min_volume: int = 0,
    max_volume: int | None = None,
    drop_border: bool = False,
) -> tuple[pd.DataFrame, dict]:
    """Apply the QC filters to a cell table.

    Returns
    -------
    (kept rows, counts): counts has ``n_cells`` (before filtering), ``too_small``,
    ``too_large``, ``border`` (each filter's drops, a cell counted under every filter it
    fails) and ``kept``.
    """
    volume = table["Metadata_Volume"]
    too_small = volume < (min_volume or 0)
    too_large = volume > max_volume if max_volume is not None else pd.Series(False, index=table.index)
    border = (
        table["Metadata_BorderContact"].astype(bool) if drop_border else pd.Series(False, index=table.index)
    )
    keep = ~(too_small | too_large | border)
    counts = {
        "n_cells": int(len(table)),
        "too_small": int(too_small.sum()),
        "too_large": int(too_large.sum()),
        "border": int(border.sum()),
        "kept": int(keep.sum()),
    }
    return table[keep], counts


# ------------------------------------------------------------------------ crops


def crop_cells(
    zstack: np.ndarray,
    labels: np.ndarray,
    cells: pd.DataFrame,
    crop_shape: Sequence[int],
    bounds: np.ndarray,
    context_fill: np.ndarray | None = None,
    cell_margin: int = 0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Crops and masks of the listed cells of one site.

    Parameters
    ----------
    zstack: ``(Z, C, Y, X)``; labels: ``(Z, Y, X)`` of the same Z, Y, X.
    cells: rows with ``Metadata_Site``, ``Metadata_ObjectNumber`` and
        ``Metadata_Centroid_{Z,Y,X}``.
    bounds: ``(C, 2)`` normalisation bounds (:mod:`gradcamo.normalization`).
    context_fill: ``(M, C)`` neutral fill (:mod:`gradcamo.context`); when given, everything
        outside the cell of interest (widened by ``cell_margin`` voxels in Y/X) -- neighbours,
        background and padding -- is replaced by draws from it (``crops.context: cell``),
        seeded by ``(seed, site, object number)``.

    Returns
    -------
    images ``(N, C, Z, Y, X)`` float32 normalised, 0 where the box leaves the image (or
    fill); masks ``(N, Z, Y, X)`` uint8 (:func:`cell_mask`), always of the original crop.
    """
    crop_shape = tuple(int(s) for s in crop_shape)
    n, n_channels = len(cells), zstack.shape[1]
    images = np.zeros((n, n_channels, *crop_shape), np.float32)
    masks = np.zeros((n, *crop_shape), np.uint8)
    channels_first = zstack.transpose(1, 0, 2, 3)  # (C, Z, Y, X) view, no copy
    centroids = cells[[f"Metadata_Centroid_{a}" for a in AXES]].to_numpy()
    for i, (obj, centroid) in enumerate(zip(cells["Metadata_ObjectNumber"], centroids)):
        src, dst = box_slices(crop_origin(centroid, crop_shape), crop_shape, labels.shape)
        images[(i, slice(None), *dst)] = normalize(channels_first[(slice(None), *src)], bounds)
        masks[(i, *dst)] = cell_mask(labels[src], int(obj))
    if context_fill is not None:
        seeds = context_seeds(seed, cells["Metadata_Site"], cells["Metadata_ObjectNumber"])
        images = replace_context(images, masks, context_fill, cell_margin, seeds)
    return images, masks


def store_precision(images: np.ndarray) -> np.ndarray:
    """``images`` rounded to the crop store's float16 and back to float32: a cell cropped on
    the fly is then the same, to the last bit, as the cell read from a store."""
    return np.asarray(images, np.float16).astype(np.float32)


def sample_order(n_cells: int, plate: str, well: str, seed: int) -> np.ndarray:
    """A seeded order of a well's ``n_cells`` cells (a permutation of ``0..n-1``).

    The crop store keeps its first ``crops.sample.cells_per_well`` cells and the profile
    stage maps its first ``profile.attribution_cells_per_well``: the smaller sample is part of
    the larger, so every mapped cell of a store's well is in the store. Seeded by
    ``(seed, plate, well)`` (a CRC of the names, stable across runs and machines), so wells
    draw independent samples and a well's sample does not depend on the others.
    """
    key = zlib.crc32(f"{plate}/{well}".encode())
    return np.random.default_rng([int(seed), key]).permutation(int(n_cells))


def sample_mask(n_cells: int, cells_per_well: int | None, plate: str, well: str, seed: int) -> np.ndarray:
    """``(n_cells,)`` bool: the cells among the first ``cells_per_well`` of
    :func:`sample_order`; every cell when ``cells_per_well`` is None or not below ``n_cells``."""
    keep = np.ones(int(n_cells), bool)
    if cells_per_well is not None and cells_per_well < n_cells:
        keep[:] = False
        keep[sample_order(n_cells, plate, well, seed)[: int(cells_per_well)]] = True
    return keep


def site_bounds(zstack: np.ndarray, normalization: Mapping, bounds: np.ndarray | None) -> np.ndarray:
    """A site's ``(C, 2)`` normalisation bounds: its own percentiles (scope ``site``) or the
    plate's ``bounds`` (scope ``plate``)."""
    if normalization["scope"] == "site":
        lower, upper = float(normalization["lower_percentile"]), float(normalization["upper_percentile"])
        return percentile_bounds(zstack, lower, upper)
    return np.asarray(bounds, dtype=np.float64)


def crop_batches(
    sites: Sequence[SiteSource],
    cells: pd.DataFrame,
    crop_shape: Sequence[int],
    batch_size: int,
    *,
    normalization: Mapping,
    bounds: np.ndarray | None = None,
    context_fill: np.ndarray | None = None,
    cell_margin: int = 0,
    seed: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The crops of a well's ``cells``, cropped from its sites as they are read, in batches.

    ``cells``: rows of :func:`well_cell_table` (site order, then object number), the cells to
    crop; arguments as :func:`write_well_store`'s. Yields ``(images (n, C, Z, Y, X) float32
    at the store's precision, masks (n, Z, Y, X) uint8)`` of ``batch_size`` cells (the last
    batch fewer), in the order of ``cells``: the same batches :func:`gradcamo.store.CropStore`
    slices give for a store of these cells. Sites without listed cells are not read; memory
    is one site's z-stack and one batch.
    """
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    pending = 0
    for site in sites:
        here = cells[cells["Metadata_Site"] == site.site]
        if not len(here):
            continue
        zstack, labels = site.arrays()
        bounds_here = site_bounds(zstack, normalization, bounds)
        lo = 0
        while lo < len(here):
            take = min(batch_size - pending, len(here) - lo)
            block, block_masks = crop_cells(
                zstack,
                labels,
                here.iloc[lo : lo + take],
                crop_shape,
                bounds_here,
                context_fill,
                cell_margin,
                seed,
            )
            images.append(store_precision(block))
            masks.append(block_masks)
            pending, lo = pending + take, lo + take
            if pending == batch_size:
                yield np.concatenate(images), np.concatenate(masks)
                images, masks, pending = [], [], 0
        del zstack, labels
    if pending:
        yield np.concatenate(images), np.concatenate(masks)


def prefetched(items: Iterable, depth: int = 1) -> Iterator:
    """``items``, produced up to ``depth`` ahead in a background thread.

    So that reading and cropping the next batch (file reads and NumPy, which release the GIL)
    overlaps the model's pass over this one. Written here rather than with a
    ``torch.utils.data.DataLoader`` worker: a worker process would copy each batch through
    shared memory, and one thread is all the overlap needs. An exception in the thread is
    raised here, at the item where it happened.
    """
    done = object()
    slots: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False  # the consumer has gone

    def produce():
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as error:  # handed to the consumer, raised there
            put((done, error))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


# -------------------------------------------------------------------------- file level


def _metadata_frame(metadata: Mapping, site: int, n: int) -> pd.DataFrame:
    """The well-level ``Metadata_*`` columns for ``n`` cells of one site."""
    concentration = metadata.get("concentration")
    control = metadata.get("control")
    return pd.DataFrame(
        {
            "Metadata_Plate": pd.Series([str(metadata["plate"])] * n, dtype=object),
            "Metadata_Well": pd.Series([str(metadata["well"])] * n, dtype=object),
            "Metadata_Site": np.full(n, int(site), np.int64),
            "Metadata_Treatment": pd.Series([str(metadata["treatment"])] * n, dtype=object),
            "Metadata_Concentration": np.full(
                n, np.nan if concentration is None else float(concentration), np.float64
            ),
            "Metadata_Control": np.full(n, bool(control) if control is not None else False, bool),
        }
    )


def well_cell_table(
    sites: Sequence[SiteSource],
    metadata: Mapping,
    crop_shape: Sequence[int],
    filters: Mapping | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Pass 1: the filtered cell table of a well, from its label images only.

    Returns
    -------
    (table with :data:`CELL_COLUMNS`, site order then object number; filter counts summed
    over the sites).
    """
    filters = dict(filters or {})
    tables, totals = [], {}
    for site in sites:
        labels = site.labels()
        geometry, counts = filter_cells(
            cell_table(labels, crop_shape),
            min_volume=filters.get("min_volume") or 0,
            max_volume=filters.get("max_volume"),
            drop_border=bool(filters.get("drop_border", False)),
        )
        log.info("site %s: %s", site.site, counts)
        totals = {k: totals.get(k, 0) + v for k, v in counts.items()}
        meta = _metadata_frame(metadata, site.site, len(geometry))
        tables.append(pd.concat([meta, geometry.reset_index(drop=True)], axis=1))
    table = pd.concat(tables, ignore_index=True) if tables else _metadata_frame(metadata, 0, 0)
    return table.reindex(columns=CELL_COLUMNS), totals


def without_flagged_sites(
    records: Sequence[Mapping], segmentation_qc: pd.DataFrame, well: str, drop: bool
) -> tuple[list[Mapping], pd.DataFrame]:
    """A well's site records less those the segmentation QC flags, when ``drop``
    (``crops.filters.drop_flagged_sites``); returns ``(records, the well's flagged QC rows)``.
    """
    flagged = segmentation_qc[segmentation_qc["flagged"] & (segmentation_qc["well"] == well)]
    if drop and len(flagged):
        records = [r for r in records if r["site"] not in set(flagged["site"])]
    return list(records), flagged


def normalization_record(
    normalization: Mapping, bounds: np.ndarray | None, context: str, cell_margin: int
) -> dict:
    """How a well's crops were normalised, as a store records it (and a checkpoint keeps);
    ``bounds``: the plate's (scope ``plate``), or a dict filled per site (scope ``site``)."""
    return {
        "method": "percentile",
        **dict(normalization),
        "bounds": {} if normalization["scope"] == "site" else np.asarray(bounds).tolist(),
        "context": context,
        "cell_margin": int(cell_margin) if context == "cell" else None,
    }


def write_well_store(
    out_dir: str | os.PathLike,
    sites: Sequence[SiteSource],
    metadata: Mapping,
    channels: Sequence[str],
    crop_shape: Sequence[int],
    *,
    normalization: Mapping,
    bounds: np.ndarray | None = None,
    filters: Mapping | None = None,
    context: str = "full",
    context_fill: np.ndarray | None = None,
    cell_margin: int = 0,
    seed: int = 0,
    cells_per_well: int | None = None,
    sample_seed: int = 0,
) -> dict:
    """Write one well's crop store (:class:`gradcamo.store.CropStore` format) atomically.

    Parameters
    ----------
    out_dir: the store folder; replaced only when the whole store is written.
    sites: the well's sites in order (each read once per pass, one at a time).
    metadata: the well's ``plate``, ``well``, ``treatment`` (+ ``concentration``, ``control``).
    channels: channel names (C).
    crop_shape: ``(Z, Y, X)``.
    normalization: ``scope`` (``"site"``: percentiles of each site's z-stack; ``"plate"``:
        ``bounds`` given, from :func:`gradcamo.normalization.plate_reference`),
        ``lower_percentile``, ``upper_percentile`` (and whatever else describes it, e.g.
        ``reference``); recorded in the store.
    filters: ``min_volume``, ``max_volume``, ``drop_border``.
    context: ``"full"`` (the crop as imaged) or ``"cell"`` (everything outside the cell of
        interest replaced by ``context_fill``, see :func:`crop_cells`).
    cells_per_well, sample_seed: keep only the first ``cells_per_well`` cells of the well's
        :func:`sample_order` (in site and object order), None: every cell
        (``crops.sample``). The store records the sample and the well's number of cells.

    Returns
    -------
    A summary: filter counts, ``well_cells`` (after the filters), ``n_cells`` written.

    Raises
    ------
    InputError: whatever the sites' readers raise (a corrupt or missing file, a missing
        channel), a label image whose shape differs from its z-stack's; nothing is left at
        ``out_dir``.
    ValueError: arguments that contradict each other (scope "plate" without bounds, context
        "cell" without a fill).
    """
    scope = normalization["scope"]
    if scope == "plate" and bounds is None:
        raise ValueError("scope 'plate' needs the plate's bounds")
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    if context == "cell" and (context_fill is None or len(context_fill) == 0):
        raise ValueError("context 'cell' needs a non-empty fill")
    crop_shape = tuple(int(s) for s in crop_shape)
    table, counts = well_cell_table(sites, metadata, crop_shape, filters)
    log.info(
        "well %s/%s: %d cells segmented, dropped %d too small, %d too large, %d at the border; %d kept",
        metadata["plate"],
        metadata["well"],
        counts.get("n_cells", 0),
        counts.get("too_small", 0),
        counts.get("too_large", 0),
        counts.get("border", 0),
        len(table),
    )
    well_cells = len(table)
    table = table[sample_mask(well_cells, cells_per_well, metadata["plate"], metadata["well"], sample_seed)]
    if len(table) < well_cells:
        log.info(
            "crops.sample: %d of the well's %d cells kept in its store (seed %d)",
            len(table),
            well_cells,
            sample_seed,
        )
    record = normalization_record(normalization, bounds, context, cell_margin)
    sample = {"cells_per_well": cells_per_well, "seed": int(sample_seed), "well_cells": int(well_cells)}
    with atomic_path(out_dir) as tmp:
        writer = CropStoreWriter(tmp, len(table), channels, crop_shape, record, sample=sample)
        for site in sites:
            zstack, labels = site.arrays()
            for axis, size, extent in zip(AXES, crop_shape, labels.shape):
                if size > extent:
                    log.warning(
                        "%s: the crop's %s size %d exceeds the z-stack's %d: every crop is at "
                        "least %.0f %% padding along %s",
                        site.name,
                        axis,
                        size,
                        extent,
                        100 * (1 - extent / size),
                        axis,
                    )
            bounds_here = site_bounds(zstack, normalization, bounds)
            if scope == "site":
                record["bounds"][str(site.site)] = bounds_here.tolist()
            cells = table[table["Metadata_Site"] == site.site]
            images, masks = crop_cells(
                zstack,
                labels,
                cells,
                crop_shape,
                bounds_here,
                context_fill if context == "cell" else None,
                cell_margin,
                seed,
            )
            writer.write(images, masks)
            log.info("site %s: %d crops written", site.site, len(cells))
            del zstack, labels, images, masks
        writer.normalization = record
        writer.close(table)
    return {**counts, "well_cells": int(well_cells), "n_cells": int(len(table))}
