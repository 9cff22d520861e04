"""How an array's axes read: one rule, used by the store, import, prediction and the widgets.

A microscopy array of 2 to 4 dimensions is one of

- ``yx``    a plane;
- ``yxc``   a plane with channels (RGB, or a few fluorescence channels), stored channel-last;
- ``zyx``   a stack of planes (a volume, or a time-lapse: ``tyx``), Z/T first;
- ``zyxc``  a stack with channels.

:func:`read_axes` decides which, in this order:

1. ``channel_axis`` given: that axis holds the channels (the rest is ``yx`` or ``zyx``);
2. ``stack`` given: ``True`` reads a 3D array as ``zyx``, ``False`` as a plane with channels;
3. otherwise a 3D array has channels when one end axis is short (at most 4 entries: the last one
   first, then the first one) and is a stack when neither is; a short *first* axis is read as
   planes instead when the caller knows the data have one channel (``channels=1``: the project's
   images, the model's input);
4. a 4D array is ``zyxc`` (channels last when short, else second: ImageJ's ZCYX).

:func:`to_canonical` then moves the channels last and drops a single channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import DataError

MAX_CHANNELS = 4
AXES = ("yx", "yxc", "zyx", "zyxc")


@dataclass(frozen=True)
class Layout:
    """The reading of an array: its axes once canonical, and where its channel axis was."""

    axes: str  # one of AXES, after to_canonical
    channel_axis: int | None  # in the input array, or None

    @property
    def is_stack(self) -> bool:
        return self.axes.startswith("z")

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
