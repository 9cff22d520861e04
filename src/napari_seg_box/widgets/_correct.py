"""Correct and improve, in the Predict panel: the prediction becomes the image's annotation, edited
with napari's brush, fill and eraser or object by object (click to delete, merge, split, relabel),
saved as "corrected from model vN", and the model is updated with the corrections (a short
fine-tuning run); an uncertainty image shows where the model is unsure.

Core calls: :mod:`..core.correct` (``annotation_from_prediction``, the object tools,
``save_correction``), :func:`..core.suggest.uncertainty`, ``Session.update_model`` (fine-tuning
through :func:`..core.train.finetune_config`).
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton

from ..layers import IMAGE_KEY, ORIGIN_KEY, class_colormap, is_labels, layer_scale, link, linked, store_layer
from ._messages import guarded, report_info

TOOLS = (
    ("paint with the brush, fill and eraser", None),
    ("delete the object clicked (it is background)", "delete"),
    ("merge the next two objects clicked", "merge"),
    ("split an object: click two points along the cut", "split"),
    ("give the object clicked the class below", "relabel"),
)
CONTINUOUS_EPOCHS = 3  # the quick update after each save, in continuous mode


class CorrectBox(QGroupBox):
    """The correction controls of a :class:`~.predict.PredictWidget` (``panel``)."""

    def __init__(self, panel):
        super().__init__("Correct it and improve the model")
        self.panel = panel
        self.viewer = panel.viewer
        self.labels_layer = None  # the annotation being corrected
        self.instances: np.ndarray | None = None  # its objects
        self.relief: np.ndarray | None = None  # where objects part (background probability), for splits
        self.name: str | None = None  # the store image
        self.version: str | None = None  # the model version it was predicted with
        self.correct_when_shown: str | None = None  # an image layer to correct as soon as its objects are shown
        self.image_layer_name: str | None = None  # the image layer of the correction
        self._first = None  # merge: the first object; split: the first point
        form = QFormLayout(self)
        self.confidence = QDoubleSpinBox()
        self.confidence.setRange(0.0, 0.99)
        self.confidence.setSingleStep(0.05)
        self.confidence.setToolTip(
            "Correct this prediction leaves the pixels the model is less sure of than this unlabelled (not trained on); 0 keeps every pixel"
        )
        form.addRow("Unsure below:", self.confidence)
        row = QHBoxLayout()
        self.correct_btn = QPushButton("Correct this prediction")
        self.correct_btn.setToolTip("Turn the prediction into this image's annotation in the project, to fix by hand")
        self.save_btn = QPushButton("Save correction")
        row.addWidget(self.correct_btn)
        row.addWidget(self.save_btn)
        form.addRow(row)
        self.tool = QComboBox()
        self.tool.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.tool.setMinimumContentsLength(16)  # long choices must not widen the panel
        for words, key in TOOLS:
            self.tool.addItem(words, key)
        form.addRow("Click an object to:", self.tool)
        self.class_combo = QComboBox()
        form.addRow("Class:", self.class_combo)
        self.update_btn = QPushButton("Update the model with my corrections")
        self.update_btn.setToolTip("Fine-tune the latest model version on the annotations and corrections saved since (a few minutes)")
        form.addRow(self.update_btn)
        self.continuous = QCheckBox("update and predict again after each save")
        self.continuous.setToolTip(f"A quick update ({CONTINUOUS_EPOCHS} short epochs) in the background after every saved correction")
        form.addRow(self.continuous)
        self.status = QLabel("Predict an image, then correct its prediction: a corrected image teaches the model most.")
        self.status.setWordWrap(True)
        form.addRow(self.status)
        self.correct_btn.clicked.connect(lambda: self.correct())
        self.save_btn.clicked.connect(lambda: self.save())
        self.update_btn.clicked.connect(lambda: self.update_model())
        self.tool.currentIndexChanged.connect(self._tool_chosen)

    # ------------------------------------------------------------------ starting a correction
    @guarded()
    def correct(self):
        """The shown prediction becomes the image's editable annotation (painted pixels kept); returns the layer."""
        from ..core.correct import annotation_from_prediction, check_classes
        from ..core.errors import DataError

        panel = self.panel
        objects, probs, info = panel.objects, panel.probabilities, panel._info
        if objects is None or probs is None or info is None or panel.result_for not in self.viewer.layers:
            raise DataError("Predict an image first (Predict, above); then its prediction can be corrected.")
        if probs.ndim != 3:
            raise DataError("Correcting the prediction of a stack is not possible yet: correct its planes as 2D images.")
        project = panel.project_box.project()
        check_classes(project, info)
        image_layer = self.viewer.layers[panel.result_for]
        name = self._store_image(project, image_layer)
        labels = annotation_from_prediction(objects.semantic, probs, min_confidence=self.confidence.value(), **info.output_facts)
        painted = project.get_labels(name)
        kept = 0
        if painted is not None:  # what the user painted wins over the model
            kept = int((painted > 0).sum())
            labels = np.where(painted > 0, painted, labels).astype(np.uint8)
        self.instances = np.where(labels > 1, objects.instances, 0).astype(np.int32)
        self.relief = probs[0] if not info.distance else 1.0 - probs[-1]
        self.name, self.version, self.image_layer_name = name, info.version, image_layer.name
        self.labels_layer = self._annotation_layer(project, name, image_layer, labels)
        self.class_combo.clear()
        for c in project.classes:
            self.class_combo.addItem(c.name, c.value)
        self.class_combo.setCurrentIndex(min(1, len(project.classes) - 1))
        self._tool_chosen()
        text = f"The prediction of {name} is now its annotation (corrected from {info.version})"
        text += f"; your {kept:,} painted pixels were kept." if kept else "."
        report_info(text + " Fix it with the brush, fill and eraser or the object tools, then Save correction.", self.status)
        return self.labels_layer

    def _store_image(self, project, image_layer) -> str:
        """The store image of ``image_layer``: linked already, or added now (split ``train``)."""
        if linked(image_layer, project.url):
            return image_layer.metadata[IMAGE_KEY]
        name, n = image_layer.name, 1
        while name in project.image_names():
            n += 1
            name = f"{image_layer.name} ({n})"
        store_layer(project, image_layer, name, "train")
        return name

    def _annotation_layer(self, project, name: str, image_layer, labels: np.ndarray):
        meta = {**link(project.url, name), ORIGIN_KEY: {"origin": "corrected", "model_version": self.version}}
        layer = next((la for la in self.viewer.layers if is_labels(la) and linked(la, project.url, name)), None)
        if layer is None:
            layer = self.viewer.add_labels(
                labels,
                name=f"{name} annotations",
                colormap=class_colormap(project),
                opacity=0.6,
                scale=layer_scale(project.image_record(name)),
            )
        else:
            layer.data = labels
        layer.metadata = {**(layer.metadata or {}), **meta}
        if self._on_mouse not in layer.mouse_drag_callbacks:
            layer.mouse_drag_callbacks.append(self._on_mouse)
        prediction = self.panel._find(f"{image_layer.name} prediction")
        if prediction is not None:
            prediction.visible = False  # the annotation shows the same, editable
        self.viewer.layers.selection.active = layer
        return layer

    # ------------------------------------------------------------------ object tools
    def _tool_chosen(self, index=None) -> None:
        self._first = None
        if self.labels_layer is not None:
            self.labels_layer.mode = "paint" if self.tool.currentData() is None else "pan_zoom"

    def _on_mouse(self, layer, event):
        if self.tool.currentData() is None or layer.mode != "pan_zoom" or layer is not self.labels_layer:
            return
        self.click(layer.world_to_data(event.position))

    @guarded()
    def click(self, position) -> str:
        """Apply the chosen object tool at ``position`` (data coordinates); returns what it did."""
        from ..core import correct
        from ..core.errors import DataError

        if self.labels_layer is None:
            raise DataError("Press Correct this prediction first.")
        tool, labels = self.tool.currentData(), np.asarray(self.labels_layer.data)
        index = correct.object_at(self.instances, position)
        if tool == "split":
            if self._first is None:
                self._first = position
                return self._say("Now click a second point along the cut.")
            first, self._first = self._first, None
            mid = (np.asarray(first[-2:], float) + np.asarray(position[-2:], float)) / 2
            index = next((i for i in (correct.object_at(self.instances, p) for p in (mid, first, position)) if i), 0)
            new = correct.split_object(labels, self.instances, index, first, position, self.relief, extend=True)
            return self._edited(labels, f"Object {index} split in two ({index} and {new}).")
        if not index:
            raise DataError("There is no object there: click inside an object (or choose 'paint' to add one with the brush).")
        if tool == "delete":
            n = correct.delete_object(labels, self.instances, index)
            return self._edited(labels, f"Object {index} deleted ({n:,} pixels are background now).")
        if tool == "relabel":
            correct.relabel_object(labels, self.instances, index, int(self.class_combo.currentData()))
            return self._edited(labels, f"Object {index} is {self.class_combo.currentText()} now.")
        if self._first is None:  # merge
            self._first = index
            return self._say(f"Object {index} chosen: click the object to merge it with.")
        first, self._first = self._first, None
        correct.merge_objects(labels, self.instances, first, index)
        return self._edited(labels, f"Objects {first} and {index} merged.")

    def _edited(self, labels: np.ndarray, text: str) -> str:
        self.labels_layer.data = labels
        return self._say(text + " Save correction keeps it.")

    def _say(self, text: str) -> str:
        report_info(text, self.status)
        return text

    # ------------------------------------------------------------------ saving and updating
    @guarded()
    def save(self) -> str:
        """Save the corrected annotation and its objects, recorded as corrected from the model version."""
        from ..core.correct import save_correction
        from ..core.errors import DataError

        if self.labels_layer is None or self.labels_layer not in self.viewer.layers:
            raise DataError("Nothing to save: predict an image and press Correct this prediction first.")
        project = self.panel.project_box.project()
        save_correction(project, self.name, np.asarray(self.labels_layer.data), model_version=self.version, instances=self.instances)
        split = project.image_record(self.name).split
        text = f"Saved the correction of {self.name} (corrected from {self.version})."
        if split == "test":
            text += " It is a held-out test image: training does not use it (set its split to train in Annotate to use it)."
        elif self.continuous.isChecked():
            if self.panel.project_box.session.training_running:
                text += " The model is still updating: this correction joins the next update."
            else:
                run = self.update_model(epochs=CONTINUOUS_EPOCHS)
                run.ended.connect(lambda run=run: self._updated(run))
                return self._say(text + f" Updating the model with it ({CONTINUOUS_EPOCHS} short epochs)…")
        else:
            text += " Correct more images, or press Update the model with my corrections."
        return self._say(text)

    @guarded()
    def update_model(self, **settings):
        """Fine-tune the latest version on the corrections (the window's training; the Train panel shows it)."""
        project = self.panel.project_box.project()
        run = self.panel.project_box.session.update_model(project, **settings)
        self._say(f"Updating model version {run.config.finetune_from} with the corrections: the Train panel shows its progress.")
        return run

    def _updated(self, run) -> None:
        """Continuous mode: the update ended; predict the corrected image with the new version."""
        if run.version is None:
            return
        panel = self.panel
        panel.refresh_versions()
        panel.version_combo.setCurrentIndex(max(0, panel.version_combo.findData(run.version)))
        if self.image_layer_name in self.viewer.layers:
            panel.predict(self.image_layer_name)
            self._say(f"Model version {run.version} predicts {self.image_layer_name} again (its annotation is unchanged).")

    # ------------------------------------------------------------------ hooks of the Predict panel
    def objects_shown(self) -> None:
        """The panel showed new objects: correct them now if a suggestion asked for it."""
        if self.correct_when_shown and self.correct_when_shown == self.panel.result_for:
            self.correct_when_shown = None
            self.correct()

    def show_uncertainty(self, probabilities: np.ndarray) -> None:
        """An image layer of where the model is unsure (normalised entropy: 0 sure, 1 no idea)."""
        from ..core.suggest import uncertainty

        info = self.panel._info
        planes = probabilities if probabilities.ndim == 4 else probabilities[None]
        u = np.stack([uncertainty(p, **info.output_facts) for p in planes])
        self.panel._set_layer(
            "image", f"{self.panel.result_for} uncertainty", u if probabilities.ndim == 4 else u[0],
            colormap="inferno", opacity=0.5, blending="additive", contrast_limits=(0, 1),
        )  # fmt: skip
