"""Reading images and masks from files, folders, (OME-)Zarr, and exporting annotations.

Supported layouts for :func:`find_pairs` / :func:`import_images`:

* a flat folder of images plus a folder of masks with matching names (``images/a.png`` +
  ``masks/a.png``; mask names may carry a ``_mask``/``_label(s)`` suffix);
* the PyJAMAS layout ``<root>/<sample>/image/*.tif`` + ``<root>/<sample>/mask/*.tif``;
* explicit lists of files or glob patterns;
* multipage TIFF stacks, ImageJ hyperstacks and OME-TIFF: one image each, a volume (Z, Y, X[, C]) or a
  time-lapse (T, Y, X[, C]), with the voxel size and frame interval the file records;
* OME-Zarr images (axes, scale and units from their metadata) with a ``labels`` group;
* a folder of 2D slices as one volume (``as_volume=True``), in natural name order.

Masks may be binary (two values such as 0/255 or 0/1), class-indexed (0..K-1, 0 = first class),
instance labels (each id an object; ids need not be consecutive), or project labels already
(0 = unlabelled, 1..K): see :func:`interpret_mask`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError
from .io_meta import ImageMeta, read_tiff, read_zarr
from .io_meta import axis_names as _axis_names
from .io_meta import ome_attrs as _ome
from .io_meta import zarr_image as _zarr_image
from .layout import canonical_axes, channels_of, normalise_axes, spatial_shape, to_canonical
from .voxels import check_interval, check_pixel_size, check_voxel_size

IMAGE_EXTS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
MASK_SUFFIXES = ("_mask", "_masks", "_label", "_labels", "_instances", "-mask", "-labels", "_gt")
# what `predict` writes next to the objects (<name>_instances.tif): not label images of their own
PREDICTION_EXTRAS = ("_labels", "_probabilities")


@dataclass(frozen=True)
class Pair:
    """One image file, its mask file (or None) and the name it gets in the project."""

    name: str
    image: str
    mask: str | None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file (TIFF incl. multipage, PNG, JPEG, BMP) or a zarr/OME-Zarr array."""
    return _read(path, meta=False)[0]


def read_image_meta(path: str | os.PathLike) -> tuple[np.ndarray, ImageMeta]:
    """An image file's array and what the file says of its axes, voxel size and frame interval
    (:class:`.io_meta.ImageMeta`, empty for plain files). Unlike :func:`read_image`, an OME-Zarr
    array keeps all its axes, in stored order (``meta.axes`` names them)."""
    return _read(path, meta=True)


def _read(path: str | os.PathLike, *, meta: bool) -> tuple[np.ndarray, ImageMeta]:
    path = str(path)
    if not os.path.exists(path) and "://" not in path:
        raise DataError(f"File not found: {path}")
    low = path.lower().rstrip("/")
    try:
        if low.endswith((".tif", ".tiff")):
            import tifffile

            return read_tiff(path) if meta else (np.asarray(tifffile.imread(path)), ImageMeta())
        if low.endswith(".zarr") or os.path.isdir(path):
            return read_zarr(path) if meta else (read_ome_zarr(path)[0], ImageMeta())
        import imageio.v3 as iio

        return np.asarray(iio.imread(path)), ImageMeta()
    except DataError:
        raise
    except Exception as err:  # unreadable or unknown format
        raise DataError(f"Cannot read {path}: {err}. Supported: {', '.join(IMAGE_EXTS)}, .zarr (OME-Zarr).") from err


