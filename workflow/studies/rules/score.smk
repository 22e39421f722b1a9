# Each scoring is one job per trained model, on its test wells (GPU rules: the maps' backward
# passes). The model name is {variant}-{context}-{setting}-seed{seed}.
MODEL = "{variant}-{context}-{setting}-seed{seed}"


rule score_attribution:
    """Every method x layer of the attribution study's grid on one model, and its audit."""
    input:
        model=f"{OUT}/models/{MODEL}/model.pt",
        wells=wells_table,
    output:
        maps=f"{OUT}/attribution/{MODEL}.tsv",
        model=f"{OUT}/attribution/{MODEL}.json",
    log:
        f"logs/validate/score_attribution/{MODEL}.log",
    conda:
        "../../envs/torch.yaml"
    threads: RESOURCES["study_score"]["threads"]
    resources:
        **job_resources("study_score"),
    params:
        maps=MAPS,
        ig_steps=IG_STEPS,
        cell_margin=MAIN["crops"]["cell_margin"],
    script:
        "../scripts/score_attribution.py"


rule score_evidence:
    """The profile stage's map and the audit on one model's test cells (the evidence curve's
    rows), and the model randomisation check on a seeded sample of them."""
    input:
        model=f"{OUT}/models/{MODEL}/model.pt",
        wells=wells_table,
    output:
        cells=f"{OUT}/evidence/{MODEL}.cells.tsv",
        randomisation=f"{OUT}/evidence/{MODEL}.randomisation.tsv",
    log:
        f"logs/validate/score_evidence/{MODEL}.log",
    conda:
        "../../envs/torch.yaml"
    threads: RESOURCES["study_score"]["threads"]
    resources:
        **job_resources("study_score"),
    params:
        profile={**MAIN["profile"], "ig_steps": IG_STEPS},
        voxel_size=MAIN["voxel_size"],
        cell_margin=MAIN["crops"]["cell_margin"],
        randomisation_cells=config["evidence"]["randomisation_cells"],
        randomisation_seeds=config["evidence"]["randomisation_seeds"],
    script:
        "../scripts/score_evidence.py"


rule score_penalty:
    """A confounded model of the penalty study: accuracy with and without the shortcut, the
    audit and Grad-CAMO under three maps."""
    input:
        model=f"{OUT}/models/{MODEL}/model.pt",
        wells=wells_table,
        shortcut_free=f"{OUT}/shortcut_free/wells.tsv",
    output:
        f"{OUT}/penalty/{MODEL}.json",
    log:
        f"logs/validate/score_penalty/{MODEL}.log",
    conda:
        "../../envs/torch.yaml"
    threads: RESOURCES["study_score"]["threads"]
    resources:
        **job_resources("study_score"),
    params:
        ig_steps=IG_STEPS,
        smoothing=smoothing_sigmas(MAIN["profile"]["smoothing_sigma"], MAIN["voxel_size"]),
        cell_margin=MAIN["crops"]["cell_margin"],
    script:
        "../scripts/score_penalty.py"
