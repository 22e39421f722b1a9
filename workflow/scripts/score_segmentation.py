"""Score the segmentation against ground truth per site (results/segmentation/scores.*)."""

import json

import pandas as pd
from gradcamo.io import atomic_path, read_labels
from gradcamo.logs import log_to
from gradcamo.segmentation import score_site, summarize_scores

log = log_to(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
sm = snakemake  # noqa: F821
training = set(sm.params.training_sites)
rows = []
for site, truth_path in zip(sm.params.sites, sm.input.labels):
    truth = read_labels(truth_path)
    predicted = read_labels(site["prediction"], shape=truth.shape)
    name = f"{site['plate']}/{site['well']}/{site['site']}"
    score = score_site(truth, predicted, iou=0.5)
    rows.append(
        {
            "plate": site["plate"],
            "well": site["well"],
            "site": int(site["site"]),
            "used_for_training": name in training,
            "n_true": score["n_true"],
            "n_pred": score["n_pred"],
            "tp": score["tp"],
            "fp": score["fp"],
            "fn": score["fn"],
            "ap50": score["ap"],
            "f1": score["f1"],
        }
    )
    log.info("%s%s: %s", name, " (training site)" if name in training else "", score)
scores = pd.DataFrame(rows)
summary = summarize_scores(scores)
summary["iou_threshold"] = 0.5
summary["settings"] = sm.params.settings
with atomic_path(sm.output.table) as tmp:
    scores.to_parquet(tmp, index=False)
with atomic_path(sm.output.summary) as tmp:
    tmp.write_text(json.dumps(summary, indent=2))
log.info("held-out sites: %s", summary["held_out"])
