"""Issue 20: the Annotate panel as a first-time user meets it (a real viewer under Xvfb).

Points: 1 (objects painted alone), 2 (existing masks, test images, remove, one big image), 4 (one
current project), 9 (no Python in what the panels say), 10 (napari's label control), 11 (to the first
brush stroke), 14 (opening a project, remembered settings, no private napari API).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import tifffile

from napari_seg_box.core import Project
from napari_seg_box.widgets import _annotate_actions as actions_module
from napari_seg_box.widgets import annotate as annotate_module
from napari_seg_box.widgets.annotate import AnnotateWidget


@pytest.fixture
def annotate(viewer, tmp_path):
    w = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(w)
    return w


def answer(monkeypatch, module, index):
    """Replace the panel's question dialog: it answers ``index`` and records the questions."""
    asked = []

    def fake(parent, title, text, choices):
        asked.append((title, text, choices))
        return index

    monkeypatch.setattr(module, "ask", fake)
    return asked


def test_to_the_first_brush_stroke(viewer, annotate, tmp_path, nuclei_q, monkeypatch):
    """Point 11: New project asks for a folder and a name; Add layer leaves the brush in hand with the
    first object class; background is not grey on a grey image."""
    from qtpy.QtWidgets import QFileDialog, QInputDialog

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(tmp_path)))
    monkeypatch.setattr(QInputDialog, "getText", staticmethod(lambda *a, **k: ("cells", True)))
    annotate.classes_edit.setText("background, nucleus")
    annotate.new_btn.click()
    project = Project.open(tmp_path / "cells.zarr")
    assert project.class_names == ["background", "nucleus"] and annotate.project_box.url == project.url
    viewer.add_image(nuclei_q[0][1], name="nuclei")
    annotate.add_btn.click()
    labels = viewer.layers["nuclei annotations"]
    assert viewer.layers.selection.active is labels and labels.mode == "paint"
    assert labels.selected_label == 2 and annotate.class_combo.currentData() == 2
    r, g, b = labels.colormap.map(1)[:3]
    assert max(r, g, b) - min(r, g, b) > 0.3, "background is grey: invisible on a grey image"


def test_objects_painted_alone_can_mean_unpainted_is_background(viewer, annotate, tmp_path, nuclei_q):
    """Point 1 (Annotate side): the per-image flag "unpainted pixels are background", stored in the project."""
    project = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus"])
    annotate.project_box.set_url(project.url)
    viewer.add_image(nuclei_q[0][1], name="q0")
    annotate.add_layer("q0")
    assert annotate.unpainted_check.isEnabled() and not annotate.unpainted_check.isChecked()
    annotate.unpainted_check.setChecked(True)
    assert Project.open(project.url).image_record("q0").unpainted_background
    assert "background" in annotate.status.text()
    annotate.unpainted_check.setChecked(False)
    assert not Project.open(project.url).image_record("q0").unpainted_background


