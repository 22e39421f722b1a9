# Single-cell 3D crops, cell-of-interest masks and the cell table, one crop store per well
# holding its training sample (the profile stage crops every cell from the sites itself).


rule crop_normalization:
    """A plate's reference: per-channel percentiles (scope plate) and the neutral fill
    (background voxels of its reference wells, for crops.context: cell and the audit)."""
    input:
        images=lambda wc: site_files(reference_sites(wc.plate)),
        index=lambda wc: site_index(reference_sites(wc.plate)),
        segments=lambda wc: reference_segments(wc.plate),
    output:
        bounds="results/crops/{plate}/normalization.json",
        fill="results/crops/{plate}/fill.npy",
    log:
        "logs/crop_normalization/{plate}.log",
    conda:
        "../envs/segmentation.yaml"
    threads: RESOURCES["crop_normalization"]["threads"]
    resources:
        **job_resources("crop_normalization"),
    params:
        # Every reference site with its labels (inside the segment folders above).
        sites=lambda wc: site_records(reference_sites(wc.plate), labels=True),
        images=IMAGE_SETTINGS,
        normalization=config["crops"]["normalization"],
        fill=config["crops"]["fill"],
    script:
        "../scripts/crop_normalization.py"


rule crops:
    """Fixed-shape 3D crops around the cells of a well's training sample (crops.sample), with
    masks and the cell table: the crop store that training and the checks read."""
    input:
        segments="results/segment/{plate}/{well}",
        images=lambda wc: site_files(well_sites(wc)),
        index=lambda wc: site_index(well_sites(wc)),
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
        "../envs/segmentation.yaml"
    threads: RESOURCES["crops"]["threads"]
    resources:
        **job_resources("crops"),
    params:
        sites=lambda wc: site_records(well_sites(wc), labels=True),
        # The well's metadata columns in every cell's row.
        well=lambda wc: well_metadata(wc),
        images=IMAGE_SETTINGS,
        settings=config["crops"],
    script:
        "../scripts/crops.py"
