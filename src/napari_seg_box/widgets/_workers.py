"""Long work of the panels in napari thread workers (a core generator each), its results delivered
in the main thread, never after the panel that started it is gone."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from ._messages import report_error


# ---------------------------------------------------------------------- workers
class Runner:
    """Runs a core generator in a napari thread worker; slots run in the main thread.

    ``start(func, *args, **kwargs)`` calls ``func(*args, cancel=self.cancel_event, **kwargs)`` in the
    worker. Errors reach ``on_error`` (the default shows them) and never escape into Qt. With an
    ``owner`` (a QObject), the task is asked to stop and its results are dropped once the owner is
    destroyed: nothing is delivered to a closed panel.
    """

    def __init__(self, *, on_yield=None, on_return=None, on_error=None, on_finish=None, owner=None):
        self.on_yield = on_yield
        self.on_return = on_return
        self.on_error = on_error
        self.on_finish = on_finish
        self.worker = None
        self.cancel_event = threading.Event()
        self.detached = False
        if owner is not None:
            owner.destroyed.connect(self.detach)

    def detach(self, *args) -> None:
        """Stop the task and deliver nothing more (its owner is gone)."""
        self.detached = True
        self.cancel_event.set()

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(self, func: Callable, *args, **kwargs):
        from napari.qt.threading import create_worker

        if self.worker is not None:
            raise RuntimeError("A task is already running: wait for it or stop it first.")
        self.cancel_event = threading.Event()
        worker = create_worker(_with_libraries, func, *args, cancel=self.cancel_event, _start_thread=False, _ignore_errors=True, **kwargs)
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
            if self.detached:
                return
            try:
                fn(value)
            except Exception as err:  # noqa: BLE001
                self._error(err)

        return slot

    def _error(self, err):
        if self.detached:
            return
        try:
            if self.on_error is not None:
                self.on_error(err)
            else:
                report_error(err)
        except Exception as inner:  # noqa: BLE001
            report_error(inner)

    def _finished(self):
        self.worker = None
        if self.on_finish is not None and not self.detached:
            try:
                self.on_finish()
            except Exception as err:  # noqa: BLE001
                report_error(err)


def _with_libraries(func, *args, **kwargs):
    """Run a core generator in a worker once torch and friends are loaded (by one thread only)."""
    from ._libraries import ensure_libraries

    ensure_libraries()
    return (yield from func(*args, **kwargs))
