"""Predict and evaluate widget: tiled prediction in a worker, live post-processing, outlines, evaluation
table, TP/FP/FN error maps, CSV export, cancel, errors in the widget."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_seg_box.widgets.predict import PredictWidget
from tests.core._models import fitted_nuclei_model, nuclei_project_with_model, save_tiny_model, with_distance_output
from tests.widgets.conftest import objects_shown, wait_done


@pytest.fixture
def setup(viewer, nuclei_project, nuclei_q):
    version = nuclei_project_with_model(nuclei_project)
    viewer.add_image(nuclei_q[3][1], name="q3 image")
    w = PredictWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.project_box.set_url(nuclei_project.url)
    return w, version


def test_predict_postprocess_live_and_outlines(viewer, qtbot, setup, nuclei_q):
    w, version = setup
    assert w.version_combo.currentData() == version
    truth = nuclei_q[3][2]
    n_true = len(np.unique(truth)) - 1
    w.probs_check.setChecked(True)
    w.predict("q3 image")
    wait_done(qtbot, w.predict_runner, 120000)
    objects_shown(qtbot, w)
    assert w.probabilities.shape == (2, 256, 256)
    labels = viewer.layers["q3 image prediction"]
    assert labels.data.shape == (256, 256) and labels.data.max() == w.n_objects
    assert 0.5 * n_true <= w.n_objects <= 1.5 * n_true, (w.n_objects, n_true)
    # most predicted nucleus pixels lie on true nuclei (a fitted model, not noise)
    fg = labels.data > 0
    assert (truth > 0).mean() < 0.35  # so a precision above 0.65 is far from chance
    assert (truth[fg] > 0).mean() > 0.65 and (fg[truth > 0]).mean() > 0.6
    assert list(labels.features.columns) == ["index", "class"] and len(labels.features) == w.n_objects
    assert set(labels.features["class"]) == {"nucleus"}
    assert len(viewer.layers["q3 image outlines"].data) == w.n_objects
    assert viewer.layers["q3 image probability"].data.shape == (256, 256)
    # post-processing controls update the layers without running the network again
    before_fg = int(fg.sum())
    w.threshold.setValue(0.9)
    qtbot.waitUntil(lambda: int((viewer.layers["q3 image prediction"].data > 0).sum()) < before_fg, timeout=5000)
    n_before = w.n_objects
    w.min_size.setValue(150)
    qtbot.waitUntil(lambda: w.n_objects < n_before, timeout=5000)
    sizes = np.bincount(viewer.layers["q3 image prediction"].data.ravel())[1:]
    assert sizes.min() >= 150
    assert w.predict_runner.worker is None  # nothing re-ran
    # without splitting, touching nuclei merge: never more objects than with the watershed
    w.min_size.setValue(10)
    w.threshold.setValue(0.5)
    qtbot.wait(400)
    n_split = w.n_objects
    w.split.setChecked(False)
    qtbot.waitUntil(lambda: w.n_objects != n_split or True, timeout=1000)
    qtbot.wait(400)
    assert w.n_objects <= n_split


def test_evaluate_table_error_maps_and_csv(viewer, qtbot, setup, tmp_path, nuclei_q):
    w, version = setup
    w.evaluate("test")
    wait_done(qtbot, w.eval_runner, 120000)
    ev = w.evaluation
    assert ev is not None and ev.summary["images"] == ["q3"]
    table = w.metrics_table.frame
    assert list(table["image"]) == ["ALL (pooled)", "q3"]
    assert table["mean_iou"][0] == pytest.approx(ev.summary["pixel"]["mean_iou"])
    assert ev.summary["pixel"]["mean_iou"] > 0.6
    assert 0 < table["f1@0.5"][1] <= 1
    assert table["n_true"][1] == len(np.unique(nuclei_q[3][2])) - 1
    name = "q3 errors"  # one object class: the class is not in the name
    errors = viewer.layers[name].data
    assert set(np.unique(errors)) <= {0, 1, 2, 3} and (errors == 1).sum() > 1000
    assert "q3" in viewer.layers  # the test image is shown under its error map
    paths = w.export_csv(str(tmp_path / "csv"))
    per_image = pd.read_csv(tmp_path / "csv" / "per_image.csv")
    assert len(paths) == 4 and list(per_image["image"]) == ["q3"]
    assert per_image["mean_iou"][0] == pytest.approx(ev.per_image["mean_iou"][0])
    # the sortable table sorts numbers as numbers
    from qtpy.QtCore import Qt

    w.metrics_table.sortByColumn(list(table.columns).index("mean_iou"), Qt.SortOrder.AscendingOrder)
    shown = [w.metrics_table.row_record(i)["mean_iou"] for i in range(2)]
    assert shown == sorted(shown)


def test_cancel_and_errors_in_widget(viewer, qtbot, setup, tmp_path):
    w, version = setup
    w.predict("q3 image")
    w.cancel_btn.click()  # before the first tile: the worker stops at its first check
    wait_done(qtbot, w.predict_runner, 60000)
    assert w.status.text() == "Cancelled." and w.predict_btn.isEnabled()
    from napari_seg_box.core import Project

    empty = Project.create(tmp_path / "empty.zarr")
    w.project_box.edit.setText(empty.url)
    w.refresh_versions()
    assert w.predict("q3 image") is None and "no model version" in w.status.text()
    assert w.export_csv(str(tmp_path)) is None and "Evaluate first" in w.status.text()


def test_objects_update_in_a_worker_with_the_count_and_the_tuned_settings_named(viewer, qtbot, setup, nuclei_project, monkeypatch):
    """Issue 20, point 12: sliders; post-processing off the main thread, debounced; the outlines layer
    updated in place; the count in the status follows; the tuned-settings button says what it applies."""
    import threading

    from superqt import QLabeledDoubleSlider, QLabeledSlider

    import napari_seg_box.widgets.predict as predict_module
    from napari_seg_box.core.postprocess import PostprocessConfig
    from napari_seg_box.core.versions import Tuning

    w, version = setup
    assert isinstance(w.threshold, QLabeledDoubleSlider) and isinstance(w.min_size, QLabeledSlider)
    # a GUI-trained model without tuning: the button says so instead of silently applying defaults
    assert not w.tuned_btn.isEnabled() and "has no tuned settings" in w.tuned_btn.text() and "defaults" in w.pp.tuned_label.text()
    threads, real = [], predict_module.iter_objects

    def recording(*args, **kwargs):
        threads.append(threading.current_thread())
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(predict_module, "iter_objects", recording)
    w.predict("q3 image")
    wait_done(qtbot, w.predict_runner, 120000)
    objects_shown(qtbot, w)
    assert threads and all(t is not threading.main_thread() for t in threads)
    outlines = viewer.layers["q3 image outlines"]
    n = w.n_objects
    assert f"{n} objects" in w.status.text() and f"{n} objects" in w.pp.count_label.text()
    runs = len(threads)
    for size in range(20, 420, 40):  # a dragged slider: ten values in quick succession
        w.min_size.setValue(size)
    objects_shown(qtbot, w)
    assert len(threads) - runs <= 2, "each slider value post-processed: not debounced"
    assert w.objects.config.min_size == 380 and w.n_objects < n
    assert f"{w.n_objects} objects" in w.status.text() and f"{n} objects" not in w.status.text()
    assert viewer.layers["q3 image outlines"] is outlines and len(outlines.data) == w.n_objects  # updated, not rebuilt
    # a tuned version: the button names the settings and applies exactly them
    tuned = PostprocessConfig(threshold=0.7, min_size=30, instances="components")
    nuclei_project.save_tuning(version, Tuning(tuned, score=0.8, metric="f1@0.5"))
    w.refresh_versions()
    assert w.tuned_btn.isEnabled() and "threshold 0.7, min size 30" in w.pp.tuned_label.text()
    w.min_size.setValue(500)
    w.tuned_btn.click()
    assert (w.threshold.value(), w.min_size.value(), w.split.isChecked()) == (pytest.approx(0.7), 30, False)
    objects_shown(qtbot, w)
    assert w.objects.config.min_size == 30 and w.objects.config.instances == "components"


def test_error_maps_read_without_a_legend_in_the_layer_name(viewer, qtbot, setup):
    """Issue 20, point 13: colour-blind-safe error colours with a key in the panel, "FP" on hover, the
    F1 and IoU columns first."""
    w, version = setup
    w.evaluate("test")
    wait_done(qtbot, w.eval_runner, 120000)
    assert list(w.metrics_table.frame.columns[:3]) == ["image", "f1@0.5", "mean_iou"]
    layer = viewer.layers["q3 errors"]
    assert not w.legend.isHidden() and all(word in w.legend.text() for word in ("found (TP)", "false alarm (FP)", "missed (FN)"))
    colours = {k: tuple(np.round(layer.colormap.map(k)[:3], 2)) for k in (1, 2, 3)}
    assert colours == {1: (0.0, 0.45, 0.7), 2: (0.9, 0.62, 0.0), 3: (0.8, 0.47, 0.65)}  # Okabe-Ito blue, orange, purple
    for value, word in ((1, "TP"), (2, "FP"), (3, "FN")):
        where = np.argwhere(layer.data == value)
        if len(where):
            status = layer.get_status(tuple(where[len(where) // 2]), world=True)
            text = status["coordinates"] if isinstance(status, dict) else status
            assert f"({word})" in text, text


def test_a_distance_model_offers_its_centre_level_and_its_objects_grow_from_the_centres(viewer, qtbot, nuclei_project, nuclei_q):
    """Issue 21: a model with a distance output splits objects at the centres it predicts; the panel
    shows the centre level (not the seed distance, which such a model does not use) and passes the
    model's output to the post-processing."""
    from napari_seg_box.core.postprocess import PostprocessConfig, postprocess
    from napari_seg_box.core.versions import Tuning

    tuned = PostprocessConfig(seed_level=0.6, min_size=0)
    version = save_tiny_model(
        nuclei_project, classes=3, distance=True, model=with_distance_output(fitted_nuclei_model()), tuning=Tuning(tuned, 0.9, "f1@0.5")
    )
    viewer.add_image(nuclei_q[3][1], name="q3 image")
    w = PredictWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.project_box.set_url(nuclei_project.url)
    assert w.version_combo.currentData() == version
    assert not w.pp.seed_level.isHidden() and w.pp.seed_distance.isHidden() and w.pp.seed_distance_label.isHidden()
    assert "centres above 0.6" in w.pp.tuned_label.text()
    w.tuned_btn.click()
    assert w.pp.seed_level.value() == pytest.approx(0.6)
    w.predict("q3 image")
    wait_done(qtbot, w.predict_runner, 120000)
    objects_shown(qtbot, w)
    assert w.probabilities.shape == (3, 256, 256)
    assert viewer.layers["q3 image prediction"].data.max() == w.n_objects > 5
    w.pp.seed_level.setValue(0.9)
    qtbot.waitUntil(lambda: w.objects is not None and w.objects.config.seed_level == pytest.approx(0.9), timeout=10000)
    objects_shown(qtbot, w)
    expected = postprocess(w.probabilities, w.objects.config, distance=True)
    assert w.n_objects == expected.n_objects
    assert np.array_equal(viewer.layers["q3 image prediction"].data > 0, expected.instances > 0)
