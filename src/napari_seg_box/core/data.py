"""Data preparation shared by training, evaluation and prediction (no torch import here).

The one normalisation used everywhere: per image and per channel, percentiles ``p_low`` and
``p_high`` map to 0 and 1 (float32), for 8-bit, 16-bit and float images alike.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError

DEFAULT_PERCENTILES = (1.0, 99.8)


def normalize(image: np.ndarray, *, percentiles: tuple[float, float] = DEFAULT_PERCENTILES, eps: float = 1e-6) -> np.ndarray:
    """Percentile-normalise an image to float32, channel by channel.

    Parameters
    ----------
    image : (Y, X) or (Y, X, C) array, any numeric dtype.
    percentiles : (low, high) percentiles mapped to 0 and 1; values outside are kept (not clipped).

    Returns
    -------
    (Y, X, C) float32 array (a channel axis is always present). Pixels that are not numbers (NaN,
    infinite: a dead pixel, a masked region exported as NaN) take the low value 0 and play no part in
    the percentiles, so one of them cannot turn the whole image into background.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise DataError(f"Expected a (Y, X) or (Y, X, C) image, got shape {image.shape}.")
    lo, hi = percentile_bounds(image, percentiles)
    return scale(image, lo, hi, eps=eps)


def scale(block: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, eps: float = 1e-6) -> np.ndarray:
    """``(block - lo) / (hi - lo)`` as float32, channel-last; non-finite pixels become 0."""
    out = (block.astype(np.float32, copy=False) - lo) / np.maximum(hi - lo, eps)
    if np.issubdtype(block.dtype, np.floating) and not np.isfinite(out).all():
        out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    return out.astype(np.float32, copy=False)


def percentile_bounds(array, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (low, high) percentiles of a (Y, X) or (Y, X, C) image, from a regular subsample
    of at most ~1 Mpx: images up to 1 Mpx use every pixel, larger ones every ``step``-th row and
    column (the same percentiles to within sampling noise, much faster). Lazy arrays (zarr, dask) are
    read band by band so that only the sample is held. The one rule of training, prediction in
    memory and prediction of images larger than memory.
    """
    h, w = array.shape[:2]
    channels = 1 if len(array.shape) == 2 else int(array.shape[2])
    step = max(1, int(np.ceil(np.sqrt(h * w / 1_000_000))))
    if isinstance(array, np.ndarray):
        sample = array[::step, ::step]
    else:
        band = max(step, (4096 // step) * step)
        sample = np.concatenate([np.asarray(array[y0 : min(h, y0 + band) : step, ::step]) for y0 in range(0, h, band)], axis=0)
    sample = sample.astype(np.float32).reshape(-1, channels)
    if not np.isfinite(sample).all():  # NaN / inf pixels play no part (np.nanpercentile is slower: only here)
        sample = np.where(np.isfinite(sample), sample, np.nan)
        if np.isnan(sample).all(axis=0).any():
            raise DataError("A channel of this image holds no finite number (all NaN or infinite): nothing can be seen in it.")
        lo, hi = np.nanpercentile(sample, percentiles, axis=0)
    else:
        lo, hi = np.percentile(sample, percentiles, axis=0)
    return lo.astype(np.float32), hi.astype(np.float32)


def labels_to_target(labels: np.ndarray, *, ignore_index: int = -100) -> np.ndarray:
    """Project labels (0 = unlabelled, 1..K) to a training target (0..K-1, ``ignore_index``)."""
    target = labels.astype(np.int64) - 1
    target[labels == 0] = ignore_index
    return target


def pad_to_multiple(array: np.ndarray, multiple: int = 32, *, mode: str = "reflect") -> tuple[np.ndarray, tuple[int, int]]:
    """Pad the first two axes of ``array`` up to a multiple (reflect where possible).

    Returns the padded array and the original (Y, X) size, for :func:`crop_to`.
    """
    h, w = array.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return array, (h, w)
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (array.ndim - 2)
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "symmetric" if (ph <= h and pw <= w) else "edge"
    return np.pad(array, pad, mode=mode), (h, w)
