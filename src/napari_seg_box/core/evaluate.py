"""Pixel and object metrics against held-out ground truth, error maps, saved evaluation results.

Pixel level (per class 1..K and mean over classes; pooled over all pixels and per image): IoU
(Jaccard), Dice, precision, recall, accuracy and the confusion matrix. Ground-truth pixels with
label 0 (unlabelled) are ignored.

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
"""

from __future__ import annotations

import datetime as _dt
import io
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .errors import DataError
from .events import ItemDone, Message, Progress, check_cancel, run_to_end

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
    ids = np.unique(labels)
    ids = ids[ids != 0]
    lut = np.zeros(int(labels.max(initial=0)) + 1, np.int64)
    lut[ids] = np.arange(1, len(ids) + 1)
    return lut[labels], ids


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


# ---------------------------------------------------------------------- evaluating image sets
@dataclass
class Evaluation:
    """Result of an evaluation: a JSON-able summary and pandas tables.

    summary : dict (pooled pixel and object metrics, settings, model version).
    per_image : one row per image (pixel metrics, object metrics at each threshold, counts).
    per_class : one row per class (pooled pixel metrics).
    objects : one row per (object class, threshold) (pooled object metrics).
    confusion : (K, K) pooled confusion matrix as a DataFrame (rows truth, columns prediction).
    """

    summary: dict
    per_image: Any
    per_class: Any
    objects: Any
    confusion: Any
    id: str | None = None
    error_maps: dict[str, np.ndarray] = field(default_factory=dict)

    def to_csv(self, folder) -> list[str]:
        """Write the tables as CSV files into ``folder``; returns the paths."""
        import os

        os.makedirs(folder, exist_ok=True)
        paths = []
        for name in ("per_image", "per_class", "objects", "confusion"):
            p = os.path.join(str(folder), f"{name}.csv")
            getattr(self, name).to_csv(p, index=name == "confusion")
            paths.append(p)
        return paths


def evaluate_pairs(
    items: Iterable[tuple[str, np.ndarray, np.ndarray, dict | None, dict | None]],
    *,
    n_classes: int,
    class_names: Sequence[str] | None = None,
    object_classes: Sequence[int] | None = None,
    keep_error_maps: bool = False,
) -> Evaluation:
    """Evaluate (name, truth labels, predicted labels, truth instances, predicted instances) items.

    ``truth`` / ``pred`` labels are project labels (0 = unlabelled, 1..K). Instances are dicts
    {class value: (Y, X) instance image} or None (then the connected components of each object
    class are used). Returns an :class:`Evaluation`.
    """
    import pandas as pd

    names = list(class_names) if class_names else [f"class {i + 1}" for i in range(n_classes)]
    object_classes = list(object_classes) if object_classes is not None else list(range(2, n_classes + 1))
    conf = np.zeros((n_classes, n_classes), np.int64)
    rows = []
    per_thr: dict[tuple[int, float], list[dict]] = {}
    maps = {}
    for name, truth, pred, tinst, pinst in items:
        c = pixel_confusion(truth, pred, n_classes)
        conf += c
        pm = _pixel_dict(c, names)
        row: dict[str, Any] = {"image": name, "pixel_accuracy": pm["accuracy"], "mean_iou": pm["mean_iou"], "mean_dice": pm["mean_dice"]}
        for cname, vals in pm["per_class"].items():
            for k, v in vals.items():
                row[f"{k}[{cname}]"] = v
        for oc in object_classes:
            t = (tinst or {}).get(oc)
            if t is None:
                t = components(truth == oc)
            p = (pinst or {}).get(oc)
            if p is None:
                p = components(pred == oc)
            stats = match_instances(t, p, thresholds=sorted(set(REPORT_THRESHOLDS) | set(AVERAGE_THRESHOLDS)))
            for thr, s in stats.items():
                per_thr.setdefault((oc, thr), []).append(s)
            flat = flatten_object_stats(stats)
            suffix = "" if len(object_classes) == 1 else f"[{names[oc - 1]}]"
            for k, v in flat.items():
                row[f"{k}{suffix}"] = v
            if keep_error_maps:
                maps[f"{name}/{names[oc - 1]}"] = error_maps(t, p)["summary"]
        rows.append(row)
    if not rows:
        raise DataError("Nothing to evaluate: no image has ground truth (annotate test images or mark some as test).")
    pooled = _pixel_dict(conf, names)
    per_class = pd.DataFrame([{"class": n, "value": i + 1, **pooled["per_class"][n]} for i, n in enumerate(names)])
    obj_rows = []
    summary_objects = {}
    for oc in object_classes:
        flat_stats = {}
        for thr in sorted(set(REPORT_THRESHOLDS) | set(AVERAGE_THRESHOLDS)):
            s = pool_object_stats(per_thr[(oc, thr)])
            flat_stats[thr] = s
            if thr in REPORT_THRESHOLDS:
                obj_rows.append({"class": names[oc - 1], "threshold": thr, **s})
        avg = {k: float(np.mean([flat_stats[t][k] for t in AVERAGE_THRESHOLDS])) for k in ("precision", "recall", "f1", "accuracy", "panoptic_quality")}
        obj_rows.append({"class": names[oc - 1], "threshold": "0.5:0.95", **avg})
        summary_objects[names[oc - 1]] = flatten_object_stats(flat_stats)
    per_image = pd.DataFrame(rows)
    summary = {
        "n_images": len(rows),
        "pixel": {k: v for k, v in pooled.items()},
        "objects": summary_objects,
        "mean_object_f1@0.5": float(np.mean([v["f1@0.5"] for v in summary_objects.values()])) if summary_objects else float("nan"),
        "mean_abs_count_error": float(np.mean(np.abs(per_image.filter(like="count_error").to_numpy()))) if summary_objects else float("nan"),
    }
    confusion = pd.DataFrame(conf, index=[f"true {n}" for n in names], columns=[f"pred {n}" for n in names])
    return Evaluation(summary, per_image, per_class, pd.DataFrame(obj_rows), confusion, error_maps=maps)


