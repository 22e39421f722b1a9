# gradcamo: interpretable single-cell morphological profiles from 3D Cell Painting z-stacks.
# Stages and files: see README.md and ../shared/DESIGN.md. Logic lives in workflow/lib/gradcamo.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/images.smk"
include: "workflow/rules/qc.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/crops.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/profile.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    default_target: True
    input:
        expand("results/qc/{plate}.layout.png", plate=sorted(set(WELLS.plate))),
        expand("results/qc/{plate}.channel_correlation.png", plate=sorted(set(WELLS.plate))),
        expand_wells("results/qc/{plate}/{well}.parquet"),
        segmentation_scores(),
        expand("results/segmentation/qc/{plate}.parquet", plate=sorted(set(WELLS.plate))),
        "results/train/metrics.json",
        expand_wells("results/profiles/{plate}/{well}.parquet"),
        aggregate_targets(),
