"""Correcting a prediction: it becomes the image's annotation, edited object by object, saved with
its provenance ("corrected from model vN") so that fine-tuning (:mod:`.train.finetune`) knows it.

Pure NumPy on (Y, X) arrays, shared by the widgets, the command line and scripts:
:func:`annotation_from_prediction` starts the annotation (unlabelled where the model was unsure, if
asked); :func:`delete_object`, :func:`merge_objects`, :func:`split_object` and :func:`relabel_object`
edit the semantic labels and the object ids together, in place; :func:`save_correction` stores both.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError, StoreError
from .postprocess import fold_boundary

BACKGROUND = 1  # the class a deleted object becomes (project classes are 1..K, 1 = background)


def check_classes(project, info) -> None:
    """A clear error unless the model version ``info`` segments exactly the project's classes."""
    info.require_task("segmentation")
    if tuple(info.class_names) != tuple(project.class_names):
        raise DataError(
            f"Model version {info.version} segments {', '.join(info.class_names)} but the project's classes are "
            f"{', '.join(project.class_names)}: its prediction would paint the wrong classes. Correct with a model trained "
            "on this project's classes (or fine-tune one on a few annotated images first)."
        )


def class_probabilities(probabilities: np.ndarray, *, boundary: bool = False, distance: bool = False) -> np.ndarray:
    """(K, Y, X) probabilities of the project's classes: a boundary output folded into its object,
    a distance output dropped."""
    probs = np.asarray(probabilities)
    if boundary:
        return fold_boundary(probs)
    return probs[:-1] if distance else probs


def annotation_from_prediction(
    semantic: np.ndarray,
    probabilities: np.ndarray | None = None,
    *,
    min_confidence: float = 0.0,
    boundary: bool = False,
    distance: bool = False,
) -> np.ndarray:
    """The annotation a correction starts from: the predicted classes ``semantic`` (1..K, as
    post-processing made them), with pixels whose most likely class has a probability below
    ``min_confidence`` left unlabelled (0), so that training ignores what nobody checked."""
    labels = np.asarray(semantic).astype(np.uint8, copy=True)
    if not 0 <= min_confidence < 1:
        raise DataError(f"The confidence threshold must be in [0, 1), got {min_confidence}.")
    if min_confidence > 0:
        if probabilities is None:
            raise DataError("A confidence threshold needs the prediction's probabilities.")
        probs = class_probabilities(probabilities, boundary=boundary, distance=distance)
        if probs.shape[1:] != labels.shape:
            raise DataError(f"The probabilities ({probs.shape[1:]}) and the labels ({labels.shape}) are of different images.")
        labels[probs.max(axis=0) < min_confidence] = 0
    return labels


# ---------------------------------------------------------------------- object tools
def object_at(instances: np.ndarray, position) -> int:
    """The object id at ``position`` (data coordinates, rounded), 0 outside any object or the image."""
    y, x = (int(round(float(p))) for p in position[-2:])
    if not (0 <= y < instances.shape[0] and 0 <= x < instances.shape[1]):
        return 0
    return int(instances[y, x])


def _mask(instances: np.ndarray, index: int) -> np.ndarray:
    mask = instances == index
    if index <= 0 or not mask.any():
        raise DataError(f"There is no object {index} here: click inside an object.")
    return mask


def delete_object(labels: np.ndarray, instances: np.ndarray, index: int) -> int:
    """Object ``index`` is not an object: its pixels become background. Returns the pixels changed."""
    mask = _mask(instances, index)
    labels[mask] = BACKGROUND
    instances[mask] = 0
    return int(mask.sum())


def relabel_object(labels: np.ndarray, instances: np.ndarray, index: int, value: int) -> int:
    """Give object ``index`` the class ``value``. Returns the pixels changed."""
    mask = _mask(instances, index)
    changed = int((labels[mask] != value).sum())
    labels[mask] = value
    return changed


