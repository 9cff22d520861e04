"""How an imported array reads (a part of :func:`.io.import_images`): its axes, its time points, its
mask plane by plane, its voxel size; and folders of 2D slices stacked into volumes.

The axes of an array are named by the user (``axes``), else by the file (:mod:`.io_meta`) unless
the user gave ``channel_axis`` or ``stack``, else read from its shape (:func:`.layout.read_axes`). Named axes are put in the project's order (t, z,
y, x, c; axes of length 1 dropped). A time-lapse of volumes (T and Z) is imported as one volume per
time point, ``<name>_t000``, ``<name>_t001``...; without names, a 4D array whose last axis is not a
short channel axis, and any 5D array, is ambiguous and asks for ``axes``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .errors import DataError
from .io_meta import ImageMeta, named_canonical, natural_key
from .layout import MAX_CHANNELS, Layout, normalise_axes, parse_axes, read_axes
from .masks import read_mask
from .voxels import convert

AXES_HINTS = {
    "python": 'Pass axes="TZYX" (or "ZCYX", "TYX"...) to import_images.',
    "cli": "Add --axes TZYX (or ZCYX, TYX...) to the import command.",
    "gui": "Save the file with its axes (ImageJ hyperstack or OME-TIFF), or import it from the command line with --axes.",
}


def pieces(
    name: str, image: np.ndarray, meta: ImageMeta, mask, *, axes: str | None, channel_axis: int | None, stack: bool | None,
    channels: int | None, path: str,
) -> Iterator[tuple[str, np.ndarray, np.ndarray | None, Layout, str]]:  # fmt: skip
    """The images one array makes: ``(name, array, mask, layout, where)``; one, or one volume per
    time point of a time-lapse of volumes (``where`` is then ``[t=3]``)."""
    named = normalise_axes(axes) if axes else (meta.axes if channel_axis is None and stack is None else None)  # given wins
    if named and not axes and "c" in named and image.shape[named.index("c")] > MAX_CHANNELS and not set(named) & set("tz"):
        named = None  # tifffile writes an ImageJ stack without axes as channels: many "channels" read as planes
    if not named:
        if image.ndim == 5 or (image.ndim == 4 and channel_axis is None and image.shape[-1] > MAX_CHANNELS):
            raise DataError(
                f"{path} has {image.ndim} axes (shape {image.shape}) and no OME or ImageJ metadata that names them: which are "
                "time, planes and channels is ambiguous. Give the axes with --axes, e.g. TZYX (a time-lapse of volumes) or "
                "ZCYX (a volume with channels). Nothing was imported.",
                hints=AXES_HINTS,
            )
        layout = read_axes(image.shape, channel_axis=channel_axis, stack=stack, channels=channels)
        if mask is not None and stack is None and channel_axis is None and layout.channel_axis == 0 and mask.shape == image.shape:
            layout = read_axes(image.shape, stack=True)  # a mask per plane: the short axis holds planes
        yield name, image, mask, layout, ""
        return
    if len(named) != image.ndim:
        raise DataError(
            f"The axes {(axes or named).upper()} name {len(named)} axes but {path} has {image.ndim} (shape {image.shape}): "
            "name each axis once. Nothing was imported.",
            hints=AXES_HINTS,
        )
    image, named = named_canonical(image, named)
    if not ("t" in named and "z" in named):
        yield name, image, mask, parse_axes(named, image.shape), ""
        return
    n = image.shape[0]  # a time-lapse of volumes: one volume per time point
    if mask is not None:
        mask = _squeezed(mask, image.ndim - ("c" in named))
        if mask.ndim != image.ndim - ("c" in named) or mask.shape[0] != n:
            raise DataError(
                f"The mask of {path} has shape {mask.shape} but the image is a time-lapse of {n} volumes {image.shape}: "
                "give a mask with one volume per time point (T, Z, Y, X). Nothing was imported."
            )
    for t in range(n):
        part = None if mask is None else mask[t]
        yield f"{name}_t{t:03d}", image[t], part, parse_axes(named[1:], image.shape[1:]), f"[t={t}]"


def _squeezed(mask: np.ndarray, ndim: int) -> np.ndarray:
    """``mask`` without its axes of length 1 when it has more than ``ndim`` axes and that fits."""
    if mask.ndim > ndim and 1 in mask.shape and np.squeeze(mask).ndim == ndim:
        return np.squeeze(mask)
    return mask


def mask_labels(
    mask: np.ndarray, layout: Layout, space: tuple[int, ...], *, kind: str, n_classes: int, image_path: str, mask_path: str
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``(labels, instances, kind)`` of an image's mask, read plane by plane for a stack; a stack
    mask with another number of planes than the image is refused, saying so."""
    mask = _squeezed(np.asarray(mask), len(space))
    if layout.is_stack and mask.ndim == len(space) and mask.shape[1:] == space[1:] and mask.shape[0] != space[0]:
        what = "frame" if layout.is_timelapse else "slice"
        raise DataError(
            f"The mask has {mask.shape[0]} {what}s, the image {space[0]}: give one mask {what} per image {what} "
            f"({mask_path} for {image_path}). Nothing was imported."
        )
    if layout.is_stack and mask.ndim == 3 and mask.shape[0] == space[0] and mask.shape[-1] not in (3, 4):
        per_plane = [read_mask(m, kind=kind, n_classes=n_classes) for m in mask]
        labels = np.stack([p[0] for p in per_plane])
        instances = None if per_plane[0][1] is None else np.stack([p[1] for p in per_plane])
        found = per_plane[0][2]
    else:
        labels, instances, found = read_mask(mask, kind=kind, n_classes=n_classes)
    if labels.shape != space:
        raise DataError(f"Mask {mask_path} has shape {labels.shape} but image {image_path} has {space} (labels {space} expected).")
    return labels, instances, found


