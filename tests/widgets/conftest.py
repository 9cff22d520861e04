"""Fixtures of the widget tests: a napari viewer under Xvfb showing real sample data."""

from __future__ import annotations

import os

import pytest

import napari_seg_box.widgets  # noqa: F401  (the triton guard, before anything imports torch)

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def panel_settings(tmp_path_factory):
    """The panels remember their settings (QSettings): each test starts from none, in its own folder."""
    from qtpy.QtCore import QSettings

    folder = tmp_path_factory.mktemp("settings")
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(folder))
    return folder


@pytest.fixture(autouse=True)
def no_unexpected_questions(monkeypatch):
    """A question dialog nobody answers would hang the test run: the panels' ``ask`` is replaced by
    one that records the question and answers "closed"; a test expecting one patches its own."""
    from napari_seg_box.widgets import _annotate_actions, _messages, annotate, train

    asked = []

    def unexpected(parent, title, text, choices):
        asked.append(f"{title}: {text}")
        return None

    for module in (_messages, _annotate_actions, annotate, train):
        monkeypatch.setattr(module, "ask", unexpected)
    yield
    assert not asked, f"unexpected questions: {asked}"


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


def objects_shown(qtbot, predict_widget, timeout: int = 20000):
    """Wait until the Predict panel's post-processing worker has shown the objects of its settings."""
    w = predict_widget
    qtbot.waitUntil(lambda: w.objects is not None and not w.pp_runner.running and not w._pp_timer.isActive(), timeout=timeout)
    return w.objects


TINY_TRAINING = dict(
    encoder="resnet18", encoder_depth=3, patch_size=64, batch_size=4, learning_rate=2e-3, steps_per_epoch=4, augmentation="light"
)


@pytest.fixture
def project(tmp_path, nuclei_q):
    """Three nuclei quadrants (two to train, one to validate), the top of each annotated (sparse)."""
    import numpy as np

    from napari_seg_box.core import Project

    p = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus"])
    for (name, image, inst), split in zip(nuclei_q[:3], ["train", "train", "validation"]):
        labels = np.zeros(inst.shape, np.uint8)
        labels[:160] = 1 + (inst[:160] > 0)
        p.add_image(name, image, labels=labels, split=split)
    return p


def make_train_widget(viewer, project, **cfg):
    """A docked Train panel on ``project`` with a tiny network (``cfg`` overrides)."""
    from napari_seg_box.widgets.train import TrainWidget

    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.project_box.set_url(project.url)
    w.set_config(**{**TINY_TRAINING, **cfg})
    return w
