"""Classification metrics of a split: loss, accuracy, balanced accuracy, confusion matrix."""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix
from torch import nn


def loss_and_accuracy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``logits (N, K)`` for ``labels (N,)``; NaN if N = 0."""
    if len(labels) == 0:
        return math.nan, math.nan
    loss = nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels))
    return float(loss), float(np.mean(logits.argmax(1) == labels))


def classification_metrics(
    labels: np.ndarray, predicted: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy figures of one split.

    Parameters
    ----------
    labels, predicted: class ids ``(N,)``.
    classes: class names; index = class id.

    Returns
    -------
    ``n_cells``, ``accuracy``, ``balanced_accuracy`` (mean recall over the classes present
    in ``labels``), ``confusion_matrix`` (``labels``: class names, ``counts``: rows = true
    class, columns = predicted), ``chance_level`` (1 / number of classes) and
    ``majority_class_rate`` (share of the most frequent true class: what always guessing it
    would score). Accuracies are None for an empty split.
    """
    n = len(labels)
    ids = list(range(len(classes)))
    counts = np.zeros((len(ids), len(ids)), int)
    accuracy = balanced = majority = None
    if n:
        counts = confusion_matrix(labels, predicted, labels=ids)
        accuracy = float(accuracy_score(labels, predicted))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
            balanced = float(balanced_accuracy_score(labels, predicted))
        majority = float(np.bincount(labels).max() / n)
    return {
        "n_cells": int(n),
        "accuracy": accuracy,
        "balanced_accuracy": balanced,
        "confusion_matrix": {"labels": list(classes), "counts": counts.astype(int).tolist()},
        "chance_level": 1.0 / len(classes),
        "majority_class_rate": majority,
    }
