rule profile:
    """Embeddings and predictions for every cell of one well, cropped from its sites as they
    are read (the crop store holds only the training sample); the attribution map, Grad-CAMO
    and the audit for every cell, or for the well's attribution sample."""
    input:
        segments="results/segment/{plate}/{well}",
        images=lambda wc: site_files(well_sites(wc)),
        index=lambda wc: site_index(well_sites(wc)),
        # The plate's percentiles (scope plate) and the neutral fill: the crops' context
        # (crops.context: cell), the counterfactual audit's, integrated gradients' baseline.
        bounds="results/crops/{plate}/normalization.json",
        fill="results/crops/{plate}/fill.npy",
        segmentation_qc="results/segmentation/qc/{plate}.parquet",
        model="results/train/model.pt",
        split="results/split/wells.tsv",
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
        sites=lambda wc: site_records(well_sites(wc), labels=True),
        well=lambda wc: well_metadata(wc),
        images=IMAGE_SETTINGS,
        crops=config["crops"],
        attribution_cells_per_well=config["profile"]["attribution_cells_per_well"],
        attribution=ATTRIBUTION,
        voxel_size=config["voxel_size"],
        target_class=config["profile"]["target_class"],
        batch_size=config["profile"]["batch_size"],
        audit=config["profile"]["audit"],
        min_evidence=config["profile"]["min_evidence"],
        channels=CHANNELS,
    script:
        "../scripts/profile.py"
