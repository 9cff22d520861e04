"""Annotate: the project, its classes and images, painting into linked labels layers, splits.

Every action is one call of the headless core (``Project.create``, ``project.add_image``,
``import_images``, ``project.set_labels``, ``project.set_split``, ``project.split_into_tiles``,
``project.remove_image``, ``project.set_unpainted_background``). Labels layers are linked to the
store through their metadata (:mod:`..layers`); 0 = unlabelled, so painting a few strokes is fine,
and the panel keeps napari's label picker and the project's classes in step.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from ..layers import IMAGE_KEY, annotation_origin, class_colormap, is_image, is_labels, linked
from ._annotate_actions import SPLITS, ImageActions
from ._common import Dock, PathField, ProjectBox, later, scrolled
from ._image_classes import ImageClassBox
from ._messages import ask, guarded, report_error, report_info, status_label

AUTOSAVE_MS = 2000


class AnnotateWidget(ImageActions, Dock, QWidget):
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
        lay = scrolled(self)

        box = QGroupBox("Project")
        form = QVBoxLayout(box)
        self.project_box = ProjectBox(self.viewer)
        form.addWidget(self.project_box)
        row = QHBoxLayout()
        self.task_combo = QComboBox()
        self.task_combo.addItem("segmentation: classes per pixel", "segmentation")
        self.task_combo.addItem("classification: a class per image", "classification")
        self.task_combo.setToolTip("What the new project teaches: to paint classes into images, or to sort whole images into classes")
        self.task_combo.currentIndexChanged.connect(self._task_chosen)
        row.addWidget(QLabel("Task:"))
        row.addWidget(self.task_combo, 1)
        form.addLayout(row)
        row = QHBoxLayout()
        self.classes_edit = QLineEdit("background, foreground")
        self.classes_edit.setToolTip("Class names in label order: the first is label 1 (usually background); 0 = unlabelled")
        row.addWidget(QLabel("Classes:"))
        row.addWidget(self.classes_edit, 1)
        form.addLayout(row)
        row = QHBoxLayout()
        self.new_btn = QPushButton("New project…")
        self.new_btn.setToolTip("Create a new project (a folder) with the classes above")
        self.classes_btn = QPushButton("Apply classes")
        self.classes_btn.setToolTip("Rename the project's classes or add new ones")
        row.addWidget(self.new_btn)
        row.addWidget(self.classes_btn)
        form.addLayout(row)
        lay.addWidget(box)

        box = QGroupBox("Images")
        form = QFormLayout(box)
        self.layer_combo = QComboBox()
        self.split_combo = QComboBox()
        self.split_combo.addItems(SPLITS)
        self.split_combo.setToolTip("train and validation images teach the model; test images only score it")
        form.addRow("Image layer:", self.layer_combo)
        form.addRow("Split:", self.split_combo)
        self.add_btn = QPushButton("Add layer to project")
        self.add_btn.setToolTip("Add the image layer to the project and create its annotation layer")
        form.addRow(self.add_btn)
        row = QHBoxLayout()
        self.mask_combo = QComboBox()
        self.mask_combo.setToolTip("A labels layer you already have: a painted mask, or ground truth (one id per object)")
        self.use_mask_btn = QPushButton("Use as its annotation")
        self.use_mask_btn.setToolTip(
            "Make this labels layer the annotation of the image layer chosen above (added to the project if needed)"
        )
        row.addWidget(self.mask_combo, 1)
        row.addWidget(self.use_mask_btn)
        form.addRow("Labels layer:", row)
        self.images_dir = PathField("folder of images (and their masks)")
        self.masks_dir = PathField("optional: masks in another folder, matched by name")
        self.import_btn = QPushButton("Import")
        self.import_btn.setToolTip("Images (with masks beside them, in masks/, or in the folder below) into the project")
        form.addRow("Import images:", self.images_dir)
        form.addRow("Masks:", self.masks_dir)
        form.addRow(self.import_btn)
        lay.addWidget(box)

        self.image_classes = ImageClassBox(self)
        lay.addWidget(self.image_classes)
        box = self.paint_box = QGroupBox("Paint")
        form = QFormLayout(box)
        self.class_combo = QComboBox()
        self.class_combo.setToolTip("The class the brush paints; 0 = unlabelled (eraser)")
        form.addRow("Paint class:", self.class_combo)
        self.unpainted_check = QCheckBox("unpainted pixels of this image are background")
        self.unpainted_check.setToolTip("Tick it when you painted only the objects: the rest of the image then counts as background")
        form.addRow(self.unpainted_check)
        row = QHBoxLayout()
        self.save_btn = QPushButton("Save annotations")
        self.save_btn.setToolTip("Save every annotation layer of this project now")
        self.autosave = QCheckBox("autosave")
        self.autosave.setChecked(True)
        self.autosave.setToolTip(f"Save {AUTOSAVE_MS // 1000} s after the last brush stroke")
        row.addWidget(self.save_btn)
        row.addWidget(self.autosave)
        form.addRow(row)
        lay.addWidget(box)

        lay.addWidget(QLabel("Project images (click to open; annotated pixels per class):"))
        self.table = QTableWidget(0, 3)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(140)
        lay.addWidget(self.table, 1)
        row = QHBoxLayout()
        self.split_btn = QPushButton("Set split")
        self.split_btn.setToolTip("Give the selected images the split chosen in the Images box (train / validation / test)")
        self.remove_btn = QPushButton("Remove")
        self.remove_btn.setToolTip("Remove the selected image (and its annotation) from the project")
        self.tiles = QSpinBox()
        self.tiles.setRange(2, 8)
        self.tiles.setValue(2)
        self.tiles.setPrefix("tiles: ")
        self.tiles.setSuffix(" x n")
        self.tile_btn = QPushButton("Cut into tiles")
        self.tile_btn.setToolTip("Cut the selected image into n x n tiles: the last one becomes a test image, the one before validation")
        row.addWidget(self.split_btn)
        row.addWidget(self.remove_btn)
        row.addStretch(1)
        row.addWidget(self.tiles)
        row.addWidget(self.tile_btn)
        lay.addLayout(row)
        self.status = status_label()
        lay.addWidget(self.status)

        self.new_btn.clicked.connect(self._new_dialog)
        self.classes_btn.clicked.connect(lambda: self.apply_classes())
        self.add_btn.clicked.connect(lambda: self.add_layer())
        self.use_mask_btn.clicked.connect(lambda: self.use_labels_layer())
        self.import_btn.clicked.connect(lambda: self.import_folder(self.images_dir.text(), self.masks_dir.text() or None))
        self.save_btn.clicked.connect(lambda: self.save())
        self.split_btn.clicked.connect(lambda: self.set_split_of_selected())
        self.remove_btn.clicked.connect(lambda: self.remove_selected())
        self.tile_btn.clicked.connect(lambda: self.cut_selected_into_tiles())
        self.unpainted_check.toggled.connect(self._unpainted_toggled)
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
    def create_project(self, path: str, classes=None, *, task: str | None = None):
        """``Project.create(path, classes=..., task=...)``: the new current project of every panel."""
        from ..core.store import Project

        task = task or self.task_combo.currentData()
        names = classes if classes is not None else self._class_names()
        project = Project.create(path, classes=names, task=task)
        self.project_box.set_url(project.url)
        self.refresh()
        nxt = "add an image layer to it next" if task == "segmentation" else "import class folders, or add images and press their class"
        report_info(f"Created {task} project {project.url} with classes {', '.join(names) or 'none yet'}: {nxt}.", self.status)
        return project

    def _task_chosen(self, index=None) -> None:
        if self.task_combo.currentData() == "classification" and self._class_names() == ["background", "foreground"]:
            self.classes_edit.setText("")
            self.classes_edit.setPlaceholderText("class names, or none: importing class folders adds them")
        elif self.task_combo.currentData() == "segmentation" and not self._class_names():
            self.classes_edit.setText("background, foreground")

    @guarded()
    def open_project(self, path: str):
        from ..core.store import Project

        project = Project.open(path)
        self.project_box.set_url(project.url)
        self.refresh()
        return project

    def _new_dialog(self):
        folder = QFileDialog.getExistingDirectory(self, "Where to keep the new project")
        if not folder:
            return
        name, ok = QInputDialog.getText(self, "New project", "Name of the project:", text="my_project")
        if ok and name.strip():
            name = name.strip()
            self.create_project(f"{folder}/{name if name.endswith('.zarr') else name + '.zarr'}")

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
        classify = project.task == "classification"
        self.task_combo.blockSignals(True)  # showing the project's task, not choosing one for a new project
        self.task_combo.setCurrentIndex(self.task_combo.findData(project.task))
        self.task_combo.blockSignals(False)
        self.image_classes.setVisible(classify)
        self.paint_box.setVisible(not classify)
        if classify:
            self.image_classes.refresh(project)
        current = self.class_combo.currentData()
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        self.class_combo.addItem("0: unlabelled (eraser)", 0)
        for c in project.classes:
            self.class_combo.addItem(f"{c.value}: {c.name}", c.value)
        idx = self.class_combo.findData(current if current is not None else 1)
        self.class_combo.setCurrentIndex(max(idx, 0))
        self.class_combo.blockSignals(False)
        self._class_chosen()  # the brushes paint a class of the project (fewer classes than before, too)
        cmap = class_colormap(project)
        for layer in self.viewer.layers:
            if is_labels(layer) and linked(layer, project.url):
                layer.colormap = cmap
        self._fill_table(project)
        self._show_unpainted()

    def selected_image(self) -> str | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return self.table.item(rows[0].row(), 0).text() if rows else None

    # ------------------------------------------------------------------ images
    def _layers_changed(self, event=None) -> None:
        for combo, wanted in ((self.layer_combo, is_image), (self.mask_combo, is_labels)):
            current = combo.currentText()
            combo.clear()
            for layer in self.viewer.layers:
                if wanted(layer) and not (combo is self.mask_combo and linked(layer)):
                    combo.addItem(layer.name)
            if current:
                combo.setCurrentText(current)
        if event is not None and getattr(event, "type", "") == "inserted":
            layer = event.value
            if is_labels(layer) and linked(layer):
                self._watch(layer)

    def _active_changed(self, event=None) -> None:
        layer = self.viewer.layers.selection.active
        if layer is not None and is_image(layer):
            self.layer_combo.setCurrentText(layer.name)
        self._show_unpainted()

    def _layer(self, layer, combo: QComboBox, what: str):
        from ..core.errors import DataError

        if layer is None:
            if not combo.currentText():
                raise DataError(f"No {what} layer: open one in napari first (File > Open, or File > Open Sample).")
            layer = combo.currentText()
        return self.viewer.layers[layer] if isinstance(layer, str) else layer

    @guarded()
    def set_split(self, name: str, split: str):
        """``project.set_split(name, split)``."""
        self.project_box.project().set_split(name, split)
        report_info(f"{name} is now a {split} image.", self.status)

    # ------------------------------------------------------------------ the unpainted-is-background flag
    def _active_image(self) -> str | None:
        layer = self.viewer.layers.selection.active
        return (layer.metadata or {}).get(IMAGE_KEY) if layer is not None and linked(layer, self.project_box.url) else None

    def _show_unpainted(self) -> None:
        name = self._active_image()
        self.unpainted_check.setEnabled(name is not None)
        self.unpainted_check.blockSignals(True)
        try:
            self.unpainted_check.setChecked(bool(name) and self.project_box.project().image_record(name).unpainted_background)
        except Exception:  # noqa: BLE001 - a removed image or project: the box is just unticked
            self.unpainted_check.setChecked(False)
        self.unpainted_check.blockSignals(False)

    @guarded()
    def _unpainted_toggled(self, on: bool):
        name = self._active_image()
        if name:
            self.project_box.project().set_unpainted_background(name, on)
            report_info(f"Unpainted pixels of {name} are {'background' if on else 'unlabelled'} now.", self.status)

    # ------------------------------------------------------------------ painting and saving
    def _class_chosen(self, index=None) -> None:
        value = self.class_combo.currentData()
        if value is None:
            return
        for layer in self.viewer.layers:
            if is_labels(layer) and linked(layer) and layer.selected_label != int(value):
                layer.selected_label = int(value)

    def _label_picked(self, layer) -> None:
        """napari's own label control changed the brush: follow it; a label that is not a class is
        never painted: the user adds a class for it or goes back to the class chosen before."""
        value = int(layer.selected_label)
        idx = self.class_combo.findData(value)
        if idx >= 0:
            if idx != self.class_combo.currentIndex():
                self.class_combo.setCurrentIndex(idx)
        elif self.project_box.url:
            later(self, lambda: self._unknown_label(layer, value))  # not inside napari's event

    @guarded()
    def _unknown_label(self, layer, value: int):
        if layer not in self.viewer.layers or int(layer.selected_label) != value or self.class_combo.findData(value) >= 0:
            return  # changed again meanwhile
        project = self.project_box.project()
        names, before = project.class_names, int(self.class_combo.currentData() or 1)
        new = len(names) + 1
        choice = ask(
            self,
            "Not a class of this project",
            f"Label {value} is not one of the {len(names)} classes of this project ({', '.join(names)}). "
            f"Add class {new} and paint with it, or keep painting {self.class_combo.currentText()}?",
            [f"Add class {new}", "Keep painting the class chosen"],
        )
        if choice == 0:
            self.apply_classes([*names, f"class {new}"])
            report_info(f"Added class {new} ('class {new}': rename it in Classes and press Apply classes).", self.status)
        layer.selected_label = new if choice == 0 else before
        self._class_chosen()

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
        layer.events.selected_label.connect(lambda event=None, layer=layer: self._label_picked(layer))

    def _autosave(self) -> None:
        if self._dirty:
            self.save(only_dirty=True)

    @guarded()
    def save(self, *, only_dirty: bool = False) -> list[str]:
        """``project.set_labels(image, layer.data)`` for every linked labels layer of this project.

        Pixels painted with a label that is not a class are saved as unlabelled (and said so): the
        rest of the strokes are never lost for them."""
        project = self.project_box.project()
        saved, unknown = [], 0
        for layer in list(self.viewer.layers):
            if not is_labels(layer) or not linked(layer, project.url):
                continue
            if only_dirty and id(layer) not in self._dirty:
                continue
            data = np.asarray(layer.data)
            bad = data > project.n_classes
            if bad.any():
                unknown += int(bad.sum())
                data = np.where(bad, 0, data)
            project.set_labels(layer.metadata[IMAGE_KEY], data, **annotation_origin(layer))
            self._dirty.discard(id(layer))
            saved.append(layer.metadata[IMAGE_KEY])
        self.refresh()
        text = f"Saved annotations of {', '.join(saved)}." if saved else "Nothing to save: no labels layer is linked to this project."
        if unknown:
            text += (
                f" {unknown:,} pixels painted with labels that are not classes were left unlabelled: add a class in Classes to keep them."
            )
        report_info(text, self.status, notify=bool(unknown))
        return saved
