"""Images for a classifier: one normalisation for the data set, one geometry, stratified splits, augmentation.

An image goes to the network as (C, S, S) float32: each channel scaled by the training set's
percentiles (:class:`~..versions.Normalization` of kind ``dataset``), resized by one factor for all
images (so that sizes stay comparable between classes), and centred on a square of side S (its own
border pixels repeated around it, so that no dark frame appears on a bright background; an image
larger than S after scaling is shrunk to fit).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..data import DEFAULT_PERCENTILES
from ..errors import DataError

MIN_TYPICAL_SIDE = 64  # small crops are scaled up to this (ImageNet networks stride 4x in their first layers)
MAX_INPUT = 256
SAMPLE_PIXELS = 2_000_000  # pixels per channel read for the data set's percentiles


def as_yxc(image: np.ndarray, *, name: str = "image") -> np.ndarray:
    """A 2D image as (Y, X, C); stacks are refused (a class per 2D image)."""
    image = np.asarray(image)
    if image.ndim == 2:
        return image[..., None]
    if image.ndim == 3 and image.shape[-1] <= 16:
        return image
    raise DataError(
        f"{name} has shape {image.shape}: a classifier takes 2D images, (Y, X) or (Y, X, C) with up to 16 channels. "
        "Classify the planes of a stack one by one."
    )


def auto_geometry(shapes: Sequence[tuple[int, ...]]) -> tuple[int, float]:
    """(input size, scale) for images of these (Y, X, ...) shapes (see the module docstring)."""
    sides = np.array([max(s[0], s[1]) for s in shapes], dtype=float)
    scale = max(1.0, MIN_TYPICAL_SIDE / float(np.median(sides)))
    size = int(math.ceil(np.percentile(sides, 95) * scale / 32) * 32)
    return int(min(max(size, 32), MAX_INPUT)), float(scale)


def dataset_bounds(images: Sequence[np.ndarray], percentiles=DEFAULT_PERCENTILES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (low, high) percentiles over all ``images`` ((Y, X, C) each), from a random
    sample of at most :data:`SAMPLE_PIXELS` pixels."""
    rng = np.random.default_rng(seed)
    total = sum(int(np.prod(im.shape[:2])) for im in images)
    keep = min(1.0, SAMPLE_PIXELS / max(total, 1))
    parts = []
    for im in images:
        flat = im.reshape(-1, im.shape[-1])
        if keep < 1:
            flat = flat[rng.random(len(flat)) < keep]
        parts.append(flat.astype(np.float32))
    sample = np.concatenate(parts)
    sample = np.where(np.isfinite(sample), sample, np.nan)
    lo, hi = np.nanpercentile(sample, percentiles, axis=0)
    return lo.astype(np.float32), np.maximum(hi, lo + 1e-6).astype(np.float32)


