"""Typed events yielded by the long-running core generators (training, prediction, quantification).

A generator such as ``iter_train`` yields these and returns its result; the CLI prints them, the
widgets receive them in napari's ``thread_worker`` ``yielded`` signal (main thread) and update
plots and progress bars. Every event is a small frozen dataclass: cheap to pass between threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import CancelledError


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of work (steps, tiles, images); ``eta_s`` when it can be estimated."""

    done: int
    total: int
    stage: str = ""
    eta_s: float | None = None
    message: str = ""


@dataclass(frozen=True)
class StepLoss:
    """One optimisation step: its loss and learning rate."""

    epoch: int
    step: int
    steps_per_epoch: int
    loss: float
    lr: float


@dataclass(frozen=True)
class EpochEnd:
    """Train and validation figures of one epoch (``metrics`` holds them by name).

    Keys include train_loss, val_loss, train_acc, val_acc, train_iou, val_iou, val_iou_per_class,
    seconds, images_per_s; a classifier has train_f1, val_f1 (macro-F1) and val_balanced_acc
    where a U-Net has IoU.
    """

    epoch: int
    epochs: int
    metrics: dict[str, Any]
    is_best: bool = False

    def line(self) -> str:
        """One line of figures (the CLI's and the demo's epoch log)."""
        m = self.metrics
        if "val_f1" in m:  # a classifier: macro-F1 where a U-Net has IoU
            return (
                f"epoch {self.epoch:>3}/{self.epochs}  train loss {m['train_loss']:.4f} acc {m['train_acc']:.3f} F1 {m['train_f1']:.3f}"
                f"  | val loss {m['val_loss']:.4f} acc {m['val_acc']:.3f} F1 {m['val_f1']:.3f}"
                f"  {m['seconds']:.1f} s {m['images_per_s']:.1f} img/s{'  *best' if self.is_best else ''}"
            )
        per = m.get("val_iou_per_class") or []
        per_txt = " ".join("-" if v is None else f"{v:.3f}" for v in per)
        return (
            f"epoch {self.epoch:>3}/{self.epochs}  train loss {m['train_loss']:.4f} acc {m['train_acc']:.3f} IoU {m['train_iou']:.3f}"
            f"  | val loss {m['val_loss']:.4f} acc {m['val_acc']:.3f} IoU {m['val_iou']:.3f} [{per_txt}]"
            f"  {m['seconds']:.1f} s {m['images_per_s']:.1f} img/s{'  *best' if self.is_best else ''}"
        )


@dataclass(frozen=True)
class Preview:
    """A small prediction preview: image (Y, X) float in [0, 1], labels (Y, X) int, optional truth."""

    epoch: int
    image: np.ndarray
    prediction: np.ndarray
    truth: np.ndarray | None = None


@dataclass(frozen=True)
class CheckpointSaved:
    """A model version (or the resumable 'last' checkpoint) was written to the store."""

    version: str
    epoch: int
    best: bool
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Message:
    """Something the user should read (automatic settings chosen, OOM recovery, warnings)."""

    text: str
    level: str = "info"  # info | warning
    topic: str = ""  # what it is about, for panels that show it in its place: device | validation | settings | budget | tuning


@dataclass(frozen=True)
class ItemDone:
    """One item of a batch finished (an image predicted or quantified); ``error`` when it failed."""

    index: int
    total: int
    name: str
    result: Any = None
    error: str | None = None


def check_cancel(cancel: threading.Event | None) -> None:
    """Raise :class:`CancelledError` when ``cancel`` is set (call at every yield point)."""
    if cancel is not None and cancel.is_set():
        raise CancelledError("Cancelled by the user.")


def run_to_end(gen, on_event=None):
    """Drive a core generator to its end and return its result; ``on_event(event)`` sees each event."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)
