"""How an array's axes read: one rule, used by the store, import, prediction and the widgets.

A microscopy array of 2 to 4 dimensions is one of

- ``yx``    a plane;
- ``yxc``   a plane with channels (RGB, or a few fluorescence channels), stored channel-last;
- ``zyx``   a volume: a stack of planes along space, Z first;
- ``zyxc``  a volume with channels;
- ``tyx``   a time-lapse: a stack of planes along time, T first (T is time, not space: no spacing,
  no 2.5D context across frames);
- ``tyxc``  a time-lapse with channels.

Volumes and time-lapses are both *stacks* (:attr:`Layout.is_stack`: they have planes, segmented
plane by plane); :attr:`Layout.is_timelapse` tells them apart. A shape alone never says time: an
array is read as a time-lapse only when its axes are named (:func:`parse_axes`: the user's ``axes``
/ ``--axes``, OME-Zarr axis names, ImageJ ``frames`` or OME-TIFF ``SizeT`` metadata).

Without names, :func:`read_axes` decides from the shape, in this order:

1. ``channel_axis`` given: that axis holds the channels (the rest is ``yx`` or ``zyx``);
2. ``stack`` given: ``True`` reads a 3D array as ``zyx``, ``False`` as a plane with channels;
3. otherwise a 3D array has channels when one end axis is short (at most 4 entries: the last one
   first, then the first one) and is a stack when neither is; a short *first* axis is read as
   planes instead when the caller knows the data have one channel (``channels=1``: the project's
   images, the model's input);
4. a 4D array is ``zyxc`` (channels last when short, else second: ImageJ's ZCYX). Import is
   stricter: a 4D array without named axes whose last axis is not short asks for ``axes``.

:func:`to_canonical` then moves the channels last and drops a single channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import DataError

MAX_CHANNELS = 4
AXES = ("yx", "yxc", "zyx", "zyxc", "tyx", "tyxc")


@dataclass(frozen=True)
class Layout:
    """The reading of an array: its axes once canonical, and where its channel axis was."""

    axes: str  # one of AXES, after to_canonical
    channel_axis: int | None  # in the input array, or None

    @property
    def is_stack(self) -> bool:
        """Has planes: a volume or a time-lapse."""
        return self.axes[0] in "zt"

    @property
    def is_timelapse(self) -> bool:
        return self.axes.startswith("t")

    @property
    def has_channels(self) -> bool:
        return self.axes.endswith("c")


def read_axes(shape: Sequence[int], *, channel_axis: int | None = None, stack: bool | None = None, channels: int | None = None) -> Layout:
    """Decide how an array of ``shape`` reads (the rule in the module docstring)."""
    shape = tuple(int(s) for s in shape)
    nd = len(shape)
    if nd not in (2, 3, 4):
        raise DataError(f"Expected an image (Y, X), (Y, X, C), a stack (Z, Y, X) or (Z, Y, X, C); got shape {shape}.")
    if channel_axis is not None:
        if not -nd <= channel_axis < nd or nd == 2:
            raise DataError(f"channel_axis={channel_axis} does not fit an array of shape {shape}: give one of its axes (0..{nd - 1}).")
        channel_axis %= nd
        return Layout("yxc" if nd == 3 else "zyxc", channel_axis)
    if nd == 2:
        if stack:
            raise DataError(f"A 2D array {shape} cannot be read as a stack of planes.")
        return Layout("yx", None)
    if nd == 4:
        if stack is False:
            raise DataError(f"A 4D array {shape} is a stack with channels (Z, Y, X, C), not one image.")
        if shape[-1] <= MAX_CHANNELS:
            return Layout("zyxc", 3)
        if shape[1] <= MAX_CHANNELS:
            return Layout("zyxc", 1)
        raise DataError(f"Cannot tell which axis of {shape} holds the channels: give channel_axis.")
    # 3D
    short = 2 if shape[-1] <= MAX_CHANNELS else (0 if shape[0] <= MAX_CHANNELS else None)
    if stack is True:
        return Layout("zyx", None)
    if stack is False:
        if short is None:
            raise DataError(f"No axis of {shape} looks like channels (at most {MAX_CHANNELS}): give channel_axis, or read it as a stack.")
        return Layout("yxc", short)
    if short is None:
        return Layout("zyx", None)
    if short == 0 and channels == 1 and shape[0] != 1:  # (N, Y, X) for single-channel data: N planes
        return Layout("zyx", None)
    return Layout("yxc", short)


def normalise_axes(axes: str) -> str:
    """Named axes in lower case (``S``, TIFF samples, reads as ``c``), checked: each of t, z, c, y, x
    at most once, y and x present."""
    text = str(axes).strip().lower().replace("s", "c")
    if not text or set(text) - set("tzcyx") or len(set(text)) != len(text) or not {"y", "x"} <= set(text):
        raise DataError(
            f"Cannot read the axes {axes!r}: name each axis once with T (time), Z (planes), C (channels), Y and X, "
            "e.g. TYX, ZYX, ZCYX, CZYX, TYXC or YXC."
        )
    return text


def parse_axes(axes: str, shape: Sequence[int]) -> Layout:
    """The layout of an array of ``shape`` whose axes are named (``"TYX"``, ``"ZCYX"``, ``"CZYX"``,
    ``"TYXC"``, ``"YXC"``...; case-insensitive). The channel axis may stand anywhere; the others
    must read T or Z, then Y, then X. T and Z together (a time-lapse of volumes) is not one image."""
    text = normalise_axes(axes)
    shape = tuple(int(s) for s in shape)
    if len(text) != len(shape):
        raise DataError(f"The axes {axes!r} name {len(text)} axes but the array has {len(shape)} (shape {shape}): name each axis once.")
    rest = text.replace("c", "")
    if rest == "tzyx" or rest == "ztyx":
        raise DataError(
            f"The axes {axes!r} make a time-lapse of volumes: one image is a volume or a time-lapse, not both. "
            "Import it with import_images (one volume per time point) or give each time point separately."
        )
    if rest not in ("yx", "zyx", "tyx"):
        raise DataError(f"Cannot use the axes {axes!r}: Y and X must be the last two axes besides C, e.g. ZYX, TYX, ZCYX, YXC.")
    channel = text.index("c") if "c" in text else None
    return Layout(rest + ("c" if channel is not None else ""), channel)


def to_canonical(array, layout: Layout) -> np.ndarray:
    """The array in canonical order (channels last; a single channel dropped)."""
    array = np.asarray(array)
    if layout.channel_axis is not None:
        array = np.moveaxis(array, layout.channel_axis, -1)
        if array.shape[-1] == 1:
            array = array[..., 0]
    return array


def canonical_axes(array: np.ndarray, layout: Layout) -> str:
    """The axes of ``to_canonical(array, layout)`` (a single channel is dropped)."""
    axes = layout.axes
    if layout.channel_axis is not None and np.shape(array)[layout.channel_axis] == 1:
        axes = axes[:-1]
    return axes


def spatial_shape(shape: Sequence[int], axes: str) -> tuple[int, ...]:
    """The shape without the channel axis (what labels of the image have)."""
    return tuple(shape[: len(shape) - 1]) if axes.endswith("c") else tuple(shape)


def channels_of(shape: Sequence[int], axes: str) -> int:
    return int(shape[-1]) if axes.endswith("c") else 1
