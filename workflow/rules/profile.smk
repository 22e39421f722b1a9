rule profile:
    """Embeddings, predictions, 3D Grad-CAM and Grad-CAMO for every cell of one well."""
    input:
        images="results/crops/{plate}/{well}/images.npy",
        masks="results/crops/{plate}/{well}/masks.npy",
        cells="results/crops/{plate}/{well}/cells.parquet",
        store_json="results/crops/{plate}/{well}/store.json",
        model="results/train/model.pt",
        split="results/split/wells.tsv",
        # The plate's neutral fill: the counterfactual audit's, and integrated gradients' baseline.
        fill="results/crops/{plate}/fill.npy",
    output:
        **(
            {"attributions": "results/profiles/{plate}/{well}.attributions.npy"}
            if config["profile"]["save_attributions"]
            else {}
        ),
        table="results/profiles/{plate}/{well}.parquet",
    log:
        "logs/profile/{plate}/{well}.log",
    conda:
        "../envs/torch.yaml"
    threads: RESOURCES["profile"]["threads"]
    resources:
        **job_resources("profile"),
    params:
        attribution=ATTRIBUTION,
        voxel_size=config["voxel_size"],
        target_class=config["profile"]["target_class"],
        batch_size=config["profile"]["batch_size"],
        audit=config["profile"]["audit"],
        min_evidence=config["profile"]["min_evidence"],
        cell_margin=config["crops"]["cell_margin"],
        fill_seed=config["crops"]["fill"]["seed"],
        channels=CHANNELS,
    script:
        "../scripts/profile.py"
