"""Validation study: which attribution method and layer make Grad-CAMO agree with the audit?

One command (``make validate``). On the mini dataset's clean and confounded variants it

1. runs the real workflow (Snakemake, the mini config ``.test/config/config.yaml``) up
   to the crop stores and the well split, once per variant, in ``results/validate/<variant>``;
2. trains three kinds of model, each over ``--seeds`` training seeds
   (:func:`gradcamo.training.train_classifier`, the ``train`` rule's function):
   ``clean``       full-context crops of the clean variant (honest by construction),
   ``confounded``  full-context crops of the confounded variant (can read the debris),
   ``cell``        the confounded variant with ``crops.context: cell`` (context replaced by
                   the neutral fill exactly as the crop stage does: the shortcut removed);
3. profiles the test cells of each model with every method x layer of the grid
   (:class:`gradcamo.gradcam.GradCamProfiler`) and runs the counterfactual audit once
   (:func:`gradcamo.profiles.profile_store`), scoring each map on the model's own crops.

Per method x layer it reports, as mean and SD over seeds, for each kind of model: mean
Grad-CAMO, the share above 0.5, enrichment over the uniform-map baseline, and the Spearman
correlation of Grad-CAMO with the audit's cell reliance (``table.tsv`` also has the mean and
the share above 0.5 of the shuffled baseline: each cell's mask on another cell's map); and
the separation of the cheating (confounded) model from the honest ones, in units of the
seeds' spread. Writes
``results/validate/table.tsv`` (one row per method x layer x kind), ``models.tsv`` (accuracy
and audit per trained model) and ``summary.md`` (the table docs/validation.md shows).

    .venv/bin/python bench/validate_attribution.py            # 3 seeds (about an hour on 2 cores)
    .venv/bin/python bench/validate_attribution.py --seeds 1  # a quick look
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from gradcamo.config import load_config
from gradcamo.context import context_seeds, replace_context
from gradcamo.gradcam import INPUT_METHODS, LAYER_METHODS, GradCamProfiler, smoothing_sigmas
from gradcamo.model import load_checkpoint, save_checkpoint
from gradcamo.profiles import profile_store
from gradcamo.store import CropStore, CropStoreWriter
from gradcamo.synthetic import write_dataset
from gradcamo.training import TrainSettings, train_classifier
from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
LAYERS = ("_blocks.0", "_blocks.1", "_blocks.2")
#: Gaussian sigmas (Y/X voxels, profile.smoothing_sigma) tried on the input-level maps.
SMOOTHING = (0.0, 1.0)
KINDS = ("clean", "confounded", "cell")
log = logging.getLogger("validate")


def project(workdir: Path, dataset: Path, config: dict) -> Path:
    """A Snakemake project folder for one variant: its config and absolute-path sheet."""
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    sheet = pd.read_csv(dataset / "samples.tsv", sep="\t")
    for column in ("image", "labels"):
        sheet[column] = [str(dataset / p) for p in sheet[column]]
    sheet.to_csv(workdir / "config" / "samples.tsv", sep="\t", index=False)
    (workdir / "config" / "config.yaml").write_text(
        yaml.safe_dump({**config, "samples": "config/samples.tsv"}, sort_keys=False)
    )
    return workdir


def crops_and_split(workdir: Path, wells: pd.DataFrame, cores: int) -> None:
    """Run the workflow up to every well's crop store and the split (real Snakemake)."""
    targets = (
        ["results/split/wells.tsv"]
        + [f"results/crops/{p}/{w}/store.json" for p, w in zip(wells.plate, wells.well)]
        + [f"results/crops/{p}/fill.npy" for p in sorted(set(wells.plate))]
    )
    cmd = [
        SNAKEMAKE,
        *targets,
        "-s",
        str(REPO / "workflow" / "Snakefile"),
        "-d",
        str(workdir),
        "--cores",
        str(cores),
        "--quiet",
        "rules",
    ]
    log.info("snakemake in %s", workdir)
    subprocess.run(cmd, check=True)


