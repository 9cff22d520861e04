"""From per-class probabilities to labels: one pure function, so settings change without re-predicting.

:func:`postprocess` takes the (K, Y, X) probabilities of :func:`infer.predict` and a
:class:`PostprocessConfig` and returns the semantic label image (project values 1..K) and the
instance labels (objects of every object class, with their class). Steps, per object class:

1. foreground = pixels whose probability of *not* being background (class 1) is >= ``threshold``;
   the class of a foreground pixel is its most probable non-background class;
2. opening with a disk of radius ``opening``; hole filling;
3. erosion by ``erosion`` pixels (PyJAMAS: separates touching objects before labelling);
4. instances: connected components, or a watershed on the distance transform seeded at maxima at
   least ``seed_distance`` apart (splits touching round objects); for a boundary model (``boundary``,
   trained with ``TrainConfig(boundary=True)``: a last probability channel for object boundaries),
   the watershed is seeded by the object interiors instead (connected pixels where the object is
   more probable than its boundary) and floods the boundary probability (splits touching objects of
   any shape along the boundaries the network saw);
5. eroded objects grow back by the same width (``skimage.segmentation.expand_labels``, never merging);
6. objects under ``min_size`` pixels, and (optionally) objects touching the image border, removed.

Also: outlines as polygons (for a napari shapes layer), ImageJ ROI zip export (``roifile``), and
:func:`tune_postprocess`, a small grid search on validation images saved into the model version.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import ConfigError, DataError
from .events import Message, Progress, check_cancel, run_to_end

POSTPROCESS_FORMAT_VERSION = 1
INSTANCE_MODES = ("none", "components", "watershed")


@dataclass
class PostprocessConfig:
    """Settings of :func:`postprocess` (saved with a model version under ``postprocess``).

    Parameters
    ----------
    threshold : probability of "not background" above which a pixel is foreground, in (0, 1).
    erosion : erosion width in pixels before labelling (0 = none); objects grow back afterwards
        unless ``expand_back`` is False.
    opening : radius of a morphological opening (0 = none).
    fill_holes : fill holes inside objects.
    min_size : objects with fewer pixels are removed.
    remove_border : remove objects touching the image border.
    instances : ``"none"`` (semantic only), ``"components"`` or ``"watershed"``.
    seed_distance : minimum distance in pixels between watershed seeds.
    object_classes : label values (2..K) that form objects; default: every class except 1.
    boundary : the probabilities end with a boundary channel (set from the model by :meth:`for_model`).
    """

    threshold: float = 0.5
    erosion: int = 0
    expand_back: bool = True
    opening: int = 0
    fill_holes: bool = True
    min_size: int = 10
    remove_border: bool = False
    instances: str = "watershed"
    seed_distance: int = 5
    object_classes: tuple[int, ...] | None = None
    boundary: bool = False
    format_version: int = POSTPROCESS_FORMAT_VERSION

    def __post_init__(self):
        if not 0.0 < float(self.threshold) < 1.0:
            raise ConfigError(f"threshold must be between 0 and 1 (got {self.threshold}).")
        for name in ("erosion", "opening", "min_size"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be >= 0 (got {getattr(self, name)}).")
            setattr(self, name, int(getattr(self, name)))
        if self.instances not in INSTANCE_MODES:
            raise ConfigError(f"instances must be one of {', '.join(INSTANCE_MODES)} (got {self.instances!r}).")
        if int(self.seed_distance) < 1:
            raise ConfigError(f"seed_distance must be >= 1 (got {self.seed_distance}).")
        self.seed_distance = int(self.seed_distance)
        if self.object_classes is not None:
            self.object_classes = tuple(int(c) for c in self.object_classes)
            if any(c < 1 for c in self.object_classes):
                raise ConfigError("object_classes are label values 1..K.")
        if self.format_version > POSTPROCESS_FORMAT_VERSION:
            raise ConfigError("This post-processing config was written by a newer napari-seg-box: update it.")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["object_classes"] = list(self.object_classes) if self.object_classes is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PostprocessConfig":
        return cls(**{k: v for k, v in (d or {}).items() if k in cls.__dataclass_fields__})

    @classmethod
    def for_model(cls, meta: dict | None) -> "PostprocessConfig":
        """The tuned settings saved with a model version (its ``postprocess`` key), else defaults;
        ``boundary`` follows the model."""
        saved = (meta or {}).get("postprocess") or {}
        cfg = cls.from_dict(saved.get("config", saved)) if saved else cls()
        cfg.boundary = bool((meta or {}).get("boundary"))
        return cfg

    def objects_in_words(self) -> str:
        """How objects are made, for people (CLI output, reports)."""
        if self.instances == "watershed":
            return "boundary-seeded watershed" if self.boundary else f"watershed, seed distance {self.seed_distance} px"
        return {"components": "connected components", "none": "no objects"}[self.instances]


@dataclass
class PostprocessResult:
    """Output of :func:`postprocess`.

    semantic : (Y, X) uint8/uint16 project labels (1..K; 1 = background).
    instances : (Y, X) int32 object ids (0 = none), objects of all object classes.
    instance_classes : {object id: class label value}.
    """

    semantic: np.ndarray
    instances: np.ndarray
    instance_classes: dict[int, int] = field(default_factory=dict)

    @property
    def n_objects(self) -> int:
        return len(self.instance_classes)


def foreground_semantic(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Semantic labels (1..K) with a threshold on P(not background); argmax among the other classes."""
    probs = _check_probs(probabilities)
    K = probs.shape[0]
    dtype = np.uint8 if K < 255 else np.uint16
    if K == 1:
        return (1 + (probs[0] >= threshold)).astype(dtype)
    fg = (1.0 - probs[0]) >= threshold
    cls = (np.argmax(probs[1:], axis=0) + 2).astype(dtype)
    return np.where(fg, cls, 1).astype(dtype)


