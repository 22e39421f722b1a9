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
    out["by_class"] = [
        {
            "predicted": name,
            "n_scored": entry.get("n_scored"),
            "share_above": _round(entry.get("share_above")),
            "share_above_shuffled": _round((entry.get("shuffled") or {}).get("share_above")),
            "no_evidence": sum(
                (entry.get("undefined") or {}).get(k, 0) for k in ("baseline_is_class", "low_evidence")
            ),
            "baseline_is_class": (entry.get("undefined") or {}).get("baseline_is_class", 0),
        }
        for name, entry in (summary.get("gradcamo_by_predicted_class") or {}).items()
    ]
    undefined = scores.get("undefined") or {}
    out["no_evidence"] = undefined.get("baseline_is_class", 0) + undefined.get("low_evidence", 0)
    out["n_scored"] = scores.get("n_scored")
    sample = summary.get("attribution_sample") or {}
    out["attribution_sample"] = (
        {"mapped": sample.get("mapped"), "cells": sample.get("cells")} if sample.get("sampled") else None
    )
    checks = summary.get("checks") or {}
    out["randomisation"] = _randomisation(checks.get("randomisation"))
    out["planted"] = _planted(checks.get("planted"))
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}


def _round(value):
    return round(value, 3) if isinstance(value, float) else value


def _randomisation(check: dict | None) -> dict | None:
    """The model randomisation check in a line: the trained model's share above the
    threshold against the randomised copies' range, and a warning when it is within it."""
    if not check:
        return None
    low, high = check["randomised"]["share_above_range"]
    trained = check["trained"]["share_above"]
    line = (
        f"On {check['n_cells']} test cells, Grad-CAMO > threshold for {_pct(trained)} with the trained "
        f"model (its shuffled baseline: {_pct(check['trained'].get('shuffled_above'))}) and "
        f"{_pct(low)} to {_pct(high)} with its weights re-initialised from the top "
        f"(down to {check['randomised']['deepest_level']})."
    )
    if check["within_spread"]:
        line += (
            " WARNING: the trained model does not score above its randomised copies: the map "
            "measures the crop's geometry, not what the model learnt; do not read Grad-CAMO as evidence."
        )
    return {"line": line, "warning": bool(check["within_spread"])}


def _planted(check: dict | None) -> dict | None:
    """The planted-shortcut control in a line: was it caught by the audit, by Grad-CAMO?"""
    if not check:
        return None
    before, after = check["trained"], check["fine_tuned"]
    strength = check.get("marker_strength")
    caught = [
        name
        for name, key in (("the audit", "caught_by_audit"), ("Grad-CAMO", "caught_by_gradcamo"))
        if check[key]
    ]
    line = (
        f"Markers planted in the context of {check['treatment']} crops, a copy fine-tuned on them: its "
        f"accuracy on those cells is {_pct(after.get('accuracy'))} with the markers and "
        f"{_pct(check.get('fine_tuned_accuracy_without_markers'))} without (strength "
        f"{'n/a' if strength is None else f'{strength:+.2f}'}); context reliance "
        f"{_num(before.get('context_reliance'))} -> {_num(after.get('context_reliance'))}, "
        f"Grad-CAMO > threshold {_pct(before.get('share_above'))} -> {_pct(after.get('share_above'))}. "
    )
    if not check.get("learned", True):
        epochs = (check.get("fine_tune") or {}).get("epochs", "its")
        line += (
            f"The copy did not learn the marker in {epochs} epochs: inconclusive, this run holds "
            "no planted shortcut to catch (raise checks.planted.epochs or the marker's strength)."
        )
    elif caught:
        line += f"Caught by {' and '.join(caught)}."
    else:
        line += "Caught by neither: a shortcut this strong would pass unseen."
    return {
        "line": line,
        "learned": bool(check.get("learned", True)),
        "caught_by_audit": check["caught_by_audit"],
        "caught_by_gradcamo": check["caught_by_gradcamo"],
    }


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.0f} %"


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"
