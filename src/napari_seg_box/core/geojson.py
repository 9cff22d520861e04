"""Object outlines as GeoJSON that QuPath imports (File > Import objects): one Feature per object.

:func:`labels_to_geojson` turns an instance label image into a ``FeatureCollection``: each object's
outline is traced with marching squares (:func:`skimage.measure.find_contours`) on its padded crop,
a Polygon (outer ring, then one interior ring per hole) or, for an object in several pieces, a
MultiPolygon. Rings are closed, the outer ones counter-clockwise and holes clockwise (RFC 7946).
Coordinates are ``(x, y)`` in pixels of the full image with QuPath's convention: the pixel at row r,
column c covers ``[c, c + 1] x [r, r + 1]`` (its centre is ``(c + 0.5, r + 0.5)``); the outline runs
half-way between the object's boundary pixels and the pixels around them. Properties follow QuPath:
``objectType`` (detection or annotation), ``classification`` ({name, color}) and ``measurements``
(numbers only; NaN dropped); ``id`` is a UUID. :func:`write_objects_geojson` adds the per-object
measurements of :func:`.quantify.quantify_labels`.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Mapping, Sequence

import numpy as np

from .errors import ConfigError, DataError
from .manifest import DEFAULT_COLORS

OBJECT_TYPES = ("detection", "annotation")
SKIPPED_COLUMNS = ("label", "class")  # ids, not measurements


def labels_to_geojson(
    instances: np.ndarray,
    *,
    classes: Mapping[int, str] | str | None = None,
    colors: Mapping[str, str | Sequence[int]] | None = None,
    measurements=None,
    object_type: str = "detection",
    pixel_size: float | Sequence[float] | None = None,
    offset: Sequence[float] = (0, 0),
) -> dict:
    """A GeoJSON ``FeatureCollection`` with one Feature per object of ``instances``.

    Parameters
    ----------
    instances : (Y, X) integer array of object ids (0 = none).
    classes : object id -> class name (``classification`` of the feature), or one name for all.
    colors : class name -> colour ("#rrggbb" or (r, g, b) in 0-255); default: the project's palette.
    measurements : pandas table with a ``label`` column (object id), e.g. ``quantify_labels(...).objects``;
        its numeric columns (but ``label`` and ``class``) become each feature's ``measurements``.
    object_type : ``"detection"`` (many small objects, QuPath's default for cells) or ``"annotation"``.
    pixel_size : multiply the coordinates by it (one value, or (y, x)) for tools that want physical
        units. QuPath wants pixels: leave None.
    offset : (y, x) of ``instances``' first pixel in the full image (a tile or a crop), in pixels.

    Returns
    -------
    dict, ready for ``json.dump``; features are ordered by object id.
    """
    from scipy import ndimage as ndi

    inst = np.asarray(instances)
    if inst.ndim != 2:
        raise DataError(f"GeoJSON outlines are 2D: give a (Y, X) instance label image (got shape {inst.shape}); a volume plane by plane.")
    if not (np.issubdtype(inst.dtype, np.integer) or inst.dtype == bool):
        raise DataError(f"Instance labels must be integers (object ids); got {inst.dtype}.")
    if inst.size and inst.min() < 0:
        raise DataError("Instance labels must be non-negative (0 = no object).")
    if object_type not in OBJECT_TYPES:
        raise ConfigError(f"object_type must be one of {', '.join(OBJECT_TYPES)} (got {object_type!r}).")
    sy, sx = _pixel_size(pixel_size)
    oy, ox = (float(v) for v in offset)
    table = _measurement_rows(measurements)
    palette = _palette(classes, colors)
    inst = inst.astype(np.int64, copy=False)
    features = []
    for index, where in enumerate(ndi.find_objects(inst)):
        if where is None:
            continue
        label = index + 1
        crop = np.pad(inst[where] == label, 1)
        y0, x0 = where[0].start - 1 + oy + 0.5, where[1].start - 1 + ox + 0.5

        def to_xy(contour, y0=y0, x0=x0):
            return [[_num((c + x0) * sx), _num((r + y0) * sy)] for r, c in contour]

        polygons = [[to_xy(ring) for ring in rings] for rings in _polygons(crop)]
        geometry = (
            {"type": "Polygon", "coordinates": polygons[0]} if len(polygons) == 1 else {"type": "MultiPolygon", "coordinates": polygons}
        )
        props: dict = {"objectType": object_type}
        name = classes if isinstance(classes, str) else (classes or {}).get(label)
        if name is not None:
            props["classification"] = {"name": str(name), "color": palette[str(name)]}
        props["measurements"] = table.get(label, {})
        features.append({"type": "Feature", "id": str(uuid.uuid4()), "geometry": geometry, "properties": props})
    return {"type": "FeatureCollection", "features": features}


def _polygons(mask: np.ndarray) -> list[list[np.ndarray]]:
    """Rings (outer, then holes) of each piece of a padded object mask, in (row, col) of the crop.
    Pieces are 4-connected, holes 8-connected (find_contours' default: pieces touching only at a corner
    are two pieces, as the contour of the whole mask draws them)."""
    from scipy import ndimage as ndi

    pieces, n = ndi.label(mask)
    out = []
    for i in range(1, n + 1):
        piece = pieces == i
        background, m = ndi.label(~piece, structure=np.ones((3, 3), bool))
        outside = background[0, 0]  # the padding is outside every piece
        filled = piece | ((background != outside) & (background > 0))
        rings = [_ring(filled, "low", +1)]
        for j in range(1, m + 1):
            if j != outside:
                rings.append(_ring(background == j, "high", -1))
        out.append(rings)
    return out


def _ring(mask: np.ndarray, connected: str, orientation: int) -> np.ndarray:
    """The closed outline of a one-piece ``mask``, simplified (collinear points dropped), with the
    orientation (+1 counter-clockwise in x, y) asked for."""
    from skimage import measure

    contours = measure.find_contours(mask.astype(np.float32), 0.5, fully_connected=connected)
    ring = max(contours, key=lambda c: abs(_area(c)))
    ring = measure.approximate_polygon(ring, tolerance=0)
    if not np.array_equal(ring[0], ring[-1]):
        ring = np.vstack([ring, ring[:1]])
    if np.sign(_area(ring)) != orientation:
        ring = ring[::-1]
    return ring


def _area(rc: np.ndarray) -> float:
    """Signed area in (x, y) = (col, row): positive for counter-clockwise."""
    x, y = rc[:, 1], rc[:, 0]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _num(v: float):
    v = round(float(v), 4)
    return int(v) if v.is_integer() else v


def _pixel_size(pixel_size) -> tuple[float, float]:
    if pixel_size is None:
        return 1.0, 1.0
    values = [float(pixel_size)] * 2 if np.ndim(pixel_size) == 0 else [float(v) for v in pixel_size]
    if len(values) != 2 or not all(v > 0 and math.isfinite(v) for v in values):
        raise ConfigError(f"pixel_size must be one positive number or (y, x) (got {pixel_size!r}).")
    return values[0], values[1]


def _measurement_rows(measurements) -> dict[int, dict]:
    if measurements is None:
        return {}
    if "label" not in getattr(measurements, "columns", ()):
        raise DataError("The measurements need a 'label' column with the object ids (as quantify_labels' objects table has).")
    numeric = [c for c in measurements.columns if c not in SKIPPED_COLUMNS and _is_number_column(measurements[c])]
    rows = {}
    for label, *values in measurements[["label", *numeric]].itertuples(index=False, name=None):
        kept = {str(c): _plain(v) for c, v in zip(numeric, values) if v is not None and math.isfinite(float(v))}
        rows.setdefault(int(label), kept)
    return rows


def _is_number_column(column) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(column.dtype)


def _plain(v):
    return bool(v) if isinstance(v, (bool, np.bool_)) else int(v) if isinstance(v, (int, np.integer)) else float(v)


def _palette(classes, colors) -> dict[str, list[int]]:
    names = [classes] if isinstance(classes, str) else list(dict.fromkeys(str(v) for v in (classes or {}).values()))
    given = {str(k): v for k, v in (colors or {}).items()}
    out = {}
    for i, name in enumerate(names):
        c = given.get(name, DEFAULT_COLORS[2 + i % (len(DEFAULT_COLORS) - 2)])
        out[name] = [int(c.lstrip("#")[k : k + 2], 16) for k in (0, 2, 4)] if isinstance(c, str) else [int(v) for v in list(c)[:3]]
    return out


def write_geojson(path, instances: np.ndarray, **kwargs) -> str:
    """Write :func:`labels_to_geojson` of ``instances`` (same keywords) to ``path``; returns the path."""
    collection = labels_to_geojson(instances, **kwargs)
    path = os.fspath(path)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(collection, f, allow_nan=False)
    return path


def write_objects_geojson(
    path,
    instances: np.ndarray,
    *,
    image: np.ndarray | None = None,
    classes: Mapping[int, str] | str | None = None,
    colors: Mapping[str, str | Sequence[int]] | None = None,
    pixel_size: float | Sequence[float] | None = None,
    unit: str = "µm",
    object_type: str = "detection",
) -> str:
    """Write the objects of ``instances`` as QuPath GeoJSON with their measurements (shape, and
    intensity in ``image`` when given; lengths in ``unit`` when ``pixel_size`` is known: it names the
    measurements, the coordinates stay in pixels)."""
    from .quantify import quantify_labels

    inst = np.asarray(instances)
    if inst.ndim != 2:
        raise DataError(f"GeoJSON outlines are 2D: give a (Y, X) instance label image (got shape {inst.shape}).")
    if image is not None and np.shape(image)[:2] != inst.shape:
        image = None  # not the same pixels (a stack, channels first): shape measurements only
    table = quantify_labels(inst, image, kind="instances", pixel_size=pixel_size, unit=unit).objects
    return write_geojson(path, inst, classes=classes, colors=colors, measurements=table, object_type=object_type)
