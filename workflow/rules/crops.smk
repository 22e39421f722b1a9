# Single-cell 3D crops, cell-of-interest masks and the cell table, one crop store per well.


rule crop_normalization:
    """Per-channel robust percentiles of one plate (sampled site by site), for scope: plate."""
    input:
        images=lambda wc: list(SAMPLES[SAMPLES.plate == wc.plate].sort_values(["well", "site"])["image"]),
    output:
        "results/crops/{plate}/normalization.json",
    log:
        "logs/crop_normalization/{plate}.log",
    params:
        channels=CHANNELS,
        lower_percentile=config["crops"]["normalization"]["lower_percentile"],
        upper_percentile=config["crops"]["normalization"]["upper_percentile"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/segmentation.yaml"
    script:
        "../scripts/crop_normalization.py"


rule crops:
    """Fixed-shape 3D crops around every cell of a well, with masks and the cell table."""
    input:
        segments="results/segment/{plate}/{well}",
        images=well_images,
        # The plate's intensity percentiles, only for crops.normalization.scope: plate.
        bounds=lambda wc: (
            f"results/crops/{wc.plate}/normalization.json"
            if config["crops"]["normalization"]["scope"] == "plate"
            else []
        ),
    output:
        images="results/crops/{plate}/{well}/images.npy",
        masks="results/crops/{plate}/{well}/masks.npy",
        cells="results/crops/{plate}/{well}/cells.parquet",
        store_json="results/crops/{plate}/{well}/store.json",
    log:
        "logs/crops/{plate}/{well}.log",
    params:
        sites=lambda wc: well_sites(wc)[
            ["plate", "well", "site", "treatment", "concentration", "control"]
        ].to_dict("records"),
        channels=CHANNELS,
        settings=config["crops"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/segmentation.yaml"
    script:
        "../scripts/crops.py"
