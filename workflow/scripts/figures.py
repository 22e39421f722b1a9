"""The aggregate stage's figures: UMAPs, Grad-CAMO distributions, attribution-map gallery,
training curves, mAP."""

import json
from pathlib import Path

from gradcamo.logs import log_to

log = log_to(snakemake.log[0])

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from gradcamo import figures  # noqa: E402
from gradcamo.aggregate import feature_columns  # noqa: E402
from gradcamo.columns import SHUFFLED_COLUMN, UNDEFINED_COLUMN  # noqa: E402
from gradcamo.sphering import Sphering, apply_sphering  # noqa: E402
from gradcamo.summary import attention_shares  # noqa: E402

params, out = snakemake.params, snakemake.output
umap_settings = dict(
    n_neighbors=params.umap["n_neighbors"],
    min_dist=params.umap["min_dist"],
    seed=params.umap["seed"],
    pca_components=params.umap_pca_components,
)


def layout(table, what):
    """UMAP of a table's features, or (None, reason) when there are too few rows."""
    if len(table) < figures.MIN_UMAP_SAMPLES:
        return None, f"too few {what} for a UMAP (n={len(table)})"
    log.info("UMAP of %d %s", len(table), what)
    return figures.umap_embedding(table[feature_columns(table)].to_numpy(), **umap_settings), None


cells = pd.read_parquet(snakemake.input.cells)
threshold = params.gradcamo_threshold

# UMAP of held-out cells, sphered on the control cells (all splits).
sphering = Sphering.load(snakemake.input.cell_sphering)  # the aggregate stage's fit
test = cells[cells["Metadata_Split"] == "test"]
keep = figures.subsample(len(test), params.umap_max_cells, params.umap["seed"])
test = apply_sphering(test.iloc[keep], sphering)
embedding, note = layout(test, "test-set cells")
if embedding is not None and len(keep) < (cells["Metadata_Split"] == "test").sum():
    note = f"random subsample of {len(keep)} test-set cells (aggregate.umap.max_cells)"
figures.save_figure(
    figures.umap_cells_figure(
        embedding,
        test["Metadata_Treatment"],
        test["Metadata_GradCAMO"],
        threshold,
        title="Test-set cells (sphered profiles)",
        note=note,
    ),
    out.umap_cells,
)

wells = pd.read_parquet(snakemake.input.wells_sphered)
embedding, note = layout(wells, "wells")
figures.save_figure(
    figures.umap_wells_figure(embedding, wells["Metadata_Treatment"], wells["Metadata_Split"], note),
    out.umap_wells,
)

scores = cells["Metadata_GradCAMO"].to_numpy()
method = figures.method_label(params.attribution_method, params.attribution["smoothing_sigma"])
# The histogram per predicted class, on the held-out cells (all cells where none are).
held_out = cells[cells["Metadata_Split"] == "test"] if (cells["Metadata_Split"] == "test").any() else cells
figures.save_figure(
    figures.gradcamo_histogram_figure(
        held_out["Metadata_GradCAMO"].to_numpy(),
        threshold,
        method,
        held_out[SHUFFLED_COLUMN].to_numpy() if SHUFFLED_COLUMN in held_out else None,
        held_out["Metadata_Predicted"].astype(str).to_numpy(),
        held_out[UNDEFINED_COLUMN].to_numpy() if UNDEFINED_COLUMN in held_out else None,
        "test cells" if held_out is not cells else "all cells",
    ),
    out.histogram,
)
figures.save_figure(
    figures.gradcamo_by_treatment_figure(
        scores, cells["Metadata_Treatment"], threshold, attention_shares(cells), method
    ),
    out.by_treatment,
)

# Gallery: held-out cells if any has a score, else all cells; of those, the cells in their
# well's crop store (its training sample, crops.sample), whose crops can be drawn.
wells = [(w["plate"], w["well"]) for w in params.wells]
crop_stores = {key: Path(p).parent for key, p in zip(wells, snakemake.input.crop_stores)}
drawable = cells[figures.stored_cells(cells, crop_stores)]
pool = drawable[drawable["Metadata_Split"] == "test"]
if not np.isfinite(pool["Metadata_GradCAMO"]).any():
    pool = drawable
log.info("gallery: from %d cells with a stored crop (of %d)", len(pool), len(cells))
lowest, highest = figures.select_extremes(pool["Metadata_GradCAMO"].to_numpy(), params.gallery_cells)
# Inputs are listed in the order of params.wells (the rule's contract, no path parsing).
cam_files = (
    dict(zip(wells, snakemake.input.attributions)) if "attributions" in snakemake.input.keys() else None
)
figures.save_figure(
    figures.cam_gallery_figure(
        figures.read_gallery_cells(pool.iloc[lowest], crop_stores, cam_files),
        figures.read_gallery_cells(pool.iloc[highest], crop_stores, cam_files),
        params.channels,
        method,
    ),
    out.gallery,
)

test = cells[cells["Metadata_Split"] == "test"]
audit = json.loads(Path(snakemake.input.summary).read_text()).get("audit")
if audit is None:
    log.info("no audit in the profiles (profile.audit is off): the audit figure says so")
figures.save_figure(
    figures.audit_figure(
        (audit or {}).get("by_treatment", {}),
        test["Metadata_GradCAMO"].to_numpy(),
        test["Metadata_CellReliance"].to_numpy(),
        chance=1.0 / max(1, cells["Metadata_Treatment"].nunique()),
        spearman=((audit or {}).get("by_split", {}).get("test") or {}).get("spearman_gradcamo_cell_reliance"),
    ),
    out.audit,
)

history = pd.read_csv(snakemake.input.history, sep="\t")
figures.save_figure(figures.training_curves_figure(history), out.training_curves)
figures.save_figure(figures.activity_figure(pd.read_parquet(snakemake.input.map)), out.map)
log.info("figures written: %s", ", ".join(out))
