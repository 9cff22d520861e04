"""Classification metrics from a confusion matrix (rows: true class, columns: predicted class).

The definitions of scikit-learn: accuracy; balanced accuracy = mean recall over the classes that
occur; per class precision, recall, F1 (0 where undefined) and support; macro-F1 = mean F1 over the
classes that occur in the truth or the predictions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion(y_true: Sequence[int], y_pred: Sequence[int], k: int) -> np.ndarray:
    """(K, K) counts of (true, predicted) pairs."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def classification_metrics(conf: np.ndarray) -> dict:
    """``accuracy``, ``balanced_accuracy``, ``macro_f1`` and per-class arrays ``precision``,
    ``recall``, ``f1``, ``support`` of a confusion matrix."""
    conf = np.asarray(conf, dtype=float)
    tp = np.diag(conf)
    support, predicted = conf.sum(1), conf.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    total = conf.sum()
    occurs = (support > 0) | (predicted > 0)
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "balanced_accuracy": float(recall[support > 0].mean()) if (support > 0).any() else 0.0,
        "macro_f1": float(f1[occurs].mean()) if occurs.any() else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support.astype(int),
    }