def components(mask: np.ndarray) -> np.ndarray:
    """Connected components (4-connectivity) of a binary mask, int32."""
    from skimage import measure

    return measure.label(np.asarray(mask), connectivity=1).astype(np.int32)


def truth_instances(project, name: str, labels: np.ndarray | None, *, classes: Iterable[int]) -> dict[int, np.ndarray]:
    """Ground-truth objects of ``name`` per object class: the store's instances where present
    (restricted to pixels of that class), else connected components of the class in ``labels``."""
    inst = project.get_instances(name) if project is not None else None
    out = {}
    for c in classes:
        if labels is None:
            continue
        if inst is not None:
            out[c] = np.where(labels == c, inst, 0).astype(np.int64)
        else:
            out[c] = components(labels == c)
    return out


def iter_evaluate_project(
    project,
    version: str | None = None,
    *,
    split: str = "test",
    names: Sequence[str] | None = None,
    predict_config=None,
    postprocess=None,
    save: bool = True,
    keep_error_maps: bool = False,
    cancel=None,
) -> Iterator[Any]:
    """Evaluate a model version on the store's held-out images (a generator).

    Each annotated image of ``split`` (default ``test``) is predicted, post-processed with the
    model's tuned settings (or ``postprocess``), and scored against its labels; object ground truth
    comes from the store's instances, else connected components of the labels. Results are written
    under ``results/evaluations/<id>/`` (``summary.json``, ``per_image.csv``, ``per_class.csv``,
    ``objects.csv``, ``confusion.csv``) when ``save``. Returns an :class:`Evaluation`.
    """
    from .infer import Predictor, iter_predict
    from .postprocess import PostprocessConfig, postprocess as run_postprocess

    version = project.resolve_version(version)
    predictor = Predictor.from_project(project, version)
    K = predictor.classes
    if K != project.n_classes:
        yield Message(f"Model version {version} has {K} classes, the project {project.n_classes}.", level="warning")
    pp = postprocess if postprocess is not None else PostprocessConfig.for_model(predictor.meta)
    if isinstance(pp, dict):
        pp = PostprocessConfig.from_dict(pp)
    names = list(names) if names is not None else [n for n in project.image_names(split) if project.image_record(n).has_labels]
    if not names:
        raise DataError(f"No annotated {split} images in the project: mark annotated images as {split} (`split {split} NAME`) to evaluate.")
    object_classes = list(pp.object_classes) if pp.object_classes is not None else list(range(2, K + 1))
    items = []
    for i, name in enumerate(names):
        check_cancel(cancel)
        truth = project.get_labels(name)
        if truth is not None and int(truth.max(initial=0)) > K:
            raise DataError(
                f"Image {name} has label {int(truth.max())} but model version {version} knows only {K} classes: "
                "evaluate with a model trained on all the project's classes."
            )
        probs = yield from iter_predict(project.get_image(name), predictor, config=predict_config, stack=False, cancel=cancel)
        res = run_postprocess(probs, pp)
        pinst = {c: np.where(np.isin(res.instances, [j for j, cc in res.instance_classes.items() if cc == c]), res.instances, 0) for c in object_classes}
        tinst = truth_instances(project, name, truth, classes=object_classes)
        items.append((name, truth, res.semantic, tinst, pinst))
        yield ItemDone(i, len(names), name)
    ev = evaluate_pairs(items, n_classes=K, class_names=predictor.class_names, object_classes=object_classes, keep_error_maps=keep_error_maps)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    ev.id = f"{version}-{split}-{stamp}"
    ev.summary.update(
        {
            "id": ev.id,
            "model_version": version,
            "split": split,
            "images": names,
            "postprocess": pp.to_dict(),
            "predict_config": (predict_config.to_dict() if hasattr(predict_config, "to_dict") else predict_config) or {},
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "encoder": predictor.meta.get("encoder"),
        }
    )
    if save:
        save_evaluation(project, ev)
        yield Message(f"Saved evaluation {ev.id} to results/evaluations/{ev.id}/ in the store.")
    return ev


