"""napari sample data: real images with ground truth, bundled in the package (see sample_data/CREDITS.md)."""

from __future__ import annotations

import numpy as np

from .core.samples import load_em, load_nuclei


def nuclei():
    image, mask = load_nuclei()
    return [
        (image, {"name": "nuclei"}, "image"),
        (mask, {"name": "nuclei ground truth", "opacity": 0.5, "visible": False}, "labels"),
    ]


def em_slices():
    images, masks = load_em()
    return [
        (images, {"name": "EM"}, "image"),
        ((masks == 0).astype(np.uint8), {"name": "EM membranes ground truth", "opacity": 0.5, "visible": False}, "labels"),
    ]
