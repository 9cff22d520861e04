"""torch, segmentation-models-pytorch and albumentations, loaded once per process by one thread.

Importing torch from two threads at once crashes the process, and so does exiting while a thread is
still importing it: every worker calls :func:`ensure_libraries` first, and a warm-up thread started
with the first panel loads them early (the application waits for it before quitting).
"""

from __future__ import annotations

import threading
import time

_IMPORT_LOCK = threading.Lock()


_DEVICE: list[str] = []  # filled once by ensure_libraries


_WARM_UP: list[threading.Thread] = []


def ensure_libraries() -> str:
    """Import torch, segmentation-models-pytorch and albumentations once (the first caller does it,
    the others wait for it); returns the device in words. Every worker calls this first."""
    with _IMPORT_LOCK:
        if not _DEVICE:
            import albumentations  # noqa: F401
            import segmentation_models_pytorch  # noqa: F401

            from ..core.models import device_name, pick_device

            _DEVICE.append(device_name(pick_device("auto")))
    return _DEVICE[0]


def start_warm_up() -> None:
    """Load the libraries in a background thread once per process, so the window stays responsive
    when training starts; the application waits for it before quitting (no exit mid-import)."""
    if _WARM_UP:
        return
    thread = threading.Thread(target=ensure_libraries, name="segbox-warm-up", daemon=True)
    _WARM_UP.append(thread)
    thread.start()
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    if app is not None:
        app.aboutToQuit.connect(lambda: thread.join(timeout=120))


def device_text() -> str | None:
    """The device in words once the libraries are loaded, else None."""
    return _DEVICE[0] if _DEVICE else None


def wait_for_libraries(timeout: float = 120.0) -> None:
    """Block until the warm-up has loaded the libraries (tests, screenshots)."""
    end = time.monotonic() + timeout
    while device_text() is None and time.monotonic() < end:
        time.sleep(0.05)
