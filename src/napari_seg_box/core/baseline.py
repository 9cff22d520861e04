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


def evaluate_baseline(project, *, split: str = "test", **options):
    """Score :func:`classical_segmentation` on the annotated ``split`` images of a two-class project.

    The baseline's objects are class 2 (e.g. nucleus, cell interior), everything else class 1; the
    scoring is the same as :func:`~napari_seg_box.core.evaluate.evaluate_project` (pixel metrics,
    object matching against the store's instances or the labels' connected components).
    ``options`` go to :func:`classical_segmentation`. Returns an ``Evaluation``.
    """
    from .errors import DataError
    from .evaluate import evaluate_pairs, truth_instances

    if project.n_classes != 2:
        raise DataError("The classical baseline segments one object class: it needs a two-class project.")
    items = []
    for name in project.image_names(split):
        truth = project.get_labels(name)
        if truth is None:
            continue
        instances = classical_segmentation(project.get_image(name), **options)
        semantic = np.where(instances > 0, 2, 1).astype(np.uint8)
        items.append((name, truth, semantic, truth_instances(project, name, truth, classes=[2]), {2: instances}))
    ev = evaluate_pairs(items, n_classes=2, class_names=project.class_names, object_classes=[2])
    ev.summary["model_version"] = "classical baseline (smoothed Otsu + watershed)"
    return ev
