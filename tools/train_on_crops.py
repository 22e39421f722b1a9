"""Train the classifier on a finished run's crop stores, outside Snakemake, and print metrics.

For tuning ``train.*`` settings and for checking training on a GPU node: it calls the same
:func:`gradcamo.training.train_classifier` as the ``train`` rule, on the crop stores and the
well split a workflow run has written, with the config's ``train`` section plus overrides.

Usage::

    .venv/bin/python tools/train_on_crops.py --results results --set epochs=20 norm=group
    python3 tools/train_on_crops.py --device cuda --set batch_size=32 learning_rate=0.004
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from gradcamo.config import load_config
from gradcamo.train_settings import TrainSettings
from gradcamo.training import train_classifier
from gradcamo.validation_audit import ValidationAudit


def per_treatment_accuracy(split_metrics: dict) -> dict:
    """``{treatment: share of its cells predicted as it}`` from a split's confusion matrix
    (rows: true treatment)."""
    confusion = split_metrics["confusion_matrix"]
    return {
        label: round(row[i] / sum(row), 3) if sum(row) else None
        for i, (label, row) in enumerate(zip(confusion["labels"], confusion["counts"]))
    }


def parse_override(text: str) -> tuple[str, object]:
    """``key=value`` with ``value`` read as YAML (numbers, booleans, null, lists)."""
    key, _, value = text.partition("=")
    return key, yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="a workflow run's results folder")
    parser.add_argument("--config", default=".test/config/config.yaml")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the config's train section"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)

    config = load_config(args.config)
    overrides = dict(parse_override(item) for item in args.set)
    train = {**config["train"], **overrides}
    results = Path(args.results)
    wells = pd.read_csv(results / "split" / "wells.tsv", sep="\t", dtype=str)
    wells["store"] = [str(results / "crops" / p / w) for p, w in zip(wells.plate, wells.well)]

    # the plates' neutral fills, for the per-epoch validation audit (as the train rule)
    audit = ValidationAudit(
        fills={plate: np.load(results / "crops" / plate / "fill.npy") for plate in sorted(set(wells.plate))},
        cell_margin=config["crops"]["cell_margin"],
        seed=config["crops"]["fill"]["seed"],
    )
    start = time.perf_counter()
    result = train_classifier(
        wells,
        TrainSettings.from_config(train),
        config["channels"],
        config["crops"]["shape"],
        torch.device(args.device),
        audit=audit,
    )
    seconds = time.perf_counter() - start
    summary = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "overrides": overrides,
        "seconds": round(seconds, 1),
        "best_epoch": result.meta["best_epoch"],
        "epochs_run": result.meta["epochs_run"],
        # the best epoch's validation audit: accuracy from the cell alone, the context alone
        **{
            column: round(float(result.history.loc[result.meta["best_epoch"] - 1, column]), 3)
            for column in ("val_accuracy", "val_cell_accuracy", "val_context_accuracy")
        },
        **{f"{split}_accuracy": round(m["accuracy"], 3) for split, m in result.metrics.items()},
        "chance": round(result.metrics["test"]["chance_level"], 3),
        # a treatment the model never learns hides in the overall accuracy
        "test_accuracy_per_treatment": per_treatment_accuracy(result.metrics["test"]),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
