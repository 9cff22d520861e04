"""Tuning post-processing on a project's validation images: a small grid search saved with the model version."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..core.errors import DataError
from ..core.evaluate import objects_of_class, truth_instances
from ..core.events import Message, Progress, check_cancel, run_to_end
from ..core.infer import Predictor, iter_predict
from ..core.metrics import match_instances, metrics_from_confusion, object_stats, pixel_confusion
from ..core.postprocess import PostprocessConfig
from ..core.store import SPLITS, iter_annotated_planes
from ..core.versions import Tuning

DEFAULT_GRID = {
    "threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
    "min_size": (0, 10, 30, 60),
    "seed_distance": (3, 5, 8, 12),
    "seed_level": (0.3, 0.45, 0.6, 0.75),  # distance models: the predicted distance that seeds objects
    "instances": ("watershed", "components"),
}
# without a grid of their own, the seed distance and the minimum size follow the objects' size:
SEED_FRACTIONS = (0.2, 0.35, 0.5, 0.7)  # of the median object's diameter (a fixed 5 px over-split long objects)
MIN_SIZE_FRACTIONS = (0.0, 0.05, 0.15, 0.3)  # of the median object's area


def iter_tune_postprocess(
    project,
    version: str | None = None,
    *,
    names: Sequence[str] | None = None,
    grid: dict[str, Sequence] | None = None,
    base: PostprocessConfig | None = None,
    predict_config=None,
    predictor: Predictor | None = None,
    save: bool = True,
    cancel=None,
) -> Iterator[Any]:
    """Grid-search post-processing settings on validation images (a generator).

    Searches the threshold, the minimum object size, the watershed's seeds (the seed distance; for a
    distance model its seed level, or the seed distance where the mask's shape splits better) and
    whether the watershed or plain connected components make the better objects (``grid`` overrides any of
    :data:`DEFAULT_GRID`). Maximises object F1 at IoU 0.5 pooled over the images (for a model whose
    settings make no objects, ``instances="none"``, the mean pixel IoU of the object classes instead);
    ties, common on small validation sets, go to the middle of the plateau (:func:`most_robust_best`).
    The best settings are saved with the model version (:meth:`Project.save_tuning`) when ``save``.
    ``names``: the images to tune on (default: the annotated validation images); ``predictor``: the
    model already loaded (default: ``version`` of ``project``), which then carries the tuned settings.

    Returns
    -------
    (best :class:`PostprocessConfig`, pandas DataFrame of every combination and its score).
    """
    import pandas as pd

    predictor = predictor or Predictor.from_project(project, version)
    planes = tuning_planes(project, predictor.info, names)
    if not planes:
        raise DataError("No annotated validation images to tune on.", hints=mark_split_hints("validation"))
    K = max(predictor.classes, 2)
    tinst = [truth_instances(p.labels, p.instances, classes=range(2, K + 1)) for p in planes]
    grid = {**DEFAULT_GRID, **size_grid(tinst), **(grid or {})}
    base = base or predictor.default_postprocess
    probabilities = []
    for i, plane in enumerate(planes):
        check_cancel(cancel)
        yield Progress(i, len(planes), stage="predict validation images")
        probabilities.append((yield from iter_predict(plane.pixels, predictor, config=predict_config, stack=False, cancel=cancel)))
    objects = base.instances != "none"
    # the watershed's seeds: at a distance apart (distance transform), at a predicted distance (distance
    # models: or the distance transform, where that splits better) or at the predicted interiors
    # (boundary models: nothing to tune)
    seed_keys = {"seed_level", "seed_distance", "seeds"} if predictor.distance else set() if predictor.boundary else {"seed_distance"}
    if predictor.distance:
        grid.setdefault("seeds", ("model", "shape"))
    keys = [k for k in ("threshold", "min_size", "seed_distance", "seed_level", "seeds", "instances") if k in grid]
    keys = [k for k in keys if k not in ("seed_distance", "seed_level", "seeds") or (k in seed_keys and objects)]
    if not objects:
        keys = [k for k in keys if k != "instances"]

    def needed(values) -> bool:  # a seed setting matters only to the watershed that uses it: else its first value
        d = dict(zip(keys, values))
        watershed = d.get("instances", base.instances) == "watershed"
        source = d.get("seeds", "shape")
        used = {"seeds": watershed, "seed_level": watershed and source == "model", "seed_distance": watershed and source == "shape"}
        return all(used[k] or d[k] == grid[k][0] for k in used if k in d)

    combos = [c for c in itertools.product(*[grid[k] for k in keys]) if needed(c)]
    rows = []
    for j, values in enumerate(combos):
        check_cancel(cancel)
        cfg = base.replace(**dict(zip(keys, values)))
        tp = fp = fn = 0
        conf = np.zeros((K, K), np.int64)
        for plane, probs, truths in zip(planes, probabilities, tinst):
            res = predictor.postprocess(probs, cfg)
            if objects:
                for c, t in truths.items():
                    m = match_instances(t, objects_of_class(res, c), thresholds=(0.5,))[0.5]
                    tp, fp, fn = tp + m["tp"], fp + m["fp"], fn + m["fn"]
            else:
                conf += pixel_confusion(plane.labels, res.semantic, K)
        if objects:
            score = object_stats(tp, fp, fn, 0.0, tp + fn, tp + fp)["f1"]
        else:
            score = float(np.nanmean(metrics_from_confusion(conf)["iou"][1:]))
        rows.append({**dict(zip(keys, values)), "score": score, "metric": "object_f1@0.5" if objects else "pixel_iou"})
        yield Progress(j + 1, len(combos), stage="tune post-processing")
    table = pd.DataFrame(rows)
    best_row = table.loc[most_robust_best(table, keys, grid)]
    best = base.replace(**{k: type(grid[k][0])(best_row[k]) for k in keys})
    if save:
        images = sorted({p.image for p in planes})
        tuning = Tuning(best, float(best_row["score"]), str(best_row["metric"]), tuple(images), {k: list(grid[k]) for k in keys})
        predictor.info = project.save_tuning(predictor.info, tuning)  # the predictor now uses them too
        yield Message(
            f"Saved post-processing settings with model version {predictor.version}: {best.to_dict()} ({best_row['metric']} {best_row['score']:.3f})."
        )
    return best, table


def tuning_planes(project, info, names: Sequence[str] | None = None) -> list:
    """The annotated planes to tune ``info``'s post-processing on: ``names`` if given; else the
    validation part the model version's training kept aside (whole images, or the bottom rows of
    each image when training split its images automatically), so that a plain ``train`` tunes too;
    else (a version that did not record it) the images marked validation."""
    import dataclasses

    context = info.context if info is not None else 0
    if names is not None:
        return list(iter_annotated_planes(project, SPLITS, images=set(names), context=context))
    rows = dict(info.provenance.validation_rows) if info is not None else {}
    if rows:
        images = {r.name for r in project.images() if r.name in rows or any(k.startswith(f"{r.name}[z=") for k in rows)}
        planes = [p for p in iter_annotated_planes(project, SPLITS, images=images, context=context) if p.name in rows]
        cut = [
            dataclasses.replace(
                p,
                pixels=p.pixels[rows[p.name] :],
                labels=p.labels[rows[p.name] :],
                instances=None if p.instances is None else p.instances[rows[p.name] :],
            )
            for p in planes
        ]
        cut = [p for p in cut if (p.labels > 0).any()]
        if cut:
            return cut
    return list(iter_annotated_planes(project, ("validation",), context=context))


def size_grid(truths: Sequence[dict]) -> dict:
    """Seed distances and minimum sizes relative to the median true object (nothing without objects)."""
    areas = np.array([a for t in truths for inst in t.values() for a in np.bincount(inst.ravel())[1:] if a > 0])
    if len(areas) == 0:
        return {}
    area = float(np.median(areas))
    diameter = 2.0 * np.sqrt(area / np.pi)
    seeds = sorted({max(2, round(diameter * f)) for f in SEED_FRACTIONS})
    sizes = sorted({round(area * f) for f in MIN_SIZE_FRACTIONS})
    return {"seed_distance": tuple(seeds), "min_size": tuple(sizes)}


def mark_split_hints(split: str) -> dict:
    """What to do when no annotated image is marked ``split``, in each face's words."""
    return {
        "python": f"Mark annotated images as {split}: project.set_split(name, {split!r}).",
        "cli": f"Mark annotated images as {split}: `napari-seg-box split STORE {split} NAME ...`.",
        "gui": f"Mark annotated images as '{split}' in the Annotate panel's list.",
    }


