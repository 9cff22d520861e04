"""The one exception type users see from napari-seg-box."""

from __future__ import annotations


class SegBoxError(Exception):
    """A problem with the user's input or store, with a message that says what to do.

    Every error raised on purpose by napari-seg-box is a ``SegBoxError`` (or subclass), so
    scripts, the CLI and the widgets can catch one type and show its message as is.
    """


class StoreError(SegBoxError):
    """The project store is missing, damaged, or asked for something it does not hold."""


class ConfigError(SegBoxError):
    """A configuration value is invalid."""


class DataError(SegBoxError):
    """Images or masks cannot be used as given (shape, dtype, channels, missing files)."""


class CancelledError(SegBoxError):
    """Work was cancelled by the user."""
