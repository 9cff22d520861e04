"""Quantify widget: files segmented by a model (with a broken file), the project's images, the
annotations (exact counts); sortable tables, plots, features, click-to-open, CSV export, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_seg_box.widgets.quantify import QuantifyWidget
from tests.core._models import nuclei_project_with_model
from tests.widgets.conftest import wait_done


@pytest.fixture
def widget(viewer, nuclei_project):
    nuclei_project_with_model(nuclei_project)
    w = QuantifyWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.project_box.set_url(nuclei_project.url)
    return w


def run(qtbot, w):
    worker = w.run()
    assert worker is not None, w.status.text()
    wait_done(qtbot, w.runner, 180000)


def test_quantify_files_with_model(viewer, qtbot, widget, tmp_path, nuclei_q):
    import tifffile

    folder = tmp_path / "batch"
    folder.mkdir()
    for name, image, truth in nuclei_q[2:]:
        tifffile.imwrite(folder / f"{name}.tif", image)
        tifffile.imwrite(folder / f"{name}_mask.tif", truth.astype(np.uint16))  # masks beside: not measured (issue 20, 13)
    (folder / "broken.tif").write_bytes(b"not a tiff")
    w = widget
    w.set_source("files")
    w.files_edit.setText(str(folder))
    w.pixel_size.setValue(0.5)
    run(qtbot, w)
    q = w.result
    images = w.images_table.frame
    assert set(images["image"]) == {"broken", "q2", "q3"}
    assert images.loc[images["image"] == "broken", "error"].iloc[0].startswith("Cannot read")
    assert [e["image"] for e in q.errors] == ["broken"]
    for name, _, inst in nuclei_q[2:]:
        n = int(images.loc[images["image"] == name, "n_objects"].iloc[0])
        n_true = len(np.unique(inst)) - 1
        assert 0.5 * n_true <= n <= 1.5 * n_true, (name, n, n_true)
    objects = w.objects_table.frame
    assert len(objects) == images["n_objects"].sum() and "area_um2" in objects.columns
    np.testing.assert_allclose(objects["area_um2"], objects["area_px"] * 0.25)
    assert "failed" in w.status.text() and "broken" in w.status.text()
    w.plot.wait()
    assert w.plot.renders >= 1 and len(w.plot.axes[0].patches) > 0 and len(w.plot.axes[1].patches) == 2
    # sort objects by area (largest first) and click the top row: its image opens, centred on it
    from qtpy.QtCore import Qt

    w.tabs.setCurrentIndex(1)
    w.objects_table.sortByColumn(list(objects.columns).index("area_um2"), Qt.SortOrder.DescendingOrder)
    top = w.objects_table.row_record(0)
    assert top["area_um2"] == pytest.approx(objects["area_um2"].max())
    layer = w.open_row("objects", 0)
    assert layer.name == f"{top['image']} measured" and layer.selected_label == top["label"]
    assert layer.show_selected_label  # the clicked object stands out (issue 20, point 13)
    assert top["label"] in set(np.unique(layer.data))
    np.testing.assert_allclose(viewer.camera.center[-2:], (top["centroid_y_um"], top["centroid_x_um"]))
    feats = layer.features
    assert len(feats) == (objects["image"] == top["image"]).sum() and "area_um2" in feats.columns
    # CSV export: the same tables
    w.export_csv(str(tmp_path / "out"))
    assert len(pd.read_csv(tmp_path / "out" / "objects.csv")) == len(objects)
    assert (tmp_path / "out" / "area_histogram.png").exists()


def test_quantify_annotations_exact_and_project_images(viewer, qtbot, widget, nuclei_q):
    w = widget
    w.set_source("annotations")
    run(qtbot, w)
    images = w.images_table.frame
    for name, _, inst in nuclei_q:
        assert int(images.loc[images["image"] == name, "n_objects"].iloc[0]) == len(np.unique(inst)) - 1
    assert w.open_row("images", 0) is not None, w.status.text()
    assert np.array_equal(np.unique(viewer.layers[f"{images['image'][0]} measured"].data) > 0, np.unique(nuclei_q[0][2]) > 0)
    w.set_source("project")
    run(qtbot, w)
    assert list(w.images_table.frame["image"]) == ["q0", "q1", "q2", "q3"]
    assert w.result.errors == []


def test_quantify_errors_in_widget(viewer, qtbot, widget, tmp_path):
    w = widget
    w.set_source("files")
    assert w.run() is None and "Choose a folder" in w.status.text()
    w.files_edit.setText(str(tmp_path / "missing"))
    w.run()
    wait_done(qtbot, w.runner, 60000)
    assert "Nothing found" in w.status.text() and w.run_btn.isEnabled()
    assert w.export_csv(str(tmp_path)) is None and "Run first" in w.status.text()
