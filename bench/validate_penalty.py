"""Validation study of the attention penalty: does a penalised model look at the cell?

Part of ``make validate``, after the attribution study (``validate_attribution.py``), whose
crop stores it reuses (the real workflow on the mini dataset's clean and confounded
variants, in ``results/validate/<variant>``). For each setting of :data:`SETTINGS` and each
seed it trains on the confounded variant (:func:`gradcamo.training.train_classifier`, the
``train`` rule's function) and reports, on the test wells:

- accuracy on the confounded test cells, and on *the same cells without the shortcut*: the
  clean variant's z-stacks cropped with the confounded run's own labels, normalisation and
  crop settings (the variants differ only by the debris; same cells, same masks);
- the audit (:mod:`gradcamo.audit`): mean cell reliance and context reliance;
- Grad-CAMO's share > 0.5 under input × gradient and under LayerCAM at ``_blocks.0``
  (:data:`MAPS`): a model penalised with one is judged by the other too, since a penalised
  map can be fooled without the model changing (Heo et al., 2019); and under integrated
  gradients, the profile stage's default, which no setting is trained on;

and, trained on the clean variant, the test accuracy each setting costs there. Beside the
settings, the summary measures the bar on two of the attribution study's models
(:data:`REFERENCES`): where a penalty would land that removed exactly the shortcut, and one
that removed the whole context.
Writes ``penalty_models.tsv`` (one row per model) and ``penalty_summary.md``. A rerun reuses
the rows trained with the current recipe (the mini config's ``train`` with the setting and
seed, and its ``crops``; column ``recipe``); rows of an earlier recipe are set aside in
``penalty_models.earlier.tsv`` and trained again.

    .venv/bin/python bench/validate_penalty.py                 # 3 seeds, every setting
    .venv/bin/python bench/validate_penalty.py --seeds 1 --settings "weight 0" "weight 10"
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from gradcamo.config import load_config
from gradcamo.crops import write_well_store
from gradcamo.gradcam import GradCamProfiler, smoothing_sigmas
from gradcamo.model import load_checkpoint
from gradcamo.profiles import profile_store
from gradcamo.readers import ImageSettings, Site, labelled_sites, open_reader
from gradcamo.store import CropStore
from gradcamo.training import TrainSettings, ValidationAudit, train_classifier

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the attribution study's helpers
from validate_attribution import REPO, study_arguments, variant_splits  # noqa: E402

#: The settings compared, as overrides of the mini config's ``train`` section. RRR's weight
#: follows Ross et al.: the input-gradient term on the order of the cross-entropy at the
#: start (about 100-200 per cell on these crops, so 0.01).
SETTINGS = {
    "weight 0": {},
    "weight 0.1": {"attention_penalty": {"weight": 0.1}},
    # Between 0.1, whose penalty is a few per cent of the loss and moves nothing, and 1,
    # which moves the confounded model but costs the clean one 5-9 points (2026-12-06).
    "weight 0.3": {"attention_penalty": {"weight": 0.3}},
    "weight 1": {"attention_penalty": {"weight": 1.0}},
    "weight 3": {"attention_penalty": {"weight": 3.0}},
    "weight 10": {"attention_penalty": {"weight": 10.0}},
    "layercam 1": {"attention_penalty": {"weight": 1.0, "method": "layercam", "target_layer": "_blocks.0"}},
    "rrr 0.01": {"attention_penalty": {"weight": 0.01, "method": "rrr"}},
    "context swap": {"augment": {"context_swap": {"probability": 1.0}}},
    # Both at once, the swap at half the rate: the penalty keeps what the cell carries, the
    # swap takes some of the shortcut out of the data without removing every real context.
    "weight 1 + swap 0.5": {
        "attention_penalty": {"weight": 1.0},
        "augment": {"context_swap": {"probability": 0.5}},
    },
    # The best epoch chosen by the accuracy from the validation cells alone (their context
    # replaced by the neutral fill) instead of their accuracy: the validation wells carry
    # the shortcut too, so choosing by their accuracy rewards the epochs that read it.
    "weight 0, cell selection": {"select_by": "cell_accuracy"},
    "weight 1, cell selection": {"attention_penalty": {"weight": 1.0}, "select_by": "cell_accuracy"},
}
#: The maps every model is scored with: the default (input x gradient) and LayerCAM at
#: the finest block. A setting penalised with one is judged by the other too: a penalised map
#: can be fooled without the model changing (Heo et al., 2019), a held-out map less easily.
MAPS = {"input_x_gradient": ("input_x_gradient", "input"), "layercam_blocks.0": ("layercam", "_blocks.0")}
#: Columns of older tables: the two maps were named by role before layercam was penalised too.
LEGACY_COLUMNS = {
    "share_above_0.5_trained_map": "share_above_0.5_input_x_gradient",
    "share_above_0.5_held_out_map": "share_above_0.5_layercam_blocks.0",
}
log = logging.getLogger("validate_penalty")


def merged(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in top.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def counterpart_stores(confounded: Path, clean_dataset: Path, split: pd.DataFrame, config: dict, out: Path):
    """The test wells' crop stores from the clean z-stacks with the confounded run's labels
    and normalisation: the same cells, the debris shortcut removed."""
    sheet = pd.read_csv(clean_dataset / "samples.tsv", sep="\t")
    crops = config["crops"]
    paths = {}
    for row in split[split.split == "test"].itertuples(index=False):
        target = out / row.plate / row.well
        paths[row.plate, row.well] = target
        if (target / "store.json").exists():
            continue
        sites = sheet[(sheet.plate == row.plate) & (sheet.well == row.well)].sort_values("site")
        reference = json.loads((confounded / f"results/crops/{row.plate}/normalization.json").read_text())
        norm = crops["normalization"]
        write_well_store(
            target,
            labelled_sites(
                open_reader(ImageSettings.from_config(config)),
                [
                    Site(row.plate, row.well, int(s.site), image=str(clean_dataset / s.image))
                    for s in sites.itertuples()
                ],
                [
                    str(confounded / f"results/segment/{row.plate}/{row.well}/site{s.site}.tif")
                    for s in sites.itertuples()
                ],
            ),
            {
                "plate": row.plate,
                "well": row.well,
                **{k: sites.iloc[0][k] for k in ("treatment", "concentration", "control") if k in sites},
            },
            config["channels"],
            crops["shape"],
            normalization={
                k: norm[k] for k in ("scope", "reference", "lower_percentile", "upper_percentile")
            },
            bounds=None if reference["bounds"] is None else np.asarray(reference["bounds"]),
            filters=crops["filters"],
            cell_margin=crops["cell_margin"],
            seed=crops["fill"]["seed"],
        )
    return paths


def share_above(profilers, stores) -> float:
    scores = np.concatenate(
        [
            profile_store(profiler, s, "predicted", 64, "cpu")["scores"]
            for profiler, s in zip(profilers, stores)
        ]
    )
    ok = np.isfinite(scores)
    return float(np.mean(scores[ok] > 0.5))


def evaluate(
    result,
    split: pd.DataFrame,
    fills: dict,
    margin: int,
    counterparts: dict | None,
    ig_steps: int,
    smoothing: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> dict:
    """Accuracy, the audit and Grad-CAMO of one model on its test wells; integrated
    gradients with ``ig_steps`` and ``smoothing`` (the profile stage's map)."""
    model = result.model.eval()
    classes = np.asarray(result.meta["classes"])
    test = split[split.split == "test"]
    stores = [CropStore.open(p) for p in test.store]
    truth = np.concatenate([s.cells["Metadata_Treatment"].to_numpy() for s in stores])
    default = GradCamProfiler(model, MAPS["input_x_gradient"][1], MAPS["input_x_gradient"][0])
    audit = [
        profile_store(default, s, "predicted", 64, "cpu", fill=fills[p], cell_margin=margin)
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
        ),
    }
    if counterparts is not None:
        clean = [CropStore.open(counterparts[p, w]) for p, w in zip(test.plate, test.well)]
        with torch.no_grad():
            predicted = np.concatenate(
                [model(torch.from_numpy(np.asarray(s.images, np.float32))).argmax(1).numpy() for s in clean]
            )
        clean_truth = np.concatenate([s.cells["Metadata_Treatment"].to_numpy() for s in clean])
        row["shortcut_free_accuracy"] = float(np.mean(classes[predicted] == clean_truth))
    return row


