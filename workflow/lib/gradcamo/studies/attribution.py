"""Which attribution method and layer make Grad-CAMO agree with the counterfactual audit?

Three kinds of model (:data:`gradcamo.studies.KINDS`) are trained over seeds: ``clean``
(full-context crops of the clean variant: honest by construction), ``confounded`` (full
context of the confounded variant: it can read the debris) and ``cell`` (the confounded
variant with ``crops.context: cell``: the shortcut removed). :func:`score_model` profiles the
test cells of one model with every method × layer of :func:`gradcamo.studies.design.grid`
(:class:`gradcamo.gradcam.GradCamProfiler`) and runs the counterfactual audit once
(:func:`gradcamo.profiles.profile_store`), scoring each map on the model's own crops.
:func:`summary_markdown` reports per method × layer, as mean and SD over seeds: Grad-CAMO's
share above 0.5 beside its shuffled baseline (each cell's mask on another cell's map), its
mean, the enrichment over the uniform map, its Spearman correlation with the audit's cell
reliance, and the separation of the cheating model from the honest one in units of the
seeds' spread (docs/validation.md).
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from gradcamo.attribution_methods import LAYER_METHODS
from gradcamo.gradcam import GradCamProfiler
from gradcamo.profiles import profile_store
from gradcamo.store import CropStore
from gradcamo.studies import KINDS

log = logging.getLogger("gradcamo.studies")


def score_maps(profiler, store, fill, margin, device="cpu") -> dict:
    """Grad-CAMO, its uniform baseline and (with a fill) the audit of every cell of a store."""
    return profile_store(profiler, store, "predicted", 64, device, fill=fill, cell_margin=margin)


def score_model(
    kind: str,
    seed: int,
    model,
    classes: Sequence[str],
    wells: pd.DataFrame,
    fills: dict,
    margin: int,
    methods: list[tuple[str, str, tuple[float, float, float]]],
    ig_steps: int,
    device="cpu",
) -> tuple[list[dict], dict]:
    """``(rows, summary)`` of one trained model on its test wells (``wells``: the split with
    each well's crop store, column ``store``; ``fills``: the plates' fills, C×Z×Y×X): a row
    per method × layer of ``methods`` (:func:`gradcamo.studies.design.grid`), and the
    model's accuracy and audit. ``model`` is on ``device``."""
    model = model.eval()
    test = wells[wells.split == "test"]
    stores = [CropStore.open(p) for p in test.store]
    truth = np.concatenate([s.cells["Metadata_Treatment"].to_numpy() for s in stores])
    classes = np.asarray(classes)
    # The audit (reliance does not depend on the map): once per model, with Grad-CAM.
    audit = [
        score_maps(GradCamProfiler(model, "_blocks.2"), s, fills[p], margin, device)
        for s, p in zip(stores, test.plate)
    ]
    reliance = np.concatenate([a["audit"]["cell"] for a in audit])
    context = np.concatenate([a["audit"]["context"] for a in audit])
    predicted = classes[np.concatenate([a["probabilities"].argmax(1) for a in audit])]
    from_cell = classes[np.concatenate([a["audit"]["from_cell"] for a in audit])]
    from_context = classes[np.concatenate([a["audit"]["from_context"] for a in audit])]
    uniform = np.concatenate([a["uniform"] for a in audit])
    summary = {
        "kind": kind,
        "seed": seed,
        "n_test_cells": int(len(truth)),
        "test_accuracy": float(np.mean(predicted == truth)),
        "cell_only_accuracy": float(np.mean(from_cell == truth)),
        "context_only_accuracy": float(np.mean(from_context == truth)),
        "cell_reliance": float(np.mean(reliance)),
        "context_reliance": float(np.mean(context)),
        "uniform_gradcamo": float(np.mean(uniform)),
    }
    rows = []
    for method, layer, sigmas in methods:
        # the row's label names the smoothing; the input-level maps have no layer to name
        target = layer if method in LAYER_METHODS else "input"
        scored = [
            score_maps(
                GradCamProfiler(model, target, method, fills[p].mean(0), ig_steps, sigmas), s, None, margin
            )
            for s, p in zip(stores, test.plate)
        ]
        scores = np.concatenate([r["scores"] for r in scored])
        # the shuffled baseline: each cell's mask on another cell's map (the crop's centre)
        shuffled = np.concatenate([r["shuffled"] for r in scored])
        ok = np.isfinite(scores)
        rho = spearmanr(scores[ok], reliance[ok]).statistic if ok.sum() > 2 else np.nan
        rows.append(
            {
                "kind": kind,
                "seed": seed,
                "method": method,
                "layer": layer,
                "mean_gradcamo": float(np.nanmean(scores)),
                "share_above_0.5": float(np.mean(scores[ok] > 0.5)) if ok.any() else np.nan,
                "enrichment": float(np.nanmean(scores) / np.mean(uniform)),
                "spearman_cell_reliance": float(rho),
                "mean_gradcamo_shuffled": float(np.nanmean(shuffled)),
                "share_above_0.5_shuffled": float(np.mean(shuffled[np.isfinite(shuffled)] > 0.5)),
            }
        )
        log.info(
            "%s seed %d %s %s: %s",
            kind,
            seed,
            method,
            layer,
            {k: round(v, 3) for k, v in rows[-1].items() if isinstance(v, float)},
        )
    return rows, summary


