"""Annotated 2D planes of a project, as training, tuning and evaluation read them."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .errors import DataError
from .manifest import plane_name


@dataclass(frozen=True)
class Plane:
    """One annotated 2D plane for training or evaluation: a whole 2D image, or plane ``z`` of a stack."""

    image: str
    z: int | None
    split: str
    pixels: np.ndarray  # (Y, X) or (Y, X, C)
    labels: np.ndarray  # (Y, X): 0 = unlabelled, 1..K
    instances: np.ndarray | None  # (Y, X) object ids, when the store has them

    @property
    def name(self) -> str:
        return plane_name(self.image, self.z)


def context_planes(z: int | None, context: int, n: int | None) -> list[int | None]:
    """The planes a 2.5D model reads for plane ``z`` (the nearest standing in past either end)."""
    if z is None:
        return [None]
    return [int(i) for i in np.clip(np.arange(z - context, z + context + 1), 0, n - 1)]


def with_context(planes, z: int, context: int) -> np.ndarray:
    """Plane ``z`` of ``planes`` (a (Z, Y, X[, C]) array, lazy or not) with its ``context`` neighbours
    on each side, as channels: (Y, X, C * (2 * context + 1)), the nearest plane standing in past either
    end. A single plane (Y, X[, C]) (``planes`` 2D or 3D with ``z=None``) repeats itself: 2.5D input
    for a plane without neighbours. ``context=0``: the plane itself."""
    if z is None:
        parts = [np.asarray(planes)] * (2 * context + 1)
    else:
        parts = [np.asarray(planes[i]) for i in context_planes(z, context, planes.shape[0])]
    if context == 0:
        return parts[0]
    return np.concatenate([p[..., None] if p.ndim == 2 else p for p in parts], axis=-1)


def check_context(rec, context: int) -> None:
    """2.5D input looks across space: refuse it for a time-lapse, whose neighbouring frames are times."""
    if context and getattr(rec, "is_timelapse", False):
        raise DataError(
            f"{rec.name} is a time-lapse: 2.5D input (neighbouring planes as channels) is for volumes, where neighbours are "
            "nearby sections, not other times. Use a model trained with context 0 (2D) for time-lapses."
        )


def iter_annotated_planes(
    project, splits: Iterable[str] = ("train", "validation"), *, images: Collection[str] | None = None, context: int = 0
) -> Iterator[Plane]:
    """The annotated 2D planes of the images of ``splits`` (never ``test`` unless asked): whole 2D
    images, and the planes of stacks that hold annotated pixels (unannotated planes are skipped).
    ``images``: only these image names (the others are not read). ``context``: each plane's pixels
    carry its neighbours as channels (2.5D input, :func:`with_context`)."""
    splits = tuple(splits)
    for rec in project.images():
        if rec.split not in splits or not rec.has_labels or (images is not None and rec.name not in images):
            continue
        check_context(rec, context)
        labels, instances = project.get_labels(rec.name), project.get_instances(rec.name)
        if rec.unpainted_background:  # dense: what was not painted is background
            labels = np.where(labels == 0, 1, labels).astype(labels.dtype)
        if not rec.is_stack:
            yield Plane(rec.name, None, rec.split, with_context(project.get_image(rec.name), None, context), labels, instances)
            continue
        array = project.image_array(rec.name)
        for z in np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1)):
            z = int(z)
            pixels = with_context(array, z, context)
            yield Plane(rec.name, z, rec.split, pixels, labels[z], None if instances is None else instances[z])
