rule study_train:
    """One model of the studies: the train rule's function and per-epoch validation audit on
    a variant's crops (context full or cell), with a setting's train overrides and a seed.
    Changing what it trains with (params) retrains it; nothing else does."""
    input:
        wells=wells_table,
    output:
        model=f"{OUT}/models/{{variant}}-{{context}}-{{setting}}-seed{{seed}}/model.pt",
        history=f"{OUT}/models/{{variant}}-{{context}}-{{setting}}-seed{{seed}}/history.tsv",
        metrics=f"{OUT}/models/{{variant}}-{{context}}-{{setting}}-seed{{seed}}/metrics.json",
    log:
        "logs/validate/train/{variant}-{context}-{setting}-seed{seed}.log",
    benchmark:
        f"{OUT}/benchmarks/train/{{variant}}-{{context}}-{{setting}}-seed{{seed}}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: RESOURCES["study_train"]["threads"]
    resources:
        **job_resources("study_train"),
    params:
        settings=train_settings,
        channels=MAIN["channels"],
        crop_shape=MAIN["crops"]["shape"],
        cell_margin=MAIN["crops"]["cell_margin"],
        fill_seed=MAIN["crops"]["fill"]["seed"],
    script:
        "../scripts/study_train.py"
