"""The Train panel's model files row: share the selected model version (a bioimage.io package for
deepImageJ, ilastik, QuPath and the model zoo; a version archive for another napari-seg-box), bring a
model file in as a new version, and write a training notebook for a GPU elsewhere.

Each button is one core call (:func:`~..core.bioimageio_export.export_package`,
:func:`~..core.model_io.export_version_archive`, :func:`~..core.model_io.import_model`,
:func:`~..core.notebook.export_notebook`), run in a thread worker: a package is written in seconds
to a minute.
"""

from __future__ import annotations

from qtpy.QtWidgets import QFileDialog, QGridLayout, QLabel, QPushButton, QWidget

from ._messages import report_error, report_info
from ._workers import Runner


def _call(fn, *args, cancel=None, **kwargs):
    """A plain core call as the one-step generator a :class:`Runner` drives."""
    return fn(*args, **kwargs)
    yield  # pragma: no cover - makes this a generator


class ModelFilesRow(QWidget):
    """Buttons under the versions table. ``selected()`` gives the version the user picked (or None:
    the newest); ``project()`` opens the panel's project; ``imported()`` is called after an import."""

    def __init__(self, selected, project, imported, status: QLabel, parent=None):
        super().__init__(parent)
        self._selected, self._project, self._imported, self.status = selected, project, imported, status
        grid = QGridLayout(self)  # two by two: the panel stays narrow
        grid.setContentsMargins(0, 0, 0, 0)
        self.export_btn = QPushButton("Export for bioimage.io…")
        self.export_btn.setToolTip(
            "Write the selected model version as a bioimage.io model package (.zip) that deepImageJ, ilastik, QuPath, "
            "BiaPy and the model zoo read: weights in three formats, normalisation, test images, a README with its figures"
        )
        self.archive_btn = QPushButton("Save model file…")
        self.archive_btn.setToolTip(
            "Write the selected version as one model file that another project (here or on another computer) can import"
        )
        self.import_btn = QPushButton("Import a model…")
        self.import_btn.setToolTip(
            "Add a model file as a new version: a .segbox-model.zip (e.g. from a training notebook) or a bioimage.io package of a U-Net"
        )
        self.notebook_btn = QPushButton("Training notebook…")
        self.notebook_btn.setToolTip(
            "Write a Jupyter notebook and a zip of the training data to train this project on a GPU elsewhere (e.g. Colab); "
            "bring the result back with Import a model"
        )
        for i, b in enumerate((self.export_btn, self.archive_btn, self.import_btn, self.notebook_btn)):
            grid.addWidget(b, i // 2, i % 2)
        self.runner = Runner(on_return=self._done, on_error=lambda err: report_error(err, self.status), on_finish=self._buttons, owner=self)
        self._after = None
        self.export_btn.clicked.connect(lambda: self.export_bioimageio())
        self.archive_btn.clicked.connect(lambda: self.save_archive())
        self.import_btn.clicked.connect(lambda: self.import_model())
        self.notebook_btn.clicked.connect(lambda: self.export_notebook())

    # ------------------------------------------------------------------ actions (also for the console and tests)
    def export_bioimageio(self, path: str | None = None):
        from ..core.bioimageio_export import export_package

        path = path or QFileDialog.getSaveFileName(self, "Export for bioimage.io", "", "bioimage.io package (*.zip)")[0]
        if path:
            self._run(export_package, self._project(), path, version=self._selected(), after=lambda p: f"Wrote the bioimage.io package {p}")

    def save_archive(self, path: str | None = None):
        from ..core.model_io import export_version_archive

        path = path or QFileDialog.getExistingDirectory(self, "Save the model file into a folder")
        if path:
            self._run(export_version_archive, self._project(), self._selected(), path, after=lambda p: f"Wrote {p}")

    def import_model(self, path: str | None = None):
        from ..core.model_io import import_model

        path = path or QFileDialog.getOpenFileName(self, "Import a model", "", "Model files (*.zip *.yaml)")[0]
        if path:
            self._run(import_model, self._project(), path, after=self._after_import)

    def export_notebook(self, path: str | None = None):
        from ..core.notebook import export_notebook

        path = path or QFileDialog.getExistingDirectory(self, "Write the training notebook into a folder")
        if path:
            self._run(export_notebook, self._project(), path, overwrite=True, after=_notebook_words)

    # ------------------------------------------------------------------ plumbing
    def _run(self, fn, *args, after, **kwargs):
        try:
            self._after = after
            self.runner.start(_call, fn, *args, **kwargs)
        except Exception as err:  # noqa: BLE001
            report_error(err, self.status)
            return
        report_info("Working…", self.status)
        self._buttons()

    def _after_import(self, mv) -> str:
        self._imported()
        return f"Imported as {mv.describe()}"

    def _done(self, result) -> None:
        report_info(self._after(result), self.status, notify=True)

    def _buttons(self) -> None:
        for b in (self.export_btn, self.archive_btn, self.import_btn, self.notebook_btn):
            b.setEnabled(not self.runner.running)


def _notebook_words(paths: dict) -> str:
    data = f" and {paths['data'].name}" if paths.get("data") else ""
    return (
        f"Wrote {paths['notebook']}{data}: open it on a machine with a GPU (e.g. upload both to Colab), run all cells, then Import a model."
    )
