"""Quantify: segment a batch of images with a model (or take the annotations) and measure every object.

Core calls: :func:`~napari_seg_box.core.quantify.iter_segment_and_quantify` (``iter_predict`` ->
``postprocess`` -> ``quantify_labels`` per image); for the project's annotations it is
``iter_quantify(project=project)``. Results: a sortable per-image and per-object
table in the dock, summary plots, the per-object table as the labels layer's ``features``, CSV export
(``Quantification.save``). Clicking a row opens that image (and centres on that object).
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTabWidget,
    QWidget,
)

from ..core.plots import column_label
from ..core.quantify import measuring_scale
from ._common import Dock, PathField, ProjectBox, fill_versions, scrolled
from ._messages import guarded, report_error, report_info, status_label
from ._plots import PlotCanvas
from ._tables import FrameTable, save_csv_dialog
from ._workers import Runner

SOURCES = {
    "project": "the project's images, segmented by the model",
    "files": "image files / a folder, segmented by the model",
    "annotations": "the project's annotations (no model)",
}


def summary_plots(axes, objects, images) -> None:
    """Area histogram per class and objects per image, into two axes."""
    area_cols = [c for c in objects.columns if c.startswith("area_") and c != "area_px"]
    ax = axes[0]
    if len(objects) and area_cols:
        col = area_cols[0]
        for cname, grp in objects.groupby("class_name"):
            ax.hist(grp[col].to_numpy(dtype=float), bins=30, alpha=0.7, label=str(cname))
        ax.set_xlabel(column_label(col))
        ax.legend(fontsize=7)
    ax.set_ylabel("objects")
    ax.set_title("object area")
    ax = axes[1]
    ok = images[images["error"].isna()] if "error" in images else images
    if "class_name" in ok:
        ok = ok[ok["class_name"].astype(str) != ""]
    if len(ok):
        counts = ok.groupby("image", sort=False)["n_objects"].sum()
        x = np.arange(len(counts))
        ax.bar(x, counts.to_numpy(dtype=float), color="#1f77b4")
        ax.set_xticks(x)
        ax.set_xticklabels([str(n) if len(str(n)) <= 12 else "…" + str(n)[-11:] for n in counts.index], rotation=30, ha="right", fontsize=6)
    ax.set_title("objects per image")


class QuantifyWidget(Dock, QWidget):
    """Measure objects in a batch of images: tables, plots, features, CSV; click a row to look at it."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.result = None  # the last Quantification
        self.labels: dict[str, np.ndarray] = {}
        self._source_used = "project"
        self.runner = Runner(
            on_yield=self._on_event, on_return=self._on_return, on_error=self._on_error, on_finish=self._on_finish, owner=self
        )

        lay = scrolled(self)
        self.project_box = ProjectBox(self.viewer)
        lay.addWidget(self.project_box)
        form = QFormLayout()
        self.source_combo = QComboBox()
        for key, words in SOURCES.items():
            self.source_combo.addItem(words, key)
        form.addRow("Measure:", self.source_combo)
        row = QHBoxLayout()
        self.files_edit = QLineEdit()
        self.files_edit.setPlaceholderText("folder, glob (*.tif) or files separated by ';'")
        self.folder_btn = QPushButton("Folder…")
        self.files_btn = QPushButton("Files…")
        row.addWidget(self.files_edit, 1)
        row.addWidget(self.folder_btn)
        row.addWidget(self.files_btn)
        form.addRow("Images:", row)
        self.version_combo = QComboBox()
        form.addRow("Model:", self.version_combo)
        self.phenotype = PathField("optional: a classification project naming each object's phenotype")
        self.phenotype.setToolTip(
            "Its latest model classifies a crop around every object (bounding box + 25 %): counts and coverage per phenotype"
        )
        form.addRow("Phenotypes:", self.phenotype)
        row = QHBoxLayout()
        self.pixel_size = QDoubleSpinBox()
        self.pixel_size.setDecimals(4)
        self.pixel_size.setRange(0.0, 1e4)
        self.pixel_size.setSpecialValueText("from the project / pixels")
        self.unit = QLineEdit("µm")
        self.unit.setMaximumWidth(50)
        row.addWidget(self.pixel_size, 1)
        row.addWidget(self.unit)
        form.addRow("Pixel size:", row)
        lay.addLayout(form)
        row = QHBoxLayout()
        self.run_btn = QPushButton("Run")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.export_btn = QPushButton("Export CSV…")
        self.export_btn.setEnabled(False)
        row.addWidget(self.run_btn)
        row.addWidget(self.cancel_btn)
        row.addWidget(self.export_btn)
        lay.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        lay.addWidget(self.progress)
        self.tabs = QTabWidget()
        self.images_table = FrameTable()
        self.objects_table = FrameTable()
        self.tabs.addTab(self.images_table, "Images")
        self.tabs.addTab(self.objects_table, "Objects")
        lay.addWidget(self.tabs, 1)
        self.plot = PlotCanvas(self.viewer, nrows=1, ncols=2, height=2.4, bottom_px=58)
        lay.addWidget(self.plot)
        self.status = status_label()
        lay.addWidget(self.status)

        self.folder_btn.clicked.connect(self._choose_folder)
        self.files_btn.clicked.connect(self._choose_files)
        self.run_btn.clicked.connect(lambda: self.run())
        self.cancel_btn.clicked.connect(self.runner.stop)
        self.export_btn.clicked.connect(self._export_dialog)
        self.source_combo.currentIndexChanged.connect(self._source_changed)
        self.project_box.changed.connect(lambda url: self.refresh_versions())
        self.project_box.session.versions_changed.connect(self.refresh_versions)
        self.images_table.clicked.connect(lambda index: self.open_row("images", index.row()))
        self.objects_table.clicked.connect(lambda index: self.open_row("objects", index.row()))
        self._source_changed()
        self.refresh_versions()

    # ------------------------------------------------------------------ choices
    def refresh_versions(self) -> None:
        fill_versions(self.version_combo, self.project_box, self.status)

    def set_source(self, key: str) -> None:
        self.source_combo.setCurrentIndex(self.source_combo.findData(key))

    def _source_changed(self, index=None) -> None:
        key = self.source_combo.currentData()
        for w in (self.files_edit, self.folder_btn, self.files_btn):
            w.setEnabled(key == "files")
        self.version_combo.setEnabled(key != "annotations")

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of images to measure")
        if folder:
            self.files_edit.setText(folder)

    def _choose_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Images to measure")
        if files:
            self.files_edit.setText(";".join(files))

    def _files(self):
        text = self.files_edit.text().strip()
        parts = [p.strip() for p in text.split(";") if p.strip()]
        return parts[0] if len(parts) == 1 else parts

    # ------------------------------------------------------------------ running
    @guarded()
    def run(self):
        """Start the batch in a thread worker; returns the worker."""
        from ..core.errors import DataError, SegBoxError

        if self.runner.running:
            raise SegBoxError("Quantification is running: wait for it or cancel it.")
        project = self.project_box.project()
        source = self.source_combo.currentData()
        ps = self.pixel_size.value() or None  # given, it wins over the store's (core.quantify.measuring_scale)
        unit = (self.unit.text().strip() or None) if ps else None
        if source == "annotations":
            from ..core.quantify_batch import iter_quantify

            func, args, kwargs = iter_quantify, (), dict(project=project, pixel_size=ps, unit=unit)
        else:
            version = self.version_combo.currentData()
            if not version:
                raise DataError("The project has no model version yet: train one in the Train widget, or measure the annotations.")
            kwargs = dict(pixel_size=ps, unit=unit)
            if source == "files":
                files = self._files()
                if not files:
                    raise DataError("Choose a folder or image files to measure (Folder… / Files…).")
                kwargs["files"] = files
            from ..workflows.segment import iter_segment_and_quantify

            func, args = iter_segment_and_quantify, (project, version)
            if self.phenotype.text():
                from ..core.classify.phenotype import PhenotypeModel

                kwargs["phenotype"] = PhenotypeModel(self.phenotype.text())
                kwargs["phenotype"].load()  # a wrong project or model fails here, in plain words
        self._source_used = source
        self.run_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.export_btn.setEnabled(False)
        self.progress.setRange(0, 0)
        report_info("Measuring…", self.status)
        return self.runner.start(func, *args, **kwargs)

    def _on_event(self, event) -> None:
        from ..core.events import ItemDone, Progress

        if isinstance(event, ItemDone):
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.index + 1)
            self.progress.setFormat(f"images %v/%m  ({event.name})")
            if event.error:
                self.status.setText(f"{event.name}: {event.error}")
        elif isinstance(event, Progress) and self.progress.maximum() == 0 and event.total:
            self.progress.setFormat(f"{event.stage} {event.done}/{event.total}")

    def _on_return(self, result) -> None:
        if isinstance(result, tuple):
            q, labels = result
        else:
            q, labels = result, {}
        self.result = q
        self.labels = labels
        self.images_table.set_frame(q.images)
        self.objects_table.set_frame(q.objects)
        objects, images = q.objects.copy(), q.images.copy()
        self.plot.plot(lambda axes: summary_plots(axes, objects, images))
        self.export_btn.setEnabled(True)
        n_img = q.images["image"].nunique()
        msg = f"Measured {len(q.objects)} objects in {n_img} image(s)."
        if q.errors:
            msg += f" {len(q.errors)} image(s) failed: " + "; ".join(f"{e['image']}: {e['error']}" for e in q.errors[:3])
        report_info(msg, self.status)

    def _on_error(self, err) -> None:
        from ..core.errors import CancelledError

        if isinstance(err, CancelledError):
            report_info("Cancelled.", self.status)
        else:
            report_error(err, self.status)

    def _on_finish(self) -> None:
        self.run_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)

    # ------------------------------------------------------------------ looking at results
    @guarded()
    def open_row(self, table: str, view_row: int):
        """Open the image of a row (image or object table); for an object, centre on it and select it."""
        view = self.images_table if table == "images" else self.objects_table
        rec = view.row_record(view_row)
        name = str(rec["image"])
        labels_layer = self.open_image(name)
        if labels_layer is not None:
            labels_layer.show_selected_label = False  # every object, until one is clicked
        if table == "objects" and labels_layer is not None:
            label = int(rec["label"])
            labels_layer.selected_label = label
            labels_layer.show_selected_label = True  # the clicked object alone, highlighted
            u = self.result.unit if self.result is not None else "px"
            cy, cx = rec.get(f"centroid_y_{u}"), rec.get(f"centroid_x_{u}")
            if cy is not None and cx is not None:
                self.viewer.camera.center = (float(cy), float(cx))
                self.viewer.camera.zoom = max(self.viewer.camera.zoom, 2.0)
        return labels_layer

    def open_image(self, name: str):
        """Show image ``name`` with its measured labels; the objects' table is the layer's features."""
        import pandas as pd

        from ..core.io import read_image

        project = self.project_box.project()
        layer_name = f"{name} measured"
        scale = None
        images = self.result.images if self.result is not None else pd.DataFrame()
        row = images[images["image"] == name]
        path = row["path"].dropna().iloc[0] if "path" in row and row["path"].notna().any() else None
        if path is not None:
            image = read_image(path)
        else:
            image = project.get_image(name)
            scale = project.image_record(name).pixel_size
        scale, _ = measuring_scale(self.pixel_size.value() or None, None, scale)  # the rule the measurements used
        if scale is None or (self.result is not None and self.result.unit == "px"):
            scale = (1.0, 1.0)
        labels = self.labels.get(name)
        if labels is None and self._source_used == "annotations":
            labels = project.get_instances(name)
            if labels is None:
                from skimage.measure import label as cc

                labels = cc(project.get_labels(name) >= 2, connectivity=1)
        if name not in self.viewer.layers:
            self.viewer.add_image(image, name=name, scale=scale, rgb=image.ndim == 3 and image.shape[-1] in (3, 4))
        if labels is None:
            return None
        objects = self.result.objects if self.result is not None else pd.DataFrame()
        feats = objects[objects["image"] == name].copy()
        if layer_name in self.viewer.layers:
            layer = self.viewer.layers[layer_name]
            layer.data = labels
        else:
            layer = self.viewer.add_labels(labels, name=layer_name, scale=scale, opacity=0.5)
        if len(feats) and feats["label"].is_unique:
            feats.insert(0, "index", feats["label"].astype(int))
            layer.features = feats.reset_index(drop=True)
        self.viewer.layers.selection.active = layer
        return layer

    def _export_dialog(self):
        folder = save_csv_dialog(self, "Export tables (CSV) and plots into a folder")
        if folder:
            self.export_csv(folder)

    @guarded()
    def export_csv(self, folder: str) -> list[str]:
        """``Quantification.save(folder, formats=("csv",))``: objects.csv, images.csv and PNG plots."""
        from ..core.errors import DataError

        if self.result is None:
            raise DataError("Nothing to export yet: press Run first.")
        paths = self.result.save(folder, formats=("csv",), plots=True)
        report_info(f"Wrote {len(paths)} files to {folder}.", self.status, notify=True)
        return paths
