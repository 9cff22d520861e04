"""The Train dock's pieces: its settings form (filled from the core's :class:`TrainConfig`), the curves,
the table of model versions."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QPushButton, QSpinBox, QWidget

# how the network sizes of the core (train.config.NETWORK_SIZES) read in the dock
SIZE_WORDS = {"standard": "standard (5 levels)", "small": "small (4 levels, faster)", "tiny": "tiny (3 levels, fastest)"}
AUTO = "auto"
AUTO_CONTEXT = -1  # the combo's data for TrainConfig.context None (Qt finds ints reliably, not None or mixed types)
# 2.5D input: (words, TrainConfig.context)
CONTEXT_CHOICES = [
    ("none (each slice alone)", 0),
    ("automatic (from the voxel size)", AUTO_CONTEXT),
    *((f"{k} on each side", k) for k in (1, 2, 3)),
]
# how touching objects are told apart: (words, (TrainConfig.boundary, TrainConfig.distance))
TOUCHING_CHOICES = (
    ("split the mask by its shape", (False, False)),
    ("learn the distance to the border", (False, True)),
    ("automatic (distance when objects touch)", (False, None)),
    ("learn object boundaries", (True, False)),
)
CURVES_HELP = (
    "Good curves: both losses fall and level off, validation IoU rises towards 1. A validation loss that climbs "
    "while the training loss falls means over-fitting: fewer epochs, stronger augmentation or more annotations."
)


def _auto_spin(maximum: int, step: int = 1, tip: str = "") -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(0, maximum)
    spin.setSingleStep(step)
    spin.setSpecialValueText(AUTO)
    spin.setValue(0)
    spin.setToolTip(tip + " (auto = chosen from the data)")
    return spin


class TrainSettings(QWidget):
    """The advanced settings of a training; every default comes from ``TrainConfig()``."""

    def __init__(self, parent=None):
        from ..core.augment import PRESETS
        from ..core.losses import LOSSES
        from ..core.train.config import NETWORK_SIZES, TrainConfig

        super().__init__(parent)
        d = TrainConfig()
        af = QFormLayout(self)
        self.size_combo = QComboBox()
        for size, depth in NETWORK_SIZES.items():
            self.size_combo.addItem(SIZE_WORDS[size], depth)
        self.size_combo.setCurrentIndex(self.size_combo.findData(d.encoder_depth))
        af.addRow("Network size:", self.size_combo)
        self.minutes = QSpinBox()
        self.minutes.setRange(0, 10000)
        self.minutes.setSpecialValueText("off (use the epochs)")
        self.minutes.setSuffix(" min")
        self.minutes.setToolTip(
            "Train for about this long instead of a number of epochs: the epochs that fit are estimated from the first steps"
        )
        af.addRow("Time budget:", self.minutes)
        self.patch = _auto_spin(1024, 32, "Side of the square image pieces the network learns from, in pixels (a multiple of 32)")
        af.addRow("Patch size:", self.patch)
        self.batch = _auto_spin(256, 1, "Pieces per learning step")
        af.addRow("Batch size:", self.batch)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(0.0, 0.5)
        self.lr.setSingleStep(1e-4)
        self.lr.setSpecialValueText(AUTO)
        self.lr.setValue(0.0)
        self.lr.setToolTip("How big each learning step is (auto = found by a short trial run)")
        af.addRow("Learning rate:", self.lr)
        self.steps = _auto_spin(100000, 1, "Learning steps per epoch")
        af.addRow("Steps per epoch:", self.steps)
        self.loss_combo = QComboBox()
        self.loss_combo.addItems(list(LOSSES))
        self.loss_combo.setCurrentText(d.loss)
        self.loss_combo.setToolTip("edge_weighted separates touching objects; focal helps rare classes")
        af.addRow("Loss:", self.loss_combo)
        self.touching_combo = QComboBox()
        self.touching_combo.addItems([text for text, _ in TOUCHING_CHOICES])
        self.touching_combo.setCurrentIndex([v for _, v in TOUCHING_CHOICES].index((d.boundary, d.distance)))
        self.touching_combo.setToolTip(
            "How touching objects are told apart. shape: a watershed of the predicted mask's distance transform "
            "(the default). distance: also learn each object's distance to its border; objects grow from the "
            "centres it predicts. automatic: the distance when the painted objects touch (10 % of them or more). "
            "boundaries: learn the outer 2 pixels of every object (one object class) and split along them. "
            "The learnt ones need whole objects painted (or stored instances)."
        )
        af.addRow("Touching objects:", self.touching_combo)
        self.context_combo = QComboBox()
        for text, value in CONTEXT_CHOICES:
            self.context_combo.addItem(text, value)
        self.context_combo.setToolTip(
            "Volumes: let the network see the neighbouring sections of each slice (2.5D input), which helps where a "
            "structure is ambiguous in one section. automatic: 2 on each side for near-isotropic voxels, else 1. "
            "Not for time-lapses."
        )
        af.addRow("Neighbouring slices:", self.context_combo)
        row = QHBoxLayout()
        self.aug_combo = QComboBox()
        self.aug_combo.addItems(list(PRESETS))
        self.aug_combo.setCurrentText(d.augmentation)
        self.preview_btn = QPushButton("Preview")
        self.preview_btn.setToolTip("Show a few augmented samples of an annotated image as layers")
        row.addWidget(self.aug_combo, 1)
        row.addWidget(self.preview_btn)
        af.addRow("Augmentation:", row)
        self.finetune_combo = QComboBox()
        self.finetune_combo.addItem("no (train from scratch)", None)
        af.addRow("Fine-tune from:", self.finetune_combo)
        self.pretrained_check = QCheckBox("start from ImageNet weights")
        self.pretrained_check.setToolTip(
            "Start the encoder from weights learnt on ImageNet photographs: often better with few annotations. "
            "Downloaded once (needs internet the first time), then kept in the Hugging Face cache."
        )
        af.addRow("Pretrained:", self.pretrained_check)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setValue(d.seed)
        af.addRow("Seed:", self.seed)

    def values(self) -> dict:
        """The fields as TrainConfig values (auto fields as None)."""
        return {
            "encoder_depth": int(self.size_combo.currentData()),
            "minutes": self.minutes.value() or None,
            "patch_size": self.patch.value() or None,
            "batch_size": self.batch.value() or None,
            "learning_rate": self.lr.value() or None,
            "steps_per_epoch": self.steps.value() or None,
            "augmentation": self.aug_combo.currentText(),
            "loss": self.loss_combo.currentText(),
            **dict(zip(("boundary", "distance"), TOUCHING_CHOICES[self.touching_combo.currentIndex()][1])),
            "context": None if self.context_combo.currentData() == AUTO_CONTEXT else self.context_combo.currentData(),
            "finetune_from": self.finetune_combo.currentData(),
            "pretrained": self.pretrained_check.isChecked(),
            "seed": int(self.seed.value()),
        }

    def set_values(self, values: dict) -> None:
        if "encoder_depth" in values:
            self.size_combo.setCurrentIndex(self.size_combo.findData(int(values["encoder_depth"])))
        for key, spin in (
            ("patch_size", self.patch),
            ("batch_size", self.batch),
            ("steps_per_epoch", self.steps),
            ("minutes", self.minutes),
        ):
            if key in values:
                spin.setValue(int(values[key] or 0))
        if "learning_rate" in values:
            self.lr.setValue(float(values["learning_rate"] or 0.0))
        if "augmentation" in values:
            self.aug_combo.setCurrentText(values["augmentation"])
        if "loss" in values:
            self.loss_combo.setCurrentText(values["loss"])
        if "boundary" in values or "distance" in values:
            wanted = (True, False) if values.get("boundary") else (False, values.get("distance"))
            self.touching_combo.setCurrentIndex([v for _, v in TOUCHING_CHOICES].index(wanted))
        if "context" in values:
            wanted = AUTO_CONTEXT if values["context"] is None else int(values["context"])
            self.context_combo.setCurrentIndex(max(0, self.context_combo.findData(wanted)))
        if "pretrained" in values:
            self.pretrained_check.setChecked(bool(values["pretrained"]))
        if "seed" in values:
            self.seed.setValue(int(values["seed"]))
        if "finetune_from" in values:
            self.finetune_combo.setCurrentIndex(max(0, self.finetune_combo.findData(values["finetune_from"])))


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not np.isfinite(seconds):
        return ""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def versions_frame(project):
    """The project's model versions with their validation metrics, as a DataFrame."""
    import pandas as pd

    score = "val F1" if project.task == "classification" else "val IoU"
    columns = ["version", score, "status", "encoder", "best epoch", "epochs", "minutes", "tuned", "device", "created"]
    rows = [
        {
            "version": e.version,
            score: e.best.get("val_f1" if project.task == "classification" else "val_iou"),
            "status": e.status,
            "encoder": e.encoder,
            "best epoch": e.best.get("epoch"),
            "epochs": e.epochs_run,
            "minutes": round(e.duration_s / 60.0, 2),
            "tuned": "yes" if e.tuned else "no",
            "device": e.device,
            "created": e.created,
        }
        for e in project.model_versions()
    ]
    return pd.DataFrame(rows, columns=columns)


