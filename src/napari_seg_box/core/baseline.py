"""A classical baseline to measure the trained models against: smoothed Otsu + watershed.

No learning: Gaussian smoothing, Otsu's threshold, hole filling, small-object removal, and a
distance-transform seeded watershed that splits touching objects. Used by the accuracy benchmark
and the demo report ("is the network worth it?").
"""

from __future__ import annotations

import numpy as np

from .data import normalize


def classical_segmentation(
    image: np.ndarray,
    *,
    sigma: float = 2.0,
    bright_objects: bool = True,
    min_size: int = 30,
    watershed: bool = True,
    min_distance: int = 5,
) -> np.ndarray:
    """Instance labels of an image by smoothed Otsu thresholding and seeded watershed.

    Parameters
    ----------
    image : (Y, X) or (Y, X, C) array; channels are averaged after normalisation.
    sigma : Gaussian smoothing in pixels before thresholding.
    bright_objects : objects are brighter than the background (fluorescence: True; EM cells, whose
        membranes are dark, are bright too).
    min_size : objects smaller than this many pixels are removed.
    watershed : split touching objects by a watershed seeded at maxima of the distance transform.
    min_distance : minimum distance in pixels between two seeds.

    Returns
    -------
    (Y, X) int32 instance labels (0 = background).
    """
    from scipy import ndimage as ndi
    from skimage import filters, measure, morphology, segmentation
    from skimage.feature import peak_local_max

    img = normalize(image).mean(axis=-1)
    smooth = filters.gaussian(img, sigma=sigma) if sigma > 0 else img
    threshold = filters.threshold_otsu(smooth)
    mask = smooth > threshold if bright_objects else smooth < threshold
    mask = ndi.binary_fill_holes(mask)
    mask = morphology.remove_small_objects(mask, max_size=min_size) if min_size else mask
    if not watershed:
        return measure.label(mask).astype(np.int32)
    distance = ndi.distance_transform_edt(mask)
    distance = filters.gaussian(distance, sigma=1.0)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=measure.label(mask), exclude_border=False)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = segmentation.watershed(-distance, markers, mask=mask)
    return labels.astype(np.int32)
