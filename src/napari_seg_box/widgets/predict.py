"""Predict & evaluate: tiled prediction of an image layer, live post-processing, evaluation on test images.

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
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._common import ProjectBox, Runner, fill_versions, guarded, report_error, report_info, status_label
from ._evaluation import evaluation_summary, evaluation_table, show_error_maps
from ._tables import FrameTable, save_csv_dialog


class PredictWidget(QWidget):
    """Choose a model version, predict the current image, tune post-processing live, evaluate."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.probabilities: np.ndarray | None = None  # of the last prediction, for live post-processing
        self.result_for: str | None = None  # the image layer it belongs to
        self.result_scale = None
        self.evaluation = None
        self._info = None  # the chosen ModelVersion
        self.n_objects = 0
        self.predict_runner = Runner(
            on_yield=self._on_progress, on_return=self._on_predicted, on_error=self._on_error, on_finish=self._on_finish
        )
        self.eval_runner = Runner(
            on_yield=self._on_progress, on_return=self._on_evaluated, on_error=self._on_error, on_finish=self._on_finish
        )
        self._pp_timer = QTimer(self)
        self._pp_timer.setSingleShot(True)
        self._pp_timer.setInterval(150)
        self._pp_timer.timeout.connect(lambda: self.apply_postprocess())

        lay = QVBoxLayout(self)
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
        self.probs_check = QCheckBox("also show the probability image")
        form.addRow(self.probs_check)
        lay.addLayout(form)
        row = QHBoxLayout()
        self.predict_btn = QPushButton("Predict")
        self.predict_btn.setToolTip("iter_predict(image, project, version=...) in a thread, then postprocess(...)")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        row.addWidget(self.predict_btn)
        row.addWidget(self.cancel_btn)
        lay.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        lay.addWidget(self.progress)

        box = QGroupBox("Post-processing (updates the labels live)")
        pf = QFormLayout(box)
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.05, 0.95)
        self.threshold.setSingleStep(0.05)
        self.threshold.setToolTip("A pixel is an object when its probability of not being background is at least this")
        pf.addRow("Threshold:", self.threshold)
        self.erosion = QSpinBox()
        self.erosion.setRange(0, 30)
        self.erosion.setToolTip("Erode by this many pixels before labelling (separates touching objects), then grow back")
        pf.addRow("Erosion (px):", self.erosion)
        self.min_size = QSpinBox()
        self.min_size.setRange(0, 100000)
        pf.addRow("Minimum size (px):", self.min_size)
        self.split = QCheckBox("split touching objects (watershed)")
        pf.addRow(self.split)
        self.seed_distance = QSpinBox()
        self.seed_distance.setRange(1, 200)
        self.seed_distance.setToolTip("Smallest distance between the centres of two touching objects (watershed seeds)")
        pf.addRow("Seed distance (px):", self.seed_distance)
        self.tuned_btn = QPushButton("Use the model's tuned settings")
        from ..core.postprocess import PostprocessConfig

        self.set_postprocess(PostprocessConfig())  # the core's defaults until a model version is chosen
        pf.addRow(self.tuned_btn)
        lay.addWidget(box)

        box = QGroupBox("Evaluate on held-out images")
        ef = QVBoxLayout(box)
        row = QHBoxLayout()
        self.eval_split = QComboBox()
        self.eval_split.addItems(["test", "validation", "train"])
        self.eval_btn = QPushButton("Evaluate")
        self.eval_btn.setToolTip("iter_evaluate_project(project, version, split=..., postprocess=...) in a thread")
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
        self.metrics_table = FrameTable()
        ef.addWidget(self.metrics_table)
        lay.addWidget(box, 1)
        self.status = status_label()
        lay.addWidget(self.status)

        self.refresh_btn.clicked.connect(self.refresh_versions)
        self.project_box.changed.connect(lambda url: self.refresh_versions())
        self.version_combo.currentIndexChanged.connect(self._version_chosen)
        self.predict_btn.clicked.connect(lambda: self.predict())
        self.cancel_btn.clicked.connect(self.cancel)
        self.eval_btn.clicked.connect(lambda: self.evaluate())
        self.export_btn.clicked.connect(self._export_dialog)
        self.tuned_btn.clicked.connect(lambda: self.use_tuned_settings())
        for w in (self.threshold, self.erosion, self.min_size, self.seed_distance):
            w.valueChanged.connect(self._pp_changed)
        self.split.toggled.connect(self._pp_changed)
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
        if not version:
            self._info = None
            return
        try:
            self._info = self.project_box.project().model_version(version)
        except Exception as err:  # noqa: BLE001
            report_error(err, self.status)
            return
        if self._info.tuning is not None:
            self.use_tuned_settings()

    @guarded()
    def use_tuned_settings(self):
        """Fill the controls with the model version's post-processing (``ModelVersion.postprocess``: tuned, else defaults)."""
        cfg = self._info.postprocess if self._info is not None else None
        if cfg is not None:
            self.set_postprocess(cfg)
        return cfg

    def _layers_changed(self, event=None) -> None:
        current = self.layer_combo.currentText()
        self.layer_combo.clear()
        for layer in self.viewer.layers:
            if layer._type_string == "image" and not layer.name.endswith(" probability"):
                self.layer_combo.addItem(layer.name)
        if current:
            self.layer_combo.setCurrentText(current)

    def _active_changed(self, event=None) -> None:
        layer = self.viewer.layers.selection.active
        if layer is not None and layer._type_string == "image" and self.layer_combo.findText(layer.name) >= 0:
            self.layer_combo.setCurrentText(layer.name)

    def predict_config(self):
        from ..core.infer import PredictConfig

        return PredictConfig.quality() if self.quality.isChecked() else PredictConfig()

    def postprocess_config(self):
        """The :class:`PostprocessConfig` of the controls."""
        from ..core.postprocess import PostprocessConfig

        base = self._info.postprocess if self._info is not None else PostprocessConfig()
        return base.replace(
            threshold=round(float(self.threshold.value()), 4),
            erosion=int(self.erosion.value()),
            min_size=int(self.min_size.value()),
            instances="watershed" if self.split.isChecked() else "components",
            seed_distance=int(self.seed_distance.value()),
        )

    def set_postprocess(self, cfg) -> None:
        widgets = (self.threshold, self.erosion, self.min_size, self.seed_distance, self.split)
        for w in widgets:
            w.blockSignals(True)
        self.threshold.setValue(cfg.threshold)
        self.erosion.setValue(cfg.erosion)
        self.min_size.setValue(cfg.min_size)
        self.seed_distance.setValue(cfg.seed_distance)
        self.split.setChecked(cfg.instances == "watershed")
        for w in widgets:
            w.blockSignals(False)
        self._pp_changed()

    # ------------------------------------------------------------------ prediction
    @guarded()
    def predict(self, layer=None):
        """Predict an image layer in a thread worker (``iter_predict``); returns the worker."""
        from ..core.errors import DataError, SegBoxError
        from ..core.infer import iter_predict

        if self.predict_runner.running or self.eval_runner.running:
            raise SegBoxError("A prediction or evaluation is running: wait for it or cancel it.")
        project = self.project_box.project()
        version = self.version_combo.currentData()
        if not version:
            raise DataError("The project has no model version yet: train one in the Train widget first.")
        if layer is None:
            if not self.layer_combo.currentText():
                raise DataError("No image layer to predict: open an image first.")
            layer = self.viewer.layers[self.layer_combo.currentText()]
        if isinstance(layer, str):
            layer = self.viewer.layers[layer]
        if self.layer_combo.findText(layer.name) >= 0:
            self.layer_combo.setCurrentText(layer.name)
        image = np.array(layer.data)  # a copy the worker owns
        self.result_for = layer.name
        self.result_scale = tuple(layer.scale[-2:])
        self._busy(True)
        report_info(f"Predicting {layer.name} with model version {version}…", self.status)
        return self.predict_runner.start(iter_predict, image, project, version=version, config=self.predict_config())

    def cancel(self) -> None:
        self.predict_runner.stop()
        self.eval_runner.stop()

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
        report_info(f"Predicted {self.result_for}: {self.n_objects} objects (change the post-processing to update them).", self.status)

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
            self._pp_timer.start()

    @guarded()
    def apply_postprocess(self):
        """``postprocess(probabilities, config)`` of the last prediction into its layers (no network)."""
        from ..core.postprocess import outlines, postprocess

        if self.probabilities is None:
            return None
        cfg = self.postprocess_config()
        boundary = self._info is not None and self._info.boundary  # a fact of the model, not a setting
        probs = self.probabilities
        if probs.ndim == 4:  # a stack: slice by slice
            results = [postprocess(p, cfg, boundary=boundary) for p in probs]
            instances = np.stack([r.instances for r in results])
            semantic = np.stack([r.semantic for r in results])
            classes = {}
            for r in results:
                classes.update(r.instance_classes)
        else:
            res = postprocess(probs, cfg, boundary=boundary)
            instances, semantic, classes = res.instances, res.semantic, res.instance_classes
        self.semantic = semantic
        self.instances = instances
        name = self.result_for
        names = list(self._info.class_names) if self._info is not None else []
        if cfg.instances == "none":
            layer = self._set_layer("labels", f"{name} prediction", semantic, opacity=0.5)
            self.n_objects = 0
        else:
            layer = self._set_layer("labels", f"{name} prediction", instances, opacity=0.5)
            ids = np.unique(instances[instances > 0]) if instances.ndim == 2 else np.array(sorted(classes))
            import pandas as pd

            values = [classes.get(int(i), 2) for i in ids]
            layer.features = pd.DataFrame(
                {"index": ids.astype(int), "class": [names[v - 1] if v - 1 < len(names) else f"class {v}" for v in values]}
            )
            self.n_objects = int(len(ids))
        if instances.ndim == 2:
            polys, _ = outlines(instances)
            shapes = self._find(f"{name} outlines")
            if shapes is not None:
                self.viewer.layers.remove(shapes)
            if polys:
                self.viewer.add_shapes(
                    polys,
                    shape_type="polygon",
                    name=f"{name} outlines",
                    edge_color="yellow",
                    face_color="transparent",
                    edge_width=1,
                    scale=self.result_scale,
                )
        self.viewer.layers.selection.active = layer
        return instances

    def _find(self, name):
        return self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401 - a LayerList, not a dict

    def _set_layer(self, kind: str, name: str, data, **kwargs):
        layer = self._find(name)
        if layer is not None and layer._type_string == kind and np.shape(layer.data) == np.shape(data):
            layer.data = data
            return layer
        if layer is not None:
            self.viewer.layers.remove(layer)
        add = self.viewer.add_labels if kind == "labels" else self.viewer.add_image
        return add(data, name=name, scale=self.result_scale, **kwargs)

    # ------------------------------------------------------------------ evaluation
    @guarded()
    def evaluate(self, split: str | None = None):
        """``iter_evaluate_project(project, version, split=..., postprocess=...)`` in a thread worker."""
        from ..core.errors import DataError, SegBoxError
        from ..workflows.evaluate import iter_evaluate_project

        if self.predict_runner.running or self.eval_runner.running:
            raise SegBoxError("A prediction or evaluation is running: wait for it or cancel it.")
        project = self.project_box.project()
        version = self.version_combo.currentData()
        if not version:
            raise DataError("The project has no model version yet: train one in the Train widget first.")
        split = split or self.eval_split.currentText()
        self._busy(True)
        self.export_btn.setEnabled(False)
        report_info(f"Evaluating model version {version} on the {split} images…", self.status)
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
        self.summary_label.setText(evaluation_summary(ev))
        self.metrics_table.set_frame(evaluation_table(ev))
        self.export_btn.setEnabled(True)
        show_error_maps(self.viewer, self.project_box.project(), ev)
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
        paths = self.evaluation.to_csv(folder)
        report_info(f"Wrote {len(paths)} CSV files to {folder}.", self.status, notify=True)
        return paths
