"""Validation study: where does Grad-CAMO start to mean something, and does the map depend on
the model at all? (``profile.min_evidence`` and the model randomisation check.)

On the mini dataset's clean and confounded variants (the models of
``bench/validate_attribution.py``, trained once per seed and shared with it), it profiles the
test cells of every model with the default map (integrated gradients from the plate's fill,
the mini config's steps) and the audit, keeping each cell's raw Grad-CAMO, its shuffled
baseline, the evidence the map shares out (p(crop) - p(empty crop) of the explained class)
and the cell's reliance; and runs the model randomisation check
(:func:`gradcamo.randomisation.randomisation_table`) on a seeded sample of test cells.

For a grid of ``min_evidence`` values it then reports, as mean and SD over seeds: the share
of cells kept, Grad-CAMO > 0.5 over the kept cells against their shuffled baseline, the same
on treated (non-control) cells, and the Spearman of Grad-CAMO with cell reliance; and the
trained model's share above the randomised copies'. Writes ``results/validate/evidence/``:
``cells.tsv``, ``randomisation.tsv``, ``curve.tsv``, ``curve.png`` and ``summary.md`` (the
tables docs/validation.md shows).

    .venv/bin/python bench/validate_evidence.py    # 3 seeds (trains the models it lacks)
"""

from __future__ import annotations

import json
import logging
import time

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from gradcamo.config import load_config  # noqa: E402
from gradcamo.figures import save_figure  # noqa: E402
from gradcamo.planted import sample_cells  # noqa: E402
from gradcamo.profiles import build_profiler, profile_store  # noqa: E402
from gradcamo.randomisation import randomisation_table  # noqa: E402
from gradcamo.store import CropStore  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from validate_attribution import REPO, study_arguments, trained_model, variant_splits  # noqa: E402