def variant_splits(out: Path, config: dict, cores: int, variants=("clean", "confounded")):
    """``(datasets, splits)``: per variant of the mini dataset, its folder and its well split
    with each well's crop store (column ``store``), after running the workflow to the crops
    in ``out/<variant>`` (a no-op once done). The confounded variant is generated into
    ``out/mini_confounded`` first."""
    datasets = {"clean": REPO / "resources" / "mini", "confounded": out / "mini_confounded"}
    if not (datasets["confounded"] / "samples.tsv").exists():
        write_dataset(datasets["confounded"], seed=0, confounded=True)
    splits = {}
    for variant in variants:
        workdir = project(out / variant, datasets[variant], config)
        wells = pd.read_csv(datasets[variant] / "samples.tsv", sep="\t").drop_duplicates(["plate", "well"])
        crops_and_split(workdir, wells, cores)
        split = pd.read_csv(workdir / "results/split/wells.tsv", sep="\t", dtype=str)
        split["store"] = [str(workdir / "results/crops" / p / w) for p, w in zip(split.plate, split.well)]
        splits[variant] = split
    return datasets, splits


def cell_context_store(full: Path, out: Path, fill: np.ndarray, margin: int, seed: int) -> Path:
    """The ``crops.context: cell`` store of a full-context one: the context of every crop
    replaced by the fill, seeded per cell as :func:`gradcamo.crops.crop_cells` seeds it."""
    if (out / "store.json").exists():
        return out
    store = CropStore.open(full)
    writer = CropStoreWriter(
        out,
        len(store),
        store.channels,
        store.crop_shape,
        {**store.normalization, "context": "cell", "cell_margin": margin},
    )
    cells, masks = store.cells, np.asarray(store.masks)
    seeds = context_seeds(seed, cells["Metadata_Site"], cells["Metadata_ObjectNumber"])
    writer.write(replace_context(np.asarray(store.images, np.float32), masks, fill, margin, seeds), masks)
    writer.close(cells)
    return out


def score_maps(profiler, store, fill, margin) -> dict:
    """Grad-CAMO, its uniform baseline and (with a fill) the audit of every cell of a store."""
    return profile_store(profiler, store, "predicted", 64, "cpu", fill=fill, cell_margin=margin)


