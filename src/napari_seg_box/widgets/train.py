"""Train: a U-Net on the project's annotations, in a napari thread worker, with live curves.

One core call: ``iter_train(project, TrainConfig(...), cancel=event)`` (or ``train(...)`` in a
script). The dock shows the device, a progress bar with ETA, loss / pixel accuracy / IoU curves of
training and validation per epoch, and the model versions of the project with their metrics.
"""

from __future__ import annotations

import time

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._common import ProjectBox, Runner, guarded, report_error, report_info, status_label
from ._plots import PlotCanvas
from ._tables import FrameTable

# how the network sizes of the core (train.config.NETWORK_SIZES) read in the dock
SIZE_WORDS = {"standard": "standard (5 levels)", "small": "small (4 levels, faster)", "tiny": "tiny (3 levels, fastest)"}
AUTO = "auto"


def _auto_spin(maximum: int, step: int = 1, tip: str = "") -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(0, maximum)
    spin.setSingleStep(step)
    spin.setSpecialValueText(AUTO)
    spin.setValue(0)
    spin.setToolTip(tip + " (auto = chosen from the data)")
    return spin


def fmt_eta(seconds: float | None) -> str:
    if seconds is None or not np.isfinite(seconds):
        return ""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def versions_frame(project):
    """The project's model versions with their validation metrics, as a DataFrame."""
    import pandas as pd

    rows = []
    for e in project.model_versions():
        rows.append(
            {
                "version": e.version,
                "status": e.status,
                "encoder": e.encoder,
                "best epoch": e.best.get("epoch"),
                "val IoU": e.best.get("val_iou"),
                "val acc": e.best.get("val_acc"),
                "val loss": e.best.get("val_loss"),
                "epochs": e.epochs_run,
                "device": e.device,
                "minutes": round(e.duration_s / 60.0, 2),
                "created": e.created,
            }
        )
    return pd.DataFrame(
        rows,
        columns=["version", "status", "encoder", "best epoch", "val IoU", "val acc", "val loss", "epochs", "device", "minutes", "created"],
    )


def _warm_up(cancel=None) -> str:
    import albumentations  # noqa: F401
    import segmentation_models_pytorch  # noqa: F401

    from ..core import train  # noqa: F401
    from ..core.models import device_name, pick_device

    return device_name(pick_device("auto"))


def draw_history(axes, history: list[dict]) -> None:
    """Loss, pixel accuracy and IoU of training and validation per epoch, into three axes."""
    epochs = [h["epoch"] for h in history]
    for ax, key, title in zip(axes, ("loss", "acc", "iou"), ("loss", "pixel accuracy", "IoU")):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = [h.get(f"{split}_{key}") for h in history]
            if values:
                ax.plot(
                    epochs,
                    [np.nan if v is None else v for v in values],
                    style,
                    ms=3,
                    lw=1.2,
                    label="training" if split == "train" else "validation",
                )
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if history:
            if key == "loss":
                ax.legend(fontsize=7)
            ax.set_xlim(0.5, max(epochs) + 0.5)
        if key != "loss":
            ax.set_ylim(0, 1.02)


