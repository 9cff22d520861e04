"""Fixtures of the widget tests: a napari viewer under Xvfb showing real sample data."""

from __future__ import annotations

import os

import numpy as np
import pytest

import napari_seg_box.widgets  # noqa: F401  (the triton guard, before anything imports torch)

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def nuclei_q():
    """The four 256x256 quadrants of the DSB2018 nuclei image: [(name, image, instances)]."""
    from tests.conftest import nuclei_quadrants

    return nuclei_quadrants()


def paint_truth(labels_layer, instances: np.ndarray, *, rows: slice = slice(None)) -> None:
    """Sparse painting from ground truth: 1 = background, 2 = nucleus, only inside ``rows``."""
    data = np.zeros(instances.shape, np.uint8)
    data[rows] = (1 + (instances[rows] > 0)).astype(np.uint8)
    labels_layer.data = data
