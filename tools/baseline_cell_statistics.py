"""A floor for the classifier: what a linear model reads from simple statistics of each cell's
own voxels, on a finished run's crops and well split.

Per cell and channel: the mean, SD, coefficient of variation and 90th percentile of the
normalised crop's voxels inside the cell's own mask (``masks == 1``). A standardised
logistic regression (scikit-learn) is fitted on the training wells' cells and scored on the
test wells', beside the run's own model (``results/train/metrics.json``), per treatment. A
treatment the linear model reads and the network does not is one the network failed to learn,
not one the crops lack.

Usage::

    .venv/bin/python tools/baseline_cell_statistics.py --results .test/results
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from gradcamo.store import CropStore
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_on_crops beside it
from train_on_crops import per_treatment_accuracy  # noqa: E402

STATISTICS = ("mean", "sd", "cv", "p90")


def cell_statistics(images: np.ndarray, masks: np.ndarray, channels) -> pd.DataFrame:
    """One row per cell of ``images`` (N×C×Z×Y×X) and ``masks`` (N×Z×Y×X, 1 = the cell):
    ``<channel>_<statistic>`` for each of :data:`STATISTICS` over the cell's voxels."""
    rows = []
    for image, mask in zip(images, masks == 1):
        row = {}
        for channel, values in zip(channels, image[:, mask].astype(np.float32)):
            mean, sd = float(values.mean()), float(values.std())
            row |= {
                f"{channel}_mean": mean,
                f"{channel}_sd": sd,
                f"{channel}_cv": sd / (abs(mean) + 1e-3),
                f"{channel}_p90": float(np.percentile(values, 90)),
            }
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=Path(".test/results"))
    args = parser.parse_args()
    split = pd.read_csv(args.results / "split" / "wells.tsv", sep="\t", dtype=str)
    tables = []
    for well in split.itertuples():
        store = CropStore.open(args.results / "crops" / well.plate / well.well)
        table = cell_statistics(np.asarray(store.images), np.asarray(store.masks), store.channels)
        tables.append(table.assign(treatment=well.treatment, split=well.split))
    cells = pd.concat(tables, ignore_index=True)
    features = [c for c in cells.columns if c not in ("treatment", "split")]
    train, test = cells[cells.split == "train"], cells[cells.split == "test"]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    predicted = model.fit(train[features], train.treatment).predict(test[features])
    correct = pd.Series(predicted == test.treatment.to_numpy(), index=test.index)
    print(f"linear model on {len(features)} cell statistics: test accuracy {correct.mean():.3f}")
    print(pd.crosstab(test.treatment, predicted, rownames=["treatment"], colnames=["predicted"]))
    metrics = args.results / "train" / "metrics.json"
    if metrics.exists():
        test_metrics = json.loads(metrics.read_text())["splits"]["test"]
        confusion = test_metrics["confusion_matrix"]
        labels, counts = confusion["labels"], confusion["counts"]
        print(f"the run's network: test accuracy {test_metrics['accuracy']:.3f}")
        print(pd.DataFrame(counts, index=pd.Index(labels, name="treatment"), columns=labels))
        per_class = correct.groupby(test.treatment).mean()
        for label, network in per_treatment_accuracy(test_metrics).items():
            print(f"{label}: linear model {per_class.get(label, np.nan):.2f}, network {network:.2f}")


if __name__ == "__main__":
    main()
