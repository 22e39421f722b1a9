# Single-cell 3D crops, cell-of-interest masks and the cell table, one crop store per well.


rule crop_normalization:
    """A plate's reference: per-channel percentiles (scope plate) and the neutral fill
    (background voxels of its reference wells, for crops.context: cell and the audit)."""
    input:
        images=lambda wc: list(reference_sites(wc.plate)["image"]),
        segments=lambda wc: reference_segments(wc.plate),
    output:
        bounds="results/crops/{plate}/normalization.json",
        fill="results/crops/{plate}/fill.npy",
    log:
        "logs/crop_normalization/{plate}.log",
    conda:
        "../../envs/segmentation.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        # (image, labels) of every reference site; labels inside the segment folders above.
        sites=lambda wc: reference_site_files(wc.plate),
        channels=CHANNELS,
        page_order=config["images"]["page_order"],
        normalization=config["crops"]["normalization"],
        fill=config["crops"]["fill"],
    script:
        "../scripts/crop_normalization.py"


rule crops:
    """Fixed-shape 3D crops around every cell of a well, with masks and the cell table."""
    input:
        segments="results/segment/{plate}/{well}",
        images=well_images,
        # The plate's reference: its percentiles (scope plate) and neutral fill.
        bounds="results/crops/{plate}/normalization.json",
        fill="results/crops/{plate}/fill.npy",
        # Sites the segmentation QC flags (dropped with crops.filters.drop_flagged_sites).
        segmentation_qc="results/segmentation/qc/{plate}.parquet",
    output:
        images="results/crops/{plate}/{well}/images.npy",
        masks="results/crops/{plate}/{well}/masks.npy",
        cells="results/crops/{plate}/{well}/cells.parquet",
        store_json="results/crops/{plate}/{well}/store.json",
    log:
        "logs/crops/{plate}/{well}.log",
    conda:
        "../../envs/segmentation.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        sites=lambda wc: [
            {**row, "labels": site_labels(row["plate"], row["well"], row["site"])}
            for row in well_sites(wc)[
                ["plate", "well", "site", "treatment", "concentration", "control"]
            ].to_dict("records")
        ],
        channels=CHANNELS,
        page_order=config["images"]["page_order"],
        settings=config["crops"],
    script:
        "../scripts/crops.py"
