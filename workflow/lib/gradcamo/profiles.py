"""Single-cell profiles of a well: run the Grad-CAM profiler over its cells, build the table.

A profile table has one row per cell, in the well's cell-table order (site, then object)::

    Metadata_*             the crop store's cell table, unchanged
    Metadata_Split         the well's split (train / val / test)
    Metadata_Predicted     predicted treatment (class name)
    Metadata_Probability   softmax probability of the predicted class (float32)
    Metadata_GradCAMO      Grad-CAMO score of the cell (float32; NaN for an all-zero map, or
                           where the map has too little evidence to share out)
    Metadata_AttributionEvidence  p(crop) - p(baseline crop) of the explained class: the
                           evidence the map shares out (float32; NaN without a baseline)
    Metadata_GradCAMO_Undefined   why Grad-CAMO is NaN (``not_sampled``, ``no_attention``,
                           ``baseline_is_class``, ``low_evidence``;
                           :data:`gradcamo.columns.UNDEFINED_REASONS`), null where it is defined
    Metadata_AttributionSampled   whether the cell is in its well's attribution sample
                           (``profile.attribution_cells_per_well``; bool): only those carry
                           Grad-CAMO, the attention shares, their baselines and the audit
    Metadata_Attribution_NeighbourShare   share of the map on other cells in the crop (float32)
    Metadata_Attribution_BackgroundShare  share of the map outside every cell (float32); with
                           Grad-CAMO they sum to 1: where the model looks instead of the cell
    Metadata_GradCAMO_Uniform  Grad-CAMO a uniform map would get: the cell's share of the
                           crop's voxels (float32), the baseline to read Grad-CAMO against
    Metadata_GradCAMO_Shuffled  Grad-CAMO of the cell's mask on the map of the next cell of
                           the well (the last cell: the first's; float32, NaN for a well of one
                           cell): every crop is centred on its cell, so a map that only looks at
                           the crop's centre scores this much without knowing the cell
    Metadata_CellReliance     the audit (:mod:`gradcamo.audit`): drop of the target
                           class's probability when the cell is replaced by the neutral fill
    Metadata_ContextReliance  the same drop when the cell's context is replaced
    Metadata_PredictedFromCell     class predicted from the cell alone (context replaced)
    Metadata_PredictedFromContext  class predicted from the context alone (cell replaced)
    Metadata_BackgroundMean_<channel>  mean background intensity of the crop, per channel
                           (away from every cell): the aggregate stage's leak check
    emb_0000 ... emb_D-1   pooled penultimate embedding (float32 features)

The audit's columns are NaN (predictions empty) when ``profile.audit`` is off.

Columns follow the image-based profiling convention (pycytominer, CytoTable): every column
not starting with ``Metadata_`` is a feature. A well without cells gives the same columns
and dtypes with zero rows.

One module because every function builds, checks or writes this one table, filled in one
pass over a well's cells (:func:`profile_batches`, about 170 lines); its column list above
is the contract the aggregate stage reads.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from gradcamo.attribution_methods import INPUT_METHODS, smoothing_sigmas
from gradcamo.audit import audit_seeds, background_statistics, counterfactual_crops, target_probabilities
from gradcamo.columns import (
    ATTENTION_COLUMNS,
    AUDIT_PREDICTION_COLUMNS,
    AUDIT_RELIANCE_COLUMNS,
    EVIDENCE_COLUMN,
    SAMPLED_COLUMN,
    SHUFFLED_COLUMN,
    UNDEFINED_COLUMN,
    UNIFORM_COLUMN,
    background_column,
)
from gradcamo.errors import InputError
from gradcamo.gradcam import (
    GradCamProfiler,
    attention_shares,
    gradcamo_score,
    layer_for_resolution,
    uniform_gradcamo,
    upsample_cam,
)
from gradcamo.io import atomic_path
from gradcamo.model import embedding_dim
from gradcamo.store import CropStore

log = logging.getLogger(__name__)

FEATURE_PREFIX = "emb_"
SPLIT_COLUMNS = ("plate", "well", "treatment", "split")


def feature_columns(dim: int) -> list[str]:
    """Names of the ``dim`` embedding feature columns: ``emb_0000``, ``emb_0001``, ..."""
    return [f"{FEATURE_PREFIX}{i:04d}" for i in range(dim)]


def profile_table(
    cells: pd.DataFrame,
    split: str,
    embedding: np.ndarray,
    probabilities: np.ndarray,
    scores: np.ndarray,
    classes: Sequence[str],
    attention: dict[str, np.ndarray] | None = None,
    uniform: np.ndarray | None = None,
    audit: dict[str, np.ndarray] | None = None,
    background: np.ndarray | None = None,
    channels: Sequence[str] = (),
    shuffled: np.ndarray | None = None,
    evidence: np.ndarray | None = None,
    undefined: Sequence[str | None] | None = None,
    mapped: np.ndarray | None = None,
) -> pd.DataFrame:
    """Assemble a well's profile table (see the module docstring for its columns).

    Parameters
    ----------
    cells: the crop store's cell table, N rows; its ``Metadata_*`` columns are kept.
    split: the well's split name.
    embedding: ``(N, D)`` pooled embeddings.
    probabilities: ``(N, K)`` class probabilities (softmax of the logits).
    scores: ``(N,)`` Grad-CAMO scores.
    classes: the K class names, index = class id.
    attention: ``neighbours`` and ``background`` shares, each ``(N,)``
        (:func:`gradcamo.gradcam.attention_shares`); None: NaN.
    uniform: ``(N,)`` Grad-CAMO of a uniform map (the cell's voxel share); None: NaN.
    audit: ``cell``, ``context`` (reliances, ``(N,)``) and ``from_cell``, ``from_context``
        (predicted class ids, ``(N,)``), from :func:`profile_store`; None: NaN / empty.
    background: ``(N, C)`` background means, one column per name in ``channels``.
    shuffled: ``(N,)`` Grad-CAMO of each cell's mask on another cell's map; None: NaN.
    evidence: ``(N,)`` the evidence each map shares out; None: NaN.
    undefined: ``(N,)`` why each score is NaN, None where defined (:func:`gate_by_evidence`).
    mapped: ``(N,)`` bool, the cells in the attribution sample; None: every cell.
    """
    n = len(cells)
    embedding = np.asarray(embedding, dtype=np.float32)
    probabilities = np.asarray(probabilities, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    if embedding.ndim != 2 or probabilities.shape != (n, len(classes)) or scores.shape != (n,):
        raise ValueError(
            f"{n} cells and {len(classes)} classes, but embedding {embedding.shape}, "
            f"probabilities {probabilities.shape}, scores {scores.shape}"
        )
    if len(embedding) != n:
        raise ValueError(f"{n} cells but {len(embedding)} embeddings")
    predicted = probabilities.argmax(1)
    metadata = cells[[c for c in cells.columns if c.startswith("Metadata_")]]
    ours = pd.DataFrame(
        {
            "Metadata_Split": pd.Series([split] * n, dtype=object),
            "Metadata_Predicted": pd.Series(np.asarray(classes, object)[predicted], dtype=object),
            "Metadata_Probability": probabilities[np.arange(n), predicted],
            "Metadata_GradCAMO": scores,
            EVIDENCE_COLUMN: np.asarray(
                np.full(n, np.nan) if evidence is None else evidence, dtype=np.float32
            ),
            UNDEFINED_COLUMN: pd.Series([None] * n if undefined is None else list(undefined), dtype=object),
            SAMPLED_COLUMN: np.ones(n, bool) if mapped is None else np.asarray(mapped, bool),
            **{
                column: np.asarray((attention or {}).get(name, np.full(n, np.nan)), dtype=np.float32)
                for name, column in ATTENTION_COLUMNS.items()
            },
            **{
                column: np.asarray(np.full(n, np.nan) if values is None else values, dtype=np.float32)
                for column, values in ((UNIFORM_COLUMN, uniform), (SHUFFLED_COLUMN, shuffled))
            },
            **{
                column: np.asarray((audit or {}).get(name, np.full(n, np.nan)), dtype=np.float32)
                for name, column in AUDIT_RELIANCE_COLUMNS.items()
            },
            **{
                column: pd.Series(
                    class_names(audit[name], classes) if audit else [None] * n,
                    dtype=object,
                )
                for name, column in AUDIT_PREDICTION_COLUMNS.items()
            },
            **{
                background_column(name): np.asarray(
                    np.full(n, np.nan) if background is None else background[:, c],
                    dtype=np.float32,
                )
                for c, name in enumerate(channels)
            },
        }
    )
    features = pd.DataFrame(embedding, columns=feature_columns(embedding.shape[1]))
    metadata = metadata.drop(columns=ours.columns, errors="ignore").reset_index(drop=True)
    return pd.concat([metadata, ours, features], axis=1)


def class_names(indices: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """``(N,)`` object array of the class names of ``indices``; None where an index is -1."""
    indices = np.asarray(indices, np.int64)
    names = np.asarray([*classes, None], object)
    return names[np.where(indices < 0, len(classes), indices)]


def gate_by_evidence(
    scores: np.ndarray,
    evidence: np.ndarray | None,
    explained: np.ndarray | None,
    baseline_class: np.ndarray | None,
    min_evidence: float,
    mapped: np.ndarray | None = None,
) -> tuple[np.ndarray, list[str | None]]:
    """Grad-CAMO where the map had evidence to share out, NaN elsewhere, and why.

    Parameters
    ----------
    scores: ``(N,)`` raw Grad-CAMO (NaN for an all-zero map).
    evidence: ``(N,)`` :func:`gradcamo.gradcam.attribution_evidence`; None: no gate.
    explained, baseline_class: ``(N,)`` the class each map explains and the class the
        baseline crop is predicted as.
    min_evidence: the least evidence at which a score is kept (``profile.min_evidence``).
    mapped: ``(N,)`` bool, the cells in the attribution sample; the others are
        ``not_sampled``. None: every cell.

    Returns ``(scores, reasons)``: a float64 copy with NaN where undefined, and per cell
    ``None`` or one key of :data:`gradcamo.columns.UNDEFINED_REASONS`.
    """
    scores = np.array(scores, dtype=np.float64)
    reasons: list[str | None] = [None] * len(scores)
    weak = np.zeros(len(scores), bool) if evidence is None else ~(np.asarray(evidence) >= min_evidence)
    unmapped = np.zeros(len(scores), bool) if mapped is None else ~np.asarray(mapped, bool)
    for i in range(len(scores)):
        if unmapped[i]:
            reasons[i] = "not_sampled"
            scores[i] = np.nan
        elif not np.isfinite(scores[i]):
            reasons[i] = "no_attention"
        elif weak[i]:
            same = baseline_class is not None and explained is not None and baseline_class[i] == explained[i]
            reasons[i] = "baseline_is_class" if same else "low_evidence"
            scores[i] = np.nan
    return scores, reasons


def profile_table_of(
    result: dict,
    cells: pd.DataFrame,
    split: str,
    classes: Sequence[str],
    channels: Sequence[str],
    min_evidence: float = float("-inf"),
) -> pd.DataFrame:
    """:func:`profile_table` of what :func:`profile_store` returned for a well, Grad-CAMO
    gated at ``min_evidence`` (:func:`gate_by_evidence`)."""
    scores, reasons = gate_by_evidence(
        result["scores"],
        result.get("evidence"),
        result.get("explained"),
        result.get("baseline_class"),
        min_evidence,
        result.get("mapped"),
    )
    return profile_table(
        cells,
        split,
        result["embedding"],
        result["probabilities"],
        scores,
        classes,
        result["attention"],
        result["uniform"],
        result.get("audit"),
        result["background"],
        channels,
        result.get("shuffled"),
        result.get("evidence"),
        reasons,
        result.get("mapped"),
    )


def empty_profile_table(
    cells: pd.DataFrame,
    split: str,
    embedding_dim: int,
    classes: Sequence[str],
    channels: Sequence[str] = (),
) -> pd.DataFrame:
    """The profile table of a well without cells: full schema, zero rows."""
    return profile_table(
        cells.iloc[:0],
        split,
        np.zeros((0, embedding_dim), np.float32),
        np.zeros((0, len(classes)), np.float32),
        np.zeros(0, np.float32),
        classes,
        {name: np.zeros(0, np.float32) for name in ATTENTION_COLUMNS},
        np.zeros(0, np.float32),
        {
            **{name: np.zeros(0, np.float32) for name in AUDIT_RELIANCE_COLUMNS},
            **{name: np.zeros(0, np.int64) for name in AUDIT_PREDICTION_COLUMNS},
        },
        np.zeros((0, len(channels)), np.float32),
        channels,
        np.zeros(0, np.float32),
        np.zeros(0, np.float32),
        [],
    )


def write_profile_table(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a profile table to Parquet atomically (no partial file on failure).

    Object columns without values (an empty well) are written as strings rather than
    Arrow's ``null`` type, so every well's file has the same Parquet schema.
    """
    schema = pa.Schema.from_pandas(table, preserve_index=False)
    for i, field in enumerate(schema):
        if pa.types.is_null(field.type):
            schema = schema.set(i, field.with_type(pa.string()))
    arrow = pa.Table.from_pandas(table, schema=schema, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp)


def well_split(splits: pd.DataFrame, plate: str, well: str, source: str = "split table") -> pd.Series:
    """The row (plate, well, treatment, split) of one well in the split table."""
    missing = [c for c in SPLIT_COLUMNS if c not in splits.columns]
    if missing:
        raise InputError(f"{source}: lacks column(s) {', '.join(missing)}")
    here = (splits["plate"].astype(str) == str(plate)) & (splits["well"].astype(str) == str(well))
    rows = splits[here]
    if len(rows) != 1:
        raise InputError(f"{source}: {len(rows)} rows for plate {plate!r}, well {well!r}; expected 1")
    return rows.iloc[0]


def split_stores(wells: pd.DataFrame, store_files: Sequence[str], source: str = "split table") -> list[Path]:
    """The crop store folder of each row (plate, well) of ``wells``, from the paths of the
    stores' files (``.../{plate}/{well}/store.json``); an :class:`InputError` names a well
    without one."""
    stores = {(Path(p).parent.parent.name, Path(p).parent.name): Path(p).parent for p in store_files}
    missing = [f"{p}/{w}" for p, w in zip(wells["plate"], wells["well"]) if (p, w) not in stores]
    if missing:
        raise InputError(f"{source}: no crop store for well(s) {', '.join(missing)}")
    return [stores[(p, w)] for p, w in zip(wells["plate"], wells["well"])]


def check_store_matches(meta: dict[str, Any], store: CropStore, checkpoint: str | os.PathLike) -> None:
    """:func:`check_crops_match` for a crop store."""
    check_crops_match(
        meta, store.channels, store.crop_shape, store.normalization, f"crop store {store.path}", checkpoint
    )


def check_crops_match(
    meta: dict[str, Any],
    channels: Sequence[str],
    crop_shape: Sequence[int],
    normalization: dict | None,
    source: str,
    checkpoint: str | os.PathLike,
) -> None:
    """Raise :class:`InputError` if a checkpoint's channels or crop shape differ from those of
    the crops ``source`` (named in the message) gives.

    A different normalisation method (scope, reference, percentiles, context) is only logged
    as a warning (same channels and shape still run); the bounds themselves differ from plate
    to plate (and from site to site) by design and are not compared.
    """
    trained, shape = list(meta["channels"]), tuple(int(s) for s in meta["crop_shape"])
    if trained != list(channels) or shape != tuple(crop_shape):
        raise InputError(
            f"checkpoint {checkpoint} was trained on channels {trained} and crop shape "
            f"{shape} (Z, Y, X), but {source} has channels {list(channels)} "
            f"and crop shape {tuple(crop_shape)}"
        )

    def method(record):
        return {k: v for k, v in (record or {}).items() if k != "bounds"}

    if method(meta.get("normalization")) != method(normalization):
        log.warning(
            "checkpoint %s normalisation %s differs from %s normalisation %s",
            checkpoint,
            meta.get("normalization"),
            source,
            normalization,
        )


def build_profiler(
    model: torch.nn.Module,
    crop_shape: Sequence[int],
    settings: dict,
    voxel_size: Sequence[float],
    fill: np.ndarray,
) -> GradCamProfiler:
    """The profile stage's map for ``model``, from the ``profile`` config section.

    ``settings``: ``attribution_method``, ``target_layer``, ``target_resolution`` (when set,
    it chooses the layer for ``crop_shape``), ``ig_steps`` and ``smoothing_sigma`` (Y/X
    voxels, for the input-level maps only; Z scaled by ``voxel_size``). ``fill``: ``(M, C)``
    the plate's neutral fill; its mean per channel is the baseline (integrated gradients'
    start and the evidence's empty crop), none when it is empty.
    """
    method = settings["attribution_method"]
    layer = settings["target_layer"]
    if settings.get("target_resolution") is not None:
        layer = layer_for_resolution(model, crop_shape, settings["target_resolution"])
    # Smoothing is for the full-resolution maps at the input; a layer's map is coarser already.
    smoothing = (
        smoothing_sigmas(settings["smoothing_sigma"], voxel_size)
        if method in INPUT_METHODS
        else (0.0, 0.0, 0.0)
    )
    baseline = np.asarray(fill).mean(0) if len(fill) else None
    return GradCamProfiler(model, layer, method, baseline, settings["ig_steps"], smoothing)


def target_class_index(target_class: str, treatment: str, classes: Sequence[str]) -> str | int:
    """Resolve config ``profile.target_class`` to ``"predicted"`` or a class index.

    ``"true"`` means the cell's treatment (all cells of a well share one).
    """
    if target_class == "predicted":
        return "predicted"
    if target_class != "true":
        raise InputError(f"profile.target_class must be 'predicted' or 'true', got {target_class!r}")
    if treatment not in classes:
        raise InputError(
            f"profile.target_class is 'true' but treatment {treatment!r} is not one of the "
            f"model's classes {list(classes)}"
        )
    return list(classes).index(treatment)


def store_batches(store: CropStore, batch_size: int, n_cells: int | None = None):
    """``(images (n, C, Z, Y, X) float32, masks (n, Z, Y, X) uint8)`` of a store's first
    ``n_cells`` cells (None: all), ``batch_size`` at a time (masks copied: torch wants
    writable memory)."""
    n = len(store) if n_cells is None else min(int(n_cells), len(store))
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        yield np.asarray(store.images[lo:hi], np.float32), np.array(store.masks[lo:hi])


def profile_store(
    profiler: GradCamProfiler,
    store: CropStore,
    target: str | int = "predicted",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    cams_out: np.ndarray | None = None,
    fill: np.ndarray | None = None,
    cell_margin: int = 1,
    seed: int = 0,
    mapped: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """:func:`profile_batches` over every cell of a crop store, ``batch_size`` at a time."""
    return profile_batches(
        profiler,
        store_batches(store, batch_size),
        store.cells,
        store.crop_shape,
        len(store.channels),
        target,
        device,
        cams_out,
        fill,
        cell_margin,
        seed,
        mapped,
    )


def profile_batches(
    profiler: GradCamProfiler,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    cells: pd.DataFrame,
    crop_shape: Sequence[int],
    n_channels: int,
    target: str | int = "predicted",
    device: str | torch.device = "cpu",
    cams_out: np.ndarray | None = None,
    fill: np.ndarray | None = None,
    cell_margin: int = 1,
    seed: int = 0,
    mapped: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Run the profiler, and the audit, over a well's cells, batch by batch.

    Parameters
    ----------
    profiler: the Grad-CAM profiler (its model already on ``device``).
    batches: ``(images (n, C, Z, Y, X) float32, masks (n, Z, Y, X) uint8)`` of the cells of
        ``cells`` in order (a store's slices, :func:`profile_store`, or crops made from the
        site images as they are read, :func:`gradcamo.crops.crop_batches`).
    cells: the well's cell table, N rows (the audit's seeds come from its site and object
        numbers).
    crop_shape: ``(Z, Y, X)``; n_channels: C.
    target: ``"predicted"`` or one class index for every cell.
    cams_out: optional writable ``(N, Z, Y, X)`` array (e.g. a float16 memmap) that receives
        the upsampled Grad-CAM maps, each scaled to a maximum of 1 (all-zero maps stay 0).
    fill: ``(M, C)`` neutral fill of the plate (:mod:`gradcamo.context`); None: no audit.
    cell_margin: voxels around the cell mask that count as the cell in the audit and in
        the background statistics.
    seed: of the audit's fill draws (:func:`audit_seeds`).
    mapped: ``(N,)`` bool, the cells that get a map, Grad-CAMO, its baselines and the audit
        (the well's attribution sample, :func:`gradcamo.crops.sample_mask`); None: every cell.
        The others get their embedding, prediction, evidence and background means from one
        forward pass, NaN (audit classes -1) for the rest, and an all-zero map in ``cams_out``.

    Returns
    -------
    dict with ``embedding`` (N×D float32), ``probabilities`` (N×K float32), ``scores``
    ((N,) float64 Grad-CAMO, NaN for all-zero maps) and ``attention`` (``neighbours`` and
    ``background`` shares, (N,) float64 each) and ``uniform`` ((N,) Grad-CAMO of a uniform
    map: the cell's share of the crop's voxels), ``shuffled`` ((N,) Grad-CAMO of each mapped
    cell's mask on the next mapped cell's map, the last one's on the first's; NaN for a
    single cell), ``background`` ((N, C) background means), ``explained`` ((N,) the class
    each map explains), ``mapped`` ((N,) bool), with a profiler baseline ``evidence`` ((N,)
    p(crop) - p(baseline) of that class) and ``baseline_class`` ((N,) the baseline crop's
    predicted class), and with a fill ``audit``: ``cell`` and ``context`` reliance ((N,)
    float64) and the classes ``from_cell`` and ``from_context`` ((N,) int64), for the class
    each map explains. Logs one progress line per batch.
    """
    model = profiler.model
    n, dim, n_classes = len(cells), embedding_dim(model), model._fc.out_features
    crop_shape = tuple(int(s) for s in crop_shape)
    mapped = np.ones(n, bool) if mapped is None else np.asarray(mapped, bool)
    if mapped.shape != (n,):
        raise ValueError(f"mapped has shape {mapped.shape}, expected ({n},)")
    out = {
        "embedding": np.zeros((n, dim), np.float32),
        "probabilities": np.zeros((n, n_classes), np.float32),
        "scores": np.full(n, np.nan),
        "attention": {name: np.full(n, np.nan) for name in ATTENTION_COLUMNS},
        "uniform": np.full(n, np.nan),
        "shuffled": np.full(n, np.nan),
        "background": np.zeros((n, n_channels), np.float64),
        "explained": np.zeros(n, np.int64),
        "mapped": mapped,
    }
    if profiler.baseline is not None:
        out["evidence"] = np.full(n, np.nan)
        out["baseline_class"] = np.zeros(n, np.int64)
    # The shuffled baseline pairs each mapped cell's mask with the next mapped cell's map.
    # Batches come one after another, so the last mask of a batch waits (at its index) for
    # the next batch's first map, and the well's last mask for its first map.
    first_map, waiting, waiting_at = None, None, -1
    if fill is not None:
        out["audit"] = {
            **{name: np.full(n, np.nan) for name in AUDIT_RELIANCE_COLUMNS},
            **{name: np.full(n, -1, np.int64) for name in AUDIT_PREDICTION_COLUMNS},
        }
        seeds = audit_seeds(cells, seed)
    if cams_out is not None and tuple(cams_out.shape) != (n, *crop_shape):
        raise ValueError(f"cams_out has shape {cams_out.shape}, expected {(n, *crop_shape)}")
    n_mapped = int(mapped.sum())
    start = time.perf_counter()
    lo = 0
    for b, (images, masks) in enumerate(batches):
        hi = lo + len(images)
        if hi > n:
            raise ValueError(f"the batches hold more than the {n} cells of the cell table")
        here = np.flatnonzero(mapped[lo:hi])
        x_all = torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(device)
        if len(here) < hi - lo:  # one forward for the cells outside the sample
            rest = np.flatnonzero(~mapped[lo:hi])
            x_rest = x_all[torch.from_numpy(rest).to(device)]
            plain = profiler.embed(x_rest, _batch_target(target, len(rest), device))
            out["embedding"][lo + rest] = plain["embedding"].float().cpu().numpy()
            out["probabilities"][lo + rest] = torch.softmax(plain["logits"].float(), 1).cpu().numpy()
            out["explained"][lo + rest] = plain["target"].cpu().numpy()
            if "evidence" in plain:
                out["evidence"][lo + rest] = plain["evidence"].cpu().numpy()
                out["baseline_class"][lo + rest] = plain["baseline_class"].cpu().numpy()
        out["background"][lo:hi] = background_statistics(images, masks, cell_margin)
        if len(here):
            # All mapped (the default): the batch as it came, so results do not depend on
            # whether a sample was asked for.
            whole = len(here) == hi - lo
            images_m = images if whole else images[here]
            masks_m = masks if whole else masks[here]
            x = x_all if whole else x_all[torch.from_numpy(here).to(device)]
            at = lo + here
            mask = torch.from_numpy(np.ascontiguousarray(masks_m)).to(device)
            result = profiler(x, _batch_target(target, len(here), device))
            cam = upsample_cam(result["cam"], crop_shape)
            probabilities = torch.softmax(result["logits"].float(), 1)
            out["embedding"][at] = result["embedding"].float().cpu().numpy()
            out["probabilities"][at] = probabilities.cpu().numpy()
            out["explained"][at] = result["target"].cpu().numpy()
            if "evidence" in result:
                out["evidence"][at] = result["evidence"].cpu().numpy()
                out["baseline_class"][at] = result["baseline_class"].cpu().numpy()
            shares = attention_shares(cam, mask)
            out["scores"][at] = shares["cell"].cpu().numpy()
            for name in ATTENTION_COLUMNS:
                out["attention"][name][at] = shares[name].cpu().numpy()
            out["uniform"][at] = uniform_gradcamo(mask).cpu().numpy()
            if waiting is not None:
                out["shuffled"][waiting_at] = gradcamo_score(cam[:1], waiting).cpu().numpy()[0]
            out["shuffled"][at[:-1]] = gradcamo_score(cam[1:], mask[:-1]).cpu().numpy()
            first_map = cam[:1].clone() if first_map is None else first_map
            waiting, waiting_at = mask[-1:].clone(), int(at[-1])
            if fill is not None:
                chosen = probabilities.gather(1, result["target"][:, None])[:, 0].cpu().numpy()
                without_cell, without_context = counterfactual_crops(
                    images_m, masks_m, fill, cell_margin, [seeds[i] for i in at]
                )
                for crops, reliance, predicted in (
                    (without_cell, "cell", "from_context"),
                    (without_context, "context", "from_cell"),
                ):
                    p, classes = target_probabilities(
                        model, torch.from_numpy(crops).to(device), result["target"]
                    )
                    out["audit"][reliance][at] = chosen - p
                    out["audit"][predicted][at] = classes
            if cams_out is not None:
                # Grad-CAM's scale is arbitrary (tiny for weak gradients, beyond float16 for
                # strong ones): store each map scaled to a maximum of 1; Grad-CAMO is unchanged.
                peak = cam.flatten(1).amax(1).clamp(min=torch.finfo(cam.dtype).tiny)
                cams_out[at] = (cam / peak[:, None, None, None]).cpu().numpy().astype(cams_out.dtype)
        if cams_out is not None and len(here) < hi - lo:
            cams_out[lo + np.flatnonzero(~mapped[lo:hi])] = 0
        elapsed = time.perf_counter() - start
        gap = ""
        if len(here) and "completeness_gap" in result:  # integrated gradients: its steps vs exact
            gap = f", mean |sum(IG) - (p(x) - p(baseline))| {float(result['completeness_gap'].mean()):.2g}"
        log.info(
            "batch %d: %d/%d cells (%d/%d mapped), %.1f cells/s%s",
            b + 1,
            hi,
            n,
            int(mapped[:hi].sum()),
            n_mapped,
            hi / elapsed,
            gap,
        )
        lo = hi
    if lo != n:
        raise ValueError(f"the batches held {lo} cells, the cell table {n}")
    if n_mapped > 1:
        out["shuffled"][waiting_at] = gradcamo_score(first_map, waiting).cpu().numpy()[0]
    return out


def _batch_target(target: str | int, n: int, device: str | torch.device) -> str | torch.Tensor:
    """The profiler's target for ``n`` cells: ``"predicted"`` or the class index for each."""
    return "predicted" if target == "predicted" else torch.full((n,), int(target), device=device)