def fold_boundary(probabilities: np.ndarray) -> np.ndarray:
    """(3, ...) probabilities of a boundary model (background, object, boundary) -> (2, ...)
    probabilities of the project's classes: the boundary is part of the object."""
    probs = np.asarray(probabilities)
    if probs.shape[0] != 3:
        raise DataError(f"A boundary model's probabilities have 3 channels (background, object, boundary); got {probs.shape[0]}.")
    return np.stack([probs[0], probs[1] + probs[2]]).astype(np.float32, copy=False)


def split_by_boundary(mask: np.ndarray, interior: np.ndarray, boundary: np.ndarray) -> np.ndarray:
    """Label ``mask`` by a watershed of the ``boundary`` probability seeded at the connected
    components of ``interior`` (within ``mask``); a component of ``mask`` without an interior
    seed stays one object."""
    from skimage import measure, segmentation

    markers = measure.label(interior & mask, connectivity=1).astype(np.int32)
    comps = measure.label(mask, connectivity=1)
    seedless = np.setdiff1d(np.unique(comps[mask]), np.unique(comps[markers > 0]))
    if len(seedless):
        extra = np.isin(comps, seedless)
        markers[extra] = comps[extra] + markers.max()
    if markers.max() == 0:
        return markers
    return segmentation.watershed(boundary, markers, mask=mask).astype(np.int32)


def semantic_labels(probabilities: np.ndarray) -> np.ndarray:
    """Plain argmax + 1: (K, Y, X) probabilities -> (Y, X) project labels."""
    probs = _check_probs(probabilities)
    if probs.shape[0] == 1:
        return (1 + (probs[0] >= 0.5)).astype(np.uint8)
    return (np.argmax(probs, axis=0) + 1).astype(np.uint8 if probs.shape[0] < 255 else np.uint16)


def _check_probs(probabilities) -> np.ndarray:
    probs = np.asarray(probabilities)
    if probs.ndim != 3:
        raise DataError(f"Expected (K, Y, X) probabilities, got shape {probs.shape}: post-process stacks slice by slice.")
    return probs


