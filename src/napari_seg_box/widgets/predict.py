"""Predict and evaluate: tiled prediction of an image layer, live post-processing, evaluation on test images.

Core calls: ``iter_predict(image, project, version=...)`` (in a thread worker) returns per-class
probabilities; ``postprocess(probabilities, PostprocessConfig(...))`` turns them into labels without
re-running the network (so the controls update the layers live); ``outlines(labels)`` gives the
shapes; ``iter_evaluate_project(project, version, split="test", postprocess=...)`` scores the model on
the held-out images (pixel and object metrics, TP/FP/FN error maps), ``Evaluation.to_csv(folder)``.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..layers import IMAGE_KEY, is_image, is_labels, linked
from ._common import Dock, ProjectBox, fill_versions, remember, scrolled
from ._correct import CorrectBox
from ._evaluation import ERROR_LEGEND, evaluation_summary, evaluation_table, show_error_maps
from ._messages import guarded, report_error, report_info, status_label
from ._postprocess_box import PostprocessBox, iter_objects
from ._suggest import SuggestBox
from ._tables import FrameTable, save_csv_dialog
from ._workers import Runner


class PredictWidget(Dock, QWidget):
    """Choose a model version, predict the current image, tune post-processing live, evaluate."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.probabilities: np.ndarray | None = None  # of the last prediction, for live post-processing
        self.result_for: str | None = None  # the image layer it belongs to
        self.result_scale = None
        self.result_record = None  # the store image predicted, when the layer is linked to it
        self.evaluation = None
        self._info = None  # the chosen ModelVersion
        self.n_objects = 0
        self.predict_runner = Runner(
            on_yield=self._on_progress, on_return=self._on_predicted, on_error=self._on_error, on_finish=self._on_finish, owner=self
        )
        self.eval_runner = Runner(
            on_yield=self._on_progress, on_return=self._on_evaluated, on_error=self._on_error, on_finish=self._on_finish, owner=self
        )
        self._pp_timer = QTimer(self)
        self._pp_timer.setSingleShot(True)
        self._pp_timer.setInterval(150)
        self._pp_timer.timeout.connect(lambda: self.apply_postprocess())
        self.class_runner = Runner(on_return=self._on_classified, on_error=self._on_error, on_finish=self._on_finish, owner=self)
        self.pp_runner = Runner(on_return=self._show_objects, on_error=self._on_error, on_finish=self._pp_finished, owner=self)
        self._pp_pending = False
        self._pp_source = None
        self.objects = None  # the shown Objects

        lay = scrolled(self)
        self.project_box = ProjectBox(self.viewer)
        lay.addWidget(self.project_box)
        form = QFormLayout()
        row = QHBoxLayout()
        self.version_combo = QComboBox()
        self.refresh_btn = QPushButton("↻")
        self.refresh_btn.setMaximumWidth(30)
        self.refresh_btn.setToolTip("Re-read the model versions of the project")
        row.addWidget(self.version_combo, 1)
        row.addWidget(self.refresh_btn)
        form.addRow("Model:", row)
        self.layer_combo = QComboBox()
        form.addRow("Image:", self.layer_combo)
        self.quality = QCheckBox("quality (50 % tile overlap, flip averaging; slower)")
        form.addRow(self.quality)
        remember("predict/quality", self.quality)
        self.probs_check = QCheckBox("also show the probability image")
        form.addRow(self.probs_check)
        self.unsure_check = QCheckBox("also show where the model is unsure")
        form.addRow(self.unsure_check)
        lay.addLayout(form)
        row = QHBoxLayout()
        self.predict_btn = QPushButton("Predict")
        self.predict_btn.setToolTip("Run the chosen model on the chosen image (the window stays usable)")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        row.addWidget(self.predict_btn)
        row.addWidget(self.cancel_btn)
        lay.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        lay.addWidget(self.progress)

        self.pp = PostprocessBox()
        # the controls, under the names scripts and tests use
        self.threshold, self.erosion, self.min_size = self.pp.threshold, self.pp.erosion, self.pp.min_size
        self.split, self.seed_distance, self.tuned_btn = self.pp.split, self.pp.seed_distance, self.pp.tuned_btn
        lay.addWidget(self.pp)
        self.correct_box, self.suggest_box = CorrectBox(self), SuggestBox(self)  # correct, improve, annotate next
        lay.addWidget(self.correct_box)
        lay.addWidget(self.suggest_box)

        box = QGroupBox("Evaluate on held-out images")
        ef = QVBoxLayout(box)
        row = QHBoxLayout()
        self.eval_split = QComboBox()
        self.eval_split.addItems(["test", "validation", "train"])
        self.eval_btn = QPushButton("Evaluate")
        self.eval_btn.setToolTip("Compare the model's objects with the painted ground truth of these images")
        self.export_btn = QPushButton("Export CSV…")
        self.export_btn.setEnabled(False)
        row.addWidget(QLabel("images:"))
        row.addWidget(self.eval_split)
        row.addWidget(self.eval_btn)
        row.addWidget(self.export_btn)
        ef.addLayout(row)
        self.summary_label = QLabel("")
        self.summary_label.setWordWrap(True)
        ef.addWidget(self.summary_label)
        self.legend = QLabel(ERROR_LEGEND)
        self.legend.setToolTip("The colours of the error layers (colour-blind safe); hover an object to read its kind")
        self.legend.setVisible(False)
        ef.addWidget(self.legend)
        self.metrics_table = FrameTable()
        ef.addWidget(self.metrics_table)
        self.confusion_table = FrameTable()  # a classifier's confusion matrix (rows: true class)
        self.confusion_table.setVisible(False)
        ef.addWidget(self.confusion_table)
        lay.addWidget(box, 1)
        self.status = status_label()
        lay.addWidget(self.status)

        self.refresh_btn.clicked.connect(self.refresh_versions)
        self.project_box.changed.connect(lambda url: self.refresh_versions())
        self.project_box.session.versions_changed.connect(self.refresh_versions)
        self.version_combo.currentIndexChanged.connect(self._version_chosen)
        self.predict_btn.clicked.connect(lambda: self.predict())
        self.cancel_btn.clicked.connect(self.cancel)
        self.eval_btn.clicked.connect(lambda: self.evaluate())
        self.export_btn.clicked.connect(self._export_dialog)
        self.tuned_btn.clicked.connect(lambda: self.use_tuned_settings())
        self.pp.changed.connect(self._pp_changed)
        self.viewer.layers.events.inserted.connect(self._layers_changed)
        self.viewer.layers.events.removed.connect(self._layers_changed)
        self.viewer.layers.selection.events.active.connect(self._active_changed)
        self._layers_changed()
        self.refresh_versions()

    # ------------------------------------------------------------------ choices
    def refresh_versions(self) -> None:
        self.version_combo.blockSignals(True)
        try:
            filled = fill_versions(self.version_combo, self.project_box, self.status)
        finally:
            self.version_combo.blockSignals(False)
        if filled:
            self._version_chosen()

    def _version_chosen(self, index=None) -> None:
        version = self.version_combo.currentData()
        self._info = None
        if version:
            try:
                self._info = self.project_box.project().model_version(version)
            except Exception as err:  # noqa: BLE001
                report_error(err, self.status)
        self.pp.show_model(self._info)
        for box in (self.pp, self.correct_box, self.suggest_box, self.unsure_check):
            box.setVisible(self._info is None or self._info.task == "segmentation")
        if self._info is not None and self._info.tuning is not None:
            self.use_tuned_settings()

    @guarded()
    def use_tuned_settings(self):
        """Fill the controls with the model version's tuned post-processing (the button says which)."""
        cfg = self._info.postprocess if self._info is not None else None
        if cfg is not None:
            self.set_postprocess(cfg)
        return cfg

    def _layers_changed(self, event=None) -> None:
        current = self.layer_combo.currentText()
        self.layer_combo.clear()
        for layer in self.viewer.layers:
            if is_image(layer) and not layer.name.endswith((" probability", " uncertainty")):
                self.layer_combo.addItem(layer.name)
        if current:
            self.layer_combo.setCurrentText(current)

    def _active_changed(self, event=None) -> None:
        layer = self.viewer.layers.selection.active
        if layer is not None and is_image(layer) and self.layer_combo.findText(layer.name) >= 0:
            self.layer_combo.setCurrentText(layer.name)

    def predict_config(self):
        from ..core.infer import PredictConfig

        return PredictConfig.quality() if self.quality.isChecked() else PredictConfig()

    def postprocess_config(self):
        """The :class:`PostprocessConfig` of the controls (other settings from the model version's)."""
        return self.pp.config(self._info.postprocess if self._info is not None else None)

    def set_postprocess(self, cfg) -> None:
        self.pp.set_config(cfg)

    # ------------------------------------------------------------------ prediction
    @guarded()
    def predict(self, layer=None):
        """Predict an image layer in a thread worker (``iter_predict``); returns the worker."""
        from ..core.errors import DataError, SegBoxError
        from ..core.infer import iter_predict

        if self.predict_runner.running or self.eval_runner.running:
            raise SegBoxError("A prediction or evaluation is running: wait for it or press Cancel.")
        project = self.project_box.project()
        version = self.version_combo.currentData()
        if not version:
            raise DataError("The project has no model version yet: train one in the Train panel first.")
        if layer is None:
            if not self.layer_combo.currentText():
                raise DataError("No image to predict: open one (File > Open Files…) or add one in the Annotate panel.")
            layer = self.viewer.layers[self.layer_combo.currentText()]
        if isinstance(layer, str):
            layer = self.viewer.layers[layer]
        if self.layer_combo.findText(layer.name) >= 0:
            self.layer_combo.setCurrentText(layer.name)
        image = np.array(layer.data)  # a copy the worker owns
        if self._info is not None and self._info.task == "classification":
            from ._classify_results import classify_layer

            self._busy(True)
            return self.class_runner.start(classify_layer, image, project, version, name=layer.name)
        self.result_for = layer.name
        self.result_scale = tuple(layer.scale)
        meta = layer.metadata or {}
        linked_here = linked(layer, project.url) and meta[IMAGE_KEY] in project.image_names()
        self.result_record = project.image_record(meta[IMAGE_KEY]) if linked_here else None  # a volume: 3D objects
        self._busy(True)
        report_info(f"Predicting {layer.name} with model version {version}…", self.status)
        return self.predict_runner.start(iter_predict, image, project, version=version, config=self.predict_config())

    def cancel(self) -> None:
        for runner in (self.predict_runner, self.eval_runner, self.pp_runner, self.class_runner):
            runner.stop()

    def _on_classified(self, table) -> None:
        from ._classify_results import class_line

        self.classification = table
        self.summary_label.setText(class_line(table))
        report_info(class_line(table), self.status)

    def _busy(self, busy: bool) -> None:
        self.predict_btn.setEnabled(not busy)
        self.eval_btn.setEnabled(not busy)
        self.cancel_btn.setEnabled(busy)
        if busy:
            self.progress.setRange(0, 0)

    def _on_progress(self, event) -> None:
        from ..core.events import ItemDone, Message, Progress

        if isinstance(event, Progress) and event.total:
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.done)
            self.progress.setFormat(f"{event.stage} %v/%m")
        elif isinstance(event, ItemDone):
            self.summary_label.setText(f"evaluated {event.name} ({event.index + 1}/{event.total})")
        elif isinstance(event, Message):
            report_info(event.text, self.status)

    def _on_predicted(self, probabilities) -> None:
        self.probabilities = probabilities
        self.objects = None
        self.apply_postprocess()
        if self.probs_check.isChecked():
            fg = 1.0 - probabilities[..., 0, :, :] if probabilities.shape[-3] > 1 else probabilities[..., 0, :, :]
            self._set_layer(
                "image",
                f"{self.result_for} probability",
                fg.astype(np.float32),
                colormap="magma",
                opacity=0.5,
                blending="additive",
                contrast_limits=(0, 1),
            )
        if self.unsure_check.isChecked():
            self.correct_box.show_uncertainty(probabilities)
        report_info(f"Predicted {self.result_for}; finding its objects…", self.status)

    def _on_error(self, err) -> None:
        from ..core.errors import CancelledError

        if isinstance(err, CancelledError):
            report_info("Cancelled.", self.status)
        else:
            report_error(err, self.status)

    def _on_finish(self) -> None:
        self._busy(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)

    # ------------------------------------------------------------------ post-processing
    def _pp_changed(self, *args) -> None:
        if self.probabilities is not None:
            self._pp_timer.start()  # debounced: a dragged slider post-processes once it rests

    def apply_postprocess(self):
        """Post-process the last prediction with the controls' settings in a worker (no network);
        the layers update when it is done. A change meanwhile runs once more after it."""
        if self.probabilities is None:
            return None
        if self.pp_runner.running:
            self._pp_pending = True
            return None
        self._pp_pending = False
        self._pp_source = self.probabilities
        self.pp.count_label.setText("finding objects…")
        facts = self._info.output_facts if self._info is not None else {}  # facts of the model, not settings
        return self.pp_runner.start(iter_objects, self.probabilities, self.postprocess_config(), record=self.result_record, **facts)

    def _pp_finished(self) -> None:
        if self._pp_pending:
            self.apply_postprocess()

    def _show_objects(self, objects) -> None:
        """Show post-processed objects: the labels (with their classes as features) and outlines."""
        import pandas as pd

        if self._pp_source is not self.probabilities:
            return  # of an earlier prediction: the new one is being post-processed next
        self.objects = objects
        name = self.result_for
        names = list(self._info.class_names) if self._info is not None else []
        if objects.config.instances == "none":
            layer = self._set_layer("labels", f"{name} prediction", objects.semantic, opacity=0.5)
        else:
            layer = self._set_layer("labels", f"{name} prediction", objects.instances, opacity=0.5)
            ids = sorted(objects.classes)
            layer.features = pd.DataFrame({"index": np.asarray(ids, int), "class": [_class_word(names, objects.classes[i]) for i in ids]})
        self.n_objects = objects.count
        if objects.instances.ndim == 2:
            self._show_outlines(f"{name} outlines", objects.paths)
        self.viewer.layers.selection.active = layer
        text = f"{name}: {self.n_objects} objects"
        self.pp.count_label.setText(text)
        report_info(text + " (move the sliders to update them).", self.status)
        self.correct_box.objects_shown()

    def _show_outlines(self, name: str, paths) -> None:
        """Outlines as closed paths (napari draws paths far faster than filled polygons), updated in place."""
        shapes = self._find(name)
        if shapes is not None and len(paths) and np.allclose(shapes.scale[-2:], self.result_scale[-2:]):
            shapes.data = [(p, "path") for p in paths]
        elif shapes is not None:
            self.viewer.layers.remove(shapes)
            shapes = None
        if shapes is None and len(paths):
            self.viewer.add_shapes(paths, shape_type="path", name=name, edge_color="yellow", edge_width=1, scale=self.result_scale[-2:])

    def _find(self, name):
        return self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401 - a LayerList, not a dict

    def _set_layer(self, kind: str, name: str, data, **kwargs):
        layer = self._find(name)
        if layer is not None and (is_labels(layer) if kind == "labels" else is_image(layer)) and np.shape(layer.data) == np.shape(data):
            layer.data = data
            return layer
        if layer is not None:
            self.viewer.layers.remove(layer)
        add = self.viewer.add_labels if kind == "labels" else self.viewer.add_image
        scale = ((1.0,) * np.ndim(data) + tuple(self.result_scale))[-np.ndim(data) :]  # a plane of a volume: its y, x
        return add(data, name=name, scale=scale, **kwargs)

    # ------------------------------------------------------------------ evaluation
    @guarded()
    def evaluate(self, split: str | None = None):
        """``iter_evaluate_project(project, version, split=..., postprocess=...)`` in a thread worker."""
        from ..core.errors import DataError, SegBoxError
        from ..workflows.evaluate import iter_evaluate_project

        if self.predict_runner.running or self.eval_runner.running:
            raise SegBoxError("A prediction or evaluation is running: wait for it or press Cancel.")
        project = self.project_box.project()
        version = self.version_combo.currentData()
        if not version:
            raise DataError("The project has no model version yet: train one in the Train panel first.")
        split = split or self.eval_split.currentText()
        self._busy(True)
        self.export_btn.setEnabled(False)
        report_info(f"Evaluating model version {version} on the {split} images…", self.status)
        if self._info is not None and self._info.task == "classification":
            from ._classify_results import evaluate_classification

            return self.eval_runner.start(evaluate_classification, project, version, split=split)
        return self.eval_runner.start(
            iter_evaluate_project,
            project,
            version,
            split=split,
            postprocess=self.postprocess_config(),
            predict_config=self.predict_config(),
            keep_error_maps=True,
        )

    def _on_evaluated(self, ev) -> None:
        self.evaluation = ev
        if not hasattr(ev, "error_maps"):  # a classifier's: per-class table, confusion matrix, mistakes layer
            from ._classify_results import show_classifier_evaluation

            return show_classifier_evaluation(self, ev)
        self.summary_label.setText(evaluation_summary(ev))
        self.metrics_table.set_frame(evaluation_table(ev))
        self.export_btn.setEnabled(True)
        show_error_maps(self.viewer, self.project_box.project(), ev)
        self.legend.setVisible(bool(ev.error_maps))
        report_info(f"Evaluation {ev.id} saved in the project (results/evaluations/).", self.status)

    def _export_dialog(self):
        folder = save_csv_dialog(self)
        if folder:
            self.export_csv(folder)

    @guarded()
    def export_csv(self, folder: str) -> list[str]:
        """``Evaluation.to_csv(folder)``: per_image, per_class, objects and confusion tables."""
        from ..core.errors import DataError

        if self.evaluation is None:
            raise DataError("Nothing to export yet: press Evaluate first.")
        paths = self.evaluation.to_csv(folder) if hasattr(self.evaluation, "to_csv") else self.evaluation.save(folder)
        report_info(f"Wrote {len(paths)} CSV files to {folder}.", self.status, notify=True)
        return paths


def _class_word(names: list[str], value: int) -> str:
    return names[value - 1] if 0 < value <= len(names) else f"class {value}"
