"""Fixtures of the widget tests: a napari viewer under Xvfb showing real sample data."""

from __future__ import annotations

import os

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


def wait_done(qtbot, runner, timeout: int = 300000) -> None:
    """Wait until a widget's :class:`Runner` task has ended. Not ``qtbot.waitSignal(worker.finished)``:
    a worker that ends before that connects (a quick error) would be missed; the Runner's own slot
    was connected before the worker started."""
    assert runner.running, "no task was started"
    qtbot.waitUntil(lambda: not runner.running, timeout=timeout)