def test_existing_masks_test_images_remove_and_tiles(viewer, annotate, tmp_path, nuclei_q, monkeypatch):
    """Point 2: a labels layer becomes an image's annotation (ground truth kept as objects); folders
    with masks beside the images or in images/ + masks/; remove an image; hold out part of one image."""
    project = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus"])
    annotate.project_box.set_url(project.url)
    name, image, truth = nuclei_q[3]
    viewer.add_image(image, name="sample")
    viewer.add_labels(truth, name="sample ground truth")
    annotate.layer_combo.setCurrentText("sample")
    annotate.mask_combo.setCurrentText("sample ground truth")
    annotate.split_combo.setCurrentText("test")
    annotate.use_mask_btn.click()
    p = Project.open(project.url)
    assert p.image_record("sample").split == "test"
    np.testing.assert_array_equal(p.get_labels("sample"), 1 + (truth > 0))
    np.testing.assert_array_equal(p.get_instances("sample"), truth)
    assert "read as objects" in annotate.status.text()
    # adding it again says what to do in this panel, not in Python
    assert annotate.add_layer("sample") is None
    assert "change its split there" in annotate.status.text() and "overwrite" not in annotate.status.text()
    # masks beside their images ("cells_03.tif" + "cells_03_mask.tif") and images/ + masks/
    beside = tmp_path / "beside"
    beside.mkdir()
    for qname, img, inst in nuclei_q[:2]:
        tifffile.imwrite(beside / f"cells_{qname}.tif", img)
        tifffile.imwrite(beside / f"cells_{qname}_mask.tif", inst.astype(np.uint16))
    annotate.split_combo.setCurrentText("train")
    assert sorted(annotate.import_folder(str(beside))) == ["cells_q0", "cells_q1"]
    p.refresh()
    assert p.get_instances("cells_q1") is not None and "cells_q1_mask" not in p.image_names()
    parent = tmp_path / "parent"
    (parent / "images").mkdir(parents=True)
    (parent / "masks").mkdir()
    tifffile.imwrite(parent / "images" / "big.tif", nuclei_q[2][1])
    tifffile.imwrite(parent / "masks" / "big.tif", nuclei_q[2][2].astype(np.uint16))
    annotate.images_dir.setText(str(parent))
    annotate.import_btn.click()
    p.refresh()
    assert "big" in p.image_names() and p.get_labels("big") is not None, annotate.status.text()
    # remove a wrongly imported image (asked first)
    asked = answer(monkeypatch, actions_module, 0)
    row = [r["image"] for r in annotate.table_rows()].index("cells_q0")
    annotate.table.selectRow(row)
    annotate.remove_btn.click()
    assert asked and "cells_q0" not in Project.open(project.url).image_names()
    assert "cells_q0" not in [r["image"] for r in annotate.table_rows()]
    # one big image: cut into 2 x 2 tiles, the last one held out as a test image
    annotate.table.selectRow([r["image"] for r in annotate.table_rows()].index("big"))
    annotate.tiles.setValue(2)
    annotate.tile_btn.click()
    p = Project.open(project.url)
    tiles = {r.name: r.split for r in p.images() if r.name.startswith("big tile")}
    assert tiles == {"big tile 1-1": "train", "big tile 1-2": "train", "big tile 2-1": "validation", "big tile 2-2": "test"}
    assert "big" not in p.image_names()
    stitched = np.block(
        [[p.get_labels("big tile 1-1"), p.get_labels("big tile 1-2")], [p.get_labels("big tile 2-1"), p.get_labels("big tile 2-2")]]
    )
    np.testing.assert_array_equal(stitched, 1 + (nuclei_q[2][2] > 0))  # nothing lost in the cut


def test_one_current_project_for_the_four_panels(viewer, annotate, tmp_path):
    """Point 4: "New project…" in Annotate is the project of Train, Predict and Quantify too."""
    from napari_seg_box.widgets.predict import PredictWidget
    from napari_seg_box.widgets.quantify import QuantifyWidget
    from napari_seg_box.widgets.train import TrainWidget

    old = Project.create(tmp_path / "old.zarr")
    panels = [TrainWidget(viewer), PredictWidget(viewer), QuantifyWidget(viewer)]
    panels[0].project_box.set_url(old.url)
    assert all(p.project_box.url == old.url for p in [annotate, *panels])
    annotate.create_project(str(tmp_path / "new.zarr"))
    new = Project.open(tmp_path / "new.zarr").url
    assert all(p.project_box.url == new for p in [annotate, *panels])
    panels[1].project_box.edit.setText(old.url)  # typed in any panel (Enter or not) ...
    panels[1].project_box.project()
    assert all(p.project_box.url == old.url for p in [annotate, *panels])  # ... is everyone's


PYTHON_WORDS = re.compile(r"`|\w+=\w|\w+\(\)|\w+\(\w|Project\.|iter_\w+|set_classes|napari-seg-box \w+ ")


def test_panels_speak_to_people_not_to_programmers(viewer, annotate, tmp_path):
    """Point 9: no Python in tooltips, labels, buttons or the messages of common mistakes."""
    from qtpy.QtWidgets import QAbstractButton, QLabel, QWidget

    from napari_seg_box.widgets.predict import PredictWidget
    from napari_seg_box.widgets.quantify import QuantifyWidget
    from napari_seg_box.widgets.train import TrainWidget

    panels = [annotate, TrainWidget(viewer), PredictWidget(viewer), QuantifyWidget(viewer)]
    said = []
    for panel in panels:
        for child in [panel, *panel.findChildren(QWidget)]:
            said.append(child.toolTip())
            if isinstance(child, QLabel | QAbstractButton):
                said.append(child.text())
    # the usual first mistakes: no project, no image, no annotations, no model, a name twice
    viewer.add_image(np.zeros((64, 64), np.uint8), name="img")
    annotate.add_layer("img")
    said.append(annotate.status.text())
    panels[1].start()
    said.append(panels[1].status.text())
    panels[2].predict("img")
    said.append(panels[2].status.text())
    annotate.create_project(str(tmp_path / "p.zarr"))
    said.append(annotate.status.text())
    annotate.create_project(str(tmp_path / "p.zarr"))
    said.append(annotate.status.text())
    annotate.add_layer("img")
    annotate.add_layer("img")
    said.append(annotate.status.text())
    panels[2].refresh_versions()
    panels[2].predict("img")
    said.append(panels[2].status.text())
    annotate.apply_classes(["background"])  # fine: one class
    said.append(annotate.status.text())
    python = [text for text in said if text and PYTHON_WORDS.search(text)]
    assert not python, python
    assert len([t for t in said[-8:] if t]) >= 7  # the mistakes were reported


