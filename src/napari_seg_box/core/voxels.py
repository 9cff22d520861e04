"""Voxel sizes, units and frame intervals: checked, converted, and written into image records.

An image's ``spacing`` is physical, per *spatial* axis: (z, y, x) for a volume (or (y, x) when the
plane spacing is unknown), (y, x) for a plane and for a time-lapse (T is time, not space). Its
``unit`` is a length unit, converted to the project's unit when both are known (``nm`` into ``µm``),
so that measurements of all images read in one unit. A time-lapse keeps its ``frame_interval`` (the
time between frames) in ``time_unit`` (``s``, ``ms``, ``min``, ``h``) as the file gives it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .errors import DataError

# length units as files spell them (ImageJ, OME-XML, OME-Zarr/UDUNITS), in micrometres
_LENGTH = {
    "pm": 1e-6, "picometer": 1e-6, "å": 1e-4, "angstrom": 1e-4, "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0, "\\u00b5m": 1.0,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3, "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4,
    "m": 1e6, "meter": 1e6, "metre": 1e6, "in": 25400.0, "inch": 25400.0,
}  # fmt: skip
_TIME = {
    "ns": "ns", "nanosecond": "ns", "µs": "µs", "us": "µs", "microsecond": "µs", "ms": "ms", "millisecond": "ms",
    "s": "s", "sec": "s", "secs": "s", "second": "s", "seconds": "s", "min": "min", "minute": "min", "minutes": "min",
    "h": "h", "hr": "h", "hour": "h", "hours": "h", "d": "d", "day": "d", "days": "d",
}  # fmt: skip
NO_UNIT = ("", "pixel", "pixels", "px", "none")


def length_factor(unit: str | None) -> float | None:
    """Micrometres per ``unit``, or None for an unknown unit (or none)."""
    return None if unit is None else _LENGTH.get(str(unit).strip().lower().replace("\\u00b5", "µ"))


def is_length(unit: str | None) -> bool:
    """Whether ``unit`` names a physical length (not a pixel)."""
    return unit is not None and str(unit).strip().lower() not in NO_UNIT


def convert(values: Sequence[float], unit: str | None, to: str | None) -> tuple[list[float], str | None]:
    """``values`` in ``unit`` expressed in ``to`` when both units are known lengths; else unchanged."""
    a, b = length_factor(unit), length_factor(to)
    if a is None or b is None or unit == to:
        return [float(v) for v in values], unit
    return [float(v) * a / b for v in values], to


def time_unit(unit: str | None) -> str | None:
    """A time unit's short name (``sec`` -> ``s``); an unknown one as given."""
    if unit is None or not str(unit).strip():
        return None
    return _TIME.get(str(unit).strip().lower(), str(unit).strip())


def _positive(values) -> list[float] | None:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return out if all(math.isfinite(v) and v > 0 for v in out) else None


def check_voxel_size(voxel_size) -> tuple[float, float, float] | None:
    """A user's voxel size (z, y, x): three positive finite numbers (one number: isotropic), else a
    DataError that says how. The one check of a voxel size (import, post-processing, measurement)."""
    if voxel_size is None:
        return None
    scalar = isinstance(voxel_size, (int, float, np.number)) and not isinstance(voxel_size, bool)
    values = None if isinstance(voxel_size, (str, bytes, bool)) else _positive([voxel_size] * 3 if scalar else voxel_size)
    if values is None or len(values) != 3 or (not scalar and any(isinstance(v, bool) for v in voxel_size)):
        raise DataError(
            f"Cannot use the voxel size {voxel_size!r}: give the voxel size as three positive numbers (z, y, x), "
            "e.g. --voxel-size 0.05 0.004 0.004.",
            hints={"python": "In Python: voxel_size=(0.05, 0.004, 0.004)."},
        )
    return tuple(values)  # type: ignore[return-value]


def check_pixel_size(pixel_size) -> tuple[float, float] | None:
    """A user's pixel size: one positive number (y = x) or (y, x)."""
    if pixel_size is None:
        return None
    values = _positive([pixel_size] if isinstance(pixel_size, (int, float)) else pixel_size)
    if values is None or len(values) not in (1, 2):
        raise DataError(
            f"Cannot use the pixel size {pixel_size!r}: give the pixel size as one positive number or (y, x), "
            "e.g. --pixel-size 0.2. Nothing was imported."
        )
    return (values[0], values[-1])


def check_interval(frame_interval) -> float | None:
    if frame_interval is None:
        return None
    values = _positive([frame_interval])
    if values is None:
        raise DataError(f"Cannot use the frame interval {frame_interval!r}: give the time between frames as a positive number.")
    return values[0]


def record_fields(axes: str, pixel_size, unit: str | None, frame_interval, time_unit_: str | None, project_unit: str | None) -> dict:
    """The scale fields of an image's manifest record (``spacing``, ``unit``, ``frame_interval``,
    ``time_unit``) for canonical ``axes``; ``pixel_size`` is one value (y = x), (y, x) or (z, y, x),
    in ``unit`` (the project's when None); (z, y, x) for a volume only (a time-lapse has no z)."""
    fields: dict = {"spacing": None}
    if pixel_size is not None:
        values = _positive([pixel_size] if isinstance(pixel_size, (int, float)) else pixel_size)
        n = 3 if axes.startswith("z") else 2
        if values is None or len(values) not in (1, 2, n):
            forms = "(y, x)" + (" or (z, y, x)" if n == 3 else "")
            what = " (a time-lapse has no z)" if axes.startswith("t") else ""
            raise DataError(f"Pixel size must be one positive number or {forms}{what}; got {pixel_size!r}.")
        values = values * 2 if len(values) == 1 else values
        fields["spacing"], fields["unit"] = convert(values, unit or project_unit, project_unit)
    if axes.startswith("t"):
        fields["frame_interval"] = check_interval(frame_interval)
        fields["time_unit"] = (time_unit(time_unit_) or "s") if fields["frame_interval"] else None
    return fields
