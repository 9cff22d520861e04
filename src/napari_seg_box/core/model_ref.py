"""A model version named by where it is stored, for work spread over processes and machines.

A :class:`ModelRef` is a few strings: cheap to send with every task of a dask cluster. Each worker
process loads the model the first time a task asks for it and keeps it (:meth:`ModelRef.load`), on
its own device (``device="auto"``: the worker's GPU when it has one), so a batch of thousands of
images reads the weights once per worker, not once per image.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

_LOADED: dict[tuple, object] = {}
_LOCK = threading.Lock()  # a worker's threads share one copy


@dataclass(frozen=True)
class ModelRef:
    """Where a model version is: the project store's URL (and connection options), the version id."""

    store: str
    version: str
    storage_options: str = "{}"  # JSON: hashable, and never holds more than the caller passed
    device: str = "auto"
    backend: str = "torch"

    @classmethod
    def of(cls, predictor, project, *, device: str = "auto", backend: str | None = None) -> ModelRef:
        """The reference to ``predictor``'s version in ``project``, loaded by workers on ``device``."""
        return cls(
            project.url, predictor.version, json.dumps(project.storage_options, sort_keys=True), device, backend or predictor.backend
        )

    def open_project(self):
        from .store import Project

        return Project.open(self.store, storage_options=json.loads(self.storage_options) or None)

    def load(self):
        """The :class:`~.infer.Predictor` of this version, loaded once per process."""
        from .infer import Predictor

        with _LOCK:
            if self not in _LOADED:
                _LOADED[self] = Predictor.from_project(self.open_project(), self.version, device=self.device, backend=self.backend)
            return _LOADED[self]