class TrainWidget(QWidget):
    """Choose a model and the number of epochs, press Start; watch the curves; Stop keeps the best epoch."""

    def __init__(self, napari_viewer, parent=None):
        from superqt import QCollapsible

        from ..core.augment import PRESETS
        from ..core.losses import LOSSES
        from ..core.models import ENCODERS
        from ..core.train.config import NETWORK_SIZES, TrainConfig

        super().__init__(parent)
        self.viewer = napari_viewer
        self.history: list[dict] = []
        self.last_version: str | None = None
        self.messages: list[str] = []
        self._t0 = 0.0
        self.runner = Runner(on_yield=self._on_event, on_return=self._on_return, on_error=self._on_error, on_finish=self._on_finish)

        lay = QVBoxLayout(self)
        self.project_box = ProjectBox(self.viewer)
        lay.addWidget(self.project_box)
        form = QFormLayout()
        self.model_combo = QComboBox()
        for key, words in ENCODERS.items():
            self.model_combo.addItem(words, key)
        self.model_combo.setCurrentIndex(self.model_combo.findData("resnet34"))
        form.addRow("Model:", self.model_combo)
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 2000)
        self.epochs.setValue(TrainConfig().epochs)
        self.epochs.setToolTip("How many passes over the annotations: the one setting you must choose")
        form.addRow("Epochs:", self.epochs)
        self.device_label = QLabel("device: …")
        form.addRow("Device:", self.device_label)
        lay.addLayout(form)

        # advanced settings, collapsed
        self.advanced = QCollapsible("Advanced")
        adv = QWidget()
        af = QFormLayout(adv)
        self.size_combo = QComboBox()
        for size, depth in NETWORK_SIZES.items():
            self.size_combo.addItem(SIZE_WORDS[size], depth)
        af.addRow("Network size:", self.size_combo)
        self.patch = _auto_spin(1024, 32, "Training patch side in pixels, a multiple of 32")
        af.addRow("Patch size:", self.patch)
        self.batch = _auto_spin(256, 1, "Patches per optimisation step")
        af.addRow("Batch size:", self.batch)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(0.0, 0.5)
        self.lr.setSingleStep(1e-4)
        self.lr.setSpecialValueText(AUTO)
        self.lr.setValue(0.0)
        self.lr.setToolTip("Peak learning rate (auto = learning-rate range test)")
        af.addRow("Learning rate:", self.lr)
        self.steps = _auto_spin(100000, 1, "Optimisation steps per epoch")
        af.addRow("Steps per epoch:", self.steps)
        self.loss_combo = QComboBox()
        self.loss_combo.addItems(list(LOSSES))
        af.addRow("Loss:", self.loss_combo)
        self.boundary_check = QCheckBox("learn object boundaries")
        self.boundary_check.setToolTip(
            "Also learn the outer 2 pixels of every object (projects with one object class). Touching, crowded "
            "objects are then split along the predicted boundaries. Needs whole objects painted (or stored instances)."
        )
        af.addRow("Touching objects:", self.boundary_check)
        row = QHBoxLayout()
        self.aug_combo = QComboBox()
        self.aug_combo.addItems(list(PRESETS))
        self.aug_combo.setCurrentText("standard")
        self.preview_btn = QPushButton("Preview")
        self.preview_btn.setToolTip("preview_augmentations(image, labels, preset=...): augmented samples as layers")
        row.addWidget(self.aug_combo, 1)
        row.addWidget(self.preview_btn)
        af.addRow("Augmentation:", row)
        self.finetune_combo = QComboBox()
        self.finetune_combo.addItem("no (train from scratch)", None)
        af.addRow("Fine-tune from:", self.finetune_combo)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        af.addRow("Seed:", self.seed)
        self.advanced.addWidget(adv)
        lay.addWidget(self.advanced)

        row = QHBoxLayout()
        self.start_btn = QPushButton("Start training")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setEnabled(False)
        self.stop_btn.setToolTip("Stop after the current step; the best epoch so far is saved as a model version")
        row.addWidget(self.start_btn)
        row.addWidget(self.stop_btn)
        lay.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("%p%")
        lay.addWidget(self.progress)
        self.eta_label = QLabel("")
        lay.addWidget(self.eta_label)
        self.plot = PlotCanvas(self.viewer, nrows=1, ncols=3, height=2.6)
        lay.addWidget(self.plot)
        self._draw_history()
        lay.addWidget(QLabel("Model versions:"))
        self.versions = FrameTable()
        self.versions.setMaximumHeight(170)
        lay.addWidget(self.versions)
        lay.addStretch(1)
        self.status = status_label()
        lay.addWidget(self.status)

        self.start_btn.clicked.connect(lambda: self.start())
        self.stop_btn.clicked.connect(self.stop)
        self.preview_btn.clicked.connect(lambda: self.preview_augmentation())
        self.project_box.changed.connect(lambda url: self.refresh_versions())
        self.refresh_versions()
        QTimer.singleShot(0, self._show_device)

    # ------------------------------------------------------------------ settings
    def _show_device(self) -> None:
        """Import torch / smp / albumentations in a thread and show the device when ready.

        Done once when the dock opens, so that these imports (which hold the GIL for long stretches)
        do not stall the window later, while training.
        """
        self._warmup = Runner(on_return=lambda text: self.device_label.setText(text), on_error=lambda err: report_error(err, self.status))
        self._warmup.start(_warm_up)

    def config(self):
        """The :class:`TrainConfig` the widget's fields describe (raises ConfigError when invalid)."""
        from ..core.train import TrainConfig

        return TrainConfig(
            epochs=int(self.epochs.value()),
            encoder=self.model_combo.currentData(),
            encoder_depth=int(self.size_combo.currentData()),
            patch_size=self.patch.value() or None,
            batch_size=self.batch.value() or None,
            learning_rate=self.lr.value() or None,
            steps_per_epoch=self.steps.value() or None,
            augmentation=self.aug_combo.currentText(),
            loss=self.loss_combo.currentText(),
            boundary=self.boundary_check.isChecked(),
            finetune_from=self.finetune_combo.currentData(),
            seed=int(self.seed.value()),
        )

    def set_config(self, **values) -> None:
        """Fill the fields from TrainConfig-style values (e.g. for the console or tests)."""
        if "encoder" in values:
            self.model_combo.setCurrentIndex(self.model_combo.findData(values["encoder"]))
        if "epochs" in values:
            self.epochs.setValue(int(values["epochs"]))
        if "encoder_depth" in values:
            self.size_combo.setCurrentIndex(self.size_combo.findData(int(values["encoder_depth"])))
        for key, spin in (("patch_size", self.patch), ("batch_size", self.batch), ("steps_per_epoch", self.steps)):
            if key in values:
                spin.setValue(int(values[key] or 0))
        if "learning_rate" in values:
            self.lr.setValue(float(values["learning_rate"] or 0.0))
        if "augmentation" in values:
            self.aug_combo.setCurrentText(values["augmentation"])
        if "loss" in values:
            self.loss_combo.setCurrentText(values["loss"])
        if "boundary" in values:
            self.boundary_check.setChecked(bool(values["boundary"]))
        if "seed" in values:
            self.seed.setValue(int(values["seed"]))
        if "finetune_from" in values:
            self.finetune_combo.setCurrentIndex(max(0, self.finetune_combo.findData(values["finetune_from"])))

    def refresh_versions(self) -> None:
        if not self.project_box.url:
            return
        try:
            project = self.project_box.project()
            frame = versions_frame(project)
        except Exception as err:  # noqa: BLE001
            report_error(err, self.status)
            return
        self.versions.set_frame(frame)
        current = self.finetune_combo.currentData()
        self.finetune_combo.clear()
        self.finetune_combo.addItem("no (train from scratch)", None)
        for v in frame["version"]:
            self.finetune_combo.addItem(v, v)
        self.finetune_combo.setCurrentIndex(max(0, self.finetune_combo.findData(current)))

    # ------------------------------------------------------------------ augmentation preview
    @guarded()
    def preview_augmentation(self, n: int = 4):
        """``preview_augmentations(image, labels, preset=...)`` of the first annotated image, as layers."""
        from ..core.augment import preview_augmentations
        from ..core.errors import DataError

        project = self.project_box.project()
        name = next((r.name for r in project.images() if r.has_labels and r.split != "test"), None)
        if name is None:
            raise DataError("No annotated training image yet: paint some classes in the Annotate widget first.")
        preset = self.aug_combo.currentText()
        samples = preview_augmentations(project.get_image(name), project.get_labels(name), preset=preset, n=n, seed=int(self.seed.value()))
        images = np.stack([img if img.shape[-1] != 1 else img[..., 0] for img, _ in samples])
        labels = np.stack([lab for _, lab in samples]).astype(np.uint8)
        title = f"augmented ({preset})"
        for layer_name in (title, f"{title} labels"):
            if layer_name in self.viewer.layers:
                self.viewer.layers.remove(layer_name)
        self.viewer.add_image(images, name=title, rgb=images.ndim == 4 and images.shape[-1] in (3, 4))
        from ..layers import class_colormap

        self.viewer.add_labels(labels, name=f"{title} labels", colormap=class_colormap(project), opacity=0.4)
        report_info(f"{n} augmented samples of {name} ({preset}): move the slider to see each.", self.status)
        return samples

    # ------------------------------------------------------------------ running
    @guarded()
    def start(self):
        """Run ``iter_train(project, self.config(), cancel=...)`` in a thread worker."""
        from ..core.errors import SegBoxError
        from ..core.train import iter_train

        if self.runner.running:
            raise SegBoxError("Training is already running: wait for it or press Stop first.")
        project = self.project_box.project()
        cfg = self.config()
        self.history = []
        self.messages = []
        self.last_version = None
        self._draw_history()
        self.progress.setRange(0, 0)  # busy until the first step
        self.eta_label.setText("preparing…")
        self.start_btn.setEnabled(False)
        self.stop_btn.setEnabled(True)
        self._t0 = time.perf_counter()
        report_info(f"Training {cfg.encoder} for {cfg.epochs} epoch(s)…", self.status)
        return self.runner.start(iter_train, project, cfg)

    def stop(self) -> None:
        """Ask the worker to stop; the best epoch so far becomes a model version."""
        if self.runner.running:
            self.runner.stop()
            self.stop_btn.setEnabled(False)
            report_info("Stopping after the current step…", self.status)

    @property
    def worker(self):
        return self.runner.worker

    def _on_event(self, event) -> None:
        from ..core.events import CheckpointSaved, EpochEnd, Message, Progress, StepLoss

        if isinstance(event, Progress):
            if event.stage == "train":
                self.progress.setRange(0, max(event.total, 1))
                self.progress.setValue(event.done)
                self.eta_label.setText(f"step {event.done}/{event.total}   ETA {fmt_eta(event.eta_s)}")
            else:
                self.eta_label.setText(event.stage + "…")
        elif isinstance(event, StepLoss):
            self.progress.setFormat(f"epoch {event.epoch}: %p%  (loss {event.loss:.3f})")
        elif isinstance(event, EpochEnd):
            self.history.append(dict(event.metrics, epoch=event.epoch))
            self._draw_history()
            m = event.metrics
            report_info(
                f"Epoch {event.epoch}/{event.epochs}: loss {m['train_loss']:.3f} / {m['val_loss']:.3f}, "
                f"IoU {m['train_iou']:.3f} / {m['val_iou']:.3f} (train / validation){'  ★ best' if event.is_best else ''}",
                self.status,
            )
        elif isinstance(event, Message):
            self.messages.append(event.text)
            if event.level == "warning":
                from napari.utils.notifications import show_warning

                show_warning(event.text)
        elif isinstance(event, CheckpointSaved) and event.version != "last":
            self.refresh_versions()

    def _draw_history(self) -> None:
        history = [dict(h) for h in self.history]  # the render thread gets its own copy
        self.plot.plot(lambda axes: draw_history(axes, history))

    def _on_return(self, version) -> None:
        self.last_version = version
        self.refresh_versions()
        training = self.project_box.project().model_version(version).training
        best = training.best
        word = {"completed": "finished", "stopped": "stopped", "early_stopped": "stopped early"}.get(training.status, training.status)
        report_info(
            f"Training {word}: model version {version} (best epoch {best.get('epoch')}, validation IoU {best.get('val_iou', float('nan')):.3f}).",
            self.status,
            notify=True,
        )

    def _on_error(self, err) -> None:
        from ..core.errors import CancelledError

        if isinstance(err, CancelledError):
            report_info("Stopped before the first epoch ended: nothing was saved.", self.status, notify=True)
        else:
            report_error(err, self.status)

    def _on_finish(self) -> None:
        self.start_btn.setEnabled(True)
        self.stop_btn.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        self.progress.setFormat("%p%")
        self.eta_label.setText(f"done in {fmt_eta(time.perf_counter() - self._t0)}")
