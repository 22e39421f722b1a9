rule split:
    """Wells (never cells) to train / val / test, stratified by treatment."""
    input:
        config["samples"],
    output:
        "results/split/wells.tsv",
    log:
        "logs/split.log",
    conda:
        "../envs/torch.yaml"
    threads: RESOURCES["split"]["threads"]
    resources:
        **job_resources("split"),
    params:
        wells=WELLS[["plate", "well", "treatment"]].to_dict("records"),
        fractions=config["split"]["fractions"],
        seed=config["split"]["seed"],
    script:
        "../scripts/split.py"


rule train:
    """3D EfficientNet on treatment labels; resumes from results/train/resume/ after preemption."""
    input:
        images=expand_wells("results/crops/{plate}/{well}/images.npy"),
        masks=expand_wells("results/crops/{plate}/{well}/masks.npy"),
        cells=expand_wells("results/crops/{plate}/{well}/cells.parquet"),
        store_json=expand_wells("results/crops/{plate}/{well}/store.json"),
        split="results/split/wells.tsv",
        # The plates' neutral fills: the per-epoch audit of the validation cells.
        fills=expand_plates("results/crops/{plate}/fill.npy"),
    output:
        model="results/train/model.pt",
        history="results/train/history.tsv",
        metrics="results/train/metrics.json",
    log:
        "logs/train.log",
    conda:
        "../envs/torch.yaml"
    threads: RESOURCES["train"]["threads"]
    resources:
        **job_resources("train"),
    params:
        channels=CHANNELS,
        crop_shape=config["crops"]["shape"],
        settings=config["train"],
        cell_margin=config["crops"]["cell_margin"],
        fill_seed=config["crops"]["fill"]["seed"],
        resume="results/train/resume/last.pt",
    script:
        "../scripts/train.py"
