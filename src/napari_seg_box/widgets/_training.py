"""A training run owned by the window's session (not by the Train dock that started it).

:class:`TrainingRun` runs ``iter_train_model`` (training, then tuning) in a napari thread worker, keeps what a dock needs to show
the run at any moment (history, phase, progress, settings, outcome), reports progress in napari's
Activity dock (``napari.utils.progress``), and re-emits every event for the docks attached to it.
A dock closed and reopened during the run attaches again and shows it whole.
"""

from __future__ import annotations

import time

from qtpy.QtCore import QObject, Signal

from ._workers import Runner

PHASES = {
    "preparing data": "Preparing the training data (normalising the images, choosing the validation part)",
    "finding the learning rate": "Finding a good learning rate (a short trial run)",
    "train": "Training",
    "predict validation images": "Tuning the post-processing: predicting the validation part",
    "tune post-processing": "Tuning the post-processing (threshold, minimum size, splitting)",
}


class TrainingRun(QObject):
    """One training of a project (see the module docstring)."""

    event = Signal(object)  # every core event, in the main thread
    ended = Signal()  # finished, stopped or failed: see status

    def __init__(self, project, config, *, resume: bool = False, parent=None):
        super().__init__(parent)
        self.project, self.config, self.resume = project, config, resume
        self.history: list[dict] = []
        self.messages: list[str] = []
        self.topics: dict[str, str] = {}  # device / validation / settings -> text
        self.phase = "Starting"
        self.progress = (0, 0)  # done, total (0 total: not known yet)
        self.eta_s: float | None = None
        self.where = ""  # "epoch 3 of 20"
        self.status = "running"  # running | finished | stopped | failed
        self.version: str | None = None
        self.info = None  # the ModelVersion it saved
        self.error: BaseException | None = None
        self.t0 = time.perf_counter()
        self.t_end: float | None = None
        self._bar = None  # napari.utils.progress, in the Activity dock
        self.runner = Runner(on_yield=self._on_event, on_return=self._on_return, on_error=self._on_error, on_finish=self._on_finish)

    @property
    def running(self) -> bool:
        return self.runner.running

    @property
    def seconds(self) -> float:
        return (self.t_end or time.perf_counter()) - self.t0

    def start(self) -> None:
        self.runner.start(_train, self.project, self.config, resume=self.resume)

    def stop(self) -> None:
        """Stop after the current step; the best epoch so far becomes a model version."""
        self.runner.stop()

    # ------------------------------------------------------------------ events (main thread)
    def _on_event(self, event) -> None:
        from ..core.events import EpochEnd, Message, Progress

        if isinstance(event, Progress):
            self.phase = PHASES.get(event.stage, event.stage)
            self.progress = (event.done, event.total)
            if event.stage == "train":
                self.eta_s, self.where = event.eta_s, event.message
                self._napari_progress(event.done, event.total)
            elif event.message:
                self.where = event.message
        elif isinstance(event, EpochEnd):
            self.history.append(dict(event.metrics, epoch=event.epoch))
        elif isinstance(event, Message):
            self.messages.append(event.text)
            if event.topic:
                self.topics[event.topic] = event.text
        self.event.emit(event)

    def _napari_progress(self, done: int, total: int) -> None:
        try:
            from napari.utils import progress

            if self._bar is None:
                self._bar = progress(total=total, desc="napari-seg-box: training")
            self._bar.update(done - self._bar.n)
        except Exception:  # noqa: BLE001 - the Activity dock is a courtesy, never a failure
            self._bar = None

    def _on_return(self, info) -> None:
        self.info = info
        self.version = info.version
        self.status = "stopped" if info.training.status == "stopped" else "finished"

    def _on_error(self, err) -> None:
        from ..core.errors import CancelledError

        self.error = err
        self.status = "stopped" if isinstance(err, CancelledError) else "failed"

    def _on_finish(self) -> None:
        self.t_end = time.perf_counter()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.status == "running":  # ended without a result (should not happen)
            self.status = "failed"
        self.ended.emit()


def _train(project, config, *, resume: bool, cancel=None):
    """``iter_train_model`` in the worker, returning the saved :class:`ModelVersion` (read there, not in
    the main thread)."""
    from ..workflows.train import iter_train_model

    version = yield from iter_train_model(project, config, resume=resume, cancel=cancel)
    return project.refresh().model_version(version)
