rule study_summary:
    """The studies' tables (results/validate) and the docs' copies of them, each dated with
    the commit and the machine. It only reads the scores: a plotting option reruns it alone."""
    input:
        attribution_maps=model_paths(f"{OUT}/attribution/{{model}}.tsv", attribution_models()),
        attribution_models=model_paths(f"{OUT}/attribution/{{model}}.json", attribution_models()),
        evidence_cells=model_paths(f"{OUT}/evidence/{{model}}.cells.tsv", evidence_models()),
        evidence_randomisation=model_paths(f"{OUT}/evidence/{{model}}.randomisation.tsv", evidence_models()),
        penalty_scores=model_paths(
            f"{OUT}/penalty/{{model}}.json", [m for m in penalty_models() if m[0] == "confounded"]
        ),
        penalty_metrics=model_paths(f"{OUT}/models/{{model}}/metrics.json", penalty_models()),
        train_metrics=model_paths(f"{OUT}/models/{{model}}/metrics.json", study_models()),
        train_benchmarks=model_paths(f"{OUT}/benchmarks/train/{{model}}.tsv", study_models()),
    output:
        **summary_outputs(),
    log:
        "logs/validate/summary.log",
    conda:
        "../../envs/torch.yaml"
    threads: RESOURCES["study_summary"]["threads"]
    resources:
        **job_resources("study_summary"),
    params:
        repository=str(REPO),
        penalty_models=[dict(zip(("variant", "context", "setting", "seed"), m)) for m in penalty_models()],
        labels={name: s["label"] for name, s in SETTINGS.items()},
        references=[
            {"kind": k, "path": f"{OUT}/attribution/{model_name(*KINDS[k], 'weight_0', s)}.json"}
            for k in ("clean", "cell")
            for s in SEEDS
            if (*KINDS[k], "weight_0", s) in attribution_models()
        ],
        control=MAIN["aggregate"]["control"],
        grid=config["evidence"]["grid"],
        chosen=(
            config["evidence"]["chosen"]
            if config["evidence"]["chosen"] is not None
            else MAIN["profile"]["min_evidence"]
        ),
        plot=config["plot"],
    script:
        "../scripts/study_summary.py"
