"""Shared pieces of the panels: the project box, the model-version list, docking (scrolling, tabs,
a guarded close), a folder field, and settings remembered between sessions.

The project a panel works on is the window's current one (:class:`~._session.Session`): a path or
URL, opened from the store each time it is used.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..layers import STORE_KEY
from ._messages import report_error


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
    """The window's current project (shared by the four docks: :class:`~._session.Session`), with
    "Open…"; fills itself from the viewer's linked layers when there is none yet."""

    changed = Signal(str)

    def __init__(self, viewer, parent=None):
        from ._session import Session

        super().__init__(parent)
        self.viewer = viewer
        self.session = Session.of(viewer)
        self.edit = QLineEdit(self.session.url)
        self.edit.setPlaceholderText("project folder (.zarr) or s3://...")
        self.edit.setToolTip("The project all the panels of this window work on")
        self.browse = QPushButton("Open…")
        self.browse.setToolTip("Choose an existing project folder")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(QLabel("Project:"))
        lay.addWidget(self.edit, 1)
        lay.addWidget(self.browse)
        self.browse.clicked.connect(self._browse)
        self.edit.editingFinished.connect(lambda: self.session.set_project(self.edit.text()))
        self.session.project_changed.connect(self._shown)
        viewer.layers.events.inserted.connect(self._from_viewer)
        viewer.layers.selection.events.active.connect(self._from_viewer)
        self._from_viewer()

    @property
    def url(self) -> str:
        return self.edit.text().strip()

    def set_url(self, url: str) -> None:
        """Make ``url`` the current project of every panel."""
        self.session.set_project(url)

    def _shown(self, url: str) -> None:
        if self.edit.text().strip() != url:
            self.edit.setText(url)
        self.changed.emit(url)

    def _from_viewer(self, event=None) -> None:
        if self.session.url:
            return
        url = project_url_from_viewer(self.viewer)
        if url:
            self.set_url(url)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a project (its folder)")
        if path:
            self.set_url(path)

    def project(self):
        """The project store, opened now (what was typed in the field counts, Enter or not)."""
        self.session.set_project(self.edit.text())
        return self.session.project()


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


# ---------------------------------------------------------------------- docking
def scrolled(widget: QWidget) -> QVBoxLayout:
    """Give ``widget`` a scroll area and return the layout to fill: a dock never needs more height than
    the screen has (its status line stays reachable), and several docks fit one window."""
    from qtpy.QtWidgets import QFrame, QScrollArea

    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    inner = QWidget()
    area.setWidget(inner)
    outer.addWidget(area)
    widget.setMinimumHeight(160)
    return QVBoxLayout(inner)


MAX_DOCK_WIDTH = 560  # px: wider content scrolls sideways instead of taking the image's room


def fit_width(widget: QWidget) -> None:
    """Make a :func:`scrolled` panel as wide as its rows need (napari gives a new dock ~370 px, which
    cut buttons off behind a sideways scroll bar), up to :data:`MAX_DOCK_WIDTH`."""
    from qtpy.QtWidgets import QScrollArea

    area = widget.findChild(QScrollArea)
    if area is not None and area.widget() is not None:
        need = area.widget().minimumSizeHint().width() + area.verticalScrollBar().sizeHint().width() + 2 * area.frameWidth() + 8
        area.setMinimumWidth(min(need, MAX_DOCK_WIDTH))


def later(owner: QWidget, fn: Callable[[], None]) -> None:
    """Call ``fn`` from the event loop, soon, unless ``owner`` is destroyed first (its timer goes with it)."""
    from qtpy.QtCore import QTimer

    timer = QTimer(owner)
    timer.setSingleShot(True)
    timer.timeout.connect(fn)
    timer.timeout.connect(timer.deleteLater)
    timer.start(0)


_DOCK_SERIALS = itertools.count()


