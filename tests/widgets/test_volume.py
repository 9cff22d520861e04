"""A volume in the widgets (a real viewer under Xvfb): annotate two sections of an EM stack, train a
2.5D model in the worker, predict the whole volume into a 3D labels layer whose cells span sections."""

from __future__ import annotations

import numpy as np

from napari_seg_box.core import Project
from napari_seg_box.widgets.annotate import AnnotateWidget
from napari_seg_box.widgets.predict import PredictWidget
from napari_seg_box.widgets.train import TrainWidget
from tests.core.test_volume_train import VOXEL, isbi_volume
from tests.widgets.conftest import objects_shown, wait_done


def test_annotate_two_sections_train_and_predict_the_volume_in_3d(viewer, qtbot, tmp_path):
    images, labels = isbi_volume(range(5))
    project = Project.create(tmp_path / "em.zarr", classes=["membrane", "interior"])
    project.add_image("em", images, stack=True, pixel_size=VOXEL)
    annotate = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(annotate, name="Annotate")
    annotate.open_project(project.url)
    annotate.open_image("em")
    layer = annotate.labels_layer_for("em")
    assert layer.data.shape == (5, 192, 192)
    assert tuple(viewer.layers["em"].scale) == VOXEL  # sections 50 nm apart, 4 nm pixels
    painted = np.zeros_like(labels)
    painted[[1, 3]] = labels[[1, 3]]  # two sections of five
    layer.data = painted
    annotate.save()
    row = next(r for r in annotate.table_rows() if r["image"] == "em")
    assert row["planes"] == "2 of 5 slices: 1, 3"

    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train")
    train.set_config(
        encoder="resnet18", encoder_depth=3, epochs=4, patch_size=96, batch_size=4, learning_rate=3e-3, steps_per_epoch=10,
        augmentation="light", context=None,
    )  # fmt: skip
    train.start()
    wait_done(qtbot, train.runner)
    info = Project.open(project.url).model_version(train.last_version)
    assert info.context == 1 and info.in_channels == 3  # 2.5D: one neighbouring section on each side

    predict = PredictWidget(viewer)
    viewer.window.add_dock_widget(predict, name="Predict")
    predict.predict("em")
    wait_done(qtbot, predict.predict_runner)
    objects_shown(qtbot, predict)
    pred = viewer.layers["em prediction"]
    assert pred.data.shape == (5, 192, 192) and tuple(pred.scale) == VOXEL
    ids_per_section = [set(np.unique(plane[plane > 0]).tolist()) for plane in pred.data]
    # objects are 3D: ids continue across sections (a cell is one object, not one per section)
    assert any(ids_per_section[z] & ids_per_section[z + 1] for z in range(4))
    assert predict.n_objects == len(np.unique(pred.data)) - 1 == len(pred.features)
