"""One rule for every configuration object: frozen dataclasses, validated once, strict about keys.

A configuration (:class:`~.train.TrainConfig`, :class:`~.infer.PredictConfig`,
:class:`~.postprocess.PostprocessConfig`) is a frozen dataclass that subclasses :class:`Config`:

- it is validated in ``__post_init__`` and never changes afterwards (``replace`` makes a new,
  validated copy);
- :meth:`Config.from_dict` refuses unknown keys with an error that names them and lists the known
  ones (a typo in a JSON file or a widget never goes unnoticed);
- :meth:`Config.to_dict` gives plain JSON types, saved whole with every model version and result,
  with the ``format_version`` of the class; a dict from a newer format is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from .errors import ConfigError

C = TypeVar("C", bound="Config")


class Config:
    """Base of the frozen configuration dataclasses (see the module docstring)."""

    FORMAT_VERSION: ClassVar[int] = 1
    #: the name used in messages ("training settings", ...)
    WHAT: ClassVar[str] = "settings"

    def _set(self, name: str, value: Any) -> None:
        """Normalise a field during validation (``__post_init__`` only: the object is frozen)."""
        object.__setattr__(self, name, value)

    def _check_format(self) -> None:
        version = getattr(self, "format_version", self.FORMAT_VERSION)
        if not isinstance(version, int) or version > self.FORMAT_VERSION:
            raise ConfigError(
                f"These {self.WHAT} have format version {version!r}, newer than this napari-seg-box understands "
                f"({self.FORMAT_VERSION}): update napari-seg-box (pip install -U napari-seg-box)."
            )

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any] | None) -> C:
        """Build and validate from a mapping; unknown keys raise :class:`ConfigError` naming them."""
        if values is None:
            return cls()
        if not isinstance(values, Mapping):
            raise ConfigError(f"The {cls.WHAT} must be a mapping of names to values (a JSON object), not {type(values).__name__}.")
        known = cls.field_names()
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"Unknown {cls.WHAT}: {', '.join(map(str, unknown))}. Known: {', '.join(known)}.")
        try:
            return cls(**values)
        except TypeError as err:  # a value of the wrong kind that validation did not catch by name
            raise ConfigError(f"Invalid {cls.WHAT}: {err}") from err

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples become lists)."""
        return {k: _plain(v) for k, v in dataclasses.asdict(self).items()}  # type: ignore[call-overload]

    def replace(self: C, **changes: Any) -> C:
        """A validated copy with ``changes`` (unknown names raise :class:`ConfigError`)."""
        return type(self).from_dict({**self.to_dict(), **changes})


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def as_config(cls: type[C], value: C | Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None) -> C:
    """``value`` as a ``cls``: an instance, a dict (strict keys) or None (defaults); ``overrides``
    (keyword arguments of a call) change fields of it."""
    if value is None:
        config = cls()
    elif isinstance(value, cls):
        config = value
    elif isinstance(value, Mapping):
        config = cls.from_dict(value)
    else:
        raise ConfigError(f"Expected {cls.__name__} or a dict of its fields, got {type(value).__name__}.")
    return config.replace(**overrides) if overrides else config
