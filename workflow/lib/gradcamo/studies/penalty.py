"""Does a penalised model look at the cell? The attention penalty's study.

For each training setting (``train`` overrides: the attention penalty's weight and method,
the context swap, the selection criterion) and seed, a model is trained on the confounded
variant and one on the clean variant (the ``train`` rule's function and validation audit).
:func:`evaluate` reads on the confounded model's test wells:

- accuracy on the confounded test cells, and on *the same cells without the shortcut*: the
  clean variant's z-stacks cropped with the confounded run's own labels, normalisation and
  crop settings (:func:`gradcamo.studies.variants.counterpart_stores`);
- the audit (:mod:`gradcamo.audit`): mean cell reliance and context reliance;
- Grad-CAMO's share > 0.5 under input × gradient and under LayerCAM at ``_blocks.0``
  (:data:`MAPS`): a model penalised with one is judged by the other too, since a penalised
  map can be fooled without the model changing (Heo et al., 2019); and under integrated
  gradients, the profile stage's default, which no setting is trained on;

and the clean model's test accuracy is what the setting costs there.
:func:`summary_markdown` compares each setting with ``weight 0`` on the same seeds against
:data:`BAR`, beside two of the attribution study's models as references
(:data:`REFERENCES`): where a penalty would land that removed exactly the shortcut, and one
that removed the whole context (docs/regulariser.md).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from gradcamo.gradcam import GradCamProfiler
from gradcamo.profiles import profile_store
from gradcamo.store import CropStore

#: The maps every model is scored with: the default (input x gradient) and LayerCAM at
#: the finest block. A setting penalised with one is judged by the other too: a penalised map
#: can be fooled without the model changing (Heo et al., 2019), a held-out map less easily.
MAPS = {"input_x_gradient": ("input_x_gradient", "input"), "layercam_blocks.0": ("layercam", "_blocks.0")}
#: The label of the setting every other is compared with.
BASELINE = "weight 0"


def share_above(profilers, stores, device="cpu") -> float:
    scores = np.concatenate(
        [
            profile_store(profiler, s, "predicted", 64, device)["scores"]
            for profiler, s in zip(profilers, stores)
        ]
    )
    ok = np.isfinite(scores)
    return float(np.mean(scores[ok] > 0.5))


def evaluate(
    model,
    classes: Sequence[str],
    split: pd.DataFrame,
    fills: dict,
    margin: int,
    counterparts: dict | None,
    ig_steps: int,
    smoothing: tuple[float, float, float] = (0.0, 0.0, 0.0),
    device="cpu",
) -> dict:
    """Accuracy, the audit and Grad-CAMO of one model on its test wells (``split``: the well
    split with each well's crop store, column ``store``; ``fills``: the plates' fills;
    ``counterparts``: the shortcut-free stores by (plate, well)); integrated gradients with
    ``ig_steps`` and ``smoothing`` (the profile stage's map)."""
    model = model.eval()
    classes = np.asarray(classes)
    test = split[split.split == "test"]
    stores = [CropStore.open(p) for p in test.store]
    truth = np.concatenate([s.cells["Metadata_Treatment"].to_numpy() for s in stores])
    default = GradCamProfiler(model, MAPS["input_x_gradient"][1], MAPS["input_x_gradient"][0])
    audit = [
        profile_store(default, s, "predicted", 64, device, fill=fills[p], cell_margin=margin)
        for s, p in zip(stores, test.plate)
    ]
    predicted = classes[np.concatenate([a["probabilities"].argmax(1) for a in audit])]
    row = {
        "test_accuracy": float(np.mean(predicted == truth)),
        "cell_reliance": float(np.mean(np.concatenate([a["audit"]["cell"] for a in audit]))),
        "context_reliance": float(np.mean(np.concatenate([a["audit"]["context"] for a in audit]))),
        "share_above_0.5_input_x_gradient": float(
            np.mean(np.concatenate([a["scores"] for a in audit]) > 0.5)
        ),
        "share_above_0.5_layercam_blocks.0": share_above(
            [GradCamProfiler(model, MAPS["layercam_blocks.0"][1], MAPS["layercam_blocks.0"][0])]
            * len(stores),
            stores,
            device,
        ),
        # The profile stage's default map, which no setting can be trained on (not a penalty
        # method): held out from every setting.
        "share_above_0.5_integrated_gradients": share_above(
            [
                GradCamProfiler(
                    model,
                    method="integrated_gradients",
                    baseline=fills[p].mean(0),
                    steps=ig_steps,
                    smoothing_sigma=smoothing,
                )
                for p in test.plate
            ],
            stores,
            device,
        ),
    }
    if counterparts is not None:
        clean = [CropStore.open(counterparts[p, w]) for p, w in zip(test.plate, test.well)]
        with torch.no_grad():
            predicted = np.concatenate(
                [
                    model(torch.from_numpy(np.asarray(s.images, np.float32)).to(device))
                    .argmax(1)
                    .cpu()
                    .numpy()
                    for s in clean
                ]
            )
        clean_truth = np.concatenate([s.cells["Metadata_Treatment"].to_numpy() for s in clean])
        row["shortcut_free_accuracy"] = float(np.mean(classes[predicted] == clean_truth))
    return row


#: The bar a recommended setting must clear against weight 0 on the confounded variant, as
#: the change of the mean over seeds: Grad-CAMO > 0.5 under a map no setting is trained on
#: (integrated gradients) and mean cell reliance up by 20 points each, accuracy on the
#: shortcut-free counterparts up; and at most 2 points of test accuracy lost on the clean one.
BAR = {"share_above_0.5_integrated_gradients": 0.20, "cell_reliance": 0.20, "shortcut_free_accuracy": 0.0}
CLEAN_COST_LIMIT = 0.02


def setting_order(models: pd.DataFrame, order: Sequence[str] | None) -> list[str]:
    """The settings of ``models`` in ``order`` (unknown ones after it, as they come)."""
    present = list(dict.fromkeys(models.setting))
    order = list(order or [])
    return [s for s in order if s in present] + [s for s in present if s not in order]


def against_weight_0(models: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Each setting's change over weight 0 on the same seed: one row per setting and seed
    with the differences of :data:`BAR`'s metrics (confounded variant; NaN where either model
    is missing) and ``clean_cost``, weight 0's clean-variant test accuracy minus the
    setting's. Pairing by seed takes the seeds' common part (the crops, the split, the
    initial weights) out of the comparison."""
    confounded = models[models.variant == "confounded"].set_index(["setting", "seed"])
    clean = models[models.variant == "clean"].set_index(["setting", "seed"])["test_accuracy"]
    trained = {"confounded": set(confounded.index), "clean": set(clean.index)}
    rows = []
    for setting in [s for s in setting_order(models, order) if s != BASELINE]:
        for seed in sorted(models.loc[models.setting == setting, "seed"].unique()):
            pair = [(setting, seed), (BASELINE, seed)]
            row = {"setting": setting, "seed": int(seed)}
            for metric in BAR:
                row[metric] = (
                    confounded.loc[pair[0], metric] - confounded.loc[pair[1], metric]
                    if set(pair) <= trained["confounded"]
                    else np.nan
                )
            row["clean_cost"] = clean[pair[1]] - clean[pair[0]] if set(pair) <= trained["clean"] else np.nan
            rows.append(row)
    return pd.DataFrame(rows, columns=["setting", "seed", *BAR, "clean_cost"])


#: The attribution study's models that stand as references for what the bar asks (its
#: ``models.tsv`` kinds, each trained with the weight 0 recipe): where a penalty would land
#: that removed exactly the shortcut (the clean model: no debris in its data, its
#: neighbours kept), and one that took the model off its context entirely (the cell model:
#: ``crops.context: cell``, the context replaced by the fill).
REFERENCES = {
    "clean": "no shortcut, neighbours kept (the clean model)",
    "cell": "no context (`crops.context: cell`)",
}


def reference_against_weight_0(models: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """What the bar asks, measured on a reference model (:data:`REFERENCES`; ``reference``
    is its rows of the attribution study's ``models.tsv``) against ``weight 0`` on the same
    seeds. Per seed: the change of cell reliance; of accuracy on the test cells without
    the shortcut (the reference's own test accuracy -- its crops carry no debris -- against
    weight 0's on the shortcut-free counterparts); and ``clean_cost``, the clean variant's
    weight 0 test accuracy minus the reference's (0 for the clean model itself). The debris
    lies outside the cells only, so the cell model's crops are the clean variant's but for
    debris within the mask's margin. Seeds weight 0 lacks on either variant are left out. A
    part of the bar a reference misses, a penalty aiming at what it stands for is not
    expected to meet on this data either."""
    columns = ["seed", "cell_reliance", "context_reliance", "shortcut_free_accuracy", "clean_cost"]
    if reference.empty:
        return pd.DataFrame(columns=columns)
    weight0 = models[models.setting == BASELINE]
    confounded = weight0[weight0.variant == "confounded"].set_index("seed")
    clean = weight0[weight0.variant == "clean"].set_index("seed")["test_accuracy"]
    rows = [
        {
            "seed": int(m.seed),
            "cell_reliance": m.cell_reliance - confounded.loc[m.seed, "cell_reliance"],
            "context_reliance": m.context_reliance,
            "shortcut_free_accuracy": m.test_accuracy - confounded.loc[m.seed, "shortcut_free_accuracy"],
            "clean_cost": clean[m.seed] - m.test_accuracy,
        }
        for m in reference.itertuples()
        if m.seed in confounded.index and m.seed in clean.index
    ]
    return pd.DataFrame(rows, columns=columns)


def summary_markdown(
    models: pd.DataFrame,
    references: dict[str, pd.DataFrame] | None = None,
    order: Sequence[str] | None = None,
) -> str:
    """The study's tables (``models``: a row per trained model, column ``setting`` its label);
    ``references``, per kind of :data:`REFERENCES`, its models (none shown if ``None``);
    ``order``, the settings' labels in the order of the rows (default: as they come)."""
    metrics = {
        "share_above_0.5_input_x_gradient": "Grad-CAMO > 0.5, input×gradient",
        "share_above_0.5_layercam_blocks.0": "Grad-CAMO > 0.5, LayerCAM _blocks.0",
        "share_above_0.5_integrated_gradients": "Grad-CAMO > 0.5, integrated gradients",
        "cell_reliance": "cell reliance",
        "context_reliance": "context reliance",
        "test_accuracy": "accuracy, confounded test cells",
        "shortcut_free_accuracy": "accuracy, same cells without the shortcut",
    }
    confounded = models[models.variant == "confounded"].groupby("setting", sort=False)
    clean = models[models.variant == "clean"].groupby("setting", sort=False)["test_accuracy"]

    def cell(mean, sd, digits=2):
        return f"{mean:.{digits}f}" + (f"±{sd:.{digits}f}" if np.isfinite(sd) else "")

    lines = [
        "| setting | "
        + " | ".join(metrics.values())
        + " | accuracy, clean variant | seeds (confounded / clean) |",
        "|---|" + "---|" * (len(metrics) + 2),
    ]
    mean, sd = confounded.mean(numeric_only=True), confounded.std(ddof=1, numeric_only=True)
    clean_mean, clean_sd = clean.mean(), clean.std(ddof=1)
    for setting in setting_order(models, order):
        values = [
            cell(mean.loc[setting, m], sd.loc[setting, m]) if setting in mean.index and m in mean else "–"
            for m in metrics
        ]
        accuracy = cell(clean_mean[setting], clean_sd[setting]) if setting in clean_mean else "–"
        seeds = " / ".join(
            str(models.loc[(models.setting == setting) & (models.variant == v), "seed"].nunique())
            for v in ("confounded", "clean")
        )
        lines.append(f"| {setting} | " + " | ".join(values) + f" | {accuracy} | {seeds} |")
    deltas = against_weight_0(models, order)
    if deltas.empty:
        return "\n".join(lines + reference_lines(models, references or {})) + "\n"
    lines += [
        "",
        "Against weight 0 on the same seeds (mean ± SD of the paired differences; the bar: "
        "+0.20, +0.20, > 0 and a cost ≤ 0.02, on the means):",
        "",
        "| setting | Δ Grad-CAMO > 0.5, integrated gradients | Δ cell reliance "
        "| Δ accuracy, same cells without the shortcut | accuracy lost, clean variant "
        "| seeds | meets the bar |",
        "|---|---|---|---|---|---|---|",
    ]
    for setting, group in deltas.groupby("setting", sort=False):
        mean, sd = group.mean(numeric_only=True), group.std(ddof=1, numeric_only=True)
        values = [
            cell(mean[m], sd[m], digits=3) if group[m].notna().any() else "–" for m in [*BAR, "clean_cost"]
        ]
        meets = all(mean[m] >= bar if bar > 0 else mean[m] > bar for m, bar in BAR.items()) and (
            mean["clean_cost"] <= CLEAN_COST_LIMIT
        )
        seeds = int(group[list(BAR)].notna().all(axis=1).sum())
        lines.append(f"| {setting} | " + " | ".join(values) + f" | {seeds} | {'yes' if meets else 'no'} |")
    return "\n".join(lines + reference_lines(models, references or {})) + "\n"


def reference_lines(models: pd.DataFrame, references: dict[str, pd.DataFrame]) -> list[str]:
    """The summary's table of :func:`reference_against_weight_0`, a row per reference with
    models (no lines if none has)."""
    rows = []
    for kind, label in REFERENCES.items():
        reference = reference_against_weight_0(models, references.get(kind, pd.DataFrame()))
        if reference.empty:
            continue
        mean, sd = reference.mean(), reference.std(ddof=1)

        def cell(m, sign="+"):
            return f"{mean[m]:{sign}.3f}" + (f"±{sd[m]:.3f}" if len(reference) > 1 else "")

        rows.append(
            f"| {label} | {cell('cell_reliance')} | {mean['context_reliance']:.3f} "
            f"| {cell('shortcut_free_accuracy')} | {cell('clean_cost', '')} | {len(reference)} |"
        )
    if not rows:
        return []
    return [
        "",
        "References, not settings (the attribution study's models, the weight 0 recipe), against "
        "weight 0 on the same seeds: where a penalty would land that removed exactly the "
        "shortcut, and one that took the model off its context entirely.",
        "",
        "| reference | Δ cell reliance | context reliance | Δ accuracy, same cells without the shortcut "
        "| accuracy lost, clean variant | seeds |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
