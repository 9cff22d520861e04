"""What image files say about themselves: their axes, voxel size and time between frames.

* TIFF: ImageJ hyperstacks (axes from ``slices`` / ``frames`` / ``channels``; ``spacing`` for z,
  ``unit``, the XResolution / YResolution tags as pixels per unit, ``finterval`` and ``tunit``);
  OME-TIFF (the series' axes; ``PhysicalSizeX/Y/Z`` with their units, ``TimeIncrement``);
* OME-Zarr: the axis names of the first multiscale image, and the ``scale`` of its dataset 0 (times
  the multiscale's own ``coordinateTransformations``) with the axes' units.

Plain files (PNG, TIFF without such metadata, a bare zarr array) say nothing: their axes are read
from the shape (:func:`.layout.read_axes`). Also here: the zarr node of a path, and the natural
order of slice files (``slice_2`` before ``slice_10``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .errors import DataError
from .voxels import convert, is_length, length_factor

AXIS_ORDER = "tzyxc"  # the project's order of named axes (channels last)


@dataclass(frozen=True)
class ImageMeta:
    """What a file says: ``axes`` names each axis of the array as read (t, z, c, y, x; None when the
    file does not say), ``spacing`` the physical size along z, y, x in ``unit``, ``frame_interval``
    the time between frames in ``time_unit``."""

    axes: str | None = None
    spacing: Mapping[str, float] = field(default_factory=dict)
    unit: str | None = None
    frame_interval: float | None = None
    time_unit: str | None = None


# ---------------------------------------------------------------------- TIFF
def read_tiff(path: str) -> tuple[np.ndarray, ImageMeta]:
    """The first series of a TIFF file and its ImageJ or OME metadata."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        data = np.asarray(series.asarray())
        named = series.axes.upper()
        axes = None
        shaped = tif.is_shaped and any(isinstance(m, dict) and m.get("axes") for m in tif.shaped_metadata or ())
        if (tif.is_imagej or tif.is_ome or shaped) and len(named) == data.ndim and set(named) <= set("TZCYXS"):
            lowered = named.lower().replace("s", "c")
            axes = lowered if len(set(lowered)) == len(lowered) else None  # C and S both: left to the shape rule
        if tif.is_ome and tif.ome_metadata:
            meta = _ome_tiff(tif.ome_metadata)
        elif tif.is_imagej and tif.imagej_metadata:
            meta = _imagej(tif.imagej_metadata, series.pages[0] if series.pages else tif.pages[0])
        else:
            meta = ImageMeta()
    return data, ImageMeta(axes, meta.spacing, meta.unit, meta.frame_interval, meta.time_unit)


def _imagej(ij: Mapping, page) -> ImageMeta:
    unit = ij.get("unit")
    interval = _number(ij.get("finterval"))
    time_unit = ij.get("tunit") or "s"
    if not is_length(unit):  # an uncalibrated image: ImageJ's unit is "pixel"
        return ImageMeta(frame_interval=interval, time_unit=time_unit)
    spacing = {}
    for axis, tag in (("x", "XResolution"), ("y", "YResolution")):
        value = page.tags.get(tag).value if page is not None and page.tags.get(tag) is not None else None
        if isinstance(value, tuple) and len(value) == 2 and value[0] and value[1]:
            spacing[axis] = value[1] / value[0]  # the tag holds pixels per unit
    if "x" in spacing and "y" not in spacing:
        spacing["y"] = spacing["x"]
    if (z := _number(ij.get("spacing"))) is not None:
        spacing["z"] = z
    return ImageMeta(spacing=_valid(spacing), unit=str(unit), frame_interval=interval, time_unit=time_unit)


def _ome_tiff(xml: str) -> ImageMeta:
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return ImageMeta()
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return ImageMeta()
    a = pixels.attrib
    spacing, unit = {}, "µm"
    for axis in "zyx":
        value = _number(a.get(f"PhysicalSize{axis.upper()}"))
        if value is not None:
            (value,), _ = convert([value], a.get(f"PhysicalSize{axis.upper()}Unit", "µm"), "µm")
            spacing[axis] = value
    return ImageMeta(
        spacing=_valid(spacing), unit=unit, frame_interval=_number(a.get("TimeIncrement")), time_unit=a.get("TimeIncrementUnit", "s")
    )


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _valid(spacing: dict) -> dict:
    return {k: float(v) for k, v in spacing.items() if _number(v) is not None}


