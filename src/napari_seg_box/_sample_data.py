"""napari sample data: real images with ground truth, bundled in the package (see sample_data/CREDITS.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_DIR = Path(__file__).parent / "sample_data"
EM_SLICES = (0, 5, 10, 15, 20, 25)


def load_nuclei() -> tuple[np.ndarray, np.ndarray]:
    """The DSB2018 nuclei image (512x512 uint16) and its instance labels (125 nuclei)."""
    import tifffile

    return tifffile.imread(SAMPLE_DIR / "nuclei_image.tif"), tifffile.imread(SAMPLE_DIR / "nuclei_mask.tif")


def load_em() -> tuple[np.ndarray, np.ndarray]:
    """Six ISBI 2012 EM slices (6, 512, 512) uint8 and masks (255 = cell interior, 0 = membrane)."""
    import imageio.v3 as iio

    images = np.stack([iio.imread(SAMPLE_DIR / f"em_{i:02d}_image.png") for i in EM_SLICES])
    masks = np.stack([iio.imread(SAMPLE_DIR / f"em_{i:02d}_mask.png") for i in EM_SLICES])
    return images, masks


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
