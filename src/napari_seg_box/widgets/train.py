"""Train: a U-Net on the project's annotations, with live curves; the run belongs to the window.

One core call: ``iter_train(project, TrainConfig(...), cancel=event)`` (or ``train_model(...)`` in a
script), run by the window's session (:mod:`._training`), so that closing this panel does not lose
the run and reopening it shows the run again. The panel says what each phase is, how long is left
(from the learning steps only), the settings chosen automatically, and the model versions.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QComboBox, QFormLayout, QHBoxLayout, QLabel, QProgressBar, QPushButton, QSpinBox, QWidget

from ._common import Dock, ProjectBox, guard_dock_close, remember, scrolled
from ._libraries import device_text
from ._messages import ask, guarded, report_error, report_info, status_label
from ._model_files import ModelFilesRow
from ._plots import PlotCanvas
from ._session import Session
from ._tables import FrameTable
from ._train_form import CURVES_HELP, TrainSettings, draw_history, fmt_duration, versions_frame

ONE_CLASS_CHOICE = "Unpainted pixels are background"


class TrainWidget(Dock, QWidget):
    """Choose a model and the number of epochs, press Start; watch the curves; Stop keeps the best epoch."""

    def __init__(self, napari_viewer, parent=None):
        from superqt import QCollapsible

        from ..core.models import ENCODERS
        from ..core.train.config import TrainConfig

        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = Session.of(napari_viewer)
        self.run = None  # the TrainingRun shown
        self._task = "segmentation"  # the current project's: which models the panel offers
        d = TrainConfig()

        lay = scrolled(self)
        self.project_box = ProjectBox(self.viewer)
        lay.addWidget(self.project_box)
        form = QFormLayout()
        self.model_combo = QComboBox()
        for key, words in ENCODERS.items():
            self.model_combo.addItem(words, key)
        self.model_combo.setCurrentIndex(self.model_combo.findData(d.encoder))
        form.addRow("Model:", self.model_combo)
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 2000)
        self.epochs.setValue(d.epochs)
        self.epochs.setToolTip("How many passes over the annotations: the one setting you must choose")
        form.addRow("Epochs:", self.epochs)
        self.device_label = QLabel(device_text() or "loading the libraries…")
        form.addRow("Device:", self.device_label)
        lay.addLayout(form)
        self.advanced = QCollapsible("Advanced")
        self.settings_form = TrainSettings()
        self.advanced.addWidget(self.settings_form)
        for key, control in (("model", self.model_combo), ("epochs", self.epochs), ("size", self.settings_form.size_combo)):
            remember(f"train/{key}", control)  # as the user left them last time
        lay.addWidget(self.advanced)

        row = QHBoxLayout()
        self.start_btn = QPushButton("Start training")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setToolTip("Stop after the current step; the best epoch so far is saved as a model version")
        self.resume_btn = QPushButton("Resume")
        self.resume_btn.setToolTip(
            "Continue the last training that was stopped or interrupted, from its last epoch, to the epochs it was "
            "started with (or to Epochs, if you raised it)"
        )
        for b in (self.start_btn, self.stop_btn, self.resume_btn):
            row.addWidget(b)
        lay.addLayout(row)
        self.update_btn = QPushButton("Update the model with my corrections")
        self.update_btn.setToolTip(
            "Fine-tune the latest model version on the annotations and corrections saved since it: its settings, "
            "a short schedule (minutes), the new annotations sampled more often. The new version is compared with it."
        )
        lay.addWidget(self.update_btn)
        self.phase_label = QLabel("")
        self.phase_label.setWordWrap(True)
        lay.addWidget(self.phase_label)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("%p%")
        lay.addWidget(self.progress)
        self.eta_label = QLabel("")
        lay.addWidget(self.eta_label)
        self.settings_label = QLabel("")
        self.settings_label.setWordWrap(True)
        lay.addWidget(self.settings_label)
        self.plot = PlotCanvas(self.viewer, nrows=1, ncols=3, height=2.4)
        lay.addWidget(self.plot)
        help_label = QLabel(CURVES_HELP)
        help_label.setWordWrap(True)
        help_label.setStyleSheet("font-size: 11px; color: gray;")
        lay.addWidget(help_label)
        lay.addWidget(QLabel("Model versions:"))
        self.versions = FrameTable()
        self.versions.setMaximumHeight(150)
        lay.addWidget(self.versions)
        self.status = status_label()
        self.model_files = ModelFilesRow(
            self.selected_version, self.project_box.project, self.project_box.session.versions_changed.emit, self.status
        )
        lay.addWidget(self.model_files)
        lay.addWidget(self.status)

        self.start_btn.clicked.connect(lambda: self.start())
        self.stop_btn.clicked.connect(self.stop)
        self.resume_btn.clicked.connect(lambda: self.resume())
        self.update_btn.clicked.connect(lambda: self.update_model())
        self.settings_form.preview_btn.clicked.connect(lambda: self.preview_augmentation())
        self.project_box.changed.connect(lambda url: self.refresh_versions())
        self.project_box.session.versions_changed.connect(self.refresh_versions)
        self.session.device_ready.connect(self.device_label.setText)
        self.session.training_started.connect(self.attach)
        self.refresh_versions()
        if self.session.training is not None:  # reopened while (or after) a run: show it
            self.attach(self.session.training)
        else:
            self._draw_history()
            self._buttons()

    # ------------------------------------------------------------------ docking
    def on_docked(self) -> None:
        guard_dock_close(self, self._may_close)

    def _may_close(self) -> bool:
        if not self.session.training_running:
            return True
        choice = ask(
            self,
            "Training is running",
            "Training goes on if you close this panel (reopen Train to see it again).",
            ["Close, keep training", "Stop training and close", "Cancel"],
        )
        if choice == 1:
            self.session.training.stop()
        return choice in (0, 1)

    # ------------------------------------------------------------------ settings
    def config(self):
        """The :class:`TrainConfig` the panel's fields describe (raises ConfigError when invalid); a
        :class:`~..core.classify.ClassifyConfig` for a classification project."""
        if self._task == "classification":
            from ..core.classify import ClassifyConfig

            return ClassifyConfig(epochs=int(self.epochs.value()), network=self.model_combo.currentData())
        from ..core.train import TrainConfig

        values = {"epochs": int(self.epochs.value()), "encoder": self.model_combo.currentData(), **self.settings_form.values()}
        return TrainConfig(**values)

    def _show_task(self, task: str) -> None:
        """The models of the project's task (U-Net encoders, or classifier networks), and the advanced
        U-Net settings only for segmentation."""
        if task == self._task:
            return
        self._task = task
        if task == "classification":
            from ..core.classify.config import NETWORKS as models
        else:
            from ..core.models import ENCODERS as models
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for key, words in models.items():
            self.model_combo.addItem(words, key)
        self.model_combo.setCurrentIndex(0 if task == "classification" else self.model_combo.findData("resnet34"))
        self.model_combo.blockSignals(False)
        self.advanced.setVisible(task != "classification")
        self.update_btn.setVisible(task != "classification")  # fine-tuning on corrections: U-Nets

    def set_config(self, **values) -> None:
        """Fill the fields from TrainConfig-style values (e.g. for the console or tests)."""
        if "encoder" in values:
            self.model_combo.setCurrentIndex(self.model_combo.findData(values["encoder"]))
        if "epochs" in values:
            self.epochs.setValue(int(values["epochs"]))
        self.settings_form.set_values(values)

    def selected_version(self) -> str | None:
        """The version picked in the versions table (None: the newest)."""
        rows = self.versions.selectionModel().selectedRows()
        return str(self.versions.row_record(rows[0].row())["version"]) if rows else None

    def refresh_versions(self) -> None:
        if not self.project_box.url:
            return
        try:
            project = self.project_box.project()
            self._show_task(project.task)
            frame = versions_frame(project)
            from ..core.train import unfinished_runs

            self._resumable = bool(unfinished_runs(project))
        except Exception as err:  # noqa: BLE001
            report_error(err, self.status)
            return
        self.versions.set_frame(frame)
        combo = self.settings_form.finetune_combo
        current = combo.currentData()
        combo.clear()
        combo.addItem("no (train from scratch)", None)
        for v in frame["version"]:
            combo.addItem(v, v)
        combo.setCurrentIndex(max(0, combo.findData(current)))
        self._buttons()

    # ------------------------------------------------------------------ augmentation preview
    @guarded()
    def preview_augmentation(self, n: int = 4):
        """Augmented samples of the first annotated training image, as layers."""
        from ..core.augment import preview_augmentations
        from ..core.errors import DataError
        from ..layers import class_colormap

        project = self.project_box.project()
        name = next((r.name for r in project.images() if r.has_labels and r.split != "test" and not r.is_stack), None)
        if name is None:
            raise DataError("No annotated training image yet: paint some classes in the Annotate panel first.")
        preset = self.settings_form.aug_combo.currentText()
        seed = int(self.settings_form.seed.value())
        samples = preview_augmentations(project.get_image(name), project.get_labels(name), preset=preset, n=n, seed=seed)
        images = np.stack([img if img.shape[-1] != 1 else img[..., 0] for img, _ in samples])
        labels = np.stack([lab for _, lab in samples]).astype(np.uint8)
        title = f"augmented ({preset})"
        for layer_name in (title, f"{title} labels"):
            if layer_name in self.viewer.layers:
                self.viewer.layers.remove(layer_name)
        self.viewer.add_image(images, name=title, rgb=images.ndim == 4 and images.shape[-1] in (3, 4))
        self.viewer.add_labels(labels, name=f"{title} labels", colormap=class_colormap(project), opacity=0.4)
        report_info(f"{n} augmented samples of {name} ({preset}): move the slider to see each.", self.status)
        return samples

    # ------------------------------------------------------------------ running
    @guarded()
    def start(self, *, resume: bool = False):
        """Start a training of the current project with the panel's settings (the window's session runs it)."""
        project = self.project_box.project()
        cfg = self.config()
        if resume:
            from ..core.errors import StoreError
            from ..core.train import unfinished_runs

            if not unfinished_runs(project):
                raise StoreError("There is no stopped training to resume in this project: press Start training.")
        length = f"about {cfg.minutes:g} minute(s)" if getattr(cfg, "minutes", None) else f"{cfg.epochs} epoch(s)"
        model = getattr(cfg, "encoder", None) or cfg.network
        report_info(("Resuming the last training" if resume else f"Training {model} for {length}") + "…", self.status)
        return self.session.start_training(project, cfg, resume=resume)

    @guarded()
    def update_model(self):
        """Fine-tune the latest version on the corrections saved since it (``Session.update_model``)."""
        project = self.project_box.project()
        run = self.session.update_model(project)
        report_info(
            f"Updating model version {run.config.finetune_from} with the corrections ({run.config.epochs} short epochs)…", self.status
        )
        return run

    def resume(self):
        """Continue the newest stopped or interrupted training of the project (more epochs if asked)."""
        return self.start(resume=True)

    def stop(self) -> None:
        """Ask the run to stop; the best epoch so far becomes a model version."""
        if self.session.training_running:
            self.session.training.stop()
            self.stop_btn.setEnabled(False)
            report_info("Stopping after the current step…", self.status)

    @property
    def runner(self):
        return self.run.runner if self.run is not None else None

    @property
    def worker(self):
        return self.runner.worker if self.runner is not None else None

    @property
    def history(self) -> list[dict]:
        return self.run.history if self.run is not None else []

    @property
    def last_version(self) -> str | None:
        return self.run.version if self.run is not None else None

    @property
    def messages(self) -> list[str]:
        return self.run.messages if self.run is not None else []

    def attach(self, run) -> None:
        """Show ``run`` (started here, or before this panel was opened) and follow it."""
        self.run = run
        run.event.connect(self._on_event)
        run.ended.connect(self._on_ended)
        self._draw_history()
        self._show_progress()
        self._show_topics()
        if not run.running:
            self._show_outcome()
        self._buttons()

    def _buttons(self) -> None:
        running = self.session.training_running
        self.start_btn.setEnabled(not running)
        self.stop_btn.setEnabled(running)
        self.resume_btn.setEnabled(not running and getattr(self, "_resumable", False))
        self.update_btn.setEnabled(not running)

    def _on_event(self, event) -> None:
        from ..core.events import EpochEnd, Message

        self._show_progress()
        if isinstance(event, EpochEnd):
            self._draw_history()
            m = event.metrics
            key, word = ("f1", "macro-F1") if "val_f1" in m else ("iou", "IoU")
            report_info(
                f"Epoch {event.epoch}/{event.epochs}: loss {m['train_loss']:.3f} / {m['val_loss']:.3f}, "
                f"{word} {m[f'train_{key}']:.3f} / {m[f'val_{key}']:.3f} (training / validation){'  ★ best' if event.is_best else ''}",
                self.status,
            )
        elif isinstance(event, Message):
            self._show_topics()
            if event.level == "warning":
                from napari.utils.notifications import show_warning

                show_warning(event.text)

    def _show_progress(self) -> None:
        run = self.run
        if run is None:
            return
        done, total = run.progress
        self.progress.setFormat("%p%")
        self.phase_label.setText(run.phase + (f": {run.where}" if run.where and not run.phase.startswith("Training") else "") + "…")
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
        else:
            self.progress.setRange(0, 0)  # busy: preparing
        if run.phase.startswith("Training") and run.eta_s is not None:
            self.eta_label.setText(f"{run.where} · about {fmt_duration(run.eta_s)} left")
        else:
            self.eta_label.setText(f"{run.where}" if run.where else "")

    def _show_topics(self) -> None:
        if self.run is not None:
            t = self.run.topics
            self.settings_label.setText("\n".join(t[k] for k in ("device", "settings", "validation", "budget", "tuning") if k in t))

    def _draw_history(self) -> None:
        history = [dict(h) for h in self.history]  # the render thread gets its own copy
        self.plot.plot(lambda axes: draw_history(axes, history))

    def _on_ended(self) -> None:
        self._show_outcome()
        self._buttons()
        run = self.run
        if run is not None and run.status == "failed":
            from ..core.errors import OneClassError

            if isinstance(run.error, OneClassError):
                self._offer_unpainted_background(run)

    def _show_outcome(self) -> None:
        run = self.run
        self.progress.setRange(0, 1)  # not frozen at the step the run ended on
        self.progress.setValue(1 if run.version else 0)
        self.progress.setFormat({"finished": "done", "stopped": "stopped"}.get(run.status, "not run"))
        took = fmt_duration(run.seconds)
        if run.status in ("finished", "stopped") and run.version:
            training = run.info.training
            best = training.best
            word = {"completed": "finished", "stopped": "stopped", "early_stopped": "stopped early"}.get(training.status, training.status)
            self.phase_label.setText(f"Training {word} after {len(run.history)} epoch(s).")
            start = training.start
            was = f" {start['version']} scored {start['val_iou']:.3f} on the same validation images." if start else ""
            self.eta_label.setText(f"{took} in all; model version {run.version} keeps the best epoch ({best.get('epoch')}).{was}")
            report_info(
                f"Training {word}: model version {run.version} (best epoch {best.get('epoch')}, validation "
                + (f"macro-F1 {best['val_f1']:.3f})." if "val_f1" in best else f"IoU {best.get('val_iou', float('nan')):.3f})."),
                self.status,
                notify=True,
            )
        elif run.status == "stopped":
            self.phase_label.setText("Stopped before the first epoch ended: nothing was saved.")
            self.eta_label.setText(took)
            report_info("Stopped before the first epoch ended: nothing was saved.", self.status, notify=True)
        elif run.error is not None:
            self.phase_label.setText("Training could not run.")
            self.eta_label.setText("")
            report_error(run.error, self.status)

    def _offer_unpainted_background(self, run) -> None:
        """Only one class was painted: offer the two sensible meanings in plain words."""
        err = run.error
        if ask(self, "Only one class is painted", err.message, [ONE_CLASS_CHOICE, "I will paint some background"]) == 0:
            run.project.set_unpainted_background(err.images)
            report_info(f"Unpainted pixels of {len(err.images)} image(s) are background now: training again…", self.status)
            self.start()
