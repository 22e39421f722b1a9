"""The run's answer in a few numbers, for the report's front page (from ``summary.json``).

Imports nothing but the standard library: the Snakefile reads it when it builds the report,
in whatever environment Snakemake itself runs in.
"""

from __future__ import annotations


def headline(summary: dict) -> dict | None:
    """The answer for the report's front page, from ``summary.json``: test accuracy and
    chance, the share of test cells with Grad-CAMO above the threshold and that share when
    each cell's mask is scored on another cell's map (``share_above_shuffled``: what looking
    at the crop's centre alone scores), accuracy from the
    cell alone against the context alone, Spearman of Grad-CAMO with cell reliance, the
    background leak, and a one-line ``verdict``. None before a run has a summary."""
    test = (summary.get("accuracy") or {}).get("test") or {}
    audit = summary.get("audit") or {}
    audited = (audit.get("by_split") or {}).get("test") or {}
    scores = (summary.get("gradcamo_by_split") or {}).get("test") or summary.get("gradcamo") or {}
    leak = audit.get("background_leak") or {}
    chance = test.get("chance_level")
    out = {
        "test_accuracy": test.get("accuracy"),
        "chance": chance,
        "threshold": scores.get("threshold"),
        "share_above": scores.get("share_above"),
        "share_above_shuffled": (scores.get("shuffled") or {}).get("share_above"),
        "cell_only": audited.get("cell_only"),
        "context_only": audited.get("context_only"),
        "spearman": audited.get("spearman_gradcamo_cell_reliance"),
        "background_leak": leak.get("accuracy"),
    }
    if not audit:
        out["verdict"] = "No audit in this run (profile.audit is off): Grad-CAMO stands unchecked."
    elif None in (out["cell_only"], out["context_only"], chance):
        out["verdict"] = "Too few test cells to judge."
    else:
        cell, context = out["cell_only"] - chance, out["context_only"] - chance
        if cell > 2 * max(context, 0.0) and cell > 0.05:
            out["verdict"] = "The model predicts mostly from the cell: its context alone gives much less."
        elif context > 2 * max(cell, 0.0) and context > 0.05:
            out["verdict"] = (
                "The model predicts mostly from the context (neighbours, background): "
                "a shortcut, whatever Grad-CAMO says."
            )
        else:
            out["verdict"] = "The model uses both the cell and its context."
        if out["background_leak"] is not None and out["background_leak"] > chance + 0.10:
            out["verdict"] += (
                " The background alone predicts held-out wells' treatment "
                f"({out['background_leak']:.2f} vs chance {chance:.2f}): the crops leak it."
            )
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}
