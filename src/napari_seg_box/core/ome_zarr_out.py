"""Predictions written into an OME-Zarr image as NGFF ``labels``: ``<image>.zarr/labels/<name>/``.

:func:`write_labels_group` adds one label image (semantic classes or object ids) beside the image's
own arrays, which it never touches, in the image's NGFF version: 0.4 (zarr v2, ``.zattrs``) or 0.5
(zarr v3, attributes under ``"ome"``). The label image has the image's axes (a channel axis has
length 1) and one level per level of the image's pyramid; each level is the one above it sampled with
stride 2 (nearest, never interpolated, so that label ids stay valid), copied chunk by chunk, so a label
image larger than memory (the zarr output of :func:`.infer_large.predict_large`) is fine. Its
``coordinateTransformations`` have the scale of the image's levels; a translation is the image's level
0 one at every level (stride sampling keeps pixel 0 in place). ``image-label`` metadata holds the
colours and properties (class names) of the label values.

:func:`labels_groups` reads them back (the plugin's reader opens an OME-Zarr image with them).
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping, Sequence

import numpy as np

from .errors import DataError
from .io_meta import ome_attrs
from .manifest import DEFAULT_COLORS

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_OVERWRITE = {"python": "Pass overwrite=True to replace it, or another name.", "cli": "Add --overwrite to replace it, or --labels-prefix."}


# ---------------------------------------------------------------------- the image
def _open_image(image, mode: str = "r+"):
    import zarr

    if isinstance(image, zarr.Group):
        root = getattr(image.store, "root", None)  # a local store: its folder; else the store's URL
        return image, (str(root) if root is not None else str(image.store)).rstrip("/") + ("/" + image.path if image.path else "")
    url = os.fspath(image) if hasattr(image, "__fspath__") else str(image)
    try:
        group = zarr.open_group(url, mode=mode)
    except Exception as err:
        raise DataError(f"Cannot open {url} as an OME-Zarr image group ({err}): labels go into an OME-Zarr image.") from err
    return group, url.rstrip("/")


def _multiscale(group, url: str) -> dict:
    ms = ome_attrs(group).get("multiscales")
    if not ms:
        raise DataError(
            f"{url} is not an OME-Zarr image (no 'multiscales' metadata): labels can only be added to an OME-Zarr image. "
            "Write the prediction to a separate output instead (--out, without --ome-zarr-labels)."
        )
    return ms[0]


def _axes(ms: dict, ndim: int) -> list[dict]:
    axes = ms.get("axes")
    if not axes:
        axes = list("tczyx") if ndim == 5 else list("zyx"[-ndim:]) if ndim <= 3 else None
        if axes is None:
            raise DataError(f"The OME-Zarr image has {ndim} axes and does not name them: its labels' axes are unknown.")
    kinds = {"t": "time", "c": "channel"}
    return [dict(a) if isinstance(a, dict) else {"name": a, "type": kinds.get(a, "space")} for a in axes]


def transform_of(transforms, kind: str) -> list[float] | None:
    """The values of the first ``kind`` ("scale" or "translation") of NGFF ``coordinateTransformations``."""
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == kind:
            return [float(v) for v in t.get(kind) or []]
    return None


def is_ome_zarr_image(path) -> bool:
    """Whether ``path`` opens as an OME-Zarr image group (``multiscales`` metadata); never raises."""
    try:
        import zarr

        return bool(ome_attrs(zarr.open_group(str(path), mode="r")).get("multiscales"))
    except Exception:
        return False


def check_labels_target(image, names: Sequence[str], *, overwrite: bool = False) -> None:
    """Raise :class:`DataError` before any work when labels ``names`` cannot be written into ``image``:
    not an OME-Zarr image, a bad name, or a labels group of that name there already (without ``overwrite``)."""
    group, url = _open_image(image, mode="r")
    _multiscale(group, url)
    for name in names:
        _check_name(name)
        if not overwrite and _exists(group, name):
            raise DataError(f"{url} has labels '{name}' already: nothing was written.", hints=_OVERWRITE)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise DataError(f"Labels name {name!r} is not valid: use letters, digits, '.', '_' or '-' (e.g. 'classes', 'objects').")


def _exists(group, name: str) -> bool:
    import zarr

    labels = group.get("labels")
    if labels is not None and not isinstance(labels, zarr.Group):
        raise DataError("The image holds an array named 'labels' where NGFF puts its labels group: no labels can be added to it.")
    return labels is not None and name in labels


# ---------------------------------------------------------------------- writing
def write_labels_group(
    image,
    name: str,
    labels,
    *,
    properties: Mapping | Sequence[Mapping] | None = None,
    colors: Mapping | Sequence[Mapping] | None = None,
    scale: Sequence[float] | None = None,
    n_levels: int | None = None,
    overwrite: bool = False,
    chunk: int = 1024,
) -> str:
    """Write ``labels`` into the OME-Zarr ``image`` as the NGFF label image ``labels/<name>``.

    Parameters
    ----------
    image : path / URL of an OME-Zarr image (NGFF 0.4 or 0.5), or its open zarr group.
    name : the label image's name, e.g. ``"classes"`` (semantic labels) or ``"objects"`` (instances).
    labels : integer array (numpy, zarr or dask), the shape of the image's full resolution level with
        the channel axis (and any axis of length 1) left out, e.g. (Y, X) for a (C, Y, X) image, or
        that shape exactly with a channel axis of length 1. A zarr array is copied chunk by chunk.
    properties : per label value: ``{value: "class name"}``, ``{value: {key: value}}`` or NGFF's list
        of ``{"label-value": v, ...}``.
    colors : per label value: ``{value: "#rrggbb" | (r, g, b[, a])}`` (0-255, or floats 0-1) or NGFF's
        list of ``{"label-value": v, "rgba": [r, g, b, a]}``.
    scale : the level 0 scale, one value per axis of the image or per spatial axis (default: the image's own).
    n_levels : pyramid levels (default: as many as the image has).
    overwrite : replace labels of the same name (else :class:`DataError`; the image's own arrays are never touched).
    chunk : chunk side along y and x (other axes: 1).

    Returns
    -------
    The path / URL of the label image group, ``<image>/labels/<name>``.
    """
    _check_name(name)
    group, url = _open_image(image)
    ms = _multiscale(group, url)
    datasets = ms["datasets"]
    shapes = [tuple(group[d["path"]].shape) for d in datasets]
    axes = _axes(ms, len(shapes[0]))
    if len(axes) != len(shapes[0]):
        raise DataError(f"{url}: its multiscales name {len(axes)} axes but its arrays have {len(shapes[0])}.")
    names = [a.get("name") for a in axes]
    chan = [i for i, a in enumerate(axes) if a.get("type") == "channel" or a.get("name") == "c"]
    target = tuple(1 if i in chan else n for i, n in enumerate(shapes[0]))
    dtype = np.dtype(labels.dtype)
    if dtype.kind == "b":
        dtype = np.dtype(np.uint8)
    elif not np.issubdtype(dtype, np.integer):
        raise DataError(f"Labels must be integers (label values or object ids); got {dtype}. Convert them (e.g. .astype('uint32')).")
    keep = _placement(tuple(labels.shape), target, names)
    if keep is None:
        expected = tuple(n for i, n in enumerate(target) if n > 1 or names[i] in ("y", "x"))
        raise DataError(
            f"The labels have shape {tuple(labels.shape)} but the image {url} has {shapes[0]} (axes {''.join(map(str, names))}): "
            f"give labels of shape {expected} (the image's, without its channels)."
        )
    scale0 = transform_of(datasets[0].get("coordinateTransformations"), "scale")
    scale0 = scale0 if scale0 is not None and len(scale0) == len(target) else [1.0] * len(target)
    if scale is not None:
        space = [i for i, a in enumerate(axes) if a.get("type") == "space" or a.get("name") in ("z", "y", "x")]
        if len(scale) not in (len(target), len(space)):
            raise DataError(
                f"scale needs one value per axis of the image ({len(target)}) or per spatial axis ({len(space)}); got {list(scale)}."
            )
        for i, v in zip(range(len(target)) if len(scale) == len(target) else space, scale):
            scale0[i] = float(v)
    if _exists(group, name):
        if not overwrite:
            raise DataError(f"{url} has labels '{name}' already: nothing was written.", hints=_OVERWRITE)
        del group["labels"][name]
        _set_list(group["labels"], [n for n in _listed(group["labels"]) if n != name], group.metadata.zarr_format)
    v3 = group.metadata.zarr_format == 3
    labels_group = group.require_group("labels")
    out = labels_group.create_group(name)
    yx = [i for i, n in enumerate(names) if n in ("y", "x")] or list(range(len(target)))[-2:]
    level_shapes, factors = _pyramid(shapes, target, chan, yx, n_levels)
    kwargs = {"dimension_names": names} if v3 else {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
    prev = None
    for level, (shape, factor) in enumerate(zip(level_shapes, factors)):
        chunks = tuple(min(chunk, n) if i in yx else 1 for i, n in enumerate(shape))
        arr = out.create_array(str(level), shape=shape, dtype=dtype, chunks=chunks, fill_value=0, **kwargs)
        if level == 0:
            _fill(arr, lambda region: _read_placed(labels, region, keep))
        else:
            base = factors[level - 1]
            src, base = (prev, base) if all(f % b == 0 for f, b in zip(factor, base)) else (out["0"], factors[0])
            step = [f // b for f, b in zip(factor, base)]
            _fill(arr, lambda region, src=src, step=step: _read_strided(src, region, step))
        prev = arr
    translation = transform_of(datasets[0].get("coordinateTransformations"), "translation")
    meta_datasets = []
    for level, factor in enumerate(factors):
        own = transform_of(datasets[level].get("coordinateTransformations"), "scale") if level < len(datasets) and scale is None else None
        level_scale = own if own is not None and len(own) == len(target) else [s * f for s, f in zip(scale0, factor)]
        transforms = [{"type": "scale", "scale": level_scale}]
        if translation is not None and len(translation) == len(target):
            transforms.append({"type": "translation", "translation": translation})
        meta_datasets.append({"path": str(level), "coordinateTransformations": transforms})
    multiscale = {"name": name, "axes": axes, "datasets": meta_datasets}
    if ms.get("coordinateTransformations"):
        multiscale["coordinateTransformations"] = ms["coordinateTransformations"]
    image_label = {"source": {"image": "../../"}}
    if colors is not None:
        image_label["colors"] = _colors(colors)
    if properties is not None:
        image_label["properties"] = _properties(properties)
    version = "0.5" if v3 else "0.4"
    if v3:
        out.attrs["ome"] = {"version": version, "multiscales": [multiscale], "image-label": {**image_label, "version": version}}
    else:
        out.attrs.update({"multiscales": [{**multiscale, "version": version}], "image-label": {**image_label, "version": version}})
    _set_list(labels_group, [*(n for n in _listed(labels_group) if n != name), name], group.metadata.zarr_format)  # listed last: complete
    return f"{url}/labels/{name}"


def _placement(shape: tuple, target: tuple, names: list) -> list[int] | None:
    """The axes of ``target`` that ``shape`` holds (the others have length 1), or None if it does not fit."""
    if shape == target:
        return list(range(len(target)))
    keep = [i for i, n in enumerate(target) if n > 1 or names[i] in ("y", "x")]
    if tuple(target[i] for i in keep) == shape:
        return keep
    squeezed = tuple(n for n in shape if n > 1)
    if squeezed == tuple(n for n in target if n > 1) and len(shape) <= len(target):
        keep = [i for i, n in enumerate(target) if n > 1]
        return keep if len(keep) == len(shape) else None
    return None


def _pyramid(shapes, target, chan, yx, n_levels):
    """Shapes and per-axis downsampling factors (vs level 0) of the label levels: the image's levels
    (channel axis 1), then factor 2 more along y and x per extra level."""
    n = len(shapes) if n_levels is None else int(n_levels)
    if n < 1:
        raise DataError(f"n_levels must be at least 1 (got {n_levels}).")
    level_shapes, factors = [target], [[1] * len(target)]
    for level in range(1, n):
        if level < len(shapes):
            factor = [1 if i in chan else max(1, round(target[i] / max(1, shapes[level][i]))) for i in range(len(target))]
            shape = tuple(1 if i in chan else shapes[level][i] for i in range(len(target)))
        else:
            factor = [f * 2 if i in yx else f for i, f in enumerate(factors[-1])]
            shape = tuple(-(-target[i] // factor[i]) for i in range(len(target)))
        shape = tuple(max(1, min(s, -(-target[i] // factor[i]))) for i, s in enumerate(shape))
        level_shapes.append(shape)
        factors.append(factor)
    return level_shapes, factors


def _fill(arr, read) -> None:
    """Write ``arr`` chunk by chunk with ``read(region) -> block``."""
    starts = [range(0, n, c) for n, c in zip(arr.shape, arr.chunks)]
    for corner in itertools.product(*starts):
        region = tuple(slice(a, min(a + c, n)) for a, c, n in zip(corner, arr.chunks, arr.shape))
        arr[region] = read(region)


def _read_placed(labels, region: tuple, keep: list[int]) -> np.ndarray:
    block = np.asarray(labels[tuple(region[i] for i in keep)])
    return block.reshape([s.stop - s.start for s in region]).astype(
        np.uint8 if np.dtype(labels.dtype).kind == "b" else labels.dtype, copy=False
    )


def _read_strided(src, region: tuple, step: list[int]) -> np.ndarray:
    wide = tuple(slice(s.start * k, min(s.stop * k, n)) for s, k, n in zip(region, step, src.shape))
    block = np.asarray(src[wide])[tuple(slice(None, None, k) for k in step)]
    return block[tuple(slice(0, s.stop - s.start) for s in region)]


def _listed(labels_group) -> list[str]:
    return list(ome_attrs(labels_group).get("labels") or [])


def _set_list(labels_group, names: list[str], zarr_format: int) -> None:
    if zarr_format == 3:
        ome = dict(labels_group.attrs.get("ome") or {})
        labels_group.attrs["ome"] = {**ome, "version": "0.5", "labels": names}
    else:
        labels_group.attrs["labels"] = names


def _rgba(color) -> list[int]:
    if isinstance(color, str):
        h = color.lstrip("#")
        if not re.fullmatch(r"[0-9a-fA-F]{6}([0-9a-fA-F]{2})?", h):
            raise DataError(f"Colour {color!r} is not '#rrggbb' or '#rrggbbaa'.")
        values = [int(h[i : i + 2], 16) for i in range(0, len(h), 2)]
    else:
        values = [float(v) for v in color]
        if len(values) not in (3, 4):
            raise DataError(f"Colour {color!r} needs 3 or 4 values (r, g, b[, a]).")
        if all(v <= 1 for v in values) and any(isinstance(v, float) and not float(v).is_integer() for v in color):
            values = [v * 255 for v in values]
        values = [int(round(min(max(v, 0), 255))) for v in values]
    return values + [255] * (4 - len(values))


def _colors(colors) -> list[dict]:
    if isinstance(colors, Mapping):
        return [{"label-value": int(v), "rgba": _rgba(c)} for v, c in colors.items() if v is not None]
    return [{"label-value": int(c["label-value"]), "rgba": _rgba(c["rgba"])} for c in colors]


def _properties(properties) -> list[dict]:
    if isinstance(properties, Mapping):
        return [{"label-value": int(v), **(p if isinstance(p, Mapping) else {"class": str(p)})} for v, p in properties.items()]
    return [{**p, "label-value": int(p["label-value"])} for p in properties]


def class_metadata(class_names: Sequence[str], colors: Sequence[str] | None = None, *, first: int = 1) -> tuple[dict, dict]:
    """``(properties, colors)`` of semantic labels whose values ``first``, ``first + 1``... are the
    classes ``class_names`` (the project's values: 1 = background); colours missing (or None) are the
    project's defaults."""
    colors = list(colors or [])
    props = {first + i: {"class": str(n)} for i, n in enumerate(class_names)}
    cols = {
        first + i: (colors[i] if i < len(colors) else None) or DEFAULT_COLORS[1 + i % (len(DEFAULT_COLORS) - 1)]
        for i in range(len(class_names))
    }
    return props, cols


# ---------------------------------------------------------------------- reading
def labels_groups(image) -> list[dict]:
    """The NGFF label images of an OME-Zarr image: one dict per listed name with ``name``, ``data``
    (its levels, lazy zarr arrays), ``axes`` (names), ``scale`` and ``translation`` (level 0),
    ``colors`` ({value: (r, g, b, a) in 0-1}) and ``properties`` ({value: {key: value}})."""
    group, url = _open_image(image, mode="r")
    labels = group.get("labels")
    out = []
    for name in _listed(labels) if labels is not None else []:
        if name not in labels:
            continue
        attrs = ome_attrs(labels[name])
        ms = (attrs.get("multiscales") or [None])[0]
        if not ms:
            continue
        data = [labels[name][d["path"]] for d in ms["datasets"]]
        transforms = ms["datasets"][0].get("coordinateTransformations")
        il = attrs.get("image-label") or {}
        out.append(
            {
                "name": name,
                "data": data,
                "axes": [a.get("name") for a in _axes(ms, data[0].ndim)],
                "scale": transform_of(transforms, "scale") or [1.0] * data[0].ndim,
                "translation": transform_of(transforms, "translation"),
                "colors": {int(c["label-value"]): tuple(v / 255 for v in c["rgba"]) for c in il.get("colors") or [] if "rgba" in c},
                "properties": {
                    int(p["label-value"]): {k: v for k, v in p.items() if k != "label-value"} for p in il.get("properties") or []
                },
            }
        )
    return out