def read_ome_zarr(url: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the full-resolution image of an OME-Zarr (or a plain zarr array) and its first label image.

    Returns ``(image, labels)`` with the image as (Y, X), (Y, X, C) or a stack (Z, Y, X); leading
    singleton axes (t, c, z of length 1) are dropped.
    """
    array, axes, group = _zarr_image(url)
    image = np.asarray(array[...])
    if axes is None:
        return image, None
    labels = None
    if "labels" in group:
        lab_group = group["labels"]
        names = _ome(lab_group).get("labels") or list(lab_group.group_keys())
        if names:
            lg = lab_group[names[0]]
            lms = _ome(lg)["multiscales"][0]
            labels = _squeeze_ome(np.asarray(lg[lms["datasets"][0]["path"]][...]), _axis_names(lms))
    return _squeeze_ome(image, axes), labels


def _squeeze_ome(data: np.ndarray, axes: Sequence[str]) -> np.ndarray:
    axes = list(axes) or [None] * data.ndim
    keep = [i for i, n in enumerate(data.shape) if n > 1 or axes[i] in ("y", "x")]
    data = data.reshape([data.shape[i] for i in keep])
    kept = [axes[i] for i in keep]
    if "c" in kept and data.ndim == 3:  # channel-last for the project
        data = np.moveaxis(data, kept.index("c"), -1)
    return data


def _is_zarr(p: str) -> bool:
    """A zarr path: named ``.zarr``, or a folder that is a zarr array or group."""
    return p.lower().rstrip("/").endswith(".zarr") or any(os.path.isfile(os.path.join(p, f)) for f in ("zarr.json", ".zarray", ".zgroup"))


def _is_image_file(p: str) -> bool:
    return p.lower().endswith(IMAGE_EXTS) and not os.path.basename(p).startswith(".")


def expand_paths(spec: str | os.PathLike | Sequence) -> list[str]:
    """Image files of a file, a folder, a glob pattern or a list of them, in name order."""
    return _expand(spec)


def _expand(spec: str | os.PathLike | Sequence) -> list[str]:
    if isinstance(spec, (list, tuple)):
        out: list[str] = []
        for s in spec:
            out.extend(_expand(s))
        return out
    spec = str(spec)
    if os.path.isdir(spec) and not _is_zarr(spec):
        return sorted(str(p) for p in Path(spec).iterdir() if p.is_file() and _is_image_file(str(p)))
    if any(ch in spec for ch in "*?["):
        return sorted(p for p in glob.glob(spec, recursive=True) if _is_image_file(p) or p.rstrip("/").endswith(".zarr"))
    if os.path.exists(spec):
        return [spec]
    raise DataError(f"Nothing found at {spec}: give a folder, a file, or a glob pattern such as 'images/*.tif'.")


def _stem(p: str) -> str:
    stem = Path(p).name
    for ext in IMAGE_EXTS + (".zarr",):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    return stem


def _mask_key(p: str) -> str:
    stem = _stem(p)
    for suf in MASK_SUFFIXES:
        if stem.lower().endswith(suf):
            return stem[: -len(suf)]
    return stem


def image_inputs(spec: str | os.PathLike | Sequence) -> list[str]:
    """The image files of ``spec`` (a folder, glob, file or list of those) without the masks among
    them: a file named like an image of the batch plus a mask suffix (``a_mask.tif`` beside ``a.tif``)
    is that image's mask, not an image to predict or measure."""
    paths = _expand(spec)
    stems = {_stem(p) for p in paths}
    return [p for p in paths if _mask_key(p) == _stem(p) or _mask_key(p) not in stems]


def find_pairs(images: str | os.PathLike | Sequence, masks: str | os.PathLike | Sequence | None = None) -> list[Pair]:
    """Match image files with mask files by name.

    ``images`` is a folder, a file, a glob or a list of those; ``masks`` likewise (or None). Without
    ``masks``, a folder is searched for the layouts people keep: masks beside their images
    (``a.tif`` + ``a_mask.tif``), ``images/`` + ``masks/`` (or ``labels/``) subfolders, and the
    PyJAMAS layout (``<sample>/image/`` + ``<sample>/mask/``). Images without a mask are returned
    with ``mask=None``; masks without an image are an error.
    """
    root = str(images) if isinstance(images, (str, os.PathLike)) else None
    if masks is None and root and os.path.isdir(root):
        sub = {d.name.lower(): d for d in Path(root).iterdir() if d.is_dir()}
        image_dir = next((sub[n] for n in ("images", "image", "raw") if n in sub), None)
        mask_dir = next((sub[n] for n in ("masks", "mask", "labels", "annotations", "ground_truth", "gt") if n in sub), None)
        if image_dir is not None and mask_dir is not None:
            return find_pairs(image_dir, mask_dir)
        files = _expand(root)
        beside = [p for p in files if _mask_key(p) != _stem(p) and _mask_key(p) in {_stem(q) for q in files}]
        if beside:  # a.tif with a_mask.tif in one folder
            return find_pairs([p for p in files if p not in beside], beside)
        samples = [d for d in sorted(Path(root).iterdir()) if (d / "image").is_dir()]
        if samples:
            pairs = []
            for d in samples:
                imgs = _expand(str(d / "image"))
                msks = _expand(str(d / "mask")) if (d / "mask").is_dir() else []
                for i, img in enumerate(imgs):
                    mask = msks[i] if len(imgs) == len(msks) else None
                    name = d.name if len(imgs) == 1 else f"{d.name}_{_stem(img)}"
                    pairs.append(Pair(name, img, mask))
            return pairs
    image_files = _expand(images)
    if not image_files:
        raise DataError(f"No image files ({', '.join(IMAGE_EXTS)}) found in {images}.")
    if masks is None:
        return [Pair(_stem(p), p, None) for p in image_files]
    mask_files = _expand(masks)
    if len(image_files) == 1 and len(mask_files) == 1:  # one explicit pair: names need not match
        return [Pair(_stem(image_files[0]), image_files[0], mask_files[0])]
    by_key = {}
    for m in mask_files:
        by_key.setdefault(_mask_key(m), m)
        by_key.setdefault(_stem(m), m)
    pairs = [Pair(_stem(p), p, by_key.get(_stem(p))) for p in image_files]
    used = {p.mask for p in pairs if p.mask}
    orphans = [m for m in mask_files if m not in used]
    if orphans:
        raise DataError(
            f"{len(orphans)} mask file(s) match no image, e.g. {orphans[0]}: masks need the image's name "
            f"(optionally with a suffix such as {MASK_SUFFIXES[0]})."
        )
    return pairs


class Imported(list):
    """The names :func:`import_images` added (a list), with how each mask was read (``mask_kinds``)."""

    mask_kinds: dict[str, str]


def import_images(
    project,
    images: str | os.PathLike | Sequence,
    masks: str | os.PathLike | Sequence | None = None,
    *,
    split: str | None = None,
    mask_kind: str = "auto",
    channel_axis: int | None = None,
    stack: bool | None = None,
    axes: str | None = None,
    as_volume: bool = False,
    voxel_size: Sequence[float] | None = None,
    pixel_size: float | Sequence[float] | None = None,
    frame_interval: float | None = None,
    prefix: str = "",
    overwrite: bool = False,
) -> Imported:
    """Import image files (and masks) into ``project``; returns the names added.

    Each file is one image: a plane, a volume (Z, Y, X[, C]) or a time-lapse (T, Y, X[, C]), the
    last two kept whole as stacks of planes, with their masks read plane by plane. How an array
    reads comes from ``axes`` (``"TYX"``, ``"ZYX"``, ``"ZCYX"``, ``"CZYX"``, ``"TYXC"``, ``"YXC"``...;
    case-insensitive), else from the file (ImageJ ``slices`` / ``frames`` / ``channels``, OME-TIFF
    and OME-Zarr axes), else from the shape (:func:`.layout.read_axes`; ``channel_axis`` / ``stack``
    override it; a (3, Y, X) image with a (3, Y, X) mask is a stack of 3 planes). A 4D array whose
    axes nothing names and whose last axis is not a short channel axis, and any such 5D array, is
    refused with a request for ``axes``. A time-lapse of volumes (T and Z) becomes one volume per
    time point, ``<name>_t000``, ``<name>_t001``... (its mask, if any, (T, Z, Y, X)).

    ``as_volume=True``: the 2D images of the folder (or glob, or list of files) ``images`` are the
    planes of one volume named after the folder, in natural name order (``slice_2`` before
    ``slice_10``); ``masks`` likewise holds its mask slices (a list of folders: one volume each).

    The voxel size is read from the files (ImageJ ``spacing``, ``unit`` and resolution tags; OME
    ``PhysicalSizeX/Y/Z``; OME-Zarr ``scale`` and units) and converted to the project's unit; a
    given ``voxel_size`` (z, y, x) or ``pixel_size`` (one value, or (y, x)), in the project's unit,
    wins. A time-lapse keeps the file's frame interval (ImageJ ``finterval``, OME
    ``TimeIncrement``) or the given ``frame_interval`` (seconds).

    ``split`` defaults to ``train`` for new images; a replaced image (``overwrite``) keeps its split.
    Everything is read and checked (names, shapes, axes, channels, classes, sizes) before anything
    is written, and the images are added in one step, so a bad file leaves the project as it was.
    The result's ``mask_kinds`` says how each mask was read (:func:`.masks.read_mask`).
    """
    from .io_stacks import mask_labels, pieces, read_slices, slice_groups, spacing_of
    from .manifest import check_name

    voxel, pixels, interval = check_voxel_size(voxel_size), check_pixel_size(pixel_size), check_interval(frame_interval)
    if voxel is not None and pixels is not None:
        raise DataError("Give the voxel size (z, y, x) or the pixel size (y, x), not both. Nothing was imported.")
    if axes is not None and normalise_axes(axes) and (channel_axis is not None or stack is not None):
        raise DataError("Give axes alone: they say where the planes and channels are (channel_axis and stack are for unnamed axes).")
    if as_volume:
        groups = slice_groups(images, _expand, _is_zarr)
        mask_groups = slice_groups(masks, _expand, _is_zarr) if masks is not None else [(None, None)] * len(groups)
        if len(mask_groups) != len(groups):
            raise DataError(f"{len(groups)} volumes but {len(mask_groups)} mask folders: give one mask folder per image folder, in order.")
        sources = [(name, files, m) for (name, files), (_, m) in zip(groups, mask_groups)]
    else:
        sources = [(p.name, p.image, p.mask) for p in find_pairs(images, masks)]
    known = {r.name: r.channels for r in project.images()}
    channels = set(known.values())
    kinds: dict[str, str] = {}
    items = []
    for base, image_src, mask_src in sources:
        check_name(prefix + base)  # a bad prefix fails before any file is read
        path = os.path.dirname(image_src[0]) if as_volume else image_src
        if as_volume:
            image, meta = read_slices(image_src, read_image, read_image_meta)
            mask = None if mask_src is None else read_slices(mask_src, read_image, read_image_meta)[0]
        else:
            image, meta = read_image_meta(image_src)
            mask = read_image(mask_src) if mask_src else None
        mask_path = os.path.dirname(mask_src[0]) if as_volume and mask_src else mask_src
        hint = channels.copy().pop() if len(channels) == 1 else None
        found = pieces(base, image, meta, mask, axes=axes, channel_axis=channel_axis, stack=stack, channels=hint, path=path)
        for piece, data, part, layout, where in found:
            name = _check_new(check_name(prefix + piece), known, overwrite)
            canonical = to_canonical(data, layout)
            cax = canonical_axes(data, layout)
            space = spatial_shape(canonical.shape, cax)
            channels.add(channels_of(canonical.shape, cax))
            labels = instances = None
            if part is not None:
                labels, instances, kinds[name] = mask_labels(
                    part, layout, space, kind=mask_kind, n_classes=project.n_classes, image_path=path, mask_path=mask_path
                )
            spacing, unit = spacing_of(meta, cax, voxel, pixels, project.unit)
            options = dict(labels=labels, instances=instances, split=split, axes=cax, pixel_size=spacing, unit=unit, source=path + where)
            if layout.is_timelapse:
                options.update(frame_interval=interval or meta.frame_interval, time_unit="s" if interval else meta.time_unit)
            items.append((name, canonical, options))
    if len(channels) > 1:
        raise DataError(
            f"These images have different channel counts ({', '.join(map(str, sorted(channels)))}, with the project's): one model needs "
            "one kind of image. Convert them (e.g. RGB to grayscale) or import them into separate projects. Nothing was imported."
        )
    names = Imported(project.add_images(items, overwrite=overwrite))
    names.mask_kinds = kinds
    return names


def _check_new(name: str, known, overwrite: bool) -> str:
    if name in known and not overwrite:
        raise DataError(
            f"An image named {name!r} is already in the project (nothing was imported).",
            hints={
                "python": "Pass overwrite=True to replace it, or prefix=... for other names.",
                "cli": "Use --overwrite to replace it, or --prefix for other names.",
                "gui": "Remove that image from the project first (Remove), or import into another project.",
            },
        )
    return name


def export_annotations(project, out_dir: str | os.PathLike, *, names: Iterable[str] | None = None, instances: bool = False) -> list[str]:
    """Write each annotated image's labels as ``<out_dir>/<name>.tif`` (0 = unlabelled, 1..K).

    With ``instances=True`` instance ground truth is written as ``<name>_instances.tif`` too.
    Returns the paths written.
    """
    import tifffile

    names = list(names or project.image_names())
    paths = {name: (output_path(out_dir, name, ".tif"), output_path(out_dir, name, "_instances.tif")) for name in names}
    output_dir(out_dir)
    written = []
    for name in names:
        labels = project.get_labels(name)
        if labels is not None:
            tifffile.imwrite(paths[name][0], labels, compression="zlib")
            written.append(paths[name][0])
        if instances and (inst := project.get_instances(name)) is not None:
            tifffile.imwrite(paths[name][1], inst, compression="zlib")
            written.append(paths[name][1])
    return written


def output_dir(path: str | os.PathLike) -> str:
    """Make the output folder ``path`` (refusing a file of that name, which would be overwritten)."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise DataError(f"The output {path} is a file: give a folder (nothing was written).")
    os.makedirs(path, exist_ok=True)
    return path


def output_path(out_dir: str | os.PathLike, name: str, suffix: str) -> str:
    """``<out_dir>/<name><suffix>``, confined to ``out_dir``: the name is checked again where it is
    used (a store can come from a shared bucket), and the path may not leave the folder."""
    from .manifest import check_name

    check_name(name)
    root = os.path.realpath(os.fspath(out_dir))
    path = os.path.join(os.fspath(out_dir), name + suffix)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise DataError(f"The image name {name!r} would write outside the output folder {out_dir}: rename the image.")
    return path


def open_array(source):
    """A lazily indexable (Y, X[, C]) array from a zarr/dask array or a zarr / OME-Zarr path."""
    if hasattr(source, "shape") and hasattr(source, "__getitem__"):
        return source
    arr, axes, _ = _zarr_image(source)
    if axes is None or arr.ndim <= 2:
        return arr
    import dask.array as da

    # drop leading singleton axes lazily (t, c, z of length 1), channels last
    d = da.from_zarr(arr)
    idx = tuple(0 if (n == 1 and axes[i] not in ("y", "x")) else slice(None) for i, n in enumerate(d.shape))
    d = d[idx]
    kept = [axes[i] for i in range(arr.ndim) if not isinstance(idx[i], int)]
    if "c" in kept and d.ndim == 3:
        d = da.moveaxis(d, kept.index("c"), -1)
    return d
