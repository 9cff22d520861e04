"""The real sample data bundled in the package (``sample_data/``, see its CREDITS.md), as arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"
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