def evaluate_project(project, version: str | None = None, **kwargs) -> Evaluation:
    """Blocking :func:`iter_evaluate_project`."""
    return run_to_end(iter_evaluate_project(project, version, **kwargs))


def save_evaluation(project, ev: Evaluation) -> str:
    """Write an evaluation into the store (tables first, ``summary.json`` last); returns its folder."""
    base = f"results/evaluations/{ev.id}"
    for name in ("per_image", "per_class", "objects", "confusion"):
        buf = io.StringIO()
        getattr(ev, name).to_csv(buf, index=name == "confusion")
        project.write_bytes(f"{base}/{name}.csv", buf.getvalue().encode())
    project.write_json(f"{base}/summary.json", _finite(ev.summary))
    return base


def _finite(obj):
    """NaN -> None, so the JSON is standard."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def list_evaluations(project) -> list[dict]:
    """Summaries of the evaluations saved in the store, oldest first."""
    out = []
    for d in project.list_dir("results/evaluations"):
        if project.exists(f"results/evaluations/{d}/summary.json"):
            out.append(project.read_json(f"results/evaluations/{d}/summary.json"))
    return sorted(out, key=lambda s: s.get("created") or "")


def compare_models(project, versions: Sequence[str] | None = None, *, evaluate_missing: bool = True, split: str = "test", **kwargs):
    """A table comparing model versions on held-out images (one row per version).

    Uses the newest saved evaluation of each version on ``split``; evaluates versions without one
    when ``evaluate_missing``. Columns: version, encoder, val_iou (training), mean_iou, mean_dice,
    pixel_accuracy, object f1@0.5, f1@0.75, accuracy@avg, panoptic_quality@0.5, mean_abs_count_error.
    """
    import pandas as pd

    versions = list(versions) if versions else [m["version"] for m in project.model_versions()]
    saved = {}
    for s in list_evaluations(project):
        if s.get("split") == split:
            saved[s["model_version"]] = s
    rows = []
    for v in versions:
        s = saved.get(v)
        if s is None:
            if not evaluate_missing:
                continue
            s = _finite(evaluate_project(project, v, split=split, **kwargs).summary)
        meta = project.model_metadata(v)
        objs = s.get("objects") or {}

        def mean_of(key):
            vals = [o.get(key) for o in objs.values() if o.get(key) is not None]
            return float(np.mean(vals)) if vals else float("nan")

        px = s.get("pixel") or {}
        rows.append(
            {
                "version": v,
                "encoder": meta.get("encoder"),
                "val_iou": (meta.get("best_metrics") or {}).get("val_iou"),
                "mean_iou": px.get("mean_iou"),
                "mean_dice": px.get("mean_dice"),
                "pixel_accuracy": px.get("accuracy"),
                "f1@0.5": mean_of("f1@0.5"),
                "f1@0.75": mean_of("f1@0.75"),
                "accuracy@avg": mean_of("accuracy@avg"),
                "panoptic_quality@0.5": mean_of("panoptic_quality@0.5"),
                "mean_abs_count_error": s.get("mean_abs_count_error"),
                "evaluation": s.get("id"),
            }
        )
    return pd.DataFrame(rows)
