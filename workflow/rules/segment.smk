# Cellpose 3 segmentation: an optional model trained on annotated sites, label z-stacks per
# site, and the segmentation's accuracy on the annotated sites.

SEGMENTATION_MODEL = "results/segmentation/model/cellpose_model"
# What segment jobs read: the trained model, a custom model file, or nothing for a Cellpose
# built-in name (the job looks its weights up offline in CELLPOSE_LOCAL_MODELS_PATH).
SEGMENTATION_MODEL_INPUT = (
    SEGMENTATION_MODEL
    if config["segmentation"]["model"] == "trained"
    else [config["segmentation"]["model"]] if os.path.isfile(config["segmentation"]["model"]) else []
)

# The settings that shape the labels (params: changing one reruns what depends on it; the
# jobs' threads, memory and runtime live in config key resources, so changing them reruns
# nothing).
SEGMENTATION_SETTINGS = {
    key: config["segmentation"][key]
    for key in (
        "cytoplasm_channel",
        "nucleus_channel",
        "model",
        "mode",
        "diameter",
        "stitch_threshold",
        "flow_threshold",
        "cellprob_threshold",
        "min_size",
    )
}
SEGMENTATION_TRAIN_SETTINGS = dict(config["segmentation"]["train"])
# Sheet rows of segmentation.train.sites ("plate/well/site"), in sheet order.
SEGMENTATION_TRAINING_SITES = SAMPLES.assign(
    name=[f"{p}/{w}/{s}" for p, w, s in zip(SAMPLES.plate, SAMPLES.well, SAMPLES.site)]
).query("name in @config['segmentation']['train']['sites']")
# Sheet rows with a ground-truth label image: the sites the segmentation is scored on.
SEGMENTATION_SCORED_SITES = SAMPLES[SAMPLES["labels"].notna()].sort_values(["plate", "well", "site"])
SEGMENTATION_SCORES = (
    ["results/segmentation/scores.parquet", "results/segmentation/scores.json"]
    if len(SEGMENTATION_SCORED_SITES)
    else []
)
# For the Snakefile's rule all: score_segmentation's targets, none when no site has labels.
segmentation_scores = lambda: SEGMENTATION_SCORES


rule train_segmentation:
    """Train a Cellpose model on 2D z-planes of the annotated sites (segmentation.model: trained)."""
    input:
        images=site_files(SEGMENTATION_TRAINING_SITES),
        index=site_index(SEGMENTATION_TRAINING_SITES),
        labels=list(SEGMENTATION_TRAINING_SITES["labels"]),
    output:
        SEGMENTATION_MODEL,
    log:
        "logs/train_segmentation.log",
    conda:
        "../envs/segmentation.yaml"
    threads: RESOURCES["train_segmentation"]["threads"]
    resources:
        **job_resources("train_segmentation"),
    params:
        sites=site_records(SEGMENTATION_TRAINING_SITES),
        images=IMAGE_SETTINGS,
        cytoplasm_channel=config["segmentation"]["cytoplasm_channel"],
        nucleus_channel=config["segmentation"]["nucleus_channel"],
        settings=SEGMENTATION_TRAIN_SETTINGS,
    script:
        "../scripts/train_segmentation.py"


rule segment:
    """Cellpose on the cytoplasm + nucleus channels: one ZYX label TIFF per site of the well."""
    input:
        images=lambda wc: site_files(well_sites(wc)),
        index=lambda wc: site_index(well_sites(wc)),
        model=SEGMENTATION_MODEL_INPUT,
    output:
        directory("results/segment/{plate}/{well}"),
    log:
        "logs/segment/{plate}/{well}.log",
    conda:
        "../envs/segmentation.yaml"
    threads: RESOURCES["segment"]["threads"]
    resources:
        **job_resources("segment"),
    params:
        # Each site with its label image, inside the output folder (site_labels: the one naming).
        sites=lambda wc: site_records(well_sites(wc), labels=True),
        images=IMAGE_SETTINGS,
        settings=SEGMENTATION_SETTINGS,
    script:
        "../scripts/segment.py"


