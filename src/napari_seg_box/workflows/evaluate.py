"""Evaluating model versions on a project's held-out images, comparing versions and the classical baseline."""

from __future__ import annotations

import datetime as _dt
from typing import Any, Iterator, Sequence

import numpy as np

from ..core.errors import DataError
from ..core.events import ItemDone, Message, check_cancel, run_to_end
from ..core.baseline import classical_segmentation
from ..core.evaluate import Evaluation, _finite, evaluate_pairs, list_evaluations, save_evaluation, truth_instances
from ..core.infer import Predictor, iter_predict
from ..core.postprocess import PostprocessConfig
from ..core.postprocess import postprocess as run_postprocess


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


def evaluate_baseline(project, *, split: str = "test", **options):
    """Score :func:`classical_segmentation` on the annotated ``split`` images of a two-class project.

    The baseline's objects are class 2 (e.g. nucleus, cell interior), everything else class 1; the
    scoring is the same as :func:`~napari_seg_box.core.evaluate.evaluate_project` (pixel metrics,
    object matching against the store's instances or the labels' connected components).
    ``options`` go to :func:`classical_segmentation`. Returns an ``Evaluation``.
    """

    if project.n_classes != 2:
        raise DataError("The classical baseline segments one object class: it needs a two-class project.")
    items = []
    for name in project.image_names(split):
        truth = project.get_labels(name)
        if truth is None:
            continue
        instances = classical_segmentation(project.get_image(name), **options)
        semantic = np.where(instances > 0, 2, 1).astype(np.uint8)
        items.append((name, truth, semantic, truth_instances(project, name, truth, classes=[2]), {2: instances}))
    ev = evaluate_pairs(items, n_classes=2, class_names=project.class_names, object_classes=[2])
    ev.summary["model_version"] = "classical baseline (smoothed Otsu + watershed)"
    return ev