def spacing_of(meta: ImageMeta, axes: str, voxel, pixels, project_unit: str | None) -> tuple[list[float] | None, str | None]:
    """The spacing of an image with canonical ``axes`` ((z, y, x) for a volume, else (y, x)) and its
    unit: a given ``voxel`` (z, y, x) or ``pixels`` (y, x) size, in the project's unit, wins over
    the file's (converted into the project's unit where both are known lengths)."""
    size, unit = dict(meta.spacing), meta.unit
    if size:
        values, unit = convert(list(size.values()), meta.unit, project_unit)
        size = dict(zip(size, values))
    if voxel is not None:
        size, unit = dict(zip("zyx", voxel)), project_unit
    elif pixels is not None:
        if unit != project_unit:
            size.pop("z", None)  # the file's z in another unit cannot join the given (y, x)
        size.update(y=pixels[0], x=pixels[1])
        unit = project_unit
    if "y" not in size or "x" not in size:
        return None, None
    z = [size["z"]] if axes.startswith("z") and "z" in size else []
    return z + [size["y"], size["x"]], unit


# ---------------------------------------------------------------------- folders of slices
def slice_groups(spec, expand: Callable, is_zarr: Callable) -> list[tuple[str, list[str]]]:
    """``(name, files)`` of each volume of ``spec``: each folder of a list of folders is one volume;
    otherwise a folder, a glob or a list of files is one, named after its folder. Natural order."""
    specs = [str(s) for s in spec] if isinstance(spec, (list, tuple)) else [str(spec)]
    if len(specs) > 1 and all(os.path.isdir(s) and not is_zarr(s) for s in specs):
        return [group for s in specs for group in slice_groups(s, expand, is_zarr)]
    files = sorted(expand(specs), key=natural_key)
    if not files:
        raise DataError(f"No image files found in {spec}: give a folder of 2D slices (or a glob such as 'slices/*.tif').")
    first = specs[0].rstrip("/\\")
    folder = first if os.path.isdir(first) else os.path.dirname(files[0])
    return [(Path(os.path.abspath(folder)).name or "volume", files)]


def read_slices(files: list[str], read: Callable, read_meta: Callable) -> tuple[np.ndarray, ImageMeta]:
    """The 2D images ``files`` stacked as the planes of one (Z, Y, X[, C]) volume, in the order given,
    with the first slice's pixel size; a slice of another shape is refused, naming the first."""
    planes: list[np.ndarray] = []
    meta = ImageMeta()
    for i, f in enumerate(files):
        plane, found = read_meta(f) if i == 0 else (read(f), None)
        plane = np.asarray(plane)
        if i == 0:
            meta = found
            if not (plane.ndim == 2 or (plane.ndim == 3 and plane.shape[-1] <= MAX_CHANNELS)):
                raise DataError(
                    f"{f} is not a 2D slice (shape {plane.shape}): a volume from a folder stacks 2D images. "
                    "Import a stack file as it is, without --volume (as_volume). Nothing was imported."
                )
        elif plane.shape != planes[0].shape:
            raise DataError(
                f"The slice {f} has shape {plane.shape} but the first slice {files[0]} has {planes[0].shape}: every slice "
                "of a volume needs the same shape. Crop or pad it, or remove it. Nothing was imported."
            )
        planes.append(plane)
    spacing = {a: v for a, v in meta.spacing.items() if a in "yx"}
    return np.stack(planes), ImageMeta("zyx" + ("c" if planes[0].ndim == 3 else ""), spacing, meta.unit if spacing else None)
