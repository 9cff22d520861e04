"""The code-free loop in one napari window, on the plugin's real sample data (DSB2018 nuclei):
annotate (paint programmatically) -> train 2 epochs in the worker -> predict -> evaluate -> quantify."""

from __future__ import annotations

import numpy as np
from skimage.measure import label as connected_components

from napari_seg_box.core import Project
from napari_seg_box.widgets.annotate import AnnotateWidget
from napari_seg_box.widgets.predict import PredictWidget
from napari_seg_box.widgets.quantify import QuantifyWidget
from napari_seg_box.widgets.train import TrainWidget
from tests.widgets.conftest import objects_shown, wait_done

QUADRANTS = {
    "nuclei q0": (0, 0, "train"),
    "nuclei q1": (0, 256, "train"),
    "nuclei q2": (256, 0, "validation"),
    "nuclei q3": (256, 256, "test"),
}


def test_full_loop_on_sample_data(viewer, qtbot, tmp_path):
    viewer.open_sample("napari-seg-box", "nuclei")
    image = np.asarray(viewer.layers["nuclei"].data)
    truth = np.asarray(viewer.layers["nuclei ground truth"].data)
    assert image.shape == truth.shape == (512, 512)

    # 1. annotate: a project, four image layers with their splits, painted from the ground truth
    annotate = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(annotate, name="Annotate")
    annotate.create_project(str(tmp_path / "loop.zarr"), classes=["background", "nucleus"])
    for name, (y, x, split) in QUADRANTS.items():
        viewer.add_image(image[y : y + 256, x : x + 256], name=name)
        assert annotate.add_layer(name, split=split) == name
        painted = (1 + (truth[y : y + 256, x : x + 256] > 0)).astype(np.uint8)
        if split == "train":
            painted[160:] = 0  # sparse: the bottom of the training images stays unlabelled
        annotate.labels_layer_for(name).data = painted
    assert sorted(annotate.save()) == sorted(QUADRANTS)
    rows = {r["image"]: r for r in annotate.table_rows()}
    assert rows["nuclei q0"]["background"] + rows["nuclei q0"]["nucleus"] == 160 * 256
    assert rows["nuclei q3"]["split"] == "test"
    project = Project.open(annotate.project_box.url)

    # 2. train: 2 epochs of a tiny U-Net in the thread worker
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train")
    assert train.project_box.url == project.url  # taken from the linked layers
    train.set_config(
        encoder="resnet18",
        encoder_depth=3,
        epochs=2,
        patch_size=64,
        batch_size=4,
        learning_rate=3e-3,
        steps_per_epoch=6,
        augmentation="light",
    )
    train.start()
    wait_done(qtbot, train.runner)
    version = train.last_version
    assert version == "v001" and len(train.history) == 2
    info = project.model_version(version)
    assert info.training.status == "completed" and info.provenance.validation_images == ("nuclei q2",)
    assert "nuclei q3" not in info.provenance.train_images  # the test image is never trained on
    assert list(train.versions.frame["version"]) == ["v001"]

    # 3. predict the test image and post-process it
    predict = PredictWidget(viewer)
    viewer.window.add_dock_widget(predict, name="Predict")
    assert predict.version_combo.currentData() == "v001"
    predict.predict("nuclei q3")
    wait_done(qtbot, predict.predict_runner)
    objects_shown(qtbot, predict)
    pred = viewer.layers["nuclei q3 prediction"]
    assert pred.data.shape == (256, 256) and pred.data.max() == predict.n_objects == len(pred.features)
    assert predict.probabilities.shape == (2, 256, 256)
    np.testing.assert_allclose(predict.probabilities.sum(axis=0), 1.0, atol=1e-4)
    if predict.n_objects:
        assert len(viewer.layers["nuclei q3 outlines"].data) == predict.n_objects

    # 4. evaluate on the held-out test image
    predict.evaluate("test")
    wait_done(qtbot, predict.eval_runner)
    table = predict.metrics_table.frame
    assert list(table["image"]) == ["ALL (pooled)", "nuclei q3"]
    n_true = int(connected_components(truth[256:, 256:] > 0, connectivity=1).max())
    assert int(table["n_true"][1]) == n_true  # object truth = connected components of the annotation
    assert int(table["n_pred"][1]) == predict.n_objects
    assert 0.0 <= table["mean_iou"][0] <= 1.0 and 0.0 <= table["pixel_accuracy"][0] <= 1.0
    errors = viewer.layers["nuclei q3 errors"].data
    assert set(np.unique(errors)) <= {0, 1, 2, 3} and (errors > 0).any()
    assert len(project.list_dir("results/evaluations")) == 1

    # 5. quantify the project's images with the new model
    quantify = QuantifyWidget(viewer)
    viewer.window.add_dock_widget(quantify, name="Quantify")
    quantify.set_source("project")
    quantify.run()
    wait_done(qtbot, quantify.runner)
    images = quantify.images_table.frame
    assert list(dict.fromkeys(images["image"])) == list(QUADRANTS)
    assert quantify.result.errors == []
    assert len(quantify.objects_table.frame) == int(images["n_objects"].sum())
    q3_objects = int(images.loc[images["image"] == "nuclei q3", "n_objects"].sum())
    assert q3_objects == predict.n_objects  # same model, same post-processing, same objects
    if len(quantify.objects_table.frame):
        layer = quantify.open_row("objects", 0)
        assert layer is not None and len(layer.features) > 0
