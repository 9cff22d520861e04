"""Evaluating model versions on a project's held-out images, comparing versions and the classical baseline."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..core.baseline import classical_segmentation
from ..core.config import as_config
from ..core.errors import DataError
from ..core.evaluate import Evaluation, _finite, evaluate_pairs, list_evaluations, objects_of_class, save_evaluation, truth_instances
from ..core.events import ItemDone, Message, check_cancel, run_to_end
from ..core.infer import Predictor, iter_predict
from ..core.postprocess import PostprocessConfig
from ..core.store import SPLITS, iter_annotated_planes
from .tune import mark_split_hints


def iter_evaluate_project(
    project,
    version: str | None = None,
    *,
    split: str = "test",
    names: Sequence[str] | None = None,
    predict_config=None,
    postprocess: PostprocessConfig | dict | None = None,
    predictor: Predictor | None = None,
    save: bool = True,
    keep_error_maps: bool = False,
    cancel=None,
) -> Iterator[Any]:
    """Evaluate a model version on the store's held-out images (a generator).

    Each annotated image of ``split`` (default ``test``; or the images ``names``) is predicted,
    post-processed with the model's tuned settings (or ``postprocess``), and scored against its
    labels (the annotated planes of a stack, one by one); object ground truth comes from the store's
    instances, else connected components of the labels. Results are written under
    ``results/evaluations/<id>/`` (``summary.json``, ``per_image.csv``, ``per_class.csv``,
    ``objects.csv``, ``confusion.csv``) when ``save``. ``predictor``: the model already loaded
    (default: ``version`` of ``project``). Returns an :class:`Evaluation`.
    """
    predictor = predictor or Predictor.from_project(project, version)
    K = predictor.classes
    if project.n_classes != K:
        yield Message(f"Model version {predictor.version} has {K} classes, the project {project.n_classes}.", level="warning")
    pp = as_config(PostprocessConfig, postprocess) if postprocess is not None else predictor.default_postprocess
    planes = list(
        iter_annotated_planes(
            project, (split,) if names is None else SPLITS, images=None if names is None else set(names), context=predictor.context
        )
    )
    if not planes:
        raise DataError(f"No annotated {split} images in the project to evaluate on.", hints=mark_split_hints(split))
    object_classes = list(pp.object_classes) if pp.object_classes is not None else list(range(2, K + 1))
    volumes = _dense_volumes(project, planes)  # predicted whole once, also scored in 3D
    whole: dict[str, np.ndarray] = {}
    items = []
    for i, plane in enumerate(planes):
        check_cancel(cancel)
        if int(plane.labels.max(initial=0)) > K:
            raise DataError(
                f"Image {plane.name} has label {int(plane.labels.max())} but model version {predictor.version} knows only {K} classes: "
                "evaluate with a model trained on all the project's classes."
            )
        if plane.image in volumes:
            if plane.image not in whole:
                image = project.get_image(plane.image)
                whole[plane.image] = yield from iter_predict(image, predictor, config=predict_config, stack=True, cancel=cancel)
            probs = whole[plane.image][plane.z]
        else:
            probs = yield from iter_predict(plane.pixels, predictor, config=predict_config, stack=False, cancel=cancel)
        res = predictor.postprocess(probs, pp)
        pinst = {c: objects_of_class(res, c) for c in object_classes}
        items.append(
            (plane.name, plane.labels, res.semantic, truth_instances(plane.labels, plane.instances, classes=object_classes), pinst)
        )
        yield ItemDone(i, len(planes), plane.name)
    ev = evaluate_pairs(
        items, n_classes=K, class_names=predictor.class_names, object_classes=object_classes, keep_error_maps=keep_error_maps
    )
    if whole:
        ev.summary["objects_3d"] = {
            name: _objects_3d(project, volumes[name], probs, predictor, pp, object_classes) for name, probs in whole.items()
        }
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    ev.id = f"{predictor.version}-{split}-{stamp}"
    ev.summary.update(
        {
            "id": ev.id,
            "model_version": predictor.version,
            "split": split,
            "images": [p.name for p in planes],
            "postprocess": pp.to_dict(),
            "predict_config": (predict_config.to_dict() if hasattr(predict_config, "to_dict") else predict_config) or {},
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "encoder": predictor.info.encoder,
        }
    )
    if save:
        save_evaluation(project, ev)
        yield Message(f"Saved evaluation {ev.id} to results/evaluations/{ev.id}/ in the store.")
    return ev


def _dense_volumes(project, planes) -> dict:
    """{name: record} of the volumes among ``planes`` whose every plane is annotated (3D objects can be scored)."""
    counts: dict[str, int] = {}
    for p in planes:
        if p.z is not None:
            counts[p.image] = counts.get(p.image, 0) + 1
    records = {n: project.image_record(n) for n in counts}
    return {n: r for n, r in records.items() if not r.is_timelapse and counts[n] == r.spatial_shape[0]}


def _objects_3d(project, record, probs, predictor: Predictor, pp, object_classes) -> dict:
    """3D object matching of a volume per object class: the predicted 3D objects (as ``predict`` makes
    them) against the true ones joined the same way (:func:`~..core.volume.truth_objects_volume`)."""
    from ..core.metrics import object_metrics
    from ..core.volume import truth_objects_volume

    res = predictor.objects(probs, pp, record=record)
    labels = project.get_labels(record.name)
    if record.unpainted_background:
        labels = np.where(labels == 0, 1, labels)
    truth = truth_objects_volume(labels, project.get_instances(record.name), classes=object_classes, voxel_size=record.voxel_size)
    names = predictor.class_names
    return {names[c - 1]: object_metrics(truth[c], objects_of_class(res, c)) for c in object_classes}


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

    entries = {e.version: e for e in project.model_versions()}
    versions = list(versions) if versions else list(entries)
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
        entry = entries.get(v) or entries[project.resolve_version(v)]
        objs = s.get("objects") or {}

        def mean_of(key, objs=objs):
            vals = [o.get(key) for o in objs.values() if o.get(key) is not None]
            return float(np.mean(vals)) if vals else float("nan")

        px = s.get("pixel") or {}
        rows.append(
            {
                "version": v,
                "encoder": entry.encoder,
                "val_iou": entry.best.get("val_iou"),
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


def evaluate_baseline(project, *, split: str = "test", **options) -> Evaluation:
    """Score :func:`classical_segmentation` on the annotated ``split`` images of a two-class project.

    The baseline's objects are class 2 (e.g. nucleus, cell interior), everything else class 1; the
    scoring is the same as :func:`evaluate_project` (pixel metrics, object matching against the
    store's instances or the labels' connected components). ``options`` go to
    :func:`classical_segmentation`. Returns an :class:`Evaluation`.
    """
    if project.n_classes != 2:
        raise DataError("The classical baseline segments one object class: it needs a two-class project.")
    items = []
    for plane in iter_annotated_planes(project, (split,)):
        instances = classical_segmentation(plane.pixels, **options)
        semantic = np.where(instances > 0, 2, 1).astype(np.uint8)
        items.append((plane.name, plane.labels, semantic, truth_instances(plane.labels, plane.instances, classes=[2]), {2: instances}))
    ev = evaluate_pairs(items, n_classes=2, class_names=project.class_names, object_classes=[2])
    ev.summary["model_version"] = "classical baseline (smoothed Otsu + watershed)"
    return ev
