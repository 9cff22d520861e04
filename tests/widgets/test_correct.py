"""Correct and improve in a real napari viewer: a suggestion opens an unannotated image predicted and
ready to correct, a click on the canvas deletes an object, the correction is saved with its
provenance, and the Train panel's button fine-tunes the model on it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seg_box.layers import ORIGIN_KEY
from napari_seg_box.widgets.predict import PredictWidget
from tests.core._models import nuclei_project_with_model
from tests.widgets.conftest import objects_shown, wait_done


def click_canvas(viewer, qtbot, world_yx) -> None:
    """A left click on the canvas where the world point ``world_yx`` is shown (through vispy's events)."""
    canvas = viewer.window._qt_viewer.canvas
    transform = canvas.view.transform * canvas.view.scene.transform
    x, y = transform.map([world_yx[1], world_yx[0]])[:2]
    canvas._scene_canvas.events.mouse_press(pos=(x, y), modifiers=(), button=1)
    canvas._scene_canvas.events.mouse_release(pos=(x, y), modifiers=(), button=1)
    qtbot.wait(20)


@pytest.fixture
def panel(viewer, nuclei_project):
    nuclei_project.set_labels("q1", None)  # the one image nobody annotated
    version = nuclei_project_with_model(nuclei_project)
    w = PredictWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.project_box.set_url(nuclei_project.url)
    return w, version


def test_suggest_open_correct_click_delete_save_and_update(viewer, qtbot, panel, nuclei_project):
    from napari_seg_box.widgets.annotate import AnnotateWidget
    from napari_seg_box.widgets.train import TrainWidget

    w, version = panel
    box = w.correct_box
    w.suggest_box.suggest()
    wait_done(qtbot, w.suggest_box.runner, 120000)
    assert [s.image for s in w.suggest_box.suggestions] == ["q1"]  # q0, q2 annotated, q3 held out
    assert w.suggest_box.list.count() == 1 and "uncertainty" in w.suggest_box.list.item(0).text()

    w.suggest_box.open(0)  # opens q1, predicts it, and starts its correction
    wait_done(qtbot, w.predict_runner, 120000)
    objects_shown(qtbot, w)
    qtbot.waitUntil(lambda: box.labels_layer is not None, timeout=10000)
    layer = box.labels_layer
    assert layer.name == "q1 annotations" and layer.metadata[ORIGIN_KEY] == {"origin": "corrected", "model_version": version}
    assert set(np.unique(layer.data)) <= {1, 2} and (layer.data == 2).any()
    assert viewer.layers.selection.active is layer

    # a click on the canvas with "delete" deletes the object under it
    box.tool.setCurrentIndex(box.tool.findData("delete"))
    assert layer.mode == "pan_zoom"
    ids, sizes = np.unique(box.instances[box.instances > 0], return_counts=True)
    target = int(ids[np.argmax(sizes)])
    ys, xs = np.nonzero(box.instances == target)
    inside = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
    click_canvas(viewer, qtbot, (ys[inside], xs[inside]))
    assert not (box.instances == target).any(), box.status.text()
    assert (layer.data[ys, xs] == 1).all() and "deleted" in box.status.text()
    # split another with two clicks along a vertical cut through its middle
    box.tool.setCurrentIndex(box.tool.findData("split"))
    other = int(ids[np.argsort(sizes)[-2]])
    ys, xs = np.nonzero(box.instances == other)
    cx = int(np.median(xs))
    before = len(np.unique(box.instances))
    box.click((ys.min(), cx))
    box.click((ys.max(), cx))
    assert len(np.unique(box.instances)) == before + 1, box.status.text()

    assert box.save() is not None, box.status.text()
    history = nuclei_project.refresh().annotation_history("q1")
    assert history[-1]["origin"] == "corrected" and history[-1]["model_version"] == version
    assert (nuclei_project.get_labels("q1") == layer.data).all()
    assert not np.isin(nuclei_project.get_instances("q1"), [target]).any()
    # the Annotate panel saves the same layer as a correction too
    annotate = AnnotateWidget(viewer)
    annotate.project_box.set_url(nuclei_project.url)
    annotate.save()
    assert nuclei_project.refresh().annotation_history("q1")[-1]["origin"] == "corrected"
    rows = {r["image"]: r for r in annotate.table_rows()}
    assert rows["q1"]["annotation"] == f"corrected ({version})" and rows["q0"]["annotation"] == "imported"

    # the Train panel's button fine-tunes the latest version on the correction
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train)
    run = train.update_model()
    assert run is not None and run.config.finetune_from == version and run.config.recent_weight > 1
    qtbot.waitUntil(lambda: not run.running, timeout=300000)
    assert run.status == "finished", run.error
    info = nuclei_project.model_version(run.version)
    assert info.provenance.finetuned_from == version and info.training.start["version"] == version
    assert f"{version} scored" in train.eta_label.text()

    # continuous mode: each save updates the model (a few epochs) and predicts the image again with it
    box.continuous.setChecked(True)
    shown = w.probabilities
    assert "Updating the model" in box.save()
    quick = train.run
    assert quick is not run and quick.config.epochs == 3 and quick.config.finetune_from == run.version
    qtbot.waitUntil(lambda: not quick.running, timeout=300000)
    assert quick.status == "finished", quick.error
    qtbot.waitUntil(lambda: w.probabilities is not shown and not w.predict_runner.running, timeout=120000)
    assert w.version_combo.currentData() == quick.version and w.result_for == "q1"
    assert (nuclei_project.refresh().get_labels("q1") == layer.data).all()  # the annotation is not touched


def test_uncertainty_layer_and_bad_input(viewer, qtbot, panel, nuclei_project, nuclei_q):
    w, version = panel
    box = w.correct_box
    assert box.correct() is None and "Predict an image first" in box.status.text()
    viewer.add_image(nuclei_q[3][1], name="new image")  # not in the project yet
    w.unsure_check.setChecked(True)
    w.predict("new image")
    wait_done(qtbot, w.predict_runner, 120000)
    objects_shown(qtbot, w)
    u = viewer.layers["new image uncertainty"].data
    assert u.shape == (256, 256) and u.min() >= 0 and u.max() <= 1 and u.max() > 0.3
    assert "new image uncertainty" not in [w.layer_combo.itemText(i) for i in range(w.layer_combo.count())]

    box.confidence.setValue(0.9)
    layer = box.correct()
    assert "new image" in nuclei_project.refresh().image_names()  # added to the project to hold its correction
    assert (layer.data == 0).any()  # unsure pixels left unlabelled
    nuclei_project.remove_image("new image")
    assert box.save() is None
    assert "was removed from the project" in box.status.text()
    assert layer in viewer.layers  # the correction is still there to keep
