"""The Train panel's model files row: export the selected version for bioimage.io, save and import a
model file, write a training notebook; each in a worker, the versions table updated after an import."""

from __future__ import annotations

import zipfile

import pytest
from qtpy.QtWidgets import QFileDialog

from tests.core._models import save_tiny_model
from tests.widgets.conftest import make_train_widget, wait_done


def test_save_a_model_file_and_import_it_back_as_a_new_version(viewer, qtbot, project, tmp_path, monkeypatch):
    save_tiny_model(project, seed=1)
    save_tiny_model(project, seed=2)
    w = make_train_widget(viewer, project)
    assert list(w.versions.frame["version"]) == ["v001", "v002"]
    w.versions.selectRow(0)  # the older version, not the newest
    assert w.selected_version() == "v001"
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(tmp_path / "out")))
    w.model_files.archive_btn.click()
    assert not w.model_files.import_btn.isEnabled()  # one task at a time
    wait_done(qtbot, w.model_files.runner, 60000)
    archive = tmp_path / "out" / "p-v001.segbox-model.zip"
    assert archive.is_file() and "Wrote" in w.status.text()
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(archive), "")))
    w.model_files.import_btn.click()
    wait_done(qtbot, w.model_files.runner, 60000)
    assert "Imported as v003" in w.status.text()
    qtbot.waitUntil(lambda: list(w.versions.frame["version"]) == ["v001", "v002", "v003"], timeout=10000)
    assert w.versions.frame["status"].iloc[-1] == "imported"
    assert project.refresh().model_weights("v003") == project.model_weights("v001")


def test_a_bad_model_file_shows_an_error_and_adds_nothing(viewer, qtbot, project, tmp_path):
    w = make_train_widget(viewer, project)
    bad = tmp_path / "notes.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("notes.txt", "not a model")
    w.model_files.import_model(str(bad))
    wait_done(qtbot, w.model_files.runner, 60000)
    assert "neither a napari-seg-box model archive" in w.status.text() and project.refresh().model_versions() == []
    assert w.model_files.import_btn.isEnabled()


@pytest.mark.slow
def test_export_for_bioimageio_and_write_a_training_notebook(viewer, qtbot, project, tmp_path, monkeypatch):
    save_tiny_model(project)
    w = make_train_widget(viewer, project)
    out = tmp_path / "model.zip"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(out), "")))
    w.model_files.export_btn.click()
    wait_done(qtbot, w.model_files.runner, 300000)
    assert out.is_file() and "bioimage.io package" in w.status.text()
    with zipfile.ZipFile(out) as z:
        assert {"rdf.yaml", "weights.pt", "weights.torchscript.pt", "weights.onnx"} <= set(z.namelist())
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(tmp_path / "nb")))
    w.model_files.notebook_btn.click()
    wait_done(qtbot, w.model_files.runner, 60000)
    assert "Import a model" in w.status.text()
    assert sorted(p.suffix for p in (tmp_path / "nb").iterdir()) == [".ipynb", ".zip"]