def separation(table: pd.DataFrame, metric: str, cheat: str, honest: str) -> pd.Series:
    """Per method x layer: (honest mean - cheat mean) / pooled SD over seeds of ``metric``."""
    grouped = table.groupby(["method", "layer", "kind"])[metric]
    mean, sd = grouped.mean().unstack("kind"), grouped.std(ddof=1).unstack("kind")
    if cheat not in mean or honest not in mean:  # a study without one of the two kinds
        return pd.Series(np.nan, index=mean.index)
    spread = np.sqrt((sd[cheat] ** 2 + sd[honest] ** 2) / 2).replace(0, np.nan)
    return (mean[honest] - mean[cheat]) / spread


def summary_markdown(table: pd.DataFrame, models: pd.DataFrame) -> str:
    """The study's tables as Markdown: per method × layer (``table``: rows of
    :func:`score_model`) and per kind of model (``models``: its summaries). A kind the study
    did not train shows as ``–``."""
    grouped = table.groupby(["method", "layer", "kind"])
    mean, sd = grouped.mean(numeric_only=True), grouped.std(ddof=1, numeric_only=True)
    lines = [
        "| method | layer | share > 0.5: clean / confounded / cell | the same masks on other cells' "
        "maps (shuffled baseline): clean / confounded / cell | mean Grad-CAMO: clean / "
        "confounded / cell | enrichment (clean) | Spearman vs cell reliance (clean) | "
        "separation of share > 0.5, clean vs confounded (SD) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sep = separation(table, "share_above_0.5", "confounded", "clean")
    for (method, layer), _ in table.groupby(["method", "layer"]):

        def cell(metric, kind):
            if metric not in mean.columns or (method, layer, kind) not in mean.index:
                return "–"
            m, s = mean.loc[(method, layer, kind), metric], sd.loc[(method, layer, kind), metric]
            return f"{m:.2f}" + (f"±{s:.2f}" if np.isfinite(s) else "")

        lines.append(
            f"| {method} | {layer} | "
            + " / ".join(cell("share_above_0.5", k) for k in KINDS)
            + " | "
            + " / ".join(cell("share_above_0.5_shuffled", k) for k in KINDS)
            + " | "
            + " / ".join(cell("mean_gradcamo", k) for k in KINDS)
            + " | "
            + f"{cell('enrichment', 'clean')} | {cell('spearman_cell_reliance', 'clean')} | "
            + f"{sep.get((method, layer), np.nan):.1f} |"
        )
    per_kind = models.groupby("kind").agg(["mean", "std"]).round(3)
    lines += [
        "",
        "| model | test accuracy | from cell alone | from context alone | cell reliance | context reliance |",
        "|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        if kind not in per_kind.index:
            continue
        row = per_kind.loc[kind]

        def value(metric):
            m, s = row[(metric, "mean")], row[(metric, "std")]
            return f"{m:.2f}" + (f"±{s:.2f}" if np.isfinite(s) else "")

        lines.append(
            f"| {kind} | "
            + " | ".join(
                value(m)
                for m in (
                    "test_accuracy",
                    "cell_only_accuracy",
                    "context_only_accuracy",
                    "cell_reliance",
                    "context_reliance",
                )
            )
            + " |"
        )
    return "\n".join(lines) + "\n"
