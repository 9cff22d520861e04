"""Shared pieces of the dock widgets: project picker, worker wiring, errors, themed plots, tables.

No state lives here that the project store does not own: the project a widget works on is a path
(typed, browsed, or taken from the ``segbox_store`` metadata of the viewer's layers) and is opened
from the store each time it is used.
"""

from __future__ import annotations

import contextlib
import threading
import traceback
from collections.abc import Callable

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from ..layers import STORE_KEY


# ---------------------------------------------------------------------- messages
def error_text(err: BaseException) -> str:
    """What the user reads: our own errors as they are, others with their type and a hint."""
    from ..core.errors import SegBoxError

    if isinstance(err, SegBoxError):
        return str(err)
    if isinstance(err, MemoryError):
        return "Out of memory: use smaller images, a smaller patch or batch size, or a lighter model."
    return f"{type(err).__name__}: {err} (unexpected: please report it with the details from the terminal)."


def report_error(err: BaseException, label: QLabel | None = None) -> str:
    """Show ``err`` as a napari notification and in ``label``; never raises."""
    from ..core.errors import SegBoxError

    text = error_text(err)
    if label is not None:
        label.setText(text)
        label.setStyleSheet("color: #ff6b6b;")
    if not isinstance(err, SegBoxError):
        traceback.print_exception(type(err), err, err.__traceback__)
    try:
        from napari.utils.notifications import show_error

        show_error(text)
    except Exception:  # pragma: no cover - notifications must never take the widget down
        pass
    return text


def report_info(text: str, label: QLabel | None = None, *, notify: bool = False) -> None:
    if label is not None:
        label.setText(text)
        label.setStyleSheet("")
    if notify:
        try:
            from napari.utils.notifications import show_info

            show_info(text)
        except Exception:  # pragma: no cover
            pass


def guarded(label_attr: str = "status"):
    """Decorator for button slots: a raised exception becomes a notification + status text."""

    def wrap(fn):
        def inner(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except Exception as err:  # noqa: BLE001 - nothing may escape into Qt
                report_error(err, getattr(self, label_attr, None))
                return None

        inner.__name__ = fn.__name__
        inner.__doc__ = fn.__doc__
        return inner

    return wrap


def status_label() -> QLabel:
    label = QLabel("")
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


# ---------------------------------------------------------------------- project
def project_url_from_viewer(viewer) -> str | None:
    """The store a layer of the viewer is linked to (selected layer first), or None."""
    layers = list(viewer.layers)
    active = viewer.layers.selection.active
    if active is not None:
        layers = [active] + [la for la in layers if la is not active]
    for layer in layers:
        url = (layer.metadata or {}).get(STORE_KEY)
        if url:
            return str(url)
    return None


class ProjectBox(QWidget):
    """A project store path with "Open…"; fills itself from the viewer's linked layers."""

    changed = Signal(str)

    def __init__(self, viewer, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("project store (folder .zarr or s3://...)")
        self.browse = QPushButton("Open…")
        self.browse.setToolTip("Choose an existing project store folder")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(QLabel("Project:"))
        lay.addWidget(self.edit, 1)
        lay.addWidget(self.browse)
        self.browse.clicked.connect(self._browse)
        self.edit.editingFinished.connect(lambda: self.changed.emit(self.url))
        viewer.layers.events.inserted.connect(self._from_viewer)
        viewer.layers.selection.events.active.connect(self._from_viewer)
        self._from_viewer()

    @property
    def url(self) -> str:
        return self.edit.text().strip()

    def set_url(self, url: str) -> None:
        url = str(url)
        if url != self.url:
            self.edit.setText(url)
            self.changed.emit(url)

    def _from_viewer(self, event=None) -> None:
        if self.url:
            return
        url = project_url_from_viewer(self.viewer)
        if url:
            self.set_url(url)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a project store")
        if path:
            self.set_url(path)

    def project(self):
        """The project store, opened now (raises StoreError with what to do when there is none)."""
        from ..core.errors import StoreError
        from ..core.store import Project

        if not self.url:
            raise StoreError("No project chosen: create or open one in the Annotate widget, or type its folder here.")
        return Project.open(self.url)


def fill_versions(combo, project_box, status) -> bool:
    """List the project's model versions in ``combo`` (keeping the current choice, else the newest).

    Returns False (and shows why in ``status``) when there is no project or it cannot be read.
    """
    if not project_box.url:
        return False
    try:
        entries = project_box.project().model_versions()
    except Exception as err:  # noqa: BLE001
        report_error(err, status)
        return False
    current = combo.currentData()
    combo.clear()
    for e in entries:
        combo.addItem(e.describe(), e.version)
    idx = combo.findData(current)
    combo.setCurrentIndex(idx if idx >= 0 else combo.count() - 1)
    return True


# ---------------------------------------------------------------------- workers
class Runner:
    """Runs a core generator in a napari thread worker; slots run in the main thread.

    ``start(func, *args, **kwargs)`` calls ``func(*args, cancel=self.cancel_event, **kwargs)`` in the
    worker. Errors reach ``on_error`` (the default shows them) and never escape into Qt.
    """

    def __init__(self, *, on_yield=None, on_return=None, on_error=None, on_finish=None):
        self.on_yield = on_yield
        self.on_return = on_return
        self.on_error = on_error
        self.on_finish = on_finish
        self.worker = None
        self.cancel_event = threading.Event()

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(self, func: Callable, *args, **kwargs):
        from napari.qt.threading import create_worker

        if self.worker is not None:
            raise RuntimeError("A task is already running: wait for it or stop it first.")
        self.cancel_event = threading.Event()
        worker = create_worker(func, *args, cancel=self.cancel_event, _start_thread=False, _ignore_errors=True, **kwargs)
        with contextlib.suppress(Exception):  # napari relays errors to its own traceback notification: we show a clear one
            worker.errored.disconnect(worker._relay_error)
        if self.on_yield is not None and hasattr(worker, "yielded"):
            worker.yielded.connect(self._safe(self.on_yield))
        if self.on_return is not None:
            worker.returned.connect(self._safe(self.on_return))
        worker.errored.connect(self._error)
        worker.finished.connect(self._finished)
        self.worker = worker
        worker.start()
        return worker

    def stop(self) -> None:
        """Ask the running task to stop (it returns what it has, or raises CancelledError)."""
        self.cancel_event.set()

    def _safe(self, fn):
        def slot(value):
            try:
                fn(value)
            except Exception as err:  # noqa: BLE001
                self._error(err)

        return slot

    def _error(self, err):
        try:
            if self.on_error is not None:
                self.on_error(err)
            else:
                report_error(err)
        except Exception as inner:  # noqa: BLE001
            report_error(inner)

    def _finished(self):
        self.worker = None
        if self.on_finish is not None:
            try:
                self.on_finish()
            except Exception as err:  # noqa: BLE001
                report_error(err)
