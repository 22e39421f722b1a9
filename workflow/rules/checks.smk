# Checks of the trained model on the user's own screen: does its map depend on what it
# learnt (model randomisation), and would this run catch a shortcut of a known strength
# (planted control)? Both read the test wells' crop stores; the summary reports them.
CHECK_INPUTS = dict(
    model="results/train/model.pt",
    split="results/split/wells.tsv",
    store_json=expand_wells("results/crops/{plate}/{well}/store.json"),
    images=expand_wells("results/crops/{plate}/{well}/images.npy"),
    masks=expand_wells("results/crops/{plate}/{well}/masks.npy"),
    cells=expand_wells("results/crops/{plate}/{well}/cells.parquet"),
    fills=expand_plates("results/crops/{plate}/fill.npy"),
)


rule randomisation_check:
    """Grad-CAMO of a sample of test cells, trained model against its weights re-initialised
    from the top, cascading (Adebayo et al., 2018)."""
    input:
        **CHECK_INPUTS,
    output:
        table="results/checks/randomisation.tsv",
        summary="results/checks/randomisation.json",
    log:
        "logs/randomisation_check.log",
    conda:
        "../envs/torch.yaml"
    threads: RESOURCES["randomisation_check"]["threads"]
    resources:
        **job_resources("randomisation_check"),
    params:
        settings=config["checks"]["randomisation"],
        attribution=ATTRIBUTION,
        voxel_size=config["voxel_size"],
        threshold=config["aggregate"]["gradcamo_threshold"],
        batch_size=config["profile"]["batch_size"],
    script:
        "../scripts/randomisation_check.py"


rule planted_control:
    """A marker coded by treatment planted in one treatment's context, a copy of the model
    fine-tuned on it, and whether the audit and Grad-CAMO catch it on planted test cells."""
    input:
        **CHECK_INPUTS,
    output:
        cells="results/checks/planted_cells.parquet",
        summary="results/checks/planted.json",
    log:
        "logs/planted_control.log",
    conda:
        "../envs/torch.yaml"
    threads: RESOURCES["planted_control"]["threads"]
    resources:
        **job_resources("planted_control"),
    params:
        settings=config["checks"]["planted"],
        control=config["aggregate"]["control"],
        attribution=ATTRIBUTION,
        voxel_size=config["voxel_size"],
        threshold=config["aggregate"]["gradcamo_threshold"],
        min_evidence=config["profile"]["min_evidence"],
        cell_margin=config["crops"]["cell_margin"],
        batch_size=config["train"]["batch_size"],
    script:
        "../scripts/planted_control.py"