rule score_segmentation:
    """AP and F1 at IoU 0.5 of the segmentation against every site's ground-truth labels."""
    input:
        segments=sorted(
            {f"results/segment/{r.plate}/{r.well}" for r in SEGMENTATION_SCORED_SITES.itertuples()}
        ),
        labels=list(SEGMENTATION_SCORED_SITES["labels"]),
    output:
        table="results/segmentation/scores.parquet",
        summary="results/segmentation/scores.json",
    log:
        "logs/score_segmentation.log",
    conda:
        "../envs/segmentation.yaml"
    threads: RESOURCES["score_segmentation"]["threads"]
    resources:
        **job_resources("score_segmentation"),
    params:
        sites=[
            {
                "plate": r.plate,
                "well": r.well,
                "site": r.site,
                "prediction": site_labels(r.plate, r.well, r.site),
            }
            for r in SEGMENTATION_SCORED_SITES.itertuples()
        ],
        training_sites=(
            config["segmentation"]["train"]["sites"] if config["segmentation"]["model"] == "trained" else []
        ),
        settings=(
            {**SEGMENTATION_SETTINGS, "train": SEGMENTATION_TRAIN_SETTINGS}
            if config["segmentation"]["model"] == "trained"
            else SEGMENTATION_SETTINGS
        ),
    script:
        "../scripts/score_segmentation.py"


rule segmentation_qc:
    """Cells and foreground per site of a plate; sites far off the plate's flagged by name."""
    input:
        lambda wc: [f"results/segment/{wc.plate}/{w}" for w in WELLS[WELLS.plate == wc.plate].well],
    output:
        "results/segmentation/qc/{plate}.parquet",
    log:
        "logs/segmentation_qc/{plate}.log",
    conda:
        "../envs/analysis.yaml"
    threads: RESOURCES["segmentation_qc"]["threads"]
    resources:
        **job_resources("segmentation_qc"),
    params:
        sites=lambda wc: SAMPLES[SAMPLES.plate == wc.plate][["plate", "well", "site"]].to_dict("records"),
        labels=lambda wc: [
            site_labels(r.plate, r.well, r.site) for r in SAMPLES[SAMPLES.plate == wc.plate].itertuples()
        ],
        max_z=config["segmentation"]["qc"]["max_robust_z"],
    script:
        "../scripts/segmentation_qc.py"


rule mask_review:
    """A page of the report per plate: a seeded sample of sites (the flagged ones first), a
    few planes each, the masks' outlines on the image, the segmentation QC beside them."""
    input:
        images=lambda wc: site_files(SAMPLES[SAMPLES.plate == wc.plate]),
        index=lambda wc: site_index(SAMPLES[SAMPLES.plate == wc.plate]),
        segments=lambda wc: [f"results/segment/{wc.plate}/{w}" for w in WELLS[WELLS.plate == wc.plate].well],
        qc="results/segmentation/qc/{plate}.parquet",
        # AP@0.5 of the sites with ground-truth labels, where there are any.
        scores=SEGMENTATION_SCORES[:1],
    output:
        report(
            "results/segmentation/review/{plate}.png",
            caption="../report/mask_review.rst",
            category="Segmentation",
        ),
    log:
        "logs/mask_review/{plate}.log",
    conda:
        "../envs/analysis.yaml"
    threads: RESOURCES["mask_review"]["threads"]
    resources:
        **job_resources("mask_review"),
    params:
        sites=lambda wc: site_records(SAMPLES[SAMPLES.plate == wc.plate], labels=True),
        images=IMAGE_SETTINGS,
        cytoplasm_channel=config["segmentation"]["cytoplasm_channel"],
        nucleus_channel=config["segmentation"]["nucleus_channel"],
        review={k: v for k, v in config["segmentation"]["qc"].items() if k.startswith("review_")},
    script:
        "../scripts/mask_review.py"
