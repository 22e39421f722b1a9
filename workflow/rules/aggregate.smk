import mimetypes

# Outputs by name; common.smk's aggregate_targets() lists them all for rule all.
AGGREGATE_TABLES = {
    "cells": "results/aggregate/cells.parquet",
    "wells": "results/aggregate/wells.parquet",
    "wells_sphered": "results/aggregate/wells_sphered.parquet",
    "map": "results/aggregate/map.parquet",
    "summary": AGGREGATE_SUMMARY,
    # The ZCA fit on the control cells, applied by the figures too (fitted once).
    "cell_sphering": "results/aggregate/cell_sphering.npz",
}
FIGURES = {
    "umap_cells": "results/figures/umap_cells.png",
    "umap_wells": "results/figures/umap_wells.png",
    "map": "results/figures/map.png",
    "histogram": "results/figures/gradcamo_histogram.png",
    "by_treatment": "results/figures/gradcamo_by_treatment.png",
    "gallery": "results/figures/attribution_gallery.png",
    "training_curves": "results/figures/training_curves.png",
    "audit": "results/figures/audit.png",
}

# `snakemake --report` embeds the tables; Python's mimetypes does not know Parquet's
# registered media type, so the report would label them text/plain.
mimetypes.add_type("application/vnd.apache.parquet", ".parquet")

AGGREGATE_PARAMS = dict(
    control=config["aggregate"]["control"],
    gradcamo_threshold=config["aggregate"]["gradcamo_threshold"],
    sphering_epsilon=config["aggregate"]["sphering_epsilon"],
    sphering_method=config["aggregate"]["sphering_method"],
    attribution_method=config["profile"]["attribution_method"],
    attribution=ATTRIBUTION,
)


rule aggregate:
    """All cells in one table, median well profiles raw and sphered (ZCA on the control
    wells), phenotypic activity (copairs mAP) and the run summary."""
    input:
        **check_summaries(),
        profiles=expand_wells("results/profiles/{plate}/{well}.parquet"),
        metrics="results/train/metrics.json",
    output:
        cells=AGGREGATE_TABLES["cells"],
        wells=report(
            AGGREGATE_TABLES["wells"],
            caption="../report/wells.rst",
            category="Tables",
        ),
        wells_sphered=report(
            AGGREGATE_TABLES["wells_sphered"],
            caption="../report/wells_sphered.rst",
            category="Tables",
        ),
        map=report(
            AGGREGATE_TABLES["map"],
            caption="../report/map_table.rst",
            category="Tables",
        ),
        summary=report(
            AGGREGATE_TABLES["summary"],
            caption="../report/summary.rst",
            category="Tables",
        ),
        cell_sphering=AGGREGATE_TABLES["cell_sphering"],
    log:
        "logs/aggregate.log",
    conda:
        "../envs/analysis.yaml"
    threads: RESOURCES["aggregate"]["threads"]
    resources:
        # At least resources.aggregate.mem_mb, and 8x the profiles it reads.
        mem_mb=lambda wildcards, input: max(RESOURCES["aggregate"]["mem_mb"], int(8 * input.size_mb)),
        runtime=RESOURCES["aggregate"]["runtime"],
    params:
        **AGGREGATE_PARAMS,
        map_max_cells_per_treatment=config["aggregate"]["map"]["max_cells_per_treatment"],
        map_null_size=config["aggregate"]["map"]["null_size"],
        map_seed=config["aggregate"]["map"]["seed"],
    script:
        "../scripts/aggregate.py"


rule figures:
    """UMAPs, Grad-CAMO distributions, the Grad-CAM gallery, training curves and mAP."""
    input:
        **(
            {"attributions": expand_wells("results/profiles/{plate}/{well}.attributions.npy")}
            if config["profile"]["save_attributions"]
            else {}
        ),
        cells=AGGREGATE_TABLES["cells"],
        wells_sphered=AGGREGATE_TABLES["wells_sphered"],
        map=AGGREGATE_TABLES["map"],
        summary=AGGREGATE_TABLES["summary"],
        cell_sphering=AGGREGATE_TABLES["cell_sphering"],
        history="results/train/history.tsv",
        crop_stores=expand_wells("results/crops/{plate}/{well}/store.json"),
        crop_images=expand_wells("results/crops/{plate}/{well}/images.npy"),
        crop_masks=expand_wells("results/crops/{plate}/{well}/masks.npy"),
    output:
        umap_cells=report(
            FIGURES["umap_cells"],
            caption="../report/umap_cells.rst",
            category="Profiles",
        ),
        umap_wells=report(
            FIGURES["umap_wells"],
            caption="../report/umap_wells.rst",
            category="Profiles",
        ),
        map=report(
            FIGURES["map"],
            caption="../report/map.rst",
            category="Profiles",
        ),
        histogram=report(
            FIGURES["histogram"],
            caption="../report/gradcamo_histogram.rst",
            category="Grad-CAMO",
        ),
        by_treatment=report(
            FIGURES["by_treatment"],
            caption="../report/gradcamo_by_treatment.rst",
            category="Grad-CAMO",
        ),
        gallery=report(
            FIGURES["gallery"],
            caption="../report/attribution_gallery.rst",
            category="Grad-CAMO",
        ),
        training_curves=report(
            FIGURES["training_curves"],
            caption="../report/training_curves.rst",
            category="Training",
        ),
        audit=report(
            FIGURES["audit"],
            caption="../report/audit.rst",
            category="Grad-CAMO",
        ),
    log:
        "logs/figures.log",
    conda:
        "../envs/analysis.yaml"
    threads: RESOURCES["figures"]["threads"]
    resources:
        # Crops and attribution maps are memory-mapped (a few cells read): only the single-cell
        # table counts (its size is unknown before it exists, e.g. in a dry run).
        mem_mb=lambda wildcards, input: max(
            RESOURCES["figures"]["mem_mb"],
            int(6e-6 * os.path.getsize(input.cells)) if os.path.exists(input.cells) else 0,
        ),
        runtime=RESOURCES["figures"]["runtime"],
    params:
        **AGGREGATE_PARAMS,
        umap=config["aggregate"]["umap"],
        umap_max_cells=config["aggregate"]["umap"]["max_cells"],
        umap_pca_components=config["aggregate"]["umap"]["pca_components"],
        gallery_cells=config["aggregate"]["gallery_cells"],
        # The order of the per-well inputs crop_stores, crop_images, crop_masks and attributions.
        wells=WELLS[["plate", "well"]].to_dict("records"),
        channels=CHANNELS,
    script:
        "../scripts/figures.py"
