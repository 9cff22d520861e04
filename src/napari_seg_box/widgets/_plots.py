"""Matplotlib plots in the docks, coloured like the napari theme and rendered off the main thread."""

from __future__ import annotations

import contextlib
import threading
import traceback

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget


def theme_colors(viewer) -> dict[str, str]:
    """Colours of the viewer's napari theme (background, foreground, text, highlight)."""
    from napari.utils.theme import get_theme

    try:
        theme = get_theme(viewer.theme)
        return {k: getattr(theme, k).as_hex() for k in ("background", "foreground", "text", "highlight", "primary", "canvas")}
    except Exception:  # pragma: no cover
        return {
            "background": "#262930",
            "foreground": "#414851",
            "text": "#f0f1f2",
            "highlight": "#6a6a6a",
            "primary": "#5a626c",
            "canvas": "#000000",
        }


class PlotCanvas(QWidget):
    """Matplotlib plots in the dock, coloured like the napari theme (follows theme changes).

    The figure is rendered (Agg) in a background thread and only the finished picture is shown in
    the main thread: rendering even a small figure takes hundreds of milliseconds on a small CPU
    while a training thread competes for the GIL, and the window must not freeze meanwhile.
    Give :meth:`plot` a function ``painter(axes)`` that draws into the axes (it runs in the render
    thread, on data it owns); the last painter is kept, so resizing and theme changes redraw.
    """

    rendered = Signal(object)

    def __init__(self, viewer, *, nrows: int = 1, ncols: int = 1, height: float = 2.6, bottom_px: int = 40, parent=None):
        super().__init__(parent)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.viewer = viewer
        self.dpi = 90
        self.figure = Figure(figsize=(4, height), dpi=self.dpi)
        self._agg = FigureCanvasAgg(self.figure)
        self.axes = list(np.atleast_1d(self.figure.subplots(nrows, ncols)).ravel())
        self._bottom_px = bottom_px
        self._adjust(400, int(height * 72))
        self.image_label = QLabel()
        self.image_label.setMinimumHeight(int(height * 72))
        self.image_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.setMinimumHeight(int(height * 72))
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.image_label)
        self._lock = threading.Lock()
        self._painter = None
        self._dirty = False
        self._thread: threading.Thread | None = None
        self.renders = 0
        self.rendered.connect(self._show)
        with contextlib.suppress(Exception):  # pragma: no cover - viewers without theme events
            viewer.events.theme.connect(lambda e: self.plot())

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def plot(self, painter=None) -> None:
        """Render ``painter(axes)`` (or the last painter again) in the background."""
        if painter is not None:
            self._painter = painter
        size = (max(self.width(), 200), max(self.height(), 120))
        colors = theme_colors(self.viewer)
        self._job = (self._painter, size, colors)
        self._dirty = True
        if not self.busy:
            self._thread = threading.Thread(target=self._render_loop, name="segbox-plot", daemon=True)
            self._thread.start()

    def wait(self, timeout: float = 30.0) -> None:
        """Block until the pending render is shown (tests, screenshots)."""
        import time

        from qtpy.QtWidgets import QApplication

        end = time.monotonic() + timeout
        while (self.busy or self._dirty) and time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.01)
        QApplication.processEvents()

    def _render_loop(self) -> None:
        while self._dirty:
            self._dirty = False
            painter, (w, h), colors = self._job
            try:
                with self._lock:
                    self.figure.set_size_inches(w / self.dpi, h / self.dpi)
                    self._adjust(w, h)
                    if painter is not None:
                        for ax in self.axes:
                            ax.clear()
                        painter(self.axes)
                    self.style_axes(colors)
                    self._agg.draw()
                    buf = np.asarray(self._agg.buffer_rgba()).copy()
                self.renders += 1
                self.rendered.emit(buf)
            except RuntimeError:  # the widget was closed while rendering
                return
            except Exception:  # pragma: no cover - a plot must never take the widget down
                traceback.print_exc()

    def _adjust(self, w: int, h: int) -> None:
        """Margins in pixels (tick labels and titles keep their size whatever the dock's size)."""
        self.figure.subplots_adjust(
            left=min(0.3, 44 / w), right=1 - 10 / w, bottom=min(0.45, self._bottom_px / h), top=1 - 22 / h, wspace=0.5, hspace=0.6
        )

    def _show(self, buf) -> None:
        from qtpy.QtGui import QImage, QPixmap

        h, w = buf.shape[:2]
        image = QImage(buf.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
        self.image_label.setPixmap(QPixmap.fromImage(image))

    def resizeEvent(self, event):
        super().resizeEvent(event)
        if self._painter is not None or self.renders == 0:
            self.plot()

    def style_axes(self, c: dict | None = None) -> None:
        c = c or theme_colors(self.viewer)
        self.figure.set_facecolor(c["background"])
        for ax in self.axes:
            ax.set_facecolor(c["background"])
            for spine in ax.spines.values():
                spine.set_color(c["text"])
            ax.tick_params(colors=c["text"], labelsize=7)
            ax.xaxis.label.set_color(c["text"])
            ax.yaxis.label.set_color(c["text"])
            ax.title.set_color(c["text"])
            ax.xaxis.label.set_fontsize(8)
            ax.yaxis.label.set_fontsize(8)
            ax.title.set_fontsize(9)
            leg = ax.get_legend()
            if leg is not None:
                leg.get_frame().set_facecolor(c["background"])
                leg.get_frame().set_edgecolor(c["foreground"])
                for t in leg.get_texts():
                    t.set_color(c["text"])
