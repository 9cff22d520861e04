"""Pixel and object metrics of one prediction against its ground truth: the one place they are defined.

Pixel level (per class 1..K and mean over classes): IoU (Jaccard), Dice, precision, recall, accuracy
and the confusion matrix. Ground-truth pixels with label 0 (unlabelled) are ignored.

Object level: the definitions of StarDist's ``matching`` (Schmidt et al. 2018): objects are matched
one to one by the Hungarian algorithm on IoU (``scipy.optimize.linear_sum_assignment``, IoU as tie
breaker), a pair counts when IoU >= the threshold; TP, FP, FN, precision = TP/(TP+FP), recall =
TP/(TP+FN), F1 = 2TP/(2TP+FP+FN), DSB accuracy = TP/(TP+FP+FN), mean matched IoU (over TPs),
panoptic quality = sum of matched IoUs / (TP + FP/2 + FN/2), at thresholds 0.5, 0.75, 0.9 and
averaged over 0.5:0.05:0.95. Pooled values are computed from summed counts (StarDist's
``matching_dataset(by_image=False)``).

Rules for empty images (explicit, tested):

* pixel metrics: a class with no pixel in truth nor prediction has IoU/Dice/precision/recall NaN
  ("not applicable") and is left out of means; a class present in only one of them scores 0;
* object metrics: when TP = 0, precision/recall/F1/accuracy/PQ are 0 as in StarDist, EXCEPT when
  truth and prediction both have no objects: then they are 1 (nothing to find, nothing found);
  mean matched IoU is NaN when there is no match; count error = n_pred - n_true.

Training (validation IoU), post-processing tuning (object F1) and evaluation all use these
functions, so a figure means the same wherever it is shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .errors import DataError

REPORT_THRESHOLDS = (0.5, 0.75, 0.9)
AVERAGE_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2).tolist())
OBJECT_KEYS = ("tp", "fp", "fn", "n_true", "n_pred", "precision", "recall", "f1", "accuracy", "mean_matched_iou", "panoptic_quality")


# ---------------------------------------------------------------------- pixel metrics
def pixel_confusion(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) confusion matrix, rows = truth class 1..K, columns = predicted class 1..K.

    Truth pixels 0 (unlabelled) are ignored. Label values above ``n_classes`` raise :class:`DataError`.
    """
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    if truth.shape != pred.shape:
        raise DataError(f"Ground truth {truth.shape} and prediction {pred.shape} have different shapes.")
    for what, arr in (("ground truth", truth), ("prediction", pred)):
        if arr.size and (int(arr.max()) > n_classes or int(arr.min()) < 0):
            raise DataError(
                f"The {what} holds label {int(arr.max())} but the model has only {n_classes} classes (values 1..{n_classes}, "
                "0 = unlabelled): evaluate with a model trained on these classes, or fix the labels."
            )
    keep = truth > 0
    t = truth[keep].astype(np.int64) - 1
    p = pred[keep].astype(np.int64) - 1
    ok = p >= 0  # predicted 0 counts as class 1 never: treat as missing prediction of the background
    p = np.where(ok, p, 0)
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def metrics_from_confusion(conf: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-class IoU, Dice, precision, recall (NaN where not applicable) and overall accuracy."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    fp = conf.sum(0) - tp
    fn = conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.where(fn > 0, 0.0, np.nan))
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.where(fp > 0, 0.0, np.nan))
    total = conf.sum()
    accuracy = float(tp.sum() / total) if total > 0 else float("nan")
    return {"iou": iou, "dice": dice, "precision": precision, "recall": recall, "accuracy": accuracy}


def pixel_metrics(truth: np.ndarray, pred: np.ndarray, n_classes: int, *, class_names: Sequence[str] | None = None) -> dict:
    """Pixel metrics of one image pair (or of pooled arrays): per class and mean.

    Returns a dict: ``confusion`` (K, K) ints, ``per_class`` {name: {iou, dice, precision, recall}},
    ``mean_iou``, ``mean_dice``, ``mean_precision``, ``mean_recall`` (NaN classes left out), ``accuracy``.
    """
    conf = pixel_confusion(truth, pred, n_classes)
    return _pixel_dict(conf, class_names)


