"""Scoring a set of predictions against ground truth: pooled and per-image tables, saved results.

The metrics themselves are defined once, in :mod:`.metrics`; this module pools them over images and
classes into an :class:`Evaluation` (JSON-able summary + pandas tables) and saves / lists evaluations
in the project store. Predicting the images first is a workflow (``workflows.evaluate``).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DataError
from .metrics import (
    AVERAGE_THRESHOLDS,
    REPORT_THRESHOLDS,
    _pixel_dict,
    components,
    error_maps,
    flatten_object_stats,
    match_instances,
    pixel_confusion,
    pool_object_stats,
)


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

        from .io import output_dir

        output_dir(folder)
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
        avg = {
            k: float(np.mean([flat_stats[t][k] for t in AVERAGE_THRESHOLDS]))
            for k in ("precision", "recall", "f1", "accuracy", "panoptic_quality")
        }
        obj_rows.append({"class": names[oc - 1], "threshold": "0.5:0.95", **avg})
        summary_objects[names[oc - 1]] = flatten_object_stats(flat_stats)
    per_image = pd.DataFrame(rows)
    summary = {
        "n_images": len(rows),
        "pixel": dict(pooled),
        "objects": summary_objects,
        "mean_object_f1@0.5": float(np.mean([v["f1@0.5"] for v in summary_objects.values()])) if summary_objects else float("nan"),
        "mean_abs_count_error": float(np.mean(np.abs(per_image.filter(like="count_error").to_numpy())))
        if summary_objects
        else float("nan"),
    }
    confusion = pd.DataFrame(conf, index=[f"true {n}" for n in names], columns=[f"pred {n}" for n in names])
    return Evaluation(summary, per_image, per_class, pd.DataFrame(obj_rows), confusion, error_maps=maps)


def truth_instances(labels: np.ndarray, instances: np.ndarray | None, *, classes: Iterable[int]) -> dict[int, np.ndarray]:
    """Ground-truth objects per object class: the stored ``instances`` where there are some
    (restricted to pixels of that class), else connected components of the class in ``labels``."""
    out = {}
    for c in classes:
        out[c] = np.where(labels == c, instances, 0).astype(np.int64) if instances is not None else components(labels == c)
    return out


def objects_of_class(result, c: int) -> np.ndarray:
    """The predicted objects of class ``c`` of a :class:`~.postprocess.PostprocessResult` (others 0)."""
    ids = [i for i, cc in result.instance_classes.items() if cc == c]
    return np.where(np.isin(result.instances, ids), result.instances, 0)


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
