"""Reading images and masks from files, folders, (OME-)Zarr, and exporting annotations.

Supported layouts for :func:`find_pairs` / :func:`import_images`:

* a flat folder of images plus a folder of masks with matching names (``images/a.png`` +
  ``masks/a.png``; mask names may carry a ``_mask``/``_label(s)`` suffix);
* the PyJAMAS layout ``<root>/<sample>/image/*.tif`` + ``<root>/<sample>/mask/*.tif``;
* explicit lists of files or glob patterns;
* multipage TIFF stacks (each page becomes an image ``<name>_z000`` ...);
* OME-Zarr images with a ``labels`` group.

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
from .layout import canonical_axes, channels_of, read_axes, spatial_shape, to_canonical
from .masks import read_mask

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
    path = str(path)
    if not os.path.exists(path) and "://" not in path:
        raise DataError(f"File not found: {path}")
    low = path.lower().rstrip("/")
    try:
        if low.endswith((".tif", ".tiff")):
            import tifffile

            return np.asarray(tifffile.imread(path))
        if low.endswith(".zarr") or os.path.isdir(path):
            image, _ = read_ome_zarr(path)
            return image
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    except DataError:
        raise
    except Exception as err:  # unreadable or unknown format
        raise DataError(f"Cannot read {path}: {err}. Supported: {', '.join(IMAGE_EXTS)}, .zarr (OME-Zarr).") from err


def _zarr_image(url) -> tuple[object, list | None, object]:
    """The full-resolution array of a zarr array / OME-Zarr / plain zarr group (lazy), the axis names
    of an OME-Zarr (else None) and the group (None for a bare array)."""
    import zarr

    try:
        node = zarr.open(str(url), mode="r")
    except Exception as err:
        raise DataError(f"Cannot open {url} as zarr: {err}") from err
    if isinstance(node, zarr.Array):
        return node, None, None
    ms = _ome(node).get("multiscales")
    if not ms:
        arrays = list(node.array_keys())
        if not arrays:
            raise DataError(f"{url} is a zarr group without arrays or OME-Zarr multiscales metadata.")
        return node[arrays[0]], None, node
    array = node[ms[0]["datasets"][0]["path"]]
    return array, _axis_names(ms[0]) or [None] * array.ndim, node  # old OME-Zarr: no axis names


def _ome(node) -> dict:
    attrs = dict(node.attrs)
    return attrs.get("ome", attrs)


def _axis_names(multiscale: dict) -> list:
    return [a["name"] if isinstance(a, dict) else a for a in multiscale.get("axes", [])]


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
    if os.path.isdir(spec) and not spec.lower().rstrip("/").endswith(".zarr"):
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
    prefix: str = "",
    overwrite: bool = False,
) -> Imported:
    """Import image files (and masks) into ``project``; returns the names added.

    A multipage TIFF or any 3D array without a short channel axis is one image, a stack of planes
    (:func:`.layout.read_axes`; ``channel_axis`` / ``stack`` override the reading), with its mask
    read plane by plane; a (3, Y, X) image with a (3, Y, X) mask is a stack of 3 planes. ``split``
    defaults to ``train`` for new images; a replaced image (``overwrite``) keeps its split. Everything
    is read and checked (names, shapes, channels, classes) before anything is written, so a bad file
    leaves the project as it was. The result's ``mask_kinds`` says how each mask was read
    (:func:`.masks.read_mask`).
    """
    from .manifest import check_name

    pairs = find_pairs(images, masks)
    loaded = []
    known = {r.name: r.channels for r in project.images()}
    channels = set(known.values())
    kinds: dict[str, str] = {}
    for pair in pairs:
        name = check_name(prefix + pair.name)
        if name in known and not overwrite:
            raise DataError(
                f"An image named {name!r} is already in the project (nothing was imported).",
                hints={
                    "python": "Pass overwrite=True to replace it, or prefix=... for other names.",
                    "cli": "Use --overwrite to replace it, or --prefix for other names.",
                    "gui": "Remove that image from the project first (Remove), or import into another project.",
                },
            )
        image = read_image(pair.image)
        mask = read_image(pair.mask) if pair.mask else None
        hint = channels.copy().pop() if len(channels) == 1 else None
        layout = read_axes(image.shape, channel_axis=channel_axis, stack=stack, channels=hint)
        if mask is not None and stack is None and channel_axis is None and layout.channel_axis == 0 and mask.shape == image.shape:
            layout = read_axes(image.shape, stack=True)  # a mask per plane: the short axis holds planes
        canonical = to_canonical(image, layout)
        axes = canonical_axes(image, layout)
        space = spatial_shape(canonical.shape, axes)
        channels.add(channels_of(canonical.shape, axes))
        labels = instances = None
        if mask is not None:
            if layout.is_stack and mask.ndim == 3 and mask.shape[0] == space[0] and mask.shape[-1] not in (3, 4):
                per_plane = [read_mask(m, kind=mask_kind, n_classes=project.n_classes) for m in mask]
                labels = np.stack([p[0] for p in per_plane])
                instances = None if per_plane[0][1] is None else np.stack([p[1] for p in per_plane])
                kinds[name] = per_plane[0][2]
            else:
                labels, instances, kinds[name] = read_mask(mask, kind=mask_kind, n_classes=project.n_classes)
            if labels.shape != space:
                raise DataError(
                    f"Mask {pair.mask} has shape {labels.shape} but image {pair.image} has {image.shape} (labels {space} expected)."
                )
        loaded.append((name, pair, image, layout, labels, instances))
    if len(channels) > 1:
        raise DataError(
            f"These images have different channel counts ({', '.join(map(str, sorted(channels)))}, with the project's): one model needs "
            "one kind of image. Convert them (e.g. RGB to grayscale) or import them into separate projects. Nothing was imported."
        )
    names = Imported()
    names.mask_kinds = kinds
    for name, pair, image, layout, labels, instances in loaded:
        names.append(
            project.add_image(
                name, image, labels=labels, instances=instances, split=split, stack=layout.is_stack,
                channel_axis=layout.channel_axis, source=pair.image, overwrite=overwrite,
            )
        )  # fmt: skip
    return names


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
