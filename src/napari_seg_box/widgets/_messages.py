"""What the panels say: errors and information in a status line and as napari notifications, in the
words of the panels (a :class:`~..core.errors.SegBoxError` shows its ``gui`` hint), and questions."""

from __future__ import annotations

import contextlib
import traceback

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel


# ---------------------------------------------------------------------- messages
def error_text(err: BaseException) -> str:
    """What the user reads: our own errors as they are, others with their type and a hint."""
    from ..core.errors import SegBoxError

    if isinstance(err, SegBoxError):
        return err.for_face("gui")
    if isinstance(err, MemoryError):
        return "Out of memory: use smaller images, a smaller patch or batch size, or a lighter model."
    return f"{type(err).__name__}: {err} (unexpected: please report it with the details from the terminal)."


def report_error(err: BaseException, label: QLabel | None = None) -> str:
    """Show ``err`` as a napari notification and in ``label``; never raises."""
    from ..core.errors import SegBoxError

    text = error_text(err)
    if label is not None:
        with contextlib.suppress(RuntimeError):  # a panel closed meanwhile
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
        with contextlib.suppress(RuntimeError):  # a panel closed meanwhile
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


def question_box(parent, title: str, text: str, choices: list[str]):
    """A question with one button per choice (the first is the default): (the box, its buttons)."""
    from qtpy.QtWidgets import QMessageBox

    box = QMessageBox(parent)
    box.setWindowTitle(title)
    box.setText(text)
    buttons = [
        box.addButton(c, QMessageBox.ButtonRole.AcceptRole if i == 0 else QMessageBox.ButtonRole.RejectRole) for i, c in enumerate(choices)
    ]
    box.setDefaultButton(buttons[0])
    return box, buttons


def ask(parent, title: str, text: str, choices: list[str]) -> int | None:
    """Ask with one button per choice (the first is the default); returns the index chosen, or None
    when the dialog was closed. (Tests replace this function.)"""
    box, buttons = question_box(parent, title, text, choices)
    box.exec()
    clicked = box.clickedButton()
    return buttons.index(clicked) if clicked in buttons else None
