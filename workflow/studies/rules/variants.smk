rule confounded_dataset:
    """The mini dataset's confounded variant: the clean one's cells with debris outside them
    whose amount follows the treatment (docs/mini-dataset.md), from the same seed."""
    output:
        f"{OUT}/data/confounded/samples.tsv",
    log:
        "logs/validate/confounded_dataset.log",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    params:
        seed=config["dataset_seed"],
    script:
        "../scripts/confounded_dataset.py"


rule variant_crops:
    """A variant through the main workflow's own rules, to every well's crop store and the
    split: a Snakemake run of workflow/Snakefile in the variant's folder (its results/ and
    logs/ as a screen's), on this job's cores. Not a `module`: the main workflow's params
    carry paths relative to its working directory, which a module's prefix does not rewrite.
    Writes the split with each well's store and plate fill."""
    input:
        sheet=variant_sheet,
    output:
        f"{OUT}/{{variant}}/wells.tsv",
    log:
        "logs/validate/variant_crops/{variant}.log",
    conda:
        "../../envs/snakemake.yaml"
    threads: RESOURCES["variant_crops"]["threads"]
    resources:
        **job_resources("variant_crops"),
    params:
        main_config=MAIN,
        sites_per_well=config["sites_per_well"],
        snakefile=MAIN_SNAKEFILE,
        deployment=DEPLOYMENT,
        project=lambda wc: f"{OUT}/{wc.variant}",
    script:
        "../scripts/variant_crops.py"


rule cell_context:
    """A variant's crops with ``crops.context: cell``: every crop's context replaced by the
    plate's fill, seeded per cell as the crop stage seeds it."""
    input:
        f"{OUT}/{{variant}}/wells.tsv",
    output:
        wells=f"{OUT}/{{variant}}/cell/wells.tsv",
        stores=directory(f"{OUT}/{{variant}}/cell/stores"),
    log:
        "logs/validate/cell_context/{variant}.log",
    conda:
        "../../envs/torch.yaml"
    threads: RESOURCES["derived_stores"]["threads"]
    resources:
        **job_resources("derived_stores"),
    params:
        cell_margin=MAIN["crops"]["cell_margin"],
        fill_seed=MAIN["crops"]["fill"]["seed"],
    script:
        "../scripts/cell_context.py"


rule shortcut_free:
    """The confounded variant's test wells cropped from the clean z-stacks with the
    confounded run's labels and normalisation: the same cells without the shortcut."""
    input:
        wells=f"{OUT}/confounded/wells.tsv",
        clean_sheet=str(CLEAN_SHEET),
    output:
        wells=f"{OUT}/shortcut_free/wells.tsv",
        stores=directory(f"{OUT}/shortcut_free/stores"),
    log:
        "logs/validate/shortcut_free.log",
    conda:
        "../../envs/torch.yaml"
    threads: RESOURCES["derived_stores"]["threads"]
    resources:
        **job_resources("derived_stores"),
    params:
        main_config=MAIN,
        # the confounded run's project folder, where its wells.tsv lies
        project=lambda wc, input: str(Path(input.wells).parent),
    script:
        "../scripts/shortcut_free.py"