def draw_history(axes, history: list[dict]) -> None:
    """Loss (log scale), pixel accuracy and IoU of training and validation per epoch, into three axes
    (a classifier's: loss, accuracy and macro-F1)."""
    epochs = [h["epoch"] for h in history]
    classifier = any("val_f1" in h for h in history)
    titles = ("loss (log scale)", "accuracy", "macro-F1") if classifier else ("loss (log scale)", "pixel accuracy", "IoU")
    for ax, key, title in zip(axes, ("loss", "acc", "f1" if classifier else "iou"), titles):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = [h.get(f"{split}_{key}") for h in history]
            if values:
                label = "training" if split == "train" else "validation"
                ax.plot(epochs, [np.nan if v is None else v for v in values], style, ms=3, lw=1.2, label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if history:
            if key == "loss":
                from matplotlib.ticker import FixedLocator, NullFormatter

                ax.set_yscale("log")  # plain numbers (0.2, 0.5, 1), not "4x10^-1" cut off at the edge
                ax.yaxis.set_major_locator(FixedLocator(log_ticks(*ax.get_ylim())))
                ax.yaxis.set_major_formatter(lambda v, _: f"{v:g}")
                ax.yaxis.set_minor_formatter(NullFormatter())
                ax.legend(fontsize=7)
            ax.set_xlim(0.5, max(epochs) + 0.5)
        if key != "loss":
            ax.set_ylim(0, 1.02)


def log_ticks(lo: float, hi: float, most: int = 5) -> list[float]:
    """A few round ticks between ``lo`` and ``hi`` (> 0) for a log axis: 1-2-5 steps, powers of ten
    over many decades, and the two ends rounded inwards when the range holds fewer than two."""
    import math

    lo, hi = max(lo, 1e-12), max(hi, 1e-12)
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)

    def within(steps):
        return [m * 10.0**e for e in decades for m in steps if lo <= m * 10.0**e <= hi]

    ticks = within((1, 2, 5))
    if len(ticks) > most:
        powers = within((1,))
        ticks = powers if len(powers) >= 2 else ticks
        ticks = ticks[:: math.ceil(len(ticks) / most)]
    for digits in range(1, 6) if len(ticks) < 2 else ():  # the ends, rounded inwards to as few digits as will do
        step = [10.0 ** (math.floor(math.log10(v)) + 1 - digits) for v in (lo, hi)]
        ends = [math.ceil(lo / step[0]) * step[0], math.floor(hi / step[1]) * step[1]]
        found = sorted({r for r in (float(f"{v:.{digits + 1}g}") for v in ticks + ends) if lo <= r <= hi})
        if len(found) >= 2:
            return found
    return ticks