def model_rows(
    kind, seed, model, classes, wells_store, fills, margin, methods, ig_steps
) -> tuple[list, dict]:
    """Profile the test wells of one trained model with every method x layer."""
    model = model.eval()
    test = wells_store[wells_store.split == "test"]
    stores = [CropStore.open(p) for p in test.store]
    truth = np.concatenate([s.cells["Metadata_Treatment"].to_numpy() for s in stores])
    classes = np.asarray(classes)
    # The audit (reliance does not depend on the map): once per model, with Grad-CAM.
    audit = [
        score_maps(GradCamProfiler(model, "_blocks.2"), s, fills[p], margin)
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


def trained_model(checkpoint: Path, recipe: dict, wells: pd.DataFrame, config: dict, retrain: bool):
    """``(model, classes)``: trained with the mini config's ``train`` settings (``recipe``:
    those settings with the seed, the crop settings and the kind of model), or read back
    from ``checkpoint`` when an earlier run of the study trained it from the same recipe, so
    that scoring new maps does not train the nine models again (``--retrain`` does)."""
    if checkpoint.exists() and not retrain:
        model, meta = load_checkpoint(checkpoint)
        if meta.get("study_recipe") == json.loads(json.dumps(recipe)):
            log.info("%s: trained by an earlier run of the study (--retrain trains it again)", checkpoint)
            return model, meta["classes"]
    start = time.perf_counter()
    settings = TrainSettings.from_config(recipe["train"])
    result = train_classifier(wells, settings, config["channels"], config["crops"]["shape"], "cpu")
    log.info(
        "%s trained in %.0f s: test %.3f",
        checkpoint.stem,
        time.perf_counter() - start,
        result.metrics["test"]["accuracy"],
    )
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(checkpoint, result.model, {**result.meta, "study_recipe": recipe})
    return result.model, result.meta["classes"]


def separation(table: pd.DataFrame, metric: str, cheat: str, honest: str) -> pd.Series:
    """Per method x layer: (honest mean - cheat mean) / pooled SD over seeds of ``metric``."""
    grouped = table.groupby(["method", "layer", "kind"])[metric]
    mean, sd = grouped.mean().unstack("kind"), grouped.std(ddof=1).unstack("kind")
    spread = np.sqrt((sd[cheat] ** 2 + sd[honest] ** 2) / 2).replace(0, np.nan)
    return (mean[honest] - mean[cheat]) / spread


def grid(voxel_size) -> list[tuple[str, str, tuple[float, float, float]]]:
    """``(method, layer label, smoothing sigmas (Z, Y, X))`` of the study: every layer method
    at every layer of :data:`LAYERS`, and the input-level methods at every sigma of
    :data:`SMOOTHING` (labelled ``input`` or ``input, sigma 1``)."""
    unsmoothed = (0.0, 0.0, 0.0)
    rows = [(m, layer, unsmoothed) for m in LAYER_METHODS for layer in LAYERS]
    for method in INPUT_METHODS:
        for sigma in SMOOTHING:
            label = "input" if sigma == 0 else f"input, sigma {sigma:g}"
            rows.append((method, label, smoothing_sigmas(sigma, voxel_size)))
    return rows


def summary_markdown(table: pd.DataFrame, models: pd.DataFrame) -> str:
    """The study's tables as Markdown."""
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
            if metric not in mean.columns:  # a table from before the column
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
        lines.append(
            f"| {kind} | "
            + " | ".join(
                f"{row[(m, 'mean')]:.2f}±{row[(m, 'std')]:.2f}"
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


def study_arguments(doc: str) -> argparse.ArgumentParser:
    """The command-line options both validation studies share."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "validate")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--ig-steps",
        type=int,
        default=None,
        help="integrated gradients' steps (default: the mini config's profile.ig_steps); "
        "the tables of docs/validation.md were made at 4",
    )
    return parser


def main() -> None:
    parser = study_arguments(__doc__)
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS)
    parser.add_argument(
        "--retrain", action="store_true", help="train every model again, even one an earlier run kept"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("gradcamo.profiles", "gradcamo.training"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(args.cores)
    config = load_config(REPO / ".test" / "config" / "config.yaml")
    margin, fill_seed = config["crops"]["cell_margin"], config["crops"]["fill"]["seed"]
    methods = grid(config["voxel_size"])
    args.out.mkdir(parents=True, exist_ok=True)
    variants = ["confounded"] + (["clean"] if "clean" in args.kinds else [])
    _, splits = variant_splits(args.out, config, args.cores, variants)
    stores = {variant: (args.out / variant, split) for variant, split in splits.items()}
    workdir, split = stores["confounded"]
    fills = {p: np.load(workdir / f"results/crops/{p}/fill.npy") for p in split.plate.unique()}
    cell = split.copy()
    cell["store"] = [
        str(cell_context_store(Path(s), args.out / "cell" / p / w, fills[p], margin, fill_seed))
        for s, p, w in zip(split.store, split.plate, split.well)
    ]
    wells_of = {"clean": stores.get("clean", (None, None))[1], "confounded": split, "cell": cell}

    rows, models = [], []
    # Seeds outermost: a study cut short still compares every kind of model.
    for seed in range(args.seeds):
        for kind in args.kinds:
            fills_here = {
                p: np.load(
                    stores["clean" if kind == "clean" else "confounded"][0] / f"results/crops/{p}/fill.npy"
                )
                for p in split.plate.unique()
            }
            model, classes = trained_model(
                args.out / "models" / f"{kind}-seed{seed}.pt",
                {"train": {**config["train"], "seed": seed}, "crops": config["crops"], "kind": kind},
                wells_of[kind],
                config,
                args.retrain,
            )
            more, summary = model_rows(
                kind,
                seed,
                model,
                classes,
                wells_of[kind],
                fills_here,
                margin,
                methods,
                args.ig_steps or config["profile"]["ig_steps"],
            )
            rows += more
            models.append(summary)
            pd.DataFrame(rows).to_csv(args.out / "table.tsv", sep="\t", index=False)
            pd.DataFrame(models).to_csv(args.out / "models.tsv", sep="\t", index=False)
    table, models = pd.DataFrame(rows), pd.DataFrame(models)
    text = summary_markdown(
        table, models.drop(columns=["seed", "n_test_cells"]).set_index("kind").reset_index()
    )
    (args.out / "summary.md").write_text(text)
    print(text)
    print(json.dumps({"seeds": args.seeds, "out": str(args.out)}))


if __name__ == "__main__":
    main()
