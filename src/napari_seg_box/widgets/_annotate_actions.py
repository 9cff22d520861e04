"""The Annotate panel's actions on images: add a layer, use a labels layer as an annotation, import
a folder, remove an image, cut one into tiles, open one (a part of :class:`~.annotate.AnnotateWidget`)."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QTableWidgetItem

from ..layers import IMAGE_KEY, class_colormap, image_layer_of, is_image, is_labels, layer_scale, link, linked, store_layer
from ._messages import ask, guarded, report_info

SPLITS = ("train", "validation", "test")
MAX_SPLIT_MENUS = 300  # more images: the list shows their split as text (Set split changes the selected ones)


class ImageActions:
    """Methods of the Annotate panel that act on the project's images (each one core call)."""

    @guarded()
    def add_layer(self, layer=None, *, split: str | None = None, name: str | None = None):
        """``project.add_image(name, layer.data, split=...)``, link the layer, add a labels layer to paint in."""
        project = self.project_box.project()
        layer = self._layer(layer, self.layer_combo, "image")
        split = split or self.split_combo.currentText()
        name = name or layer.name
        store_layer(project, layer, name, split)
        labels = self.labels_layer_for(name, create=True, project=project)
        self.refresh()
        self._ready_to_paint(labels, project)
        what = f"a stack of {project.image_record(name).shape[0]} planes" if project.image_record(name).is_stack else "an image"
        report_info(f"Added {name} ({split}, {what}): paint in '{labels.name}' with the brush (any planes you like).", self.status)
        return name

    @guarded()
    def use_labels_layer(self, labels_layer=None, image_layer=None, *, split: str | None = None):
        """Make a labels layer you already have the annotation of an image layer: painted class
        labels, a binary mask or ground-truth objects (one id each; kept for object metrics)."""
        from ..core.errors import DataError
        from ..core.masks import read_mask

        project = self.project_box.project()
        labels_layer = self._layer(labels_layer, self.mask_combo, "labels")
        image_layer = self._layer(image_layer, self.layer_combo, "image")
        name = (image_layer.metadata or {}).get(IMAGE_KEY) if linked(image_layer, project.url) else None
        if name is None:
            name = self.add_layer(image_layer, split=split)
            if name is None:
                return None
            project.refresh()
        mask = np.asarray(labels_layer.data)
        if mask.shape != project.image_record(name).spatial_shape:
            raise DataError(
                f"{labels_layer.name} is {mask.shape} but {name} is {project.image_record(name).spatial_shape}: choose the labels of this image."
            )
        values = np.unique(mask)
        painted_classes = values.min(initial=0) >= 0 and values.max(initial=0) <= project.n_classes and np.count_nonzero(values) >= 2
        labels, instances, kind = read_mask(mask, kind="labels" if painted_classes else "auto", n_classes=project.n_classes)
        project.set_labels(name, labels, origin="imported")
        if instances is not None:
            project.set_instances(name, instances)
        target = self.labels_layer_for(name, project=project)
        if target is not None:
            target.data = project.get_labels(name)
        if split:
            project.set_split(name, split)
        self.refresh()
        words = {
            "binary": "a binary mask",
            "instances": "objects (kept as ground truth for object metrics)",
            "labels": "painted classes",
            "classes": "class indices",
        }
        report_info(f"{labels_layer.name} is now the annotation of {name}, read as {words[kind]}.", self.status)
        return name

    @guarded()
    def import_folder(self, folder: str, masks: str | None = None):
        """``import_images(project, folder, masks, split=...)``: masks beside the images, in a masks/
        subfolder, or in the folder ``masks``."""
        from ..core.errors import DataError
        from ..core.io import import_images

        if not folder:
            raise DataError("Choose the folder of images to import (the … button next to Import images).")
        project = self.project_box.project()
        names = import_images(project, folder, masks or None, split=self.split_combo.currentText())
        self.refresh()
        kinds = sorted(set(names.mask_kinds.values()))
        read = f"; masks of {len(names.mask_kinds)} read as {', '.join(kinds)}" if kinds else "; no masks found"
        report_info(f"Imported {len(names)} image(s) from {folder}{read}.", self.status)
        return names

    @guarded()
    def set_split_of_selected(self, split: str | None = None) -> list[str]:
        """``project.set_split(selected images, split)`` (the Split menu of the Images box)."""
        from ..core.errors import DataError

        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()}) if self.table.selectionModel() else []
        names = [self.table.item(r, 0).text() for r in rows]
        if not names:
            raise DataError("Select images in the list first (click, Shift-click, Ctrl-click).")
        split = split or self.split_combo.currentText()
        self.project_box.project().set_split(names, split)
        self.refresh()
        report_info(f"{len(names)} image(s) are now {split} images.", self.status)
        return names

    @guarded()
    def remove_selected(self, name: str | None = None):
        """Remove an image and its annotation from the project (asks first)."""
        from ..core.errors import DataError

        name = name or self.selected_image()
        if not name:
            raise DataError("Select an image in the list first.")
        if ask(self, "Remove image", f"Remove {name} and its annotation from the project?", ["Remove", "Cancel"]) != 0:
            return None
        self.project_box.project().remove_image(name)
        self._forget_layers(name)
        self.refresh()
        report_info(f"Removed {name} from the project.", self.status)
        return name

    @guarded()
    def cut_selected_into_tiles(self, name: str | None = None, n: int | None = None):
        """``project.split_into_tiles(name, n, n)``: hold out part of one big image."""
        from ..core.errors import DataError

        name = name or self.selected_image()
        if not name:
            raise DataError("Select an image in the list first.")
        n = n or int(self.tiles.value())
        tiles = self.project_box.project().split_into_tiles(name, n, n)
        self._forget_layers(name)
        self.refresh()
        report_info(f"Cut {name} into {len(tiles)} tiles: {tiles[-1]} is a test image, {tiles[-2]} a validation one.", self.status)
        return tiles

    def _forget_layers(self, name: str) -> None:
        """Image ``name`` left the project: close its annotation layer, unlink its image layer."""
        for layer in [la for la in self.viewer.layers if linked(la, self.project_box.url, name)]:
            if is_labels(layer):
                self.viewer.layers.remove(layer)
            else:
                layer.metadata = {k: v for k, v in (layer.metadata or {}).items() if k not in link("", "")}

    def labels_layer_for(self, name: str, *, create: bool = False, project=None):
        """The labels layer linked to image ``name`` (created from the store's annotation if asked)."""
        project = project or self.project_box.project()
        for layer in self.viewer.layers:
            if is_labels(layer) and linked(layer, project.url, name):
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

    def _ready_to_paint(self, labels, project) -> None:
        """Select the layer, the brush, and the first object class: the next click paints."""
        self.viewer.layers.selection.active = labels
        first_object = 2 if project.n_classes >= 2 else 1
        self.class_combo.setCurrentIndex(self.class_combo.findData(first_object))
        labels.selected_label = first_object
        labels.mode = "paint"

    @guarded()
    def open_image(self, name: str):
        """Show image ``name`` of the store with its linked labels layer (select it if it is open)."""
        project = self.project_box.project()
        image_layer = image_layer_of(self.viewer, project, name)
        if project.task == "classification":  # a class per image: no labels layer; keys 1-9 give its class
            self.image_classes.bind_keys(image_layer)
            for layer in self.viewer.layers:
                if is_image(layer) and linked(layer, project.url):
                    layer.visible = layer is image_layer
            self.viewer.layers.selection.active = image_layer
            self.viewer.reset_view()
            self.image_classes.show_current(project)
            return image_layer
        labels = self.labels_layer_for(name, create=True, project=project)
        if image_layer is not None and self.layer_combo.findText(image_layer.name) >= 0:
            self.layer_combo.setCurrentText(image_layer.name)
        for layer in self.viewer.layers:
            if (is_image(layer) or is_labels(layer)) and linked(layer, project.url):
                layer.visible = linked(layer, project.url, name)
        self.viewer.layers.selection.active = labels
        self.viewer.reset_view()
        return labels

    def _fill_table(self, project) -> None:
        names = project.class_names
        classify = project.task == "classification"
        records = project.images()
        stacks = any(r.is_stack for r in records)  # which planes hold labels: a column only where there are planes
        headers = ["image", "split", "class"] if classify else ["image", "split", *names, "instances", "annotation", *(["planes"] * stacks)]
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        self.table.clearContents()  # deletes the split combos of the previous fill
        self.table.setRowCount(0)
        self.table.setRowCount(len(records))
        for r, rec in enumerate(records):
            self.table.setItem(r, 0, QTableWidgetItem(rec.name))
            if len(records) > MAX_SPLIT_MENUS:  # a menu per row costs ~2 ms: 7 s for 3,400 cells; text, and Set split
                self.table.setItem(r, 1, QTableWidgetItem(rec.split))
            else:
                combo = QComboBox()
                combo.addItems(SPLITS)
                combo.setCurrentText(rec.split)
                combo.currentTextChanged.connect(lambda split, name=rec.name: self.set_split(name, split))
                self.table.setCellWidget(r, 1, combo)
            if classify:
                self.table.setItem(r, 2, QTableWidgetItem(rec.image_class or ""))
                continue
            for j, n in enumerate(project.annotation_stats(rec.name)):
                item = QTableWidgetItem(f"{int(n):,}")
                item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
                self.table.setItem(r, 2 + j, item)
            self.table.setItem(r, 2 + len(names), QTableWidgetItem("yes" if rec.has_instances else ""))
            self.table.setItem(r, 3 + len(names), QTableWidgetItem(_origin_words(rec.annotation)))
            if stacks:
                self.table.setItem(r, 4 + len(names), QTableWidgetItem(planes_words(rec)))
        self.table.resizeColumnsToContents()

    def table_rows(self) -> list[dict]:
        """The list as shown: one dict per image (for scripts and tests)."""
        rows = []
        headers = [self.table.horizontalHeaderItem(c).text() for c in range(self.table.columnCount())]
        for r in range(self.table.rowCount()):
            row = {}
            for c, h in enumerate(headers):
                if c == 1 and self.table.cellWidget(r, 1) is not None:
                    row[h] = self.table.cellWidget(r, 1).currentText()
                else:
                    item = self.table.item(r, c)
                    text = item.text() if item else ""
                    row[h] = int(text.replace(",", "")) if 2 <= c < len(headers) and h not in TEXT_COLUMNS else text
            rows.append(row)
        return rows


TEXT_COLUMNS = ("class", "instances", "annotation", "planes")  # the others after the split count painted pixels


def planes_words(rec) -> str:
    """Which planes of a stack hold labels, for the list: '2 of 30 slices: 4, 17' (frames for a
    time-lapse); empty for a 2D image."""
    if not rec.is_stack:
        return ""
    n, what = rec.spatial_shape[0], "frames" if rec.is_timelapse else "slices"
    done = rec.annotated_planes
    if done is None:
        return f"{n} {what}" + (", some annotated" if rec.has_labels else "")
    shown = ", ".join(map(str, done[:8])) + (", …" if len(done) > 8 else "")
    return f"{len(done)} of {n} {what}" + (f": {shown}" if done else "")


def _origin_words(annotation) -> str:
    """Where an image's annotation comes from, for the list: drawn, imported, corrected (v002)..."""
    if not annotation or not annotation.get("revision"):
        return ""
    version = annotation.get("model_version")
    return f"{annotation.get('origin')} ({version})" if version else str(annotation.get("origin") or "")
