"""The studies' tables and figure, and the docs' copies of the tables, dated with the commit
and the machine (gradcamo.studies.{attribution,evidence,penalty}.summary_markdown)."""

import json
from pathlib import Path

import pandas as pd
from gradcamo.io import save_figure
from gradcamo.logs import log_to
from gradcamo.studies import attribution, evidence, penalty
from gradcamo.studies.provenance import provenance_line

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = log_to(sm.log[0])
out, p = sm.output, sm.params


def read_json(path):
    return json.loads(Path(path).read_text())


def write(name, text, docs_name=None, title=""):
    """A summary table, and (with ``docs_name``) its copy for the docs under a provenance line."""
    Path(out[name]).write_text(text)
    if docs_name and docs_name in out.keys():
        header = f"# {title}\n\n{provenance_line(p.repository, devices)}\n\n"
        Path(out[docs_name]).write_text(header + text)


# what the models trained on, for the provenance line
devices = [read_json(path).get("numerics", {}).get("device", "cpu") for path in sm.input.train_metrics]

# Wall time of every training job (Snakemake's benchmark of each), for the note on cost.
jobs = pd.concat(
    [pd.read_csv(path, sep="\t").assign(model=Path(path).stem) for path in sm.input.train_benchmarks]
)
jobs[["model", "s", "max_rss"]].to_csv(out.jobs, sep="\t", index=False)
log.info("%d trainings, %.0f s in all", len(jobs), jobs.s.sum())

if "attribution" in out.keys():
    table = pd.concat([pd.read_csv(path, sep="\t") for path in sm.input.attribution_maps], ignore_index=True)
    models = pd.DataFrame([read_json(path) for path in sm.input.attribution_models])
    table.to_csv(out.table, sep="\t", index=False)
    models.to_csv(out.models, sep="\t", index=False)
    text = attribution.summary_markdown(table, models.drop(columns=["seed", "n_test_cells"]))
    write("attribution", text, "docs_attribution", "Which map to trust: the attribution study's tables")

if "evidence" in out.keys():
    cells = pd.concat([pd.read_csv(path, sep="\t") for path in sm.input.evidence_cells], ignore_index=True)
    randomisation = pd.concat(
        [pd.read_csv(path, sep="\t") for path in sm.input.evidence_randomisation], ignore_index=True
    )
    cells.to_csv(out.evidence_cells, sep="\t", index=False)
    randomisation.to_csv(out.evidence_randomisation, sep="\t", index=False)
    curve = evidence.curve(cells, p.control, grid=tuple(p.grid))
    curve.to_csv(out.evidence_curve, sep="\t", index=False)
    figure = evidence.curve_figure(curve, p.chosen, p.plot["figsize"])
    save_figure(figure, out.evidence_figure, dpi=p.plot["dpi"])
    if "docs_evidence_figure" in out.keys():
        save_figure(figure, out.docs_evidence_figure, dpi=p.plot["dpi"])
    text = evidence.summary_markdown(curve, randomisation, p.chosen)
    write("evidence", text, "docs_evidence", "Where the score means something: the evidence study's tables")

if "penalty" in out.keys():
    scores = {Path(path).stem: read_json(path) for path in sm.input.penalty_scores}
    seconds = dict(zip(jobs.model, jobs.s))
    rows = []
    for m, metrics_path in zip(p.penalty_models, sm.input.penalty_metrics):
        name = f"{m['variant']}-{m['context']}-{m['setting']}-seed{m['seed']}"
        metrics = read_json(metrics_path)
        row = {
            "setting": p.labels[m["setting"]],
            "seed": int(m["seed"]),
            "variant": m["variant"],
            "train_seconds": round(seconds[name]),
            "best_epoch": metrics["best_epoch"],
            "epochs_run": metrics["epochs_run"],
        }
        row |= (
            scores[name]
            if m["variant"] == "confounded"
            else {"test_accuracy": metrics["splits"]["test"]["accuracy"]}
        )
        rows.append(row)
    models = pd.DataFrame(rows)
    models.to_csv(out.penalty_models, sep="\t", index=False)
    references = {
        kind: pd.DataFrame([read_json(r["path"]) for r in p.references if r["kind"] == kind])
        for kind in penalty.REFERENCES
    }
    text = penalty.summary_markdown(models, references, order=list(p.labels.values()))
    write("penalty", text, "docs_penalty", "The attention penalty: the penalty study's tables")
log.info("written: %s", ", ".join(out.keys()))
