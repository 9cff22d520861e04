"""Classification in the panels (a real viewer under Xvfb): a classification project, class folders
imported in a worker, classes given by keys 1-9 on the image, a short training in the Train panel's
worker with its F1 curves, and the evaluation's per-class table, confusion matrix and mistakes layer."""

from __future__ import annotations

import shutil

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication

from napari_seg_box.core import Project
from napari_seg_box.widgets.annotate import AnnotateWidget
from napari_seg_box.widgets.predict import PredictWidget
from napari_seg_box.widgets.train import TrainWidget
from tests.conftest import DATA
from tests.widgets.conftest import wait_done


def cell_folders(tmp_path, per_class=30):
    root = tmp_path / "cells"
    for phase in ("G1", "G2"):
        (root / phase).mkdir(parents=True)
        for f in sorted((DATA / "mlcp-cellcycle" / phase).glob("*.tif"))[:per_class]:
            shutil.copy(f, root / phase / f.name)
    return root


def press(viewer, key) -> None:
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    QTest.keyClick(canvas, key)
    QApplication.processEvents()


def test_classify_from_annotate_to_evaluation(viewer, qtbot, tmp_path):
    w = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.task_combo.setCurrentIndex(w.task_combo.findData("classification"))
    assert w.classes_edit.text() == ""  # classes come with the class folders
    project = w.create_project(str(tmp_path / "cells.zarr"))
    assert project.task == "classification" and not w.image_classes.isHidden() and w.paint_box.isHidden()
    w.image_classes.import_folders(str(cell_folders(tmp_path)))
    wait_done(qtbot, w.image_classes.runner, 120000)
    project = Project.open(project.url)
    assert project.class_names == ["G1", "G2"] and len(project.image_names()) == 60
    assert [b.text() for b in w.image_classes.buttons] == ["1: G1", "2: G2"]
    assert "G1 30/0/0" in w.image_classes.counts.text()
    rows = w.table_rows()
    assert len(rows) == 60 and rows[0]["class"] == "G1"

    # review and relabel by keys: open G1_0000, press 2 (G2) -> class set, the next unclassified opens
    project.set_image_classes({"G1_0001": None, "G1_0002": None})
    w.open_image("G1_0000")
    assert viewer.layers.selection.active.name == "G1_0000"
    press(viewer, Qt.Key.Key_2)
    project = Project.open(project.url)
    assert project.image_record("G1_0000").image_class == "G2"
    assert viewer.layers.selection.active.name == "G1_0001"  # the next image without a class
    press(viewer, Qt.Key.Key_1)
    assert Project.open(project.url).image_record("G1_0001").image_class == "G1"
    assert viewer.layers.selection.active.name == "G1_0002"
    w.image_classes.set_class("G1")
    w.image_classes.set_class("G1", image="G1_0000")  # put it back
    assert Project.open(project.url).class_counts()["G1"]["train"] == 30
    names = w.image_classes.show_gallery("G2")
    assert len(names) == 30 and viewer.layers["gallery: G2"].data.shape == (5 * 40, 6 * 40)

    # a short training in the Train panel's worker: the panel offers classifier networks
    from napari_seg_box.core.classify import split_stratified

    split_stratified(Project.open(project.url), (0.6, 0.2, 0.2), seed=0)
    t = TrainWidget(viewer)
    viewer.window.add_dock_widget(t)
    t.project_box.set_url(project.url)
    assert t.model_combo.currentData() == "resnet18" and t.model_combo.findData("resnext50_32x4d") >= 0
    assert t.advanced.isHidden()
    t.epochs.setValue(3)
    t.start()
    wait_done(qtbot, t.runner, 300000)
    assert t.run.status == "finished", t.status.text()
    assert [h["epoch"] for h in t.history] == [1, 2, 3] and "val_f1" in t.history[-1]
    assert "macro-F1" in t.status.text() and t.versions.frame.columns[1] == "val F1"
    version = t.last_version

    p = PredictWidget(viewer)
    viewer.window.add_dock_widget(p)
    p.project_box.set_url(project.url)
    p.refresh_versions()
    assert p.version_combo.currentData() == version and p.pp.isHidden()
    p.predict(viewer.layers["G1_0002"])
    wait_done(qtbot, p.class_runner, 60000)
    assert p.summary_label.text().startswith("G1_0002: G")
    p.evaluate("test")
    wait_done(qtbot, p.eval_runner, 120000)
    table = p.metrics_table.frame
    assert list(table["class"]) == ["ALL (macro)", "G1", "G2"] and table["support"].iloc[0] == 12
    conf = p.confusion_table.frame
    assert not p.confusion_table.isHidden() and int(np.asarray(conf[["→ G1", "→ G2"]]).sum()) == 12
    if p.evaluation.mistakes.shape[0]:
        assert "mistakes" in viewer.layers and "mistakes: captions" in viewer.layers
    paths = p.export_csv(str(tmp_path / "eval"))
    assert any(path.endswith("confusion.png") for path in paths)


def test_a_long_list_of_images_stays_quick_to_classify_and_split(viewer, tmp_path):
    """3,400 cells took 7 s per refresh (a split menu per row) and every key refreshed the whole list:
    past 300 images the split is text (Set split changes the selected rows) and a class updates its row."""
    from napari_seg_box.widgets._annotate_actions import MAX_SPLIT_MENUS

    p = Project.create(tmp_path / "many.zarr", task="classification", classes=["a", "b"])
    rng = np.random.default_rng(0)
    n = MAX_SPLIT_MENUS + 20
    p.add_images([(f"c{i:04d}", rng.integers(0, 999, (16, 16), dtype=np.uint16), {"image_class": "a"}) for i in range(n)])
    w = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.project_box.set_url(p.url)
    assert w.table.rowCount() == n and w.table.cellWidget(0, 1) is None and w.table_rows()[0]["split"] == "train"
    for r in (1, 2):
        w.table.selectRow(r) if r == 1 else w.table.selectionModel().select(
            w.table.model().index(r, 0), w.table.selectionModel().SelectionFlag.Select | w.table.selectionModel().SelectionFlag.Rows
        )
    assert w.set_split_of_selected("test") == ["c0001", "c0002"]
    assert Project.open(p.url).image_names("test") == ["c0001", "c0002"] and w.table_rows()[1]["split"] == "test"
    w.image_classes.set_class("b", image="c0005")
    assert w.table.item(5, 2).text() == "b" and "b 1/0/0" in w.image_classes.counts.text()
