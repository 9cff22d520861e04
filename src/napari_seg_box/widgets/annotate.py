"""Annotate: project store, classes, linked labels layers, sparse painting, splits, saving.

Every action is one call of the headless core (shown in the tooltips and in the README's console
recipe): ``Project.create`` / ``Project.open``, ``project.set_classes``, ``project.add_image``,
``import_images``, ``project.set_labels``, ``project.set_split``, ``project.annotation_stats``.

Labels layers are linked to the store through their metadata (``segbox_store``, ``segbox_image``),
the same link the plugin's reader and writer use; 0 = unlabelled, so painting a few strokes is fine.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..layers import IMAGE_KEY, class_colormap, layer_scale, link, linked
from ._common import ProjectBox, guarded, report_error, report_info, status_label

SPLITS = ("train", "validation", "test")
AUTOSAVE_MS = 2000


class AnnotateWidget(QWidget):
    """Create/open a project, add images, paint classes into linked labels layers, save, set splits."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self._dirty: set[int] = set()  # ids of labels layers painted since the last save
        self._watched: set[int] = set()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(AUTOSAVE_MS)
        self._timer.timeout.connect(self._autosave)

        lay = QVBoxLayout(self)
        # project
        box = QGroupBox("Project store")
        form = QVBoxLayout(box)
        self.project_box = ProjectBox(self.viewer)
        form.addWidget(self.project_box)
        row = QHBoxLayout()
        self.classes_edit = QLineEdit("background, foreground")
        self.classes_edit.setToolTip("Class names in label order: the first is label 1 (usually background). 0 = unlabelled.")
        row.addWidget(QLabel("Classes:"))
        row.addWidget(self.classes_edit, 1)
        form.addLayout(row)
        row = QHBoxLayout()
        self.new_btn = QPushButton("New project…")
        self.new_btn.setToolTip("Project.create(folder, classes=[...])")
        self.classes_btn = QPushButton("Apply classes")
        self.classes_btn.setToolTip("project.set_classes([...]): rename or add classes")
        row.addWidget(self.new_btn)
        row.addWidget(self.classes_btn)
        form.addLayout(row)
        lay.addWidget(box)

        # images
        box = QGroupBox("Images")
        form = QFormLayout(box)
        self.layer_combo = QComboBox()
        self.split_combo = QComboBox()
        self.split_combo.addItems(SPLITS)
        form.addRow("Image layer:", self.layer_combo)
        form.addRow("Split:", self.split_combo)
        row = QHBoxLayout()
        self.add_btn = QPushButton("Add layer to project")
        self.add_btn.setToolTip("project.add_image(name, layer.data, split=...) and a linked labels layer")
        self.import_btn = QPushButton("Import folder…")
        self.import_btn.setToolTip("import_images(project, folder, split=...): images (and masks) of a folder")
        row.addWidget(self.add_btn)
        row.addWidget(self.import_btn)
        form.addRow(row)
        lay.addWidget(box)

        # painting
        box = QGroupBox("Annotate")
        form = QFormLayout(box)
        self.class_combo = QComboBox()
        self.class_combo.setToolTip("The class the brush paints (label value); 0 = unlabelled (eraser)")
        form.addRow("Paint class:", self.class_combo)
        row = QHBoxLayout()
        self.save_btn = QPushButton("Save annotations")
        self.save_btn.setToolTip("project.set_labels(image, labels) for each linked labels layer")
        self.autosave = QCheckBox("autosave")
        self.autosave.setChecked(True)
        self.autosave.setToolTip(f"Save {AUTOSAVE_MS // 1000} s after the last brush stroke")
        row.addWidget(self.save_btn)
        row.addWidget(self.autosave)
        form.addRow(row)
        lay.addWidget(box)

        # list
        lay.addWidget(QLabel("Project images (click to open; annotated pixels per class):"))
        self.table = QTableWidget(0, 3)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(160)
        lay.addWidget(self.table, 1)
        self.status = status_label()
        lay.addWidget(self.status)

        self.new_btn.clicked.connect(self._new_dialog)
        self.classes_btn.clicked.connect(lambda: self.apply_classes())
        self.add_btn.clicked.connect(lambda: self.add_layer())
        self.import_btn.clicked.connect(self._import_dialog)
        self.save_btn.clicked.connect(lambda: self.save())
        self.class_combo.currentIndexChanged.connect(self._class_chosen)
        self.table.cellClicked.connect(lambda r, c: self.open_image(self.table.item(r, 0).text()) if c != 1 else None)
        self.project_box.changed.connect(lambda url: self.refresh())
        self.viewer.layers.events.inserted.connect(self._layers_changed)
        self.viewer.layers.events.removed.connect(self._layers_changed)
        self.viewer.layers.selection.events.active.connect(self._active_changed)
        self._layers_changed()
        self.refresh()

    # ------------------------------------------------------------------ project
    @guarded()
    def create_project(self, path: str, classes=None):
        """``Project.create(path, classes=...)``; the widget then works on it."""
        from ..core.store import Project

        names = classes or self._class_names()
        project = Project.create(path, classes=names)
        self.project_box.set_url(project.url)
        self.refresh()
        report_info(f"Created project {project.url} with classes {', '.join(names)}.", self.status)
        return project

    @guarded()
    def open_project(self, path: str):
        from ..core.store import Project

        project = Project.open(path)
        self.project_box.set_url(project.url)
        self.refresh()
        return project

    def _new_dialog(self):
        path, _ = QFileDialog.getSaveFileName(self, "New project store (a new folder)", "project.zarr")
        if path:
            self.create_project(path)

    def _class_names(self) -> list[str]:
        return [c.strip() for c in self.classes_edit.text().replace(";", ",").split(",") if c.strip()]

    @guarded()
    def apply_classes(self, names=None):
        """``project.set_classes(names)`` and recolour the linked labels layers."""
        project = self.project_box.project()
        names = list(names) if names is not None else self._class_names()
        project.set_classes(names)
        self.refresh()
        report_info(f"Classes: {', '.join(names)}.", self.status)

    def refresh(self) -> None:
        """Re-read the store: classes, class picker, list of images, colours of linked layers."""
        if not self.project_box.url:
            self.table.setRowCount(0)
            return
        try:
            project = self.project_box.project()
        except Exception as err:  # noqa: BLE001
            report_error(err, self.status)
            return
        self.classes_edit.setText(", ".join(project.class_names))
        current = self.class_combo.currentData()
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        self.class_combo.addItem("0: unlabelled (eraser)", 0)
        for c in project.classes:
            self.class_combo.addItem(f"{c.value}: {c.name}", c.value)
        idx = self.class_combo.findData(current if current is not None else 1)
        self.class_combo.setCurrentIndex(max(idx, 0))
        self.class_combo.blockSignals(False)
        cmap = class_colormap(project)
        for layer in self.viewer.layers:
            if layer._type_string == "labels" and linked(layer, project.url):
                layer.colormap = cmap
        self._fill_table(project)

    def _fill_table(self, project) -> None:
        names = project.class_names
        headers = ["image", "split", *names, "instances"]
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        records = project.images()
        self.table.clearContents()  # deletes the split combos of the previous fill
        self.table.setRowCount(0)
        self.table.setRowCount(len(records))
        for r, rec in enumerate(records):
            self.table.setItem(r, 0, QTableWidgetItem(rec.name))
            combo = QComboBox()
            combo.addItems(SPLITS)
            combo.setCurrentText(rec.split)
            combo.currentTextChanged.connect(lambda split, name=rec.name: self.set_split(name, split))
            self.table.setCellWidget(r, 1, combo)
            stats = project.annotation_stats(rec.name)
            for j, n in enumerate(stats):
                item = QTableWidgetItem(f"{int(n):,}")
                item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
                self.table.setItem(r, 2 + j, item)
            self.table.setItem(r, 2 + len(names), QTableWidgetItem("yes" if rec.has_instances else ""))
        self.table.resizeColumnsToContents()

    def table_rows(self) -> list[dict]:
        """The list as shown: one dict per image (for scripts and tests)."""
        rows = []
        headers = [self.table.horizontalHeaderItem(c).text() for c in range(self.table.columnCount())]
        for r in range(self.table.rowCount()):
            row = {}
            for c, h in enumerate(headers):
                if c == 1:
                    row[h] = self.table.cellWidget(r, 1).currentText()
                else:
                    item = self.table.item(r, c)
                    text = item.text() if item else ""
                    row[h] = int(text.replace(",", "")) if 2 <= c < len(headers) - 1 else text
            rows.append(row)
        return rows

    # ------------------------------------------------------------------ images
    def _layers_changed(self, event=None) -> None:
        current = self.layer_combo.currentText()
        self.layer_combo.clear()
        for layer in self.viewer.layers:
            if layer._type_string == "image":
                self.layer_combo.addItem(layer.name)
        if current:
            self.layer_combo.setCurrentText(current)
        if event is not None and getattr(event, "type", "") == "inserted":
            layer = event.value
            if layer._type_string == "labels" and linked(layer):
                self._watch(layer)

    def _active_changed(self, event=None) -> None:
        layer = self.viewer.layers.selection.active
        if layer is not None and layer._type_string == "image":
            self.layer_combo.setCurrentText(layer.name)

    @guarded()
    def add_layer(self, layer=None, *, split: str | None = None, name: str | None = None):
        """``project.add_image(name, layer.data, split=...)``, link the layer, add a labels layer."""
        from ..core.errors import DataError

        project = self.project_box.project()
        if layer is None:
            if not self.layer_combo.currentText():
                raise DataError("No image layer to add: open an image in napari first (File > Open, or File > Open Sample).")
            layer = self.viewer.layers[self.layer_combo.currentText()]
        if isinstance(layer, str):
            layer = self.viewer.layers[layer]
        split = split or self.split_combo.currentText()
        data = np.asarray(layer.data)
        name = name or layer.name
        # napari shows a 3D non-RGB layer as a stack of planes (a slider): so does the store
        stack = False if layer.rgb else (True if data.ndim == 3 else None)
        project.add_image(name, data, split=split, stack=stack, source=f"napari layer {layer.name}", origin="drawn")
        layer.metadata = {**(layer.metadata or {}), **link(project.url, name)}
        labels = self.labels_layer_for(name, create=True, project=project)
        self.refresh()
        self.viewer.layers.selection.active = labels
        what = f"a stack of {project.image_record(name).shape[0]} planes" if project.image_record(name).is_stack else "an image"
        report_info(f"Added {name} ({split}, {what}) to the project: paint into '{labels.name}' (any planes you like).", self.status)
        return name

    def _import_dialog(self):
        folder = QFileDialog.getExistingDirectory(self, "Import the images (and masks) of a folder")
        if folder:
            self.import_folder(folder)

    @guarded()
    def import_folder(self, folder: str, masks: str | None = None):
        """``import_images(project, folder, masks, split=...)``."""
        from ..core.io import import_images

        project = self.project_box.project()
        names = import_images(project, folder, masks, split=self.split_combo.currentText())
        self.refresh()
        report_info(f"Imported {len(names)} image(s) from {folder}.", self.status)
        return names

    def labels_layer_for(self, name: str, *, create: bool = False, project=None):
        """The labels layer linked to image ``name`` (created from the store's annotation if asked)."""
        project = project or self.project_box.project()
        for layer in self.viewer.layers:
            if layer._type_string == "labels" and linked(layer, project.url, name):
                return layer
        if not create:
            return None
        rec = project.image_record(name)
        data = project.get_labels(name)
        if data is None:
            data = np.zeros(rec.spatial_shape, np.uint8)
        layer = self.viewer.add_labels(
            data,
            name=f"{name} annotations",
            colormap=class_colormap(project),
            opacity=0.6,
            scale=layer_scale(rec),
            metadata=link(project.url, name),
        )
        layer.brush_size = 8
        self._watch(layer)
        self._class_chosen()
        return layer

    @guarded()
    def open_image(self, name: str):
        """Show image ``name`` of the store with its linked labels layer (select it if it is open)."""
        project = self.project_box.project()
        image_layer = next((la for la in self.viewer.layers if la._type_string == "image" and linked(la, project.url, name)), None)
        if image_layer is None:
            rec = project.image_record(name)
            self.viewer.add_image(
                project.get_image(name), name=name, rgb=rec.channels == 3, scale=layer_scale(rec), metadata=link(project.url, name)
            )
        labels = self.labels_layer_for(name, create=True, project=project)
        image_layer = next((la for la in self.viewer.layers if la._type_string == "image" and linked(la, project.url, name)), None)
        if image_layer is not None and self.layer_combo.findText(image_layer.name) >= 0:
            self.layer_combo.setCurrentText(image_layer.name)
        for layer in self.viewer.layers:
            if layer._type_string in ("image", "labels") and linked(layer, project.url):
                layer.visible = linked(layer, project.url, name)
        self.viewer.layers.selection.active = labels
        self.viewer.reset_view()
        return labels

    @guarded()
    def set_split(self, name: str, split: str):
        """``project.set_split(name, split)``."""
        project = self.project_box.project()
        project.set_split(name, split)
        report_info(f"{name} is now a {split} image.", self.status)

    # ------------------------------------------------------------------ painting and saving
    def _class_chosen(self, index=None) -> None:
        value = self.class_combo.currentData()
        if value is None:
            return
        for layer in self.viewer.layers:
            if layer._type_string == "labels" and linked(layer):
                layer.selected_label = int(value)

    def _watch(self, layer) -> None:
        if id(layer) in self._watched:
            return
        self._watched.add(id(layer))

        def changed(event=None, layer=layer):
            self._dirty.add(id(layer))
            if self.autosave.isChecked():
                self._timer.start()

        layer.events.paint.connect(changed)
        layer.events.data.connect(changed)

    def _autosave(self) -> None:
        if self._dirty:
            self.save(only_dirty=True)

    @guarded()
    def save(self, *, only_dirty: bool = False) -> list[str]:
        """``project.set_labels(image, layer.data)`` for every linked labels layer of this project."""
        project = self.project_box.project()
        saved = []
        for layer in list(self.viewer.layers):
            if layer._type_string != "labels" or not linked(layer, project.url):
                continue
            if only_dirty and id(layer) not in self._dirty:
                continue
            name = layer.metadata[IMAGE_KEY]
            project.set_labels(name, np.asarray(layer.data))
            self._dirty.discard(id(layer))
            saved.append(name)
        self.refresh()
        report_info(
            f"Saved annotations of {', '.join(saved)}." if saved else "Nothing to save: no labels layer is linked to this project.",
            self.status,
        )
        return saved