class Dock:
    """Mixin of the plugin's panels: they open tabbed together and may guard their closing."""

    SEGBOX_DOCK = True

    def event(self, event):
        from qtpy.QtCore import QEvent

        if event.type() == QEvent.Type.ParentChange and dock_of(self) is not None:
            self.on_docked()  # in a dock now (shown or not)
            if not getattr(self, "_tabified", False):
                self._tabified = True
                self._dock_serial = next(_DOCK_SERIALS)
                later(self, lambda: (fit_width(self), tabify_with_siblings(self)))  # once napari put the dock in its window, styled
        return super().event(event)

    def on_docked(self) -> None:
        """Called when the panel is put in a dock (may be called more than once)."""


def dock_of(widget: QWidget):
    """The dock (a QDockWidget) holding ``widget``, or None."""
    from qtpy.QtWidgets import QDockWidget

    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent


def tabify_with_siblings(widget: QWidget) -> None:
    """Put ``widget``'s dock in one tab group with the other napari-seg-box docks of the window: each
    joins the earliest opened, so panels opened together end in one group too."""
    from qtpy.QtWidgets import QDockWidget, QMainWindow

    dock = dock_of(widget)
    window = dock.parentWidget() if dock is not None else None
    if not isinstance(window, QMainWindow):
        return
    siblings = []
    for other in window.findChildren(QDockWidget):
        if other is dock or other.isFloating() or window.dockWidgetArea(other) != window.dockWidgetArea(dock):
            continue
        panel = next((w for w in other.findChildren(QWidget) if getattr(w, "SEGBOX_DOCK", False)), None)
        if panel is not None:
            siblings.append((getattr(panel, "_dock_serial", 0), other))
    if not siblings or min(siblings, key=lambda s: s[0])[0] > getattr(widget, "_dock_serial", 0):
        return  # the earliest: the others join it
    window.tabifyDockWidget(min(siblings, key=lambda s: s[0])[1], dock)
    dock.show()
    dock.raise_()


def guard_dock_close(widget: QWidget, confirm: Callable[[], bool]) -> None:
    """Ask ``confirm()`` before the dock holding ``widget`` is closed with its x button (napari's
    dock calls ``destroyOnClose``); a False answer keeps it open."""
    dock = dock_of(widget)
    if dock is None or not hasattr(dock, "destroyOnClose") or getattr(dock, "_segbox_guarded", False):
        return
    close = dock.destroyOnClose

    def guarded_close():
        if confirm():
            close()

    dock.destroyOnClose = guarded_close
    dock._segbox_guarded = True


class PathField(QWidget):
    """A folder path with a … button."""

    def __init__(self, placeholder: str, parent=None):
        super().__init__(parent)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        button = QPushButton("…")
        button.setMaximumWidth(30)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.edit, 1)
        lay.addWidget(button)
        button.clicked.connect(self._browse)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder")
        if folder:
            self.edit.setText(folder)

    def text(self) -> str:
        return self.edit.text().strip()

    def setText(self, text: str) -> None:  # noqa: N802 - Qt name
        self.edit.setText(text)


# ---------------------------------------------------------------------- remembered settings
def settings():
    """Where the panels keep their choices between sessions (an INI file in the user's config folder)."""
    from qtpy.QtCore import QSettings

    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "napari-seg-box", "panels")


def remember(key: str, control) -> None:
    """Restore ``control`` from the last session and store every change: a QCheckBox, QSpinBox,
    QDoubleSpinBox, QComboBox (by its text) or QLineEdit."""
    from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox

    value = settings().value(key)
    store = lambda v: settings().setValue(key, v)  # noqa: E731
    if isinstance(control, QCheckBox):
        if value is not None:
            control.setChecked(str(value).lower() == "true")
        control.toggled.connect(store)
    elif isinstance(control, QSpinBox | QDoubleSpinBox):
        if value is not None:
            with contextlib.suppress(ValueError, TypeError):
                control.setValue(type(control.value())(value))
        control.valueChanged.connect(store)
    elif isinstance(control, QComboBox):
        if value is not None and control.findText(str(value)) >= 0:
            control.setCurrentText(str(value))
        control.currentTextChanged.connect(store)
    elif isinstance(control, QLineEdit):
        if value is not None:
            control.setText(str(value))
        control.textChanged.connect(store)
    else:
        raise TypeError(f"cannot remember a {type(control).__name__}")
