"""Data augmentation for training: one module, four presets, image and mask transformed together.

Images are percentile-normalised to float32 *before* augmenting (albumentations' own ``Normalize``
assumes 8-bit data), so 8-bit, 16-bit and float images are all handled the same way. Geometric
transforms use albumentations (OpenCV); intensity transforms are written here in NumPy because
normalised images can be negative, where albumentations' gamma would produce NaNs.

Presets
-------
none      no change
light     the 8 flips / 90-degree rotations of the square, uniformly (exact: no interpolation)
standard  light + affine (scale, rotation, shear) + brightness/contrast/gamma + noise + blur
strong    standard with wider ranges; ``elastic=True`` adds elastic deformation (opt-in, any preset)
"""

from __future__ import annotations

import numpy as np

from .data import normalize
from .errors import ConfigError

PRESETS = ("none", "light", "standard", "strong")

# intensity ranges per preset: (brightness, contrast, gamma, noise sigma, noise p, blur p)
_INTENSITY = {
    "none": None,
    "light": None,
    "standard": dict(brightness=0.1, contrast=0.2, gamma=0.2, noise=0.03, p_noise=0.2, p_blur=0.2, p=0.8),
    "strong": dict(brightness=0.2, contrast=0.35, gamma=0.35, noise=0.06, p_noise=0.35, p_blur=0.3, p=0.9),
}


class Augmenter:
    """Random, paired augmentation of a normalised image and its target (and optional weight map).

    Parameters
    ----------
    preset : one of :data:`PRESETS`.
    elastic : add an elastic deformation (slow; for curved structures such as membranes).

    Call it with ``(image (Y, X, C) float32, target (Y, X) int16, weight (Y, X) float32 | None,
    rng)``; it returns transformed arrays of the same shapes and dtypes. The same ``rng`` seed gives
    the same result, whatever thread calls it.
    """

    def __init__(self, preset: str = "standard", *, elastic: bool = False):
        if preset not in PRESETS:
            raise ConfigError(f"Unknown augmentation preset {preset!r}: choose one of {', '.join(PRESETS)}.")
        self.preset = preset
        self.elastic = elastic
        self._geometric = _geometric(preset, elastic)
        self._intensity = _INTENSITY[preset]

    def __call__(self, image: np.ndarray, target: np.ndarray, weight: np.ndarray | None, rng: np.random.Generator):
        if self.preset != "none":  # one of the 8 symmetries of the square, uniformly: exact, no interpolation
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            if image.shape[0] != image.shape[1]:
                k = 2 * (k % 2)  # a rectangle keeps its shape: half-turns only
            image, target = _d4(image, k, flip), _d4(target, k, flip)
            weight = None if weight is None else _d4(weight, k, flip)
        for transform in self._geometric:  # each seeded separately: their random draws stay independent
            transform.set_random_seed(int(rng.integers(2**31 - 1)))
            kwargs = {"image": image, "mask": target}
            if weight is not None:
                kwargs["weight"] = weight
            out = transform(**kwargs)
            image, target = out["image"], out["mask"]
            weight = out["weight"] if weight is not None else None
        if self._intensity is not None:
            image = _intensity(image, rng, **self._intensity)
        return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(target), weight


def _d4(array: np.ndarray, k: int, flip: bool) -> np.ndarray:
    array = np.rot90(array, k, axes=(0, 1))
    return array[:, ::-1] if flip else array


def _geometric(preset: str, elastic: bool) -> list:
    """Interpolating geometric transforms (albumentations / OpenCV), one ``Compose`` each."""
    if preset not in ("standard", "strong") and not elastic:
        return []
    import albumentations as A
    import cv2

    reflect = cv2.BORDER_REFLECT_101
    ops = []
    if preset in ("standard", "strong"):
        wide = preset == "strong"
        ops.append(
            A.Affine(
                scale=(0.7, 1.4) if wide else (0.85, 1.2),
                rotate=(-180, 180) if wide else (-30, 30),
                shear=(-10, 10) if wide else (-5, 5),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=reflect,
                p=0.7 if wide else 0.5,
            )
        )
    if elastic:
        ops.append(A.ElasticTransform(alpha=30, sigma=6, border_mode=reflect, mask_interpolation=cv2.INTER_NEAREST, p=0.5))
    return [A.Compose([op], additional_targets={"weight": "mask"}, seed=0) for op in ops]


def _intensity(image, rng, *, brightness, contrast, gamma, noise, p_noise, p_blur, p):
    if rng.random() < p:
        # gamma on the positive part only (normalised images can be slightly negative)
        g = float(np.exp(rng.uniform(-gamma, gamma)))
        pos = np.clip(image, 0, None)
        image = image - pos + pos**g
        c = 1.0 + rng.uniform(-contrast, contrast)
        b = rng.uniform(-brightness, brightness)
        mean = image.mean(axis=(0, 1), keepdims=True)
        image = (image - mean) * c + mean + b
    if rng.random() < p_blur:
        import cv2

        sigma = rng.uniform(0.3, 1.2)
        blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma)
        image = blurred.reshape(image.shape)
    if rng.random() < p_noise:
        image = image + rng.normal(0.0, rng.uniform(0.2, 1.0) * noise, size=image.shape).astype(np.float32)
    return image.astype(np.float32, copy=False)


def preview_augmentations(
    image: np.ndarray, labels: np.ndarray, *, preset: str = "standard", n: int = 4, seed: int = 0, elastic: bool = False
):
    """``n`` augmented versions of an image and its project labels, as the training loop sees them.

    Parameters
    ----------
    image : (Y, X) or (Y, X, C) array, any dtype (it is percentile-normalised first).
    labels : (Y, X) project labels (0 = unlabelled).

    Returns
    -------
    list of ``(image (Y, X, C) float32, labels (Y, X) same dtype as given)`` pairs.
    """
    aug = Augmenter(preset, elastic=elastic)
    norm = normalize(image)
    labels = np.asarray(labels)
    target = labels.astype(np.int16)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img, tgt, _ = aug(norm, target, None, rng)
        out.append((img.reshape(img.shape[0], img.shape[1], -1), tgt.astype(labels.dtype)))
    return out
