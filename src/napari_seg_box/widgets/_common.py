"""Shared pieces of the dock widgets: project picker, worker wiring, errors, themed plots, tables.

No state lives here that the project store does not own: the project a widget works on is a path
(typed, browsed, or taken from the ``segbox_store`` metadata of the viewer's layers) and is opened
from the store each time it is used.
"""

from __future__ import annotations

import threading
import traceback
from typing import Any, Callable

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, Signal

from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QTableView,
    QVBoxLayout,
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
        try:  # napari relays errors to its own traceback notification: we show a clear one instead
            worker.errored.disconnect(worker._relay_error)
        except Exception:  # pragma: no cover - older napari
            pass
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


# ---------------------------------------------------------------------- plots
def theme_colors(viewer) -> dict[str, str]:
    """Colours of the viewer's napari theme (background, foreground, text, highlight)."""
    from napari.utils.theme import get_theme

    try:
        theme = get_theme(viewer.theme)
        return {k: getattr(theme, k).as_hex() for k in ("background", "foreground", "text", "highlight", "primary", "canvas")}
    except Exception:  # pragma: no cover
        return {"background": "#262930", "foreground": "#414851", "text": "#f0f1f2", "highlight": "#6a6a6a", "primary": "#5a626c", "canvas": "#000000"}


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
        try:
            viewer.events.theme.connect(lambda e: self.plot())
        except Exception:  # pragma: no cover
            pass

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

    def resizeEvent(self, event):  # noqa: N802 - Qt name
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


# ---------------------------------------------------------------------- tables
class DataFrameModel(QAbstractTableModel):
    """A read-only pandas DataFrame for a QTableView; numbers sort as numbers."""

    SORT_ROLE = Qt.ItemDataRole.UserRole

    def __init__(self, df=None, parent=None):
        super().__init__(parent)
        import pandas as pd

        self.df = df if df is not None else pd.DataFrame()

    def set_frame(self, df) -> None:
        self.beginResetModel()
        self.df = df.reset_index(drop=True)
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.df)

    def columnCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.df.columns)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        value = self.df.iat[index.row(), index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return _fmt(value)
        if role == self.SORT_ROLE:
            if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
                v = float(value)
                return v if np.isfinite(v) else float("-inf")
            return "" if value is None else str(value)
        if role == Qt.ItemDataRole.TextAlignmentRole and isinstance(value, (int, float, np.number)):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return str(self.df.columns[section]) if section < len(self.df.columns) else None
        return str(section + 1)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "–"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


class FrameTable(QTableView):
    """A sortable table of a DataFrame (click a header to sort); ``row_frame(i)`` gives the row shown."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model_ = DataFrameModel()
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model_)
        self.proxy.setSortRole(DataFrameModel.SORT_ROLE)
        self.setModel(self.proxy)
        self.setSortingEnabled(True)
        self.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # rows in their own order until a header is clicked
        self.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QTableView.SelectionMode.SingleSelection)
        self.verticalHeader().setDefaultSectionSize(20)
        self.setMinimumHeight(120)

    @property
    def frame(self):
        return self.model_.df

    def set_frame(self, df) -> None:
        self.model_.set_frame(df)
        self.resizeColumnsToContents()

    def source_row(self, view_row: int) -> int:
        return self.proxy.mapToSource(self.proxy.index(view_row, 0)).row()

    def row_record(self, view_row: int) -> dict:
        return self.model_.df.iloc[self.source_row(view_row)].to_dict()


def save_csv_dialog(parent, title: str = "Export CSV into a folder") -> str | None:
    path = QFileDialog.getExistingDirectory(parent, title)
    return path or None