def setting_train(config: dict, setting: str, seed: int) -> dict:
    """The ``train`` settings of one model of the study: the mini config's, with the
    setting's overrides and the seed."""
    return merged(config["train"], {**SETTINGS[setting], "seed": seed})


def recipe_key(train: dict, crops: dict) -> str:
    """A short hash of what determines a trained model besides its data: its ``train``
    settings (seed included) and the crop settings."""
    text = json.dumps({"train": train, "crops": crops}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def current_rows(rows: list[dict], config: dict) -> tuple[list[dict], list[dict]]:
    """Split the table's rows into those trained with the current recipe (their ``recipe``
    column equals :func:`recipe_key` of the setting, seed and config) and the rest. A row
    from before a change of the mini config, or of a setting, is trained again, not reused."""
    keep, stale = [], []
    for row in rows:
        current = row["setting"] in SETTINGS and row.get("recipe") == recipe_key(
            setting_train(config, row["setting"], int(row["seed"])), config["crops"]
        )
        (keep if current else stale).append(row)
    return keep, stale


def attribution_models(models_dir: Path, models_table: Path, config: dict, kind: str) -> pd.DataFrame:
    """The attribution study's models of one ``kind`` (its ``models.tsv``, one row per
    seed) whose checkpoint (``models/{kind}-seed{n}.pt``) was trained with the current
    ``weight 0`` recipe of its seed (column ``recipe``); empty if there are none."""
    if not models_table.exists():
        return pd.DataFrame()
    models = pd.read_csv(models_table, sep="\t")
    keep = []
    for m in models[models.kind == kind].to_dict("records"):
        seed, checkpoint = int(m["seed"]), models_dir / f"{kind}-seed{m['seed']}.pt"
        if not checkpoint.exists():
            continue
        recipe = load_checkpoint(checkpoint)[1].get("study_recipe", {})
        key = recipe_key(setting_train(config, "weight 0", seed), config["crops"])
        if recipe.get("train") is None or recipe_key(recipe["train"], recipe.get("crops")) != key:
            continue
        keep.append({**m, "seed": seed, "recipe": key})
    return pd.DataFrame(keep)


def unpenalised_clean_rows(clean_models: pd.DataFrame, rows: list[dict]) -> list[dict]:
    """``weight 0`` rows of the clean variant taken from the attribution study's clean models
    (``clean_models``: :func:`attribution_models` of kind ``clean``, those trained with the
    current ``weight 0`` recipe), so the seeds' baseline for the clean variant's cost is not
    trained twice; only seeds the penalty table (``rows``) does not have yet."""
    have = {(r["setting"], r["seed"], r["variant"]) for r in rows}
    return [
        {
            "setting": "weight 0",
            "seed": m["seed"],
            "variant": "clean",
            "test_accuracy": m["test_accuracy"],
            "recipe": m["recipe"],
        }
        for m in clean_models.to_dict("records")
        if ("weight 0", m["seed"], "clean") not in have
    ]


#: The bar a recommended setting must clear against weight 0 on the confounded variant, as
#: the change of the mean over seeds: Grad-CAMO > 0.5 under a map no setting is trained on
#: (integrated gradients) and mean cell reliance up by 20 points each, accuracy on the
#: shortcut-free counterparts up; and at most 2 points of test accuracy lost on the clean one.
BAR = {"share_above_0.5_integrated_gradients": 0.20, "cell_reliance": 0.20, "shortcut_free_accuracy": 0.0}
CLEAN_COST_LIMIT = 0.02


def against_weight_0(models: pd.DataFrame) -> pd.DataFrame:
    """Each setting's change over weight 0 on the same seed: one row per setting and seed
    with the differences of :data:`BAR`'s metrics (confounded variant; NaN where either model
    is missing) and ``clean_cost``, weight 0's clean-variant test accuracy minus the
    setting's. Pairing by seed takes the seeds' common part (the crops, the split, the
    initial weights) out of the comparison."""
    confounded = models[models.variant == "confounded"].set_index(["setting", "seed"])
    clean = models[models.variant == "clean"].set_index(["setting", "seed"])["test_accuracy"]
    trained = {"confounded": set(confounded.index), "clean": set(clean.index)}
    rows = []
    for setting in sorted(set(models.setting) - {"weight 0"}, key=list(SETTINGS).index):
        for seed in sorted(models.loc[models.setting == setting, "seed"].unique()):
            pair = [(setting, seed), ("weight 0", seed)]
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
    weight0 = models[models.setting == "weight 0"]
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


def summary_markdown(models: pd.DataFrame, references: dict[str, pd.DataFrame] | None = None) -> str:
    """The study's tables; ``references``, per kind of :data:`REFERENCES`, its models (none
    shown if ``None``)."""
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
    for setting in sorted(models.setting.unique(), key=lambda name: list(SETTINGS).index(name)):
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
    deltas = against_weight_0(models)
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


def main() -> None:
    parser = study_arguments(__doc__)
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument(
        "--variants", nargs="*", default=["confounded", "clean"], choices=["confounded", "clean"]
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("gradcamo.profiles",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(args.cores)
    config = load_config(REPO / ".test" / "config" / "config.yaml")
    margin = config["crops"]["cell_margin"]
    args.out.mkdir(parents=True, exist_ok=True)
    datasets, splits = variant_splits(args.out, config, args.cores)  # shared with the attribution study
    fills = {
        variant: {
            p: np.load(args.out / variant / f"results/crops/{p}/fill.npy") for p in split.plate.unique()
        }
        for variant, split in splits.items()
    }
    counterparts = counterpart_stores(
        args.out / "confounded", datasets["clean"], splits["confounded"], config, args.out / "shortcut_free"
    )
    table = args.out / "penalty_models.tsv"
    rows = (
        pd.read_csv(table, sep="\t", dtype={"recipe": str}).rename(columns=LEGACY_COLUMNS).to_dict("records")
        if table.exists()
        else []
    )
    rows, stale = current_rows(rows, config)
    if stale:
        earlier = args.out / "penalty_models.earlier.tsv"
        if earlier.exists():
            stale = pd.read_csv(earlier, sep="\t").to_dict("records") + stale
        pd.DataFrame(stale).to_csv(earlier, sep="\t", index=False)
        # set aside once, not at every rerun (an empty table would not read back)
        if rows:
            pd.DataFrame(rows).to_csv(table, sep="\t", index=False)
        else:
            table.unlink()
        log.warning(
            "%d row(s) of %s were trained with another recipe (config or setting changed): "
            "set aside in %s, trained again",
            len(stale),
            table,
            earlier,
        )
    # The reference models, read (and their checkpoints' recipes checked) once: the clean
    # ones also stand in for weight 0 on the clean variant.
    references = {
        kind: attribution_models(args.out / "models", args.out / "models.tsv", config, kind)
        for kind in REFERENCES
    }
    rows += unpenalised_clean_rows(references["clean"], rows)
    done = {(r["setting"], r["seed"], r["variant"]) for r in rows}
    for seed in range(args.seeds):  # seeds outermost: a study cut short still compares settings
        for setting in args.settings:
            for variant in args.variants:
                if (setting, seed, variant) in done:
                    continue
                train = setting_train(config, setting, seed)
                start = time.perf_counter()
                result = train_classifier(
                    splits[variant],
                    TrainSettings.from_config(train),
                    config["channels"],
                    config["crops"]["shape"],
                    # the per-epoch validation audit, as the train rule runs it
                    audit=ValidationAudit(fills[variant], margin, config["crops"]["fill"]["seed"]),
                )
                seconds = time.perf_counter() - start
                row = {
                    "setting": setting,
                    "seed": seed,
                    "variant": variant,
                    "train_seconds": round(seconds),
                    "best_epoch": result.meta["best_epoch"],
                    "epochs_run": result.meta["epochs_run"],
                    "recipe": recipe_key(train, config["crops"]),
                }
                if variant == "confounded":
                    row |= evaluate(
                        result,
                        splits[variant],
                        fills[variant],
                        margin,
                        counterparts,
                        args.ig_steps or config["profile"]["ig_steps"],
                        smoothing_sigmas(config["profile"]["smoothing_sigma"], config["voxel_size"]),
                    )
                else:
                    row["test_accuracy"] = result.metrics["test"]["accuracy"]
                rows.append(row)
                log.info("%s", {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
                pd.DataFrame(rows).to_csv(table, sep="\t", index=False)
    text = summary_markdown(pd.DataFrame(rows), references)
    (args.out / "penalty_summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
