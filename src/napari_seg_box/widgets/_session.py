"""What the docks of one napari window share: the current project, the running training, the device.

One :class:`Session` per viewer (:meth:`Session.of`): the four docks show and change the same current
project, and a training belongs to the session, not to the Train dock, so that closing the dock does
not orphan it and a reopened dock shows it again. The first session starts loading torch and the
network libraries (:mod:`._libraries`) and says when they are ready (``device_ready``).
"""

from __future__ import annotations

import weakref

from qtpy.QtCore import QObject, QTimer, Signal

from ._libraries import device_text, start_warm_up

_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Session(QObject):
    """The shared state of the plugin's docks in one viewer (see the module docstring)."""

    project_changed = Signal(str)
    device_ready = Signal(str)
    training_started = Signal(object)  # the TrainingRun
    versions_changed = Signal()  # a model version was saved: the docks list it

    def __init__(self, viewer):
        super().__init__()
        self._viewer = weakref.ref(viewer)
        self.url = ""
        self.training = None  # the running (or last) TrainingRun of this window
        start_warm_up()
        self._poll = QTimer(self)
        self._poll.setInterval(200)
        self._poll.timeout.connect(self._check_device)
        self._poll.start()

    @classmethod
    def of(cls, viewer) -> Session:
        session = _SESSIONS.get(viewer)
        if session is None:
            session = _SESSIONS[viewer] = cls(viewer)
        return session

    # ------------------------------------------------------------------ the current project
    def set_project(self, url: str) -> None:
        """Make ``url`` the current project of every dock of this window."""
        url = str(url).strip()
        if url != self.url:
            self.url = url
            self.project_changed.emit(url)

    def project(self):
        """The current project store, opened now (a StoreError says what to do when there is none)."""
        from ..core.errors import StoreError
        from ..core.store import Project

        if not self.url:
            raise StoreError("No project yet: create one with New project… or open one with Open… in the Annotate panel.")
        return Project.open(self.url)

    # ------------------------------------------------------------------ training
    @property
    def training_running(self) -> bool:
        return self.training is not None and self.training.running

    def start_training(self, project, config, *, resume: bool = False):
        """Start a training of ``project`` owned by this session; returns the :class:`TrainingRun`."""
        from ..core.errors import SegBoxError
        from ._training import TrainingRun

        if self.training_running:
            raise SegBoxError("A training is already running in this window: wait for it, or press Stop in the Train panel.")
        self.training = TrainingRun(project, config, resume=resume, parent=self)
        self.training.ended.connect(self._training_ended)
        self.training.start()  # its events reach the main thread after the docks below attached
        self.training_started.emit(self.training)
        return self.training

    def update_model(self, project, version: str = "latest", **settings):
        """Fine-tune ``version`` on the annotations and corrections saved since it (a short run:
        :func:`~napari_seg_box.core.train.finetune_config`, ``settings`` such as ``epochs`` win);
        returns the :class:`TrainingRun`."""
        from ..core.train import finetune_config

        return self.start_training(project, finetune_config(project, version, **settings))

    def _training_ended(self) -> None:
        if self.training is not None and self.training.version is not None:
            self.versions_changed.emit()

    # ------------------------------------------------------------------ device
    def _check_device(self) -> None:
        text = device_text()
        if text is not None:
            self._poll.stop()
            self.device_ready.emit(text)