def split_objects(mask: np.ndarray, *, mode: str = "watershed", seed_distance: int = 5) -> np.ndarray:
    """Label a binary mask: connected components, or a distance-transform seeded watershed."""
    from scipy import ndimage as ndi
    from skimage import measure, segmentation
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian

    comps = measure.label(mask, connectivity=1)
    if mode == "components" or comps.max() == 0:
        return comps.astype(np.int32)
    distance = ndi.distance_transform_edt(mask)
    smooth = gaussian(distance, sigma=1.0, preserve_range=True)
    peaks = peak_local_max(smooth, min_distance=seed_distance, labels=comps, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # components without a peak (tiny) keep one seed each
    missing = np.setdiff1d(np.unique(comps[comps > 0]), np.unique(comps[markers > 0]))
    if len(missing):
        nxt = len(peaks) + 1
        centers = ndi.maximum_position(smooth, comps, missing)
        for c in centers:
            markers[c] = nxt
            nxt += 1
    labels = segmentation.watershed(-smooth, markers, mask=mask)
    return labels.astype(np.int32)


def postprocess(probabilities: np.ndarray, config: PostprocessConfig | dict | None = None, **overrides) -> PostprocessResult:
    """Turn (K, Y, X) probabilities into semantic and instance labels (pure: inputs untouched).

    Parameters
    ----------
    probabilities : (K, Y, X) float array of per-class probabilities (class 1 = background).
    config : :class:`PostprocessConfig` (or its dict); keyword arguments override fields.

    Returns
    -------
    :class:`PostprocessResult` with ``semantic`` (Y, X), ``instances`` (Y, X) int32 and the class of
    each object.
    """
    from scipy import ndimage as ndi
    from skimage import morphology, segmentation

    if isinstance(config, dict):
        config = PostprocessConfig.from_dict(config)
    config = config or PostprocessConfig()
    if overrides:
        config = PostprocessConfig.from_dict({**config.to_dict(), **overrides})
    probs = _check_probs(probabilities)
    raw = boundary = None
    if config.boundary:
        raw, boundary = probs, probs[-1]
        probs = fold_boundary(probs)
    K = max(probs.shape[0], 2)
    semantic = foreground_semantic(probs, config.threshold)
    object_classes = config.object_classes if config.object_classes is not None else tuple(range(2, K + 1))
    instances = np.zeros(semantic.shape, np.int32)
    classes: dict[int, int] = {}
    out_sem = semantic.copy()
    next_id = 1
    for c in range(2, K + 1):
        mask = semantic == c
        if not mask.any():
            continue
        if config.opening:
            mask = ndi.binary_opening(mask, structure=morphology.disk(config.opening))
        if config.fill_holes:
            mask = ndi.binary_fill_holes(mask)
        if c not in object_classes or config.instances == "none":
            if config.min_size:
                comps = ndi.label(mask)[0]
                sizes = np.bincount(comps.ravel())
                mask = mask & (sizes[comps] >= config.min_size)
            out_sem[(semantic == c) & ~mask] = 1
            out_sem[mask & (out_sem == 1)] = c
            continue
        seeds = mask
        if config.erosion:
            seeds = ndi.binary_erosion(mask, structure=morphology.disk(1), iterations=config.erosion)
        if boundary is not None and config.instances == "watershed":
            lab = split_by_boundary(seeds, raw[c - 1] > boundary, boundary)
        else:
            lab = split_objects(seeds, mode=config.instances, seed_distance=config.seed_distance)
        if config.erosion and config.expand_back:
            # the iterated cross erosion cuts corners by up to width * sqrt(2)
            lab = segmentation.expand_labels(lab, distance=config.erosion * np.sqrt(2)) * mask
        if config.min_size:
            sizes = np.bincount(lab.ravel())
            small = np.flatnonzero(sizes < config.min_size)
            lab[np.isin(lab, small[small > 0])] = 0
        if config.remove_border:
            border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
            lab[np.isin(lab, border[border > 0])] = 0
        ids = np.unique(lab[lab > 0])
        if len(ids):
            remap = np.zeros(int(lab.max()) + 1, np.int32)
            remap[ids] = np.arange(next_id, next_id + len(ids), dtype=np.int32)
            lab = remap[lab]
            for i in range(next_id, next_id + len(ids)):
                classes[i] = c
            next_id += len(ids)
        free = instances == 0
        instances[free] = lab[free]
        out_sem[(semantic == c) & (lab == 0)] = 1
        out_sem[lab > 0] = c
    return PostprocessResult(out_sem, instances, classes)


# ---------------------------------------------------------------------- outlines and ROI export
def outlines(labels: np.ndarray) -> tuple[list[np.ndarray], list[int]]:
    """Polygons of the objects of an instance label image, for a napari shapes layer.

    Returns
    -------
    polygons : list of (N, 2) float arrays of (row, col) vertices, one per object (its outer contour).
    ids : the object id of each polygon.
    """
    from skimage import measure

    labels = np.asarray(labels)
    polys, ids = [], []
    for region in measure.regionprops(labels):
        r0, c0, r1, c1 = region.bbox
        crop = np.pad(region.image.astype(np.uint8), 1)
        contours = measure.find_contours(crop, 0.5)
        if not contours:
            continue
        contour = max(contours, key=len)
        polys.append(contour + np.array([r0 - 1, c0 - 1]))
        ids.append(int(region.label))
    return polys, ids


def export_imagej_rois(labels: np.ndarray, path, *, prefix: str = "object") -> int:
    """Write the outlines of an instance label image as an ImageJ ROI zip (Fiji ROI Manager).

    Returns the number of ROIs written.
    """
    import os

    import roifile

    polys, ids = outlines(labels)
    if not polys:
        raise DataError("No objects to export: the label image is empty (nothing was written).")
    rois = [roifile.ImagejRoi.frompoints(p[:, ::-1].astype(np.float32), name=f"{prefix}-{i:04d}") for p, i in zip(polys, ids)]
    path = str(path)
    if os.path.exists(path):
        os.remove(path)
    roifile.roiwrite(path, rois)
    return len(rois)


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

    from .evaluate import match_instances, pixel_confusion, truth_instances
    from .infer import Predictor, iter_predict

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