def merge_objects(labels: np.ndarray, instances: np.ndarray, keep: int, other: int, *, gap: int = 2) -> int:
    """Objects ``keep`` and ``other`` are one: ``other`` takes the id ``keep``, and the background
    between them (up to ``gap`` pixels wide, where the model saw a border) joins them. Returns the
    pixels changed."""
    from scipy import ndimage as ndi

    if keep == other:
        raise DataError("Pick two different objects to merge.")
    a, b = _mask(instances, keep), _mask(instances, other)
    value = int(np.bincount(labels[a].ravel()).argmax())
    grown_a = ndi.binary_dilation(a, iterations=gap)
    grown_b = ndi.binary_dilation(b, iterations=gap)
    bridge = grown_a & grown_b & (instances == 0)
    changed = int(b.sum() + bridge.sum())
    instances[b | bridge] = keep
    labels[b | bridge] = value
    return changed


def split_object(
    labels: np.ndarray,
    instances: np.ndarray,
    index: int,
    start,
    end,
    relief: np.ndarray | None = None,
    *,
    width: int = 1,
    extend: bool = False,
) -> int:
    """Cut object ``index`` in two along the line ``start``-``end`` (data coordinates; ``extend``:
    the whole straight line through them, so two clicks anywhere along the cut will do): the parts on
    either side seed a watershed of ``relief`` within the object (the model's probability of not being
    this object, so the cut follows the model's border; the distance to the line when not given).
    Returns the id of the new part; a line that does not cross the object is a clear error."""
    from scipy import ndimage as ndi
    from skimage import draw, segmentation

    mask = _mask(instances, index)
    a, b = (np.array([float(v) for v in p[-2:]]) for p in (start, end))
    if extend:
        length = float(np.hypot(*(b - a)))
        if length < 1:
            raise DataError("The two points of the cut are the same: click two points along the line to cut along.")
        reach = float(np.hypot(*mask.shape))
        a, b = a - (b - a) / length * reach, b + (b - a) / length * reach
    (y0, x0), (y1, x1) = (np.round(a).astype(int), np.round(b).astype(int))
    line = np.zeros(mask.shape, bool)
    rr, cc = draw.line(y0, x0, y1, x1)
    keep = (rr >= 0) & (rr < mask.shape[0]) & (cc >= 0) & (cc < mask.shape[1])
    line[rr[keep], cc[keep]] = True
    if width > 1:
        line = ndi.binary_dilation(line, iterations=width - 1)
    parts, n = ndi.label(mask & ~line)
    if n < 2:
        raise DataError(f"The line does not cut object {index} in two: draw it across the whole object, from outside to outside.")
    sizes = np.bincount(parts.ravel())[1:]
    first, second = np.argsort(sizes)[::-1][:2] + 1
    markers = np.zeros(mask.shape, np.int32)
    markers[parts == first], markers[parts == second] = 1, 2
    if relief is None:
        relief = -ndi.distance_transform_edt(~line)
    split = segmentation.watershed(np.asarray(relief, np.float32), markers, mask=mask)
    new = int(instances.max()) + 1
    instances[split == 2] = new
    return new


# ---------------------------------------------------------------------- saving
def save_correction(project, name: str, labels: np.ndarray, *, model_version: str | None, instances: np.ndarray | None = None) -> None:
    """Save an edited prediction as the annotation of image ``name``, recorded as ``corrected`` from
    ``model_version``; the object ids (where the labels are an object class) with it, when given."""
    project.refresh()
    if name not in project.image_names():
        raise StoreError(
            f"Image {name!r} was removed from the project after it was predicted: the correction was not saved (it is still open "
            "in the viewer). Add the image to the project again and save, or save the layer to a file."
        )
    labels = np.asarray(labels)
    project.set_labels(name, labels, origin="corrected", model_version=model_version)
    if instances is not None:
        project.set_instances(name, complete_instances(labels, instances))


def complete_instances(labels: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """Object ids that agree with the labels: none outside the object classes, and the object pixels
    painted since (with the brush: no id yet) numbered by their connected regions."""
    from skimage import measure

    out = np.where(labels > BACKGROUND, instances, 0).astype(np.int32)
    new = (labels > BACKGROUND) & (out == 0)
    if new.any():
        parts = measure.label(new, connectivity=1)
        out[new] = parts[new] + out.max()
    return out
