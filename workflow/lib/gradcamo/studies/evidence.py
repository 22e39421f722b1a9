"""Where does Grad-CAMO start to mean something, and does the map depend on the model at all?
(``profile.min_evidence`` and the model randomisation check.)

:func:`model_cells` profiles the test cells of one model with the profile stage's map
(:func:`gradcamo.profiles.build_profiler`) and the audit, keeping each cell's raw Grad-CAMO,
its shuffled baseline, the evidence the map shares out (p(crop) - p(empty crop) of the
explained class) and the cell's reliance. :func:`curve` reads, for a grid of
``min_evidence`` values, the share of cells kept, Grad-CAMO > 0.5 over them against their
shuffled baseline, the same on treated cells, and the Spearman of Grad-CAMO with cell
reliance; :func:`summary_markdown` shows it beside the randomisation check
(:func:`gradcamo.randomisation.randomisation_table`: the trained model's share above its
randomised copies'), as mean and SD over seeds (docs/validation.md).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import spearmanr

from gradcamo.profiles import build_profiler, profile_store
from gradcamo.store import CropStore

#: The min_evidence values of the curve (-1: no gate).
GRID = (-1.0, 0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
#: The kinds of model read (the attribution study's, :data:`gradcamo.studies.KINDS`).
KINDS = ("clean", "confounded")


def model_cells(kind, seed, model, classes, wells, fill_of, config, device="cpu") -> pd.DataFrame:
    """One row per test cell of one model: raw Grad-CAMO, shuffled, evidence, audit."""
    test = wells[wells.split == "test"]
    margin = config["crops"]["cell_margin"]
    frames = []
    for path, plate in zip(test.store, test.plate):
        store = CropStore.open(path)
        fill = fill_of(plate)
        profiler = build_profiler(model, store.crop_shape, config["profile"], config["voxel_size"], fill)
        r = profile_store(profiler, store, "predicted", 64, device, fill=fill, cell_margin=margin)
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


def curve_figure(table: pd.DataFrame, chosen: float, figsize: Sequence[float] = (11, 4)) -> Figure:
    """Gap over the shuffled baseline, Spearman with cell reliance and the share of cells kept
    against min_evidence (``table``: :func:`curve`), ``chosen`` marked."""
    grid = sorted(table.min_evidence.unique())
    figure = Figure(figsize=tuple(figsize), layout="constrained")
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
        if chosen in grid:
            ax.axvline(grid.index(chosen), color="grey", linestyle="--", label=f"chosen {chosen:g}")
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
        return f"{m:.{digits}f}" + (f"±{s:.{digits}f}" if np.isfinite(s) else "")

    lines = [
        "| min_evidence | kind | cells kept (%) | Grad-CAMO > 0.5 (%) | shuffled (%) "
        "| treated cells > 0.5 (%) | treated, shuffled (%) | Spearman with cell reliance |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in sorted(table.min_evidence.unique()):
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
            f"| {kind} | {_mean_sd(100 * trained)} | "
            f"{100 * random.share_above.min():.0f} to {100 * random.share_above.max():.0f} | "
            f"{_mean_sd(100 * deepest)} | {_mean_sd(margin)} |"
        )
    return "\n".join(lines) + "\n"


def _mean_sd(values: pd.Series) -> str:
    """``mean±SD`` to whole numbers (the mean alone from one value)."""
    sd = values.std(ddof=1)
    return f"{values.mean():.0f}" + (f"±{sd:.0f}" if np.isfinite(sd) else "")
