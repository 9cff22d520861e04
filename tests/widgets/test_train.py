"""Train widget: real training in a thread worker, live curves, versions list, stop keeps a version,
the event loop stays responsive, bad settings and empty projects show errors instead of raising."""

from __future__ import annotations

import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_seg_box.core import Project, TrainConfig
from napari_seg_box.widgets.train import TrainWidget
from tests.widgets.conftest import make_train_widget as make_widget
from tests.widgets.conftest import wait_done


def test_train_two_epochs_curves_and_versions(viewer, qtbot, project):
    assert TrainWidget(viewer).config() == TrainConfig()  # the dock starts from the core's defaults
    w = make_widget(viewer, project, epochs=2)
    cfg = w.config()
    assert (cfg.encoder, cfg.encoder_depth, cfg.decoder, cfg.patch_size, cfg.epochs) == ("resnet18", 3, (32, 16, 8), 64, 2)
    assert not cfg.boundary and cfg.distance is False  # touching objects: the shape watershed
    w.set_config(boundary=True)
    assert w.settings_form.touching_combo.currentText() == "learn object boundaries" and w.config().boundary
    w.set_config(distance=True)
    assert w.config().distance is True and not w.config().boundary
    w.set_config(boundary=False, distance=None)
    assert w.settings_form.touching_combo.currentText().startswith("automatic") and w.config().distance is None
    w.set_config(boundary=False, distance=False)
    assert not w.advanced.isExpanded()  # advanced settings start collapsed
    qtbot.waitUntil(lambda: w.device_label.text().startswith(("CPU", "CUDA", "Apple")), timeout=60000)
    w.start()
    # the event loop keeps running while the worker trains: longest gap between 20 ms ticks, from
    # the first optimisation step to the end (saving the version included)
    ticks = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()) if w.progress.value() > 0 else None)
    timer.start()
    wait_done(qtbot, w.runner, 240000)
    timer.stop()
    gaps = np.diff(ticks)
    assert len(ticks) > 20 and gaps.max() < 0.25, f"longest gap {gaps.max():.3f} s over {len(ticks)} ticks"
    assert w.last_version == "v001"
    meta = Project.open(project.url).model_version("v001").training
    assert meta.status == "completed" and len(meta.history) == 2
    # curves: training and validation lines with one point per epoch on each of the three plots
    assert len(w.history) == 2
    w.plot.wait()
    assert w.plot.image_label.pixmap() is not None and not w.plot.image_label.pixmap().isNull()
    for ax in w.plot.axes:
        assert [len(line.get_xdata()) for line in ax.get_lines()] == [2, 2]
    np.testing.assert_allclose(w.plot.axes[0].get_lines()[1].get_ydata(), [h["val_loss"] for h in meta.history])
    assert w.progress.value() == w.progress.maximum() and w.progress.format() == "done"
    rows = w.versions.frame
    assert list(rows["version"]) == ["v001"] and rows["status"][0] == "completed"
    assert rows["val IoU"][0] == pytest.approx(meta.best["val_iou"])
    assert 0.0 <= rows["val IoU"][0] <= 1.0
    assert "Training finished: model version v001" in w.status.text()
    assert w.settings_form.finetune_combo.findData("v001") > 0  # fine-tuning can start from it


def test_stop_during_training_keeps_a_version(viewer, qtbot, project):
    w = make_widget(viewer, project, epochs=40)
    w.start()
    qtbot.waitUntil(lambda: len(w.history) >= 1, timeout=180000)
    w.stop_btn.click()
    wait_done(qtbot, w.runner, 120000)
    meta = Project.open(project.url).model_version(w.last_version).training
    assert meta.status == "stopped"
    assert 1 <= len(meta.history) < 40
    assert list(w.versions.frame["status"]) == ["stopped"]
    assert w.start_btn.isEnabled() and not w.stop_btn.isEnabled()


def test_augmentation_preview_layers(viewer, project):
    w = make_widget(viewer, project)
    w.settings_form.aug_combo.setCurrentText("strong")
    samples = w.preview_augmentation(n=3)
    assert len(samples) == 3
    img = viewer.layers["augmented (strong)"].data
    lab = viewer.layers["augmented (strong) labels"].data
    assert img.shape == (3, 256, 256) and lab.shape == (3, 256, 256)
    assert set(np.unique(lab)) <= {0, 1, 2} and (lab == 2).any()


def test_train_errors_are_shown_not_raised(viewer, qtbot, tmp_path, nuclei_q):
    empty = Project.create(tmp_path / "empty.zarr")
    w = make_widget(viewer, empty, epochs=1)
    w.start()  # nothing annotated: the worker fails with a DataError at once, shown in the widget
    wait_done(qtbot, w.runner, 60000)
    assert "annot" in w.status.text().lower()
    assert w.start_btn.isEnabled()
    w.set_config(patch_size=48)  # not a multiple of 32: the config is refused before anything runs
    assert w.start() is None and "multiple of 32" in w.status.text()
    w.project_box.edit.setText(str(tmp_path / "nowhere"))
    assert w.start() is None and "No napari-seg-box project" in w.status.text()


def test_loss_axis_ticks_are_plain_round_numbers():
    """The log-scale loss axis showed "4x10^-1" labels cut off at the panel's edge (matplotlib's
    labels for a range within one decade)."""
    from napari_seg_box.widgets._train_form import log_ticks

    assert log_ticks(0.31, 0.95) == [0.4, 0.5, 0.9]
    assert log_ticks(0.3, 2e6) == [1.0, 100.0, 10000.0, 1e6]  # a loss that exploded: powers of ten
    assert log_ticks(0.05, 0.6) == [0.05, 0.1, 0.2, 0.5]
    assert log_ticks(0.0123, 0.0129) == [0.0123, 0.0129]
    for lo, hi in [(0.31, 0.95), (0.3, 2e6), (0.05, 0.6), (1e-4, 3.0), (0.2, 0.25)]:
        ticks = log_ticks(lo, hi)
        assert 2 <= len(ticks) <= 5 and all(lo <= t <= hi for t in ticks), (lo, hi, ticks)


def test_time_budget_and_imagenet_weights_reach_the_training_settings(viewer, project):
    w = make_widget(viewer, project, epochs=3)
    cfg = w.config()
    assert cfg.minutes is None and cfg.pretrained is False  # off by default: the epochs decide
    w.set_config(minutes=20, pretrained=True)
    cfg = w.config()
    assert cfg.minutes == 20 and cfg.pretrained is True and cfg.epochs == 3
    assert "20 min" in w.settings_form.minutes.text()
