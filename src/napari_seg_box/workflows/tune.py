"""Tuning post-processing on a project's validation images: a small grid search saved with the model version."""

from __future__ import annotations

import itertools
from typing import Any, Iterator, Sequence

import numpy as np

from ..core.errors import DataError
from ..core.events import Message, Progress, check_cancel, run_to_end
from ..core.evaluate import truth_instances
from ..core.infer import Predictor, iter_predict
from ..core.metrics import match_instances, pixel_confusion
from ..core.postprocess import PostprocessConfig, postprocess


# ---------------------------------------------------------------------- tuning
DEFAULT_GRID = {
    "threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
    "min_size": (0, 10, 30, 60),
    "seed_distance": (3, 5, 8, 12),
    "instances": ("watershed", "components"),
}


def iter_tune_postprocess(
    project,
    version: str | None = None,
    *,
    names: Sequence[str] | None = None,
    grid: dict[str, Sequence] | None = None,
    base: PostprocessConfig | None = None,
    predict_config=None,
    probabilities: dict[str, np.ndarray] | None = None,
    save: bool = True,
    cancel=None,
) -> Iterator[Any]:
    """Grid-search post-processing settings on validation images (a generator).

    Searches the threshold, the minimum object size, the watershed's seed distance and whether the
    watershed or plain connected components make the better objects (``grid`` overrides any of
    :data:`DEFAULT_GRID`). Maximises object F1 at IoU 0.5 pooled over the images (for a model whose
    settings make no objects, ``instances="none"``, the mean pixel IoU of the object classes instead); ties,
    common on small validation sets, go to the middle of the plateau (:func:`most_robust_best`). The best
    settings are saved into the model version's metadata (``postprocess``) when ``save``.

    Returns
    -------
    (best :class:`PostprocessConfig`, pandas DataFrame of every combination and its score).
    """
    import pandas as pd


    version = project.resolve_version(version)
    meta = project.model_metadata(version)
    names = list(names) if names is not None else [n for n in project.image_names("validation") if project.image_record(n).has_labels]
    if not names:
        raise DataError("No annotated validation images to tune on: mark some annotated images as validation (`split`).")
    grid = {**DEFAULT_GRID, **(grid or {})}
    base = base or PostprocessConfig.for_model(meta)
    if probabilities is None:
        predictor = Predictor.from_project(project, version)
        probabilities = {}
        for i, name in enumerate(names):
            check_cancel(cancel)
            yield Progress(i, len(names), stage="predict validation images")
            probabilities[name] = yield from iter_predict(project.get_image(name), predictor, config=predict_config, stack=False, cancel=cancel)
    K = next(iter(probabilities.values())).shape[0] - base.boundary
    truths = {n: project.get_labels(n) for n in names}
    tinst = {n: truth_instances(project, n, truths[n], classes=range(2, max(K, 2) + 1)) for n in names}
    objects = base.instances != "none"
    keys = [k for k in ("threshold", "min_size", "seed_distance", "instances") if k in grid]
    if not objects:
        keys = [k for k in keys if k not in ("seed_distance", "instances")]
    if base.boundary:  # boundary models split along the predicted boundaries, not at seed distances
        keys = [k for k in keys if k != "seed_distance"]

    def needed(values) -> bool:  # seed_distance matters only to the distance-transform watershed
        d = dict(zip(keys, values))
        return "seed_distance" not in d or d.get("instances", base.instances) == "watershed" or d["seed_distance"] == grid["seed_distance"][0]

    combos = [c for c in itertools.product(*[grid[k] for k in keys]) if needed(c)]
    rows = []
    for j, values in enumerate(combos):
        check_cancel(cancel)
        cfg = PostprocessConfig.from_dict({**base.to_dict(), **dict(zip(keys, values))})
        tp = fp = fn = 0
        conf = np.zeros((max(K, 2), max(K, 2)), np.int64)
        for n in names:
            res = postprocess(probabilities[n], cfg)
            if objects:
                for c, t in tinst[n].items():
                    p = np.where(np.isin(res.instances, [i for i, cc in res.instance_classes.items() if cc == c]), res.instances, 0)
                    m = match_instances(t, p, thresholds=(0.5,))[0.5]
                    tp, fp, fn = tp + m["tp"], fp + m["fp"], fn + m["fn"]
            else:
                conf += pixel_confusion(truths[n], res.semantic, max(K, 2))
        if objects:
            score = 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0
        else:
            inter = np.diag(conf)[1:]
            union = conf.sum(0)[1:] + conf.sum(1)[1:] - inter
            score = float(np.nanmean(np.where(union > 0, inter / np.maximum(union, 1), np.nan)))
        rows.append({**dict(zip(keys, values)), "score": score, "metric": "object_f1@0.5" if objects else "pixel_iou"})
        yield Progress(j + 1, len(combos), stage="tune post-processing")
    table = pd.DataFrame(rows)
    best_row = table.loc[most_robust_best(table, keys, grid)]
    best = PostprocessConfig.from_dict({**base.to_dict(), **{k: (type(grid[k][0])(best_row[k])) for k in keys}})
    if save:
        project.update_model_metadata(
            version,
            postprocess={"config": best.to_dict(), "score": float(best_row["score"]), "metric": best_row["metric"], "images": names, "grid": {k: list(grid[k]) for k in keys}},
        )
        yield Message(f"Saved post-processing settings with model version {version}: {best.to_dict()} ({best_row['metric']} {best_row['score']:.3f}).")
    return best, table


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