def fit_image(image: np.ndarray, low: np.ndarray, high: np.ndarray, size: int, scale: float) -> np.ndarray:
    """One (Y, X, C) image -> (C, size, size) float32, normalised, scaled and centred."""
    from skimage.transform import resize

    x = (image.astype(np.float32) - low) / (high - low)
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    h, w = x.shape[:2]
    s = min(scale, size / max(h, w))
    if abs(s - 1) > 1e-6:
        h, w = max(1, round(h * s)), max(1, round(w * s))
        x = resize(x, (h, w), order=1, preserve_range=True, anti_aliasing=s < 1).astype(np.float32)
    y0, x0 = (size - h) // 2, (size - w) // 2
    x = np.pad(x, ((y0, size - h - y0), (x0, size - w - x0), (0, 0)), mode="edge")  # the image's own border, not a black frame
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> np.ndarray:
    """A boolean mask choosing ``fraction`` of each class (at least one of a class with two or more)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(fraction * len(idx)))
        chosen[idx[: max(n, 1 if len(idx) >= 2 else 0)]] = True
    return chosen


@dataclass
class ClassImages:
    """The labelled images of a project, prepared: ``x`` (N, C, S, S) float16, ``y`` (N,) class indices."""

    names: list[str]
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class ClassData:
    """Training and validation images of a classification project, and how they were prepared."""

    classes: list[str]
    train: ClassImages
    val: ClassImages
    channels: int
    size: int
    scale: float
    low: np.ndarray
    high: np.ndarray
    split: str
    fingerprint: str

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.train.y, minlength=len(self.classes))


def prepare_class_data(project, *, validation_fraction: float, seed: int, input_size: int | None = None) -> ClassData:
    """Read the project's classified ``train`` and ``validation`` images (``test`` never) and prepare them."""
    classes = project.class_names
    recs = [r for r in project.images() if r.split in ("train", "validation") and r.image_class is not None]
    if not recs:
        raise DataError(
            "No image of this project has a class yet: give images their class (Annotate panel: the class buttons or keys "
            "1-9; napari-seg-box import --class-folders DIR) and train again."
        )
    used = sorted({r.image_class for r in recs}, key=classes.index)
    if len(used) < 2:
        raise DataError(
            f"Every classified training image is of class {used[0]!r}: a classifier needs images of at least two classes. "
            "Give some images another class."
        )
    images = [as_yxc(project.get_image(r.name), name=r.name) for r in recs]
    labels = np.array([classes.index(r.image_class) for r in recs])
    is_val = np.array([r.split == "validation" for r in recs])
    if is_val.any():
        split = "the project's validation images"
    else:
        is_val = stratified_split(labels, validation_fraction, seed)
        split = f"{validation_fraction:.0%} of each class's training images (seed {seed})"
    if is_val.all() or not is_val.any():
        raise DataError("Training needs images in both training and validation: add more classified images.")
    train_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    low, high = dataset_bounds([images[i] for i in train_idx], seed=seed)
    size, scale = auto_geometry([images[i].shape for i in train_idx])
    if input_size:
        scale *= input_size / size
        size = int(input_size)

    def prepared(idx) -> ClassImages:
        x = np.stack([fit_image(images[i], low, high, size, scale) for i in idx]).astype(np.float16)
        return ClassImages([recs[i].name for i in idx], x, labels[idx])

    digest = hashlib.sha256()
    for r in recs:
        digest.update(f"{r.name}|{r.image_class}|{r.split}|{r.shape}".encode())
    return ClassData(
        list(classes), prepared(train_idx), prepared(val_idx), images[0].shape[-1], size, scale, low, high, split, digest.hexdigest()[:16]
    )


def augment_batch(x: np.ndarray, rng: np.random.Generator, preset: str) -> np.ndarray:
    """Random flips and 90-degree rotations (``light``), small shifts (``standard``) and intensity
    changes (``strong`` only: a cell's brightness, e.g. its DNA content, is often what tells its
    class) of a (B, C, S, S) batch (a copy)."""
    x = x.astype(np.float32)
    if preset == "none":
        return x
    out = np.empty_like(x)
    size = x.shape[-1]
    shift = {"light": 0, "standard": 0.08, "strong": 0.15}[preset]
    gain = {"light": 0, "standard": 0, "strong": 0.1}[preset]  # brightness is often the phenotype (DNA content): kept but in strong
    for i, im in enumerate(x):
        im = np.rot90(im, int(rng.integers(4)), axes=(1, 2))
        if rng.random() < 0.5:
            im = im[:, :, ::-1]
        if shift:
            m = int(round(shift * size))
            dy, dx = rng.integers(-m, m + 1, size=2)
            im = np.pad(im, ((0, 0), (m, m), (m, m)), mode="edge")[:, m + dy : m + dy + size, m + dx : m + dx + size]
        if gain:
            im = im * rng.uniform(1 - gain, 1 + gain, size=(im.shape[0], 1, 1)) + rng.uniform(-gain / 2, gain / 2, size=(im.shape[0], 1, 1))
        out[i] = im
    return out