def _pixel_dict(conf: np.ndarray, class_names: Sequence[str] | None) -> dict:
    m = metrics_from_confusion(conf)
    names = list(class_names) if class_names else [f"class {i + 1}" for i in range(conf.shape[0])]
    per_class = {names[i]: {k: float(m[k][i]) for k in ("iou", "dice", "precision", "recall")} for i in range(conf.shape[0])}
    out = {"confusion": conf.astype(np.int64).tolist(), "per_class": per_class, "accuracy": m["accuracy"]}
    for k in ("iou", "dice", "precision", "recall"):
        vals = m[k]
        out[f"mean_{k}"] = float(np.nanmean(vals)) if np.any(~np.isnan(vals)) else float("nan")
    return out


# ---------------------------------------------------------------------- object metrics
def _relabel(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Object ids renumbered 1..N (0 stays 0) and the original ids; any id size (no lookup table)."""
    ids, inverse = np.unique(labels, return_inverse=True)
    if len(ids) and ids[0] == 0:
        return inverse.reshape(labels.shape), ids[1:]
    return inverse.reshape(labels.shape) + 1, ids


def iou_matrix(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every (truth object, predicted object) pair: (n_true, n_pred) and the original ids."""
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    if truth.shape != pred.shape:
        raise DataError(f"Ground truth {truth.shape} and prediction {pred.shape} have different shapes.")
    for what, arr in (("ground-truth", truth), ("predicted", pred)):
        if arr.size and (not np.issubdtype(arr.dtype, np.integer) and arr.dtype != bool or int(arr.min()) < 0):
            raise DataError(f"The {what} instance labels must be non-negative integers.")
    t, tids = _relabel(truth.astype(np.int64))
    p, pids = _relabel(pred.astype(np.int64))
    nt, npred = len(tids) + 1, len(pids) + 1
    overlap = np.bincount((t * npred + p).ravel(), minlength=nt * npred).reshape(nt, npred).astype(np.float64)
    n_t = overlap.sum(1, keepdims=True)
    n_p = overlap.sum(0, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(overlap > 0, overlap / (n_t + n_p - overlap), 0.0)
    return iou[1:, 1:], tids, pids


def _match_at(scores: np.ndarray, thr: float) -> tuple[np.ndarray, np.ndarray]:
    """StarDist's one-to-one matching: indices (true, pred) of pairs with IoU >= thr."""
    from scipy.optimize import linear_sum_assignment

    n_true, n_pred = scores.shape
    n_matched = min(n_true, n_pred)
    if n_matched == 0 or not np.any(scores >= thr):
        return np.zeros(0, int), np.zeros(0, int)
    costs = -(scores >= thr).astype(float) - scores / (2 * n_matched)
    ti, pi = linear_sum_assignment(costs)
    ok = scores[ti, pi] >= thr
    return ti[ok], pi[ok]


def object_stats(tp: int, fp: int, fn: int, sum_iou: float, n_true: int, n_pred: int) -> dict:
    """Object metrics from counts (StarDist definitions + the both-empty rule of this module)."""
    both_empty = n_true == 0 and n_pred == 0
    if both_empty:
        prec = rec = f1 = acc = pq = 1.0
    elif tp == 0:
        prec = rec = f1 = acc = pq = 0.0
    else:
        prec = tp / (tp + fp)
        rec = tp / (tp + fn)
        f1 = 2 * tp / (2 * tp + fp + fn)
        acc = tp / (tp + fp + fn)
        pq = sum_iou / (tp + fp / 2 + fn / 2)
    return {
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "n_true": int(n_true),
        "n_pred": int(n_pred),
        "precision": float(prec),
        "recall": float(rec),
        "f1": float(f1),
        "accuracy": float(acc),
        "mean_matched_iou": float(sum_iou / tp) if tp > 0 else float("nan"),
        "panoptic_quality": float(pq),
        "sum_matched_iou": float(sum_iou),
        "count_error": int(n_pred - n_true),
    }


def match_instances(truth: np.ndarray, pred: np.ndarray, *, thresholds: Iterable[float] = REPORT_THRESHOLDS) -> dict[float, dict]:
    """Object metrics of one image at each IoU threshold: {threshold: stats dict}.

    ``truth`` and ``pred`` are (Y, X) instance label images (0 = background; ids need not be
    consecutive). See the module docstring for the definitions and the empty-image rules.
    """
    scores, tids, pids = iou_matrix(truth, pred)
    out = {}
    for thr in thresholds:
        ti, pi = _match_at(scores, float(thr))
        out[float(thr)] = object_stats(len(ti), len(pids) - len(ti), len(tids) - len(ti), float(scores[ti, pi].sum()), len(tids), len(pids))
    return out


def pool_object_stats(per_image: Sequence[dict]) -> dict:
    """Pool per-image stats of one threshold by summing counts (StarDist ``by_image=False``)."""
    s = {k: sum(d[k] for d in per_image) for k in ("tp", "fp", "fn", "n_true", "n_pred", "sum_matched_iou")}
    return object_stats(s["tp"], s["fp"], s["fn"], s["sum_matched_iou"], s["n_true"], s["n_pred"])


def object_metrics(truth: np.ndarray, pred: np.ndarray) -> dict:
    """Object metrics at 0.5, 0.75, 0.9 and the averages over 0.5:0.05:0.95, flat keys.

    Keys: ``f1@0.5``, ``precision@0.75``, ..., ``f1@avg``, ``accuracy@avg`` (the DSB score), plus
    ``n_true``, ``n_pred``, ``count_error``.
    """
    stats = match_instances(truth, pred, thresholds=sorted(set(REPORT_THRESHOLDS) | set(AVERAGE_THRESHOLDS)))
    return flatten_object_stats(stats)


def flatten_object_stats(stats: dict[float, dict]) -> dict:
    out: dict[str, Any] = {}
    any_s = next(iter(stats.values()))
    out["n_true"], out["n_pred"], out["count_error"] = any_s["n_true"], any_s["n_pred"], any_s["count_error"]
    for thr in REPORT_THRESHOLDS:
        for k in OBJECT_KEYS[:3] + OBJECT_KEYS[5:]:
            out[f"{k}@{thr:g}"] = stats[thr][k]
    for k in ("precision", "recall", "f1", "accuracy", "panoptic_quality"):
        out[f"{k}@avg"] = float(np.mean([stats[t][k] for t in AVERAGE_THRESHOLDS]))
    return out


def error_maps(truth: np.ndarray, pred: np.ndarray, *, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Error maps of one image at an IoU threshold, as label images.

    Returns
    -------
    dict with ``tp`` (matched predicted objects, their ids), ``fp`` (unmatched predicted objects),
    ``fn`` (missed ground-truth objects, their ids) as (Y, X) int32 arrays, and ``summary`` (Y, X)
    uint8: 1 = TP, 2 = FP, 3 = FN (FN drawn where no predicted object lies).
    """
    scores, tids, pids = iou_matrix(truth, pred)
    ti, pi = _match_at(scores, threshold)
    matched_p = pids[pi]
    matched_t = tids[ti]
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    tp = np.where(np.isin(pred, matched_p), pred, 0).astype(np.int32)
    fp = np.where((pred > 0) & ~np.isin(pred, matched_p), pred, 0).astype(np.int32)
    fn = np.where((truth > 0) & ~np.isin(truth, matched_t), truth, 0).astype(np.int32)
    summary = np.zeros(truth.shape, np.uint8)
    summary[fn > 0] = 3
    summary[fp > 0] = 2
    summary[tp > 0] = 1
    return {"tp": tp, "fp": fp, "fn": fn, "summary": summary}


def components(mask: np.ndarray) -> np.ndarray:
    """Connected components (4-connectivity) of a binary mask, int32."""
    from skimage import measure

    return measure.label(np.asarray(mask), connectivity=1).astype(np.int32)
