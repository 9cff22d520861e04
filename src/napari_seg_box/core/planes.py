"""Annotated 2D planes of a project, as training, tuning and evaluation read them."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

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


def iter_annotated_planes(
    project, splits: Iterable[str] = ("train", "validation"), *, images: Collection[str] | None = None
) -> Iterator[Plane]:
    """The annotated 2D planes of the images of ``splits`` (never ``test`` unless asked): whole 2D
    images, and the planes of stacks that hold annotated pixels (unannotated planes are skipped).
    ``images``: only these image names (the others are not read)."""
    splits = tuple(splits)
    for rec in project.images():
        if rec.split not in splits or not rec.has_labels or (images is not None and rec.name not in images):
            continue
        labels, instances = project.get_labels(rec.name), project.get_instances(rec.name)
        if rec.unpainted_background:  # dense: what was not painted is background
            labels = np.where(labels == 0, 1, labels).astype(labels.dtype)
        if not rec.is_stack:
            yield Plane(rec.name, None, rec.split, project.get_image(rec.name), labels, instances)
            continue
        array = project.image_array(rec.name)
        for z in np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1)):
            z = int(z)
            yield Plane(rec.name, z, rec.split, np.asarray(array[z]), labels[z], None if instances is None else instances[z])
