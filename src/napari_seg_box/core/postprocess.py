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
   any shape along the boundaries the network saw); for a distance model (``distance``: a last
   channel predicting each object's normalised distance to its border), seeded by the predicted
   object centres (distance >= ``seed_level``) and flooding the distance down to the borders;
5. eroded objects grow back by the same width (``skimage.segmentation.expand_labels``, never merging);
6. objects under ``min_size`` pixels, and (optionally) objects touching the image border, removed.

Also: outlines as polygons (for a napari shapes layer), ImageJ ROI zip export (``roifile``), and
:func:`tune_postprocess`, a small grid search on validation images saved into the model version.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from .config import Config, as_config
from .errors import ConfigError, DataError

INSTANCE_MODES = ("none", "components", "watershed")
SEED_SOURCES = ("model", "shape")


@dataclass(frozen=True)
class PostprocessConfig(Config):
    """Settings of :func:`postprocess` (tuned ones are saved with the model version).

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
    seed_level : for a distance model, the predicted distance (0 at the border, 1 at the centre)
        above which pixels seed the watershed (one seed per connected centre).
    seeds : ``"model"``: the watershed of a model with a distance or boundary output uses it;
        ``"shape"``: the distance transform of the mask (``seed_distance``) whatever the model
        (tuning falls back to it where a briefly trained distance output splits worse).
    object_classes : label values (2..K) that form objects; default: every class except 1.

    Whether the probabilities end with a boundary or distance channel is a fact of the model, not a
    setting: the ``boundary``/``distance`` arguments of :func:`postprocess` (``Predictor.postprocess``
    passes them).
    """

    WHAT = "post-processing settings"

    threshold: float = 0.5
    erosion: int = 0
    expand_back: bool = True
    opening: int = 0
    fill_holes: bool = True
    min_size: int = 10
    remove_border: bool = False
    instances: str = "watershed"
    seed_distance: int = 5
    seed_level: float = 0.5
    seeds: str = "model"
    object_classes: tuple[int, ...] | None = None
    format_version: int = 1

    def __post_init__(self):
        self._check_format()
        try:
            threshold = float(self.threshold)
            ints = {name: int(getattr(self, name)) for name in ("erosion", "opening", "min_size", "seed_distance")}
        except (TypeError, ValueError) as err:
            raise ConfigError(f"threshold must be a number and erosion, opening, min_size, seed_distance whole numbers: {err}.") from err
        for name, value in (("threshold", threshold), ("seed_level", self.seed_level)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value < 1.0:
                raise ConfigError(f"{name} must be a number between 0 and 1 (got {value!r}).")
            self._set(name, float(value))
        for name, value in ints.items():
            if value < (1 if name == "seed_distance" else 0):
                raise ConfigError(f"{name} must be >= {1 if name == 'seed_distance' else 0} (got {value}).")
            self._set(name, value)
        if self.seeds not in SEED_SOURCES:
            raise ConfigError(f"seeds must be one of {', '.join(SEED_SOURCES)} (got {self.seeds!r}).")
        if self.instances not in INSTANCE_MODES:
            raise ConfigError(f"instances must be one of {', '.join(INSTANCE_MODES)} (got {self.instances!r}).")
        if self.object_classes is not None:
            classes = tuple(int(c) for c in self.object_classes)
            if any(c < 1 for c in classes):
                raise ConfigError("object_classes are label values 1..K.")
            self._set("object_classes", classes)

    def objects_in_words(self, *, boundary: bool = False, distance: bool = False) -> str:
        """How objects are made, for people (CLI output, reports); ``boundary``/``distance``: the model's outputs."""
        if self.instances == "watershed" and self.seeds == "model":
            if distance:
                return f"watershed of the predicted distance, centres above {self.seed_level:g}"
            return "boundary-seeded watershed" if boundary else f"watershed, seed distance {self.seed_distance} px"
        if self.instances == "watershed":
            return f"watershed, seed distance {self.seed_distance} px"
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


def split_at_seeds(mask: np.ndarray, interior: np.ndarray, relief: np.ndarray) -> np.ndarray:
    """Label ``mask`` by a watershed of ``relief`` (the boundary probability, or minus the predicted
    distance) seeded at the connected components of ``interior`` (within ``mask``); a component of
    ``mask`` without an interior seed stays one object."""
    from skimage import measure, segmentation

    markers = measure.label(interior & mask, connectivity=1).astype(np.int32)
    comps = measure.label(mask, connectivity=1)
    seedless = np.setdiff1d(np.unique(comps[mask]), np.unique(comps[markers > 0]))
    if len(seedless):
        extra = np.isin(comps, seedless)
        markers[extra] = comps[extra] + markers.max()
    if markers.max() == 0:
        return markers
    return segmentation.watershed(relief, markers, mask=mask).astype(np.int32)


def semantic_labels(probabilities: np.ndarray) -> np.ndarray:
    """Plain argmax + 1: (K, Y, X) probabilities -> (Y, X) project labels."""
    probs = _check_probs(probabilities)
    if probs.shape[0] == 1:
        return (1 + (probs[0] >= 0.5)).astype(np.uint8)
    return (np.argmax(probs, axis=0) + 1).astype(np.uint8 if probs.shape[0] < 255 else np.uint16)


def _check_probs(probabilities) -> np.ndarray:
    probs = np.asarray(probabilities)
    if probs.ndim != 3:
        raise DataError(
            f"Expected (K, Y, X) probabilities, got shape {probs.shape}: post-process a volume with postprocess_volume, a time-lapse frame by frame."
        )
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


def postprocess(
    probabilities: np.ndarray,
    config: PostprocessConfig | dict | None = None,
    *,
    boundary: bool = False,
    distance: bool = False,
    **overrides,
) -> PostprocessResult:
    """Turn (K, Y, X) probabilities into semantic and instance labels (pure: inputs untouched).

    Parameters
    ----------
    probabilities : (K, Y, X) float array of per-class probabilities (class 1 = background); for a
        boundary model (``boundary=True``) a last channel holds the object boundaries (K + 1 in all),
        for a distance model (``distance=True``) the predicted normalised distance to the border.
    config : :class:`PostprocessConfig` (or its dict); keyword arguments override fields.
    boundary, distance : the probabilities come from a boundary / distance model. Use
        ``Predictor.postprocess``, which knows it from the model version, rather than passing it by hand.

    Returns
    -------
    :class:`PostprocessResult` with ``semantic`` (Y, X), ``instances`` (Y, X) int32 and the class of
    each object.
    """
    config = as_config(PostprocessConfig, config, overrides)
    probs, relief = split_outputs(_check_probs(probabilities), boundary=boundary, distance=distance)
    semantic = foreground_semantic(probs, config.threshold)
    return objects_by_class(semantic, max(probs.shape[0], 2), PlaneSteps(config), **relief)


def split_outputs(probs: np.ndarray, *, boundary: bool, distance: bool) -> tuple[np.ndarray, dict]:
    """(class probabilities, relief) of a model's outputs (outputs first: (K, ...)): a boundary
    model's boundary folded into its object, a distance model's distance set apart; ``relief`` holds
    the ``raw``/``edges``/``dist`` arrays :func:`objects_by_class` floods from."""
    relief = {"raw": None, "edges": None, "dist": None}
    if boundary and distance:
        raise DataError("A model has a boundary or a distance output, not both.")
    if boundary:
        relief.update(raw=probs, edges=probs[-1])
        probs = fold_boundary(probs)
    elif distance:
        if probs.shape[0] < 3:
            raise DataError(f"A distance model's probabilities have the classes and a distance channel (3 or more); got {probs.shape[0]}.")
        probs, relief["dist"] = probs[:-1], probs[-1]
    return probs, relief


class PlaneSteps:
    """The shape steps of :func:`objects_by_class` on a plane; :class:`~.volume.VolumeSteps` has a volume's."""

    def __init__(self, config: PostprocessConfig):
        self.config = config

    @property
    def filters_size(self) -> bool:
        return bool(self.config.min_size)

    def too_small(self, sizes: np.ndarray) -> np.ndarray:
        return sizes < self.config.min_size

    def open(self, mask: np.ndarray) -> np.ndarray:
        from scipy import ndimage as ndi
        from skimage import morphology

        return ndi.binary_opening(mask, structure=morphology.disk(self.config.opening))

    def fill(self, mask: np.ndarray) -> np.ndarray:
        from scipy import ndimage as ndi

        return ndi.binary_fill_holes(mask)

    def erode(self, mask: np.ndarray) -> np.ndarray:
        from scipy import ndimage as ndi
        from skimage import morphology

        return ndi.binary_erosion(mask, structure=morphology.disk(1), iterations=self.config.erosion)

    def expand(self, lab: np.ndarray) -> np.ndarray:
        from skimage import segmentation

        # the iterated cross erosion cuts corners by up to width * sqrt(2)
        return segmentation.expand_labels(lab, distance=self.config.erosion * np.sqrt(2))

    def split(self, seeds: np.ndarray) -> np.ndarray:
        return split_objects(seeds, mode=self.config.instances, seed_distance=self.config.seed_distance)


def objects_by_class(semantic: np.ndarray, K: int, steps, *, raw=None, edges=None, dist=None) -> PostprocessResult:
    """The objects of each object class of ``semantic`` (project labels of a plane or a volume): the
    mask opened, filled, filtered by size, eroded, labelled (a boundary or distance output's relief,
    else ``steps.split``), grown back, cut at the border; ids numbered across classes. ``steps``
    (:class:`PlaneSteps` or a volume's) knows how each step is done in its geometry."""
    from scipy import ndimage as ndi

    config = steps.config
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
            mask = steps.open(mask)
        if config.fill_holes:
            mask = steps.fill(mask)
        if c not in object_classes or config.instances == "none":
            if steps.filters_size:
                comps = ndi.label(mask)[0]
                mask = mask & ~steps.too_small(np.bincount(comps.ravel()))[comps]
            out_sem[(semantic == c) & ~mask] = 1
            out_sem[mask & (out_sem == 1)] = c
            continue
        seeds = steps.erode(mask) if config.erosion else mask
        by_model = config.instances == "watershed" and config.seeds == "model"
        if edges is not None and by_model:
            lab = split_at_seeds(seeds, raw[c - 1] > edges, edges)
        elif dist is not None and by_model:
            lab = split_at_seeds(seeds, dist >= config.seed_level, -dist)
        else:
            lab = steps.split(seeds)
        if config.erosion and config.expand_back:
            lab = steps.expand(lab) * mask
        if steps.filters_size:
            small = np.flatnonzero(steps.too_small(np.bincount(lab.ravel())))
            lab[np.isin(lab, small[small > 0])] = 0
        if config.remove_border:  # every face: 4 edges of a plane, 6 faces of a volume
            faces = [np.take(lab, i, axis=a).ravel() for a in range(lab.ndim) for i in (0, -1)]
            border = np.unique(np.concatenate(faces))
            lab[np.isin(lab, border[border > 0])] = 0
        ids = np.unique(lab[lab > 0])
        if len(ids):
            remap = np.zeros(int(lab.max()) + 1, np.int32)
            remap[ids] = np.arange(next_id, next_id + len(ids), dtype=np.int32)
            lab = remap[lab]
            classes.update(dict.fromkeys(range(next_id, next_id + len(ids)), c))
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