# ---------------------------------------------------------------------- zarr / OME-Zarr
def zarr_image(url) -> tuple[object, list | None, object]:
    """The full-resolution array of a zarr array / OME-Zarr / zarr group holding one array (lazy),
    the axis names of an OME-Zarr (else None) and the group (None for a bare array)."""
    import zarr

    try:
        node = zarr.open(str(url), mode="r")
    except Exception as err:
        raise DataError(f"Cannot open {url} as zarr: {err}") from err
    if isinstance(node, zarr.Array):
        return node, None, None
    ms = ome_attrs(node).get("multiscales")
    if not ms:
        arrays = sorted(node.array_keys())
        if not arrays:
            raise DataError(f"{url} is a zarr group without arrays or OME-Zarr multiscales metadata.")
        if len(arrays) > 1:
            shown = ", ".join(arrays[:8]) + (f" and {len(arrays) - 8} more" if len(arrays) > 8 else "")
            raise DataError(
                f"{url} is not OME-Zarr: its attributes have no 'multiscales', and it holds several arrays ({shown}), so which "
                f"one is the image is unknown. Give the path of one array, e.g. {str(url).rstrip('/')}/{arrays[0]}."
            )
        return node[arrays[0]], None, node
    array = node[ms[0]["datasets"][0]["path"]]
    return array, axis_names(ms[0]) or [None] * array.ndim, node  # old OME-Zarr: no axis names


def ome_attrs(node) -> dict:
    attrs = dict(node.attrs)
    return attrs.get("ome", attrs)


def axis_names(multiscale: dict) -> list:
    return [a["name"] if isinstance(a, dict) else a for a in multiscale.get("axes", [])]


def read_zarr(url: str) -> tuple[np.ndarray, ImageMeta]:
    """The full-resolution array of a zarr path (all axes, in stored order) and its OME metadata."""
    array, names, group = zarr_image(url)
    data = np.asarray(array[...])
    if names is None:
        return data, ImageMeta()
    letters = [str(n).lower() if n is not None else None for n in names]
    if all(n is None for n in letters) and data.ndim == 5:
        letters = list("tczyx")  # OME-Zarr 0.1/0.2: always 5D, t c z y x
    axes = "".join(letters) if all(n in tuple(AXIS_ORDER) for n in letters) and len(set(letters)) == len(letters) else None
    if axes is None or len(axes) != data.ndim:
        return data, ImageMeta()
    ms = ome_attrs(group)["multiscales"][0]
    scale = np.ones(data.ndim)
    for transforms in (ms["datasets"][0].get("coordinateTransformations"), ms.get("coordinateTransformations")):
        for t in transforms or []:
            if isinstance(t, dict) and t.get("type") == "scale" and len(t.get("scale") or []) == data.ndim:
                scale = scale * np.asarray(t["scale"], dtype=float)
    units = {a.get("name"): a.get("unit") for a in ms.get("axes", []) if isinstance(a, dict)}
    spacing, unit = {}, None
    for axis in "zyx":
        if axis in axes and _number(scale[axes.index(axis)]) is not None:
            value, own = float(scale[axes.index(axis)]), units.get(axis)
            if length_factor(own) is not None:
                (value,), own = convert([value], own, "µm")
            spacing[axis], unit = value, own or unit
    if not any(units.get(a) for a in "zyx") and all(v == 1 for v in spacing.values()):
        spacing = {}  # a scale of 1 without units: a placeholder, not a voxel size
    interval = _number(scale[axes.index("t")]) if "t" in axes else None
    if interval == 1 and not units.get("t"):
        interval = None
    return data, ImageMeta(axes, spacing, unit, interval, units.get("t"))


# ---------------------------------------------------------------------- named axes, slices
def named_canonical(data: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    """``data`` with named ``axes`` (t, z, c, y, x) in the project's order (t, z, y, x, c), axes of
    length 1 other than y and x dropped."""
    keep = [i for i, a in enumerate(axes) if data.shape[i] > 1 or a in "yx"]
    data = data.reshape([data.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    order = sorted(range(len(axes)), key=lambda i: AXIS_ORDER.index(axes[i]))
    return np.transpose(data, order), "".join(axes[i] for i in order)


def natural_key(path: str) -> list:
    """Sort key of a file path in natural order: ``slice_2`` before ``slice_10``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", str(path)) if part]