def most_robust_best(table, keys: Sequence[str], grid: dict[str, Sequence]):
    """Index of the best-scoring row of a grid-search ``table`` (columns ``keys`` and ``score``).

    On a small validation set many settings tie (one object is one step of F1); the tie goes to the
    setting whose grid neighbours (one step along one key) score best on average: the middle of a
    plateau of good settings, which carries over to new images better than its edge.
    """
    scores = table["score"].to_numpy(dtype=float)
    top = [i for i, s in zip(table.index, scores) if s >= scores.max() - 1e-9]
    if len(top) == 1:
        return top[0]
    step = {k: {v: j for j, v in enumerate(grid[k])} for k in keys}
    coord = {i: tuple(step[k][table.at[i, k]] for k in keys) for i in table.index}
    score_at = {coord[i]: s for i, s in zip(table.index, scores)}

    def neighbourhood(i):
        c = coord[i]
        near = [score_at.get(c[:d] + (c[d] + e,) + c[d + 1 :]) for d in range(len(keys)) for e in (-1, 1)]
        near = [v for v in near if v is not None]
        return float(np.mean(near)) if near else 0.0

    return max(top, key=lambda i: (neighbourhood(i), -top.index(i)))


def tune_postprocess(project, version: str | None = None, **kwargs):
    """Blocking :func:`iter_tune_postprocess`: returns (best config, table of scores)."""
    return run_to_end(iter_tune_postprocess(project, version, **kwargs))
