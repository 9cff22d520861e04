"""Held-out splits of a classification project, stratified per class."""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .data import stratified_split


def split_stratified(
    project, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), *, seed: int = 0, only_train: bool = True
) -> dict[str, int]:
    """Split the classified images into train / validation / test by ``fractions``, class by class
    (the same seed gives the same split). ``only_train``: only images now in ``train`` move, so a
    test set already held out stays held out. Returns the number of images per split."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(f"Give three fractions (train, validation, test) that add up to 1, got {fractions}.")
    recs = [r for r in project.images() if r.image_class is not None and (r.split == "train" or not only_train)]
    if not recs:
        raise DataError("No classified image to split: give images their class first.")
    labels = np.array([project.class_names.index(r.image_class) for r in recs])
    rest = np.ones(len(recs), bool)
    test = np.zeros(len(recs), bool)
    if fractions[2]:
        test = stratified_split(labels, fractions[2], seed)
    rest = ~test
    val = np.zeros(len(recs), bool)
    if fractions[1]:
        idx = np.flatnonzero(rest)
        val[idx[stratified_split(labels[idx], fractions[1] / (fractions[0] + fractions[1]), seed + 1)]] = True
    groups = {"test": test, "validation": val, "train": ~(test | val)}
    for split, mask in groups.items():
        names = [recs[i].name for i in np.flatnonzero(mask)]
        if names:
            project.set_split(names, split)
    return {split: int(mask.sum()) for split, mask in groups.items()}
