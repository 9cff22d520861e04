"""The README's napari-console recipe runs as written: the whole loop in a few core calls."""

from __future__ import annotations

import numpy as np

# the runnable console recipe on the sample data (proposed for the README's "Python" section: keep in sync)
RECIPE = """
import numpy as np
from napari_seg_box import Project, TrainConfig, train_model, predict, evaluate_project, quantify_labels
from napari_seg_box.core.postprocess import postprocess

image = np.asarray(viewer.layers["nuclei"].data)               # File > Open Sample > napari-seg-box
truth = np.asarray(viewer.layers["nuclei ground truth"].data)  # or your painted labels layer's data
project = Project.create("nuclei.zarr", classes=["background", "nucleus"])
for i, split in enumerate(["train", "train", "validation", "test"]):
    y, x = 256 * (i // 2), 256 * (i % 2)
    project.add_image(f"q{i}", image[y:y+256, x:x+256], labels=1 + (truth[y:y+256, x:x+256] > 0), split=split)
version = train_model(project, TrainConfig(epochs=2, encoder="resnet18", encoder_depth=3, patch_size=64,
                                           steps_per_epoch=6, learning_rate=3e-3))  # epochs=50 for a real model
probs = predict(image, project, version=version)                 # (K, Y, X) probabilities, tiled
objects = postprocess(probs, threshold=0.5, min_size=10).instances
layer = viewer.add_labels(objects, name="nuclei objects")
print(evaluate_project(project, version).per_image)              # pixel + object metrics on q3
layer.features = quantify_labels(objects, image, kind="instances").objects.rename(columns={"label": "index"})
"""


def test_console_recipe(viewer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    viewer.open_sample("napari-seg-box", "nuclei")
    namespace = {"viewer": viewer}
    exec(compile(RECIPE, "README recipe", "exec"), namespace)
    layer = viewer.layers["nuclei objects"]
    n = len(np.unique(layer.data)) - 1
    assert layer.data.shape == (512, 512)
    assert len(layer.features) == n and set(layer.features["index"]) == set(np.unique(layer.data)) - {0}
    assert namespace["project"].model_version(namespace["version"]).training.status == "completed"
    assert (tmp_path / "nuclei.zarr" / "results" / "evaluations").is_dir()
