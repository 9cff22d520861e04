"""Annotate widget: project, classes, linked labels layer, painting, autosave, splits, list, errors."""

from __future__ import annotations

import numpy as np

from napari_seg_box.core import Project
from napari_seg_box.widgets.annotate import AnnotateWidget


def test_annotate_paint_autosave_split_and_list(viewer, qtbot, tmp_path, nuclei_q):
    name, image, inst = nuclei_q[0]
    viewer.add_image(image, name="nuclei q0")
    w = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(w)
    project = w.create_project(str(tmp_path / "p.zarr"), classes=["background", "nucleus"])
    assert isinstance(project, Project)
    added = w.add_layer("nuclei q0", split="train")
    assert added == "nuclei q0"
    labels = w.labels_layer_for("nuclei q0")
    assert labels is not None and labels.data.shape == image.shape
    assert labels.metadata == {"segbox_store": project.url, "segbox_image": "nuclei q0"}
    assert viewer.layers["nuclei q0"].metadata["segbox_image"] == "nuclei q0"
    # the class picker sets the brush's label
    w.class_combo.setCurrentIndex(w.class_combo.findData(2))
    assert labels.selected_label == 2
    # sparse painting with the brush (0 = unlabelled elsewhere), saved by the autosave timer
    labels.brush_size = 10
    labels.paint((100, 100), 2)
    labels.paint((20, 200), 1)
    qtbot.waitUntil(lambda: Project.open(project.url).get_labels("nuclei q0") is not None, timeout=8000)
    stored = Project.open(project.url).get_labels("nuclei q0")
    np.testing.assert_array_equal(stored, labels.data)
    counts = np.bincount(stored.ravel(), minlength=3)
    assert counts[1] > 50 and counts[2] > 50 and counts[0] > 0.9 * stored.size
    rows = w.table_rows()
    assert rows == [
        {
            "image": "nuclei q0",
            "split": "train",
            "background": int(counts[1]),
            "nucleus": int(counts[2]),
            "instances": "",
            "annotation": "drawn",
        }
    ]
    # explicit save of a programmatic annotation
    data = np.zeros_like(labels.data)
    data[:64] = 1 + (inst[:64] > 0)
    labels.data = data
    assert w.save() == ["nuclei q0"]
    np.testing.assert_array_equal(Project.open(project.url).get_labels("nuclei q0"), data)
    # the split combo in the list writes the split into the store
    w.table.cellWidget(0, 1).setCurrentText("test")
    assert Project.open(project.url).image_record("nuclei q0").split == "test"
    # renaming / adding classes recolours the layer and the picker
    w.apply_classes(["background", "nucleus", "debris"])
    assert [w.class_combo.itemData(i) for i in range(w.class_combo.count())] == [0, 1, 2, 3]
    assert Project.open(project.url).class_names == ["background", "nucleus", "debris"]


def test_annotate_import_folder_and_open_from_list(viewer, qtbot, tmp_path, nuclei_q):
    import tifffile

    folder = tmp_path / "images"
    folder.mkdir()
    for name, image, _ in nuclei_q[:2]:
        tifffile.imwrite(folder / f"{name}.tif", image)
    project = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus"])
    w = AnnotateWidget(viewer)
    w.project_box.set_url(project.url)
    assert sorted(w.import_folder(str(folder))) == ["q0", "q1"]
    assert [r["image"] for r in w.table_rows()] == ["q0", "q1"]
    # clicking a row opens the image and its linked labels layer
    w.table.cellClicked.emit(1, 0)
    assert "q1" in viewer.layers and "q1 annotations" in viewer.layers
    np.testing.assert_array_equal(viewer.layers["q1"].data, nuclei_q[1][1])
    assert viewer.layers.selection.active.name == "q1 annotations"


def test_annotate_errors_show_in_widget_not_raise(viewer, tmp_path):
    viewer.add_image(np.zeros((64, 64), np.uint8), name="img")
    w = AnnotateWidget(viewer)
    assert w.add_layer("img") is None  # no project yet
    assert "No project yet: create one with New project… or open one with Open…" in w.status.text()
    w.create_project(str(tmp_path / "p.zarr"))
    assert w.create_project(str(tmp_path / "p.zarr")) is None  # exists already
    assert "already exists" in w.status.text()
    w.add_layer("img")
    assert w.add_layer("img") is None  # same name twice
    assert "already in the project" in w.status.text()