log = logging.getLogger("validate")
#: The min_evidence values of the curve (-1: no gate).
GRID = (-1.0, 0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
KINDS = ("clean", "confounded")


def model_cells(kind, seed, model, classes, wells, fill_of, config) -> pd.DataFrame:
    """One row per test cell of one model: raw Grad-CAMO, shuffled, evidence, audit."""
    test = wells[wells.split == "test"]
    margin = config["crops"]["cell_margin"]
    frames = []
    for path, plate in zip(test.store, test.plate):
        store = CropStore.open(path)
        fill = fill_of(plate)
        profiler = build_profiler(model, store.crop_shape, config["profile"], config["voxel_size"], fill)
        r = profile_store(profiler, store, "predicted", 64, "cpu", fill=fill, cell_margin=margin)
        frames.append(
            pd.DataFrame(
                {
                    "kind": kind,
                    "seed": seed,
                    "treatment": store.cells["Metadata_Treatment"].to_numpy(),
                    "predicted": np.asarray(classes)[r["explained"]],
                    "gradcamo": r["scores"],
                    "shuffled": r["shuffled"],
                    "evidence": r["evidence"],
                    "baseline_is_class": r["baseline_class"] == r["explained"],
                    "cell_reliance": r["audit"]["cell"],
                    "context_reliance": r["audit"]["context"],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def curve(cells: pd.DataFrame, control: str, grid=GRID) -> pd.DataFrame:
    """Per kind, seed and ``min_evidence``: the cells kept and what Grad-CAMO says over them."""
    rows = []
    for (kind, seed), group in cells.groupby(["kind", "seed"], sort=True):
        for t in grid:
            kept = group[(group.evidence >= t) & np.isfinite(group.gradcamo)]
            treated = kept[kept.treatment != control]
            ok = kept[["gradcamo", "cell_reliance"]].dropna()
            rho = spearmanr(ok.gradcamo, ok.cell_reliance).statistic if len(ok) > 2 else np.nan
            rows.append(
                {
                    "kind": kind,
                    "seed": seed,
                    "min_evidence": t,
                    "kept": len(kept) / len(group),
                    "share_above": float((kept.gradcamo > 0.5).mean()) if len(kept) else np.nan,
                    "shuffled_above": float((kept.shuffled > 0.5).mean()) if len(kept) else np.nan,
                    "treated_share_above": float((treated.gradcamo > 0.5).mean()) if len(treated) else np.nan,
                    "treated_shuffled_above": float((treated.shuffled > 0.5).mean())
                    if len(treated)
                    else np.nan,
                    "spearman": float(rho),
                }
            )
    out = pd.DataFrame(rows)
    out["gap"] = out.share_above - out.shuffled_above
    return out


def curve_figure(table: pd.DataFrame, chosen: float) -> Figure:
    """Gap over the shuffled baseline and Spearman with cell reliance against min_evidence."""
    figure = Figure(figsize=(11, 4), layout="constrained")
    axes = figure.subplots(1, 3)
    grouped = table.groupby(["kind", "min_evidence"])
    mean, sd = grouped.mean(numeric_only=True), grouped.std(ddof=1, numeric_only=True)
    for ax, metric, label in zip(
        axes,
        ("gap", "spearman", "kept"),
        ("Grad-CAMO > 0.5 minus shuffled (points)", "Spearman with cell reliance", "share of cells kept"),
    ):
        for kind, colour in zip(KINDS, ("#2ca02c", "#d62728")):
            if kind not in mean.index.get_level_values(0):
                continue
            m, s = mean.loc[kind][metric], sd.loc[kind][metric].fillna(0)
            x = np.arange(len(m))
            scale = 100 if metric == "gap" else 1
            ax.errorbar(x, scale * m, yerr=scale * s, marker="o", color=colour, label=kind, capsize=3)
            ax.set_xticks(x, [("none" if v < -0.5 else f"{v:g}") for v in m.index], rotation=45)
        ax.axvline(list(GRID).index(chosen), color="grey", linestyle="--", label=f"chosen {chosen:g}")
        ax.set_xlabel("min_evidence (p(crop) - p(empty crop))")
        ax.set_ylabel(label)
    axes[0].legend(fontsize="small")
    figure.suptitle("Where Grad-CAMO starts to mean something (test cells, mean ± SD over seeds)")
    return figure


def summary_markdown(table: pd.DataFrame, randomisation: pd.DataFrame, chosen: float) -> str:
    """The study's tables as Markdown: the curve, and trained against randomised."""
    grouped = table.groupby(["kind", "min_evidence"])
    mean, sd = grouped.mean(numeric_only=True), grouped.std(ddof=1, numeric_only=True)

    def cell(kind, t, metric, scale=100, digits=0):
        m, s = mean.loc[(kind, t), metric] * scale, sd.loc[(kind, t), metric] * scale
        return f"{m:.{digits}f}±{s:.{digits}f}"

    lines = [
        "| min_evidence | kind | cells kept (%) | Grad-CAMO > 0.5 (%) | shuffled (%) "
        "| treated cells > 0.5 (%) | treated, shuffled (%) | Spearman with cell reliance |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in GRID:
        for kind in KINDS:
            if (kind, t) not in mean.index:
                continue
            label = "none" if t < -0.5 else f"{t:g}" + (" (chosen)" if t == chosen else "")
            lines.append(
                f"| {label} | {kind} | {cell(kind, t, 'kept')} | {cell(kind, t, 'share_above')} | "
                f"{cell(kind, t, 'shuffled_above')} | {cell(kind, t, 'treated_share_above')} | "
                f"{cell(kind, t, 'treated_shuffled_above')} | {cell(kind, t, 'spearman', 1, 2)} |"
            )
    lines += [
        "",
        "| kind | trained: Grad-CAMO > 0.5 (%) | randomised copies, every level and seed (%) "
        "| whole network re-initialised (%) | trained minus the highest fully randomised copy, "
        "mean ± SD over seeds (points) |",
        "|---|---|---|---|---|",
    ]
    for kind in KINDS:
        rows = randomisation[randomisation.kind == kind]
        if rows.empty:
            continue
        trained = rows[rows.depth == 0].set_index("model_seed").share_above
        random = rows[rows.depth > 0]
        deepest = random[random.depth == random.depth.max()]
        highest = deepest.groupby("model_seed").share_above.max()
        deepest = deepest.share_above
        margin = 100 * (trained - highest)
        lines.append(
            f"| {kind} | {100 * trained.mean():.0f}±{100 * trained.std(ddof=1):.0f} | "
            f"{100 * random.share_above.min():.0f} to {100 * random.share_above.max():.0f} | "
            f"{100 * deepest.mean():.0f}±{100 * deepest.std(ddof=1):.0f} | "
            f"{margin.mean():.0f}±{margin.std(ddof=1):.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = study_arguments(__doc__)
    parser.add_argument("--randomisation-cells", type=int, default=32, help="test cells per model")
    parser.add_argument("--randomisation-seeds", type=int, default=2, help="copies per cascade level")
    parser.add_argument(
        "--chosen", type=float, default=None, help="min_evidence to mark (default: the schema's)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("gradcamo.profiles", "gradcamo.training"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(args.cores)
    config = load_config(REPO / ".test" / "config" / "config.yaml")
    if args.ig_steps:
        config["profile"]["ig_steps"] = args.ig_steps
    chosen = config["profile"]["min_evidence"] if args.chosen is None else args.chosen
    out = args.out / "evidence"
    out.mkdir(parents=True, exist_ok=True)
    _, splits = variant_splits(args.out, config, args.cores, ["confounded", "clean"])
    control = config["aggregate"]["control"]
    cells, randomisation = [], []
    start = time.perf_counter()
    for seed in range(args.seeds):
        for kind in KINDS:
            wells = splits[kind]
            model, classes = trained_model(
                args.out / "models" / f"{kind}-seed{seed}.pt",
                {"train": {**config["train"], "seed": seed}, "crops": config["crops"], "kind": kind},
                wells,
                config,
                False,
            )
            model.eval()

            def fill_of(plate, kind=kind):
                return np.load(args.out / kind / f"results/crops/{plate}/fill.npy")

            cells.append(model_cells(kind, seed, model, classes, wells, fill_of, config))
            test = wells[wells.split == "test"]
            stores = [CropStore.open(p) for p in test.store]
            images, masks, _, _ = sample_cells(stores, ["all"] * len(stores), args.randomisation_cells, 0)
            fill = np.concatenate([fill_of(p) for p in sorted(set(test.plate))])
            rows = randomisation_table(
                model,
                lambda m: build_profiler(m, images.shape[2:], config["profile"], config["voxel_size"], fill),
                images,
                masks,
                stages=None,
                seeds=range(args.randomisation_seeds),
            )
            randomisation += [{**r, "kind": kind, "model_seed": seed} for r in rows]
            log.info("%s seed %d done (%.0f s)", kind, seed, time.perf_counter() - start)
            pd.concat(cells).to_csv(out / "cells.tsv", sep="\t", index=False)
            pd.DataFrame(randomisation).to_csv(out / "randomisation.tsv", sep="\t", index=False)
    cells, randomisation = pd.concat(cells, ignore_index=True), pd.DataFrame(randomisation)
    table = curve(cells, control)
    table.to_csv(out / "curve.tsv", sep="\t", index=False)
    save_figure(curve_figure(table, chosen), out / "curve.png")
    text = summary_markdown(table, randomisation, chosen)
    (out / "summary.md").write_text(text)
    print(text)
    print(json.dumps({"seeds": args.seeds, "out": str(out), "wall_s": round(time.perf_counter() - start)}))


if __name__ == "__main__":
    main()