def test_napari_label_control_stays_within_the_classes(viewer, annotate, tmp_path, nuclei_q, monkeypatch, qtbot):
    """Point 10: picking label 3 with napari's own control in a 2-class project offers to add a class
    or goes back to a class; nothing the user painted is dropped."""
    project = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus"])
    annotate.project_box.set_url(project.url)
    viewer.add_image(nuclei_q[0][1], name="q0")
    annotate.add_layer("q0")
    labels = viewer.layers["q0 annotations"]
    labels.selected_label = 1  # napari's control -> the panel's class picker
    assert annotate.class_combo.currentData() == 1
    labels.paint((30, 30), 1)
    asked = answer(monkeypatch, annotate_module, 1)  # "keep painting the class chosen"
    labels.selected_label = 3  # napari's "new label" button
    qtbot.waitUntil(lambda: labels.selected_label == 1, timeout=3000)
    assert asked and "Label 3 is not one of the 2 classes" in asked[0][1]
    assert Project.open(project.url).class_names == ["background", "nucleus"]
    asked = answer(monkeypatch, annotate_module, 0)  # "add class 3"
    labels.selected_label = 3
    qtbot.waitUntil(lambda: Project.open(project.url).n_classes == 3, timeout=3000)
    assert labels.selected_label == 3 and annotate.class_combo.currentData() == 3
    labels.paint((100, 100), 3)
    # a label beyond the classes set by a script: those pixels are left unlabelled, the others kept
    data = np.array(labels.data)
    data[200:210, 200:210] = 7
    labels.data = data
    annotate.save()
    stored = Project.open(project.url).get_labels("q0")
    assert (stored == 1).sum() > 0 and (stored == 3).sum() > 0 and (stored[200:210, 200:210] == 0).all()
    assert "100 pixels painted with labels that are not classes" in annotate.status.text()


def test_opening_a_project_and_remembered_settings(viewer, tmp_path, nuclei_q):
    """Point 14: the reader claims project stores only (no "Choose reader" for a .tif), a project's
    segbox.json opens without naming the plugin; the panels remember their settings; no private
    napari API (FutureWarning about _type_string) on the way."""
    import npe2

    from napari_seg_box.widgets.predict import PredictWidget
    from napari_seg_box.widgets.train import TrainWidget

    project = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus"])
    project.add_image("q0", nuclei_q[0][1], labels=1 + (nuclei_q[0][2] > 0))
    tifffile.imwrite(tmp_path / "plain.tif", nuclei_q[1][1])
    readers = {
        str(path): [r.plugin_name for r in npe2.PluginManager.instance().iter_compatible_readers([str(path)])]
        for path in (tmp_path / "plain.tif", tmp_path / "p.zarr" / "segbox.json")
    }
    assert "napari-seg-box" not in readers[str(tmp_path / "plain.tif")]
    assert readers[str(tmp_path / "p.zarr" / "segbox.json")] == ["napari-seg-box"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layers = viewer.open(str(tmp_path / "p.zarr" / "segbox.json"), plugin=None)
        assert [la.name for la in layers] == ["q0", "q0 annotations"]
        w = AnnotateWidget(viewer)
        assert w.project_box.url == project.url  # found from the opened layers
        w.open_image("q0")
        w.refresh()
    assert not [c for c in caught if "_type_string" in str(c.message)], [str(c.message) for c in caught]
    train = TrainWidget(viewer)
    train.epochs.setValue(7)
    train.model_combo.setCurrentIndex(train.model_combo.count() - 1)
    model = train.model_combo.currentText()
    predict = PredictWidget(viewer)
    predict.quality.setChecked(True)
    again, predict_again = TrainWidget(viewer), PredictWidget(viewer)  # reopened
    assert again.epochs.value() == 7 and again.model_combo.currentText() == model and predict_again.quality.isChecked()
