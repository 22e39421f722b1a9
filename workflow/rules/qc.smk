rule qc_well:
    """Per-site, per-channel intensity, saturation and focus statistics of one well."""
    input:
        images=lambda wc: site_files(well_sites(wc)),
        index=lambda wc: site_index(well_sites(wc)),
        # Ground-truth labels, where the sheet has them: checked against their z-stacks here,
        # before any segmentation runs.
        labels=lambda wc: [p for p in well_labels(wc) if p],
    output:
        "results/qc/{plate}/{well}.parquet",
    log:
        "logs/qc_well/{plate}/{well}.log",
    conda:
        "../envs/analysis.yaml"
    threads: RESOURCES["qc_well"]["threads"]
    resources:
        **job_resources("qc_well"),
    params:
        sites=lambda wc: site_records(well_sites(wc)),
        labels=lambda wc: well_labels(wc),
        images=IMAGE_SETTINGS,
        saturation_value=config["qc"]["saturation_value"],
    script:
        "../scripts/qc_well.py"


rule qc_plate:
    """Plate-layout heatmaps of the QC statistics, one figure per plate."""
    input:
        lambda wc: [f"results/qc/{wc.plate}/{w}.parquet" for w in WELLS[WELLS.plate == wc.plate].well],
    output:
        report(
            "results/qc/{plate}.layout.png",
            caption="../report/qc_layout.rst",
            category="Image QC",
        ),
    log:
        "logs/qc_plate/{plate}.log",
    conda:
        "../envs/analysis.yaml"
    threads: RESOURCES["qc_plate"]["threads"]
    resources:
        **job_resources("qc_plate"),
    script:
        "../scripts/qc_plate.py"


rule channel_correlation:
    """Inter-channel correlation over the cell voxels of a plate (Cell Painting channels are
    highly correlated: what a profile can tell apart starts here)."""
    input:
        lambda wc: [f"results/crops/{wc.plate}/{w}/store.json" for w in WELLS[WELLS.plate == wc.plate].well],
    output:
        table="results/qc/{plate}.channel_correlation.tsv",
        figure=report(
            "results/qc/{plate}.channel_correlation.png",
            caption="../report/channel_correlation.rst",
            category="Image QC",
        ),
    log:
        "logs/channel_correlation/{plate}.log",
    conda:
        "../envs/analysis.yaml"
    threads: RESOURCES["channel_correlation"]["threads"]
    resources:
        **job_resources("channel_correlation"),
    params:
        channels=CHANNELS,
    script:
        "../scripts/channel_correlation.py"
