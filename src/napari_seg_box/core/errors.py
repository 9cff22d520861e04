"""The one exception type users see from napari-seg-box, with what to do said in each face's words.

Every error raised on purpose is a :class:`SegBoxError` (or subclass), so scripts, the CLI and the
widgets catch one type and show its message. What to do next differs between faces: a script calls
``Project.create(...)``, the command line runs ``napari-seg-box init ...``, the napari user presses
*New project…*. An error carries its message and, where they differ, one hint per face
(:data:`FACES`); ``str(err)`` is the message with the Python hint, :meth:`SegBoxError.for_face`
gives another face's.
"""

from __future__ import annotations

from collections.abc import Mapping

FACES = ("python", "cli", "gui")


class SegBoxError(Exception):
    """A problem with the user's input or store, with a message that says what to do."""

    def __init__(self, message: str = "", *, hints: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.hints = dict(hints or {})

    def for_face(self, face: str) -> str:
        """The message with what to do in ``face`` (one of :data:`FACES`)."""
        hint = self.hints.get(face)
        return f"{self.message} {hint}" if hint else self.message

    def __str__(self) -> str:
        return self.for_face("python")


class StoreError(SegBoxError):
    """The project store is missing, damaged, or asked for something it does not hold."""


class ConfigError(SegBoxError):
    """A configuration value is invalid."""


class DataError(SegBoxError):
    """Images or masks cannot be used as given (shape, dtype, channels, missing files)."""


class CancelledError(SegBoxError):
    """Work was cancelled by the user."""


class OneClassError(DataError):
    """The annotations to train on hold one class only: nothing to tell it apart from. ``images``
    are the annotated images; marking their unpainted pixels as background is one way out."""

    def __init__(self, message: str, *, images, hints: Mapping[str, str] | None = None):
        super().__init__(message, hints=hints)
        self.images = list(images)
