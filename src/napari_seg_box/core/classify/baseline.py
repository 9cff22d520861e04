"""A classical baseline for image classification: a random forest on hand-made features.

Per channel: intensity statistics (mean, spread, percentiles, the integrated intensity inside the
object, which carries e.g. the DNA content of a cell) and grey-level co-occurrence texture
(contrast, homogeneity, energy, correlation); of the object (Otsu on the channels' mean): area,
perimeter, eccentricity, solidity, axis lengths. This is the script a user would write with
scikit-image and scikit-learn; a network should beat it to be worth its training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DataError
from .data import as_yxc, dataset_bounds
from .metrics import classification_metrics, confusion

RANDOM_FOREST_TREES = 300


def image_features(image: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The feature vector of one (Y, X[, C]) image (``low``/``high``: the data set's bounds per channel)."""
    from skimage.feature import graycomatrix, graycoprops
    from skimage.filters import threshold_otsu
    from skimage.measure import label, regionprops

    x = np.clip((as_yxc(image).astype(np.float32) - low) / (high - low), 0, 1)
    mean = x.mean(-1)
    try:
        mask = mean > threshold_otsu(mean)
    except ValueError:  # a flat image
        mask = np.zeros(mean.shape, bool)
    regions = regionprops(label(mask))
    obj = max(regions, key=lambda r: r.area) if regions else None
    shape = [obj.area, obj.perimeter, obj.eccentricity, obj.solidity, obj.axis_major_length, obj.axis_minor_length] if obj else [0.0] * 6
    feats = list(shape)
    for c in range(x.shape[-1]):
        ch = x[..., c]
        inside = ch[mask] if mask.any() else ch.ravel()
        feats += [ch.mean(), ch.std(), *np.percentile(ch, (10, 50, 90, 99)), inside.sum(), inside.mean()]
        glcm = graycomatrix(
            (ch * 31).astype(np.uint8), [1, 2], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=32, symmetric=True, normed=True
        )
        feats += [float(graycoprops(glcm, p).mean()) for p in ("contrast", "homogeneity", "energy", "correlation")]
    return np.asarray(feats, dtype=np.float64)


def fit_baseline(images: Sequence[np.ndarray], labels: Sequence[int], *, seed: int = 0):
    """Fit the random forest; returns ``(model, low, high)`` for :func:`predict_baseline`."""
    from sklearn.ensemble import RandomForestClassifier

    low, high = dataset_bounds([as_yxc(im) for im in images], seed=seed)
    x = np.stack([image_features(im, low, high) for im in images])
    forest = RandomForestClassifier(n_estimators=RANDOM_FOREST_TREES, class_weight="balanced", random_state=seed, n_jobs=-1)
    forest.fit(x, np.asarray(labels))
    return forest, low, high


def predict_baseline(fitted, images: Sequence[np.ndarray]) -> np.ndarray:
    forest, low, high = fitted
    return forest.predict(np.stack([image_features(im, low, high) for im in images]))


def evaluate_baseline_classifier(project, *, split: str = "test", seed: int = 0) -> dict:
    """Fit the baseline on the project's classified train + validation images, score it on ``split``."""
    classes = project.class_names
    fit = [r for r in project.images() if r.split in ("train", "validation") and r.image_class]
    held = [r for r in project.images(split) if r.image_class]
    if not fit or not held:
        raise DataError(f"The baseline needs classified training images and classified {split} images.")
    fitted = fit_baseline([project.get_image(r.name) for r in fit], [classes.index(r.image_class) for r in fit], seed=seed)
    pred = predict_baseline(fitted, [project.get_image(r.name) for r in held])
    m = classification_metrics(confusion([classes.index(r.image_class) for r in held], pred, len(classes)))
    return {
        "method": f"random forest of {RANDOM_FOREST_TREES} trees on intensity, texture and shape features",
        **{k: m[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")},
    }
