"""The manifest of a project store (``segbox.json``): its schema, its records, its checks, its migration.

Format 2 (this version)::

    {"format_version": 2, "task": "segmentation" | "classification", "generation": 17,
     "created": ..., "modified": ..., "classes": [{"name", "color"}, ...], "pixel_size": [y, x] | null,
     "unit": "µm",
     "images": {name: {"key", "split", "shape", "dtype", "axes", "channels", "array",
                       "labels", "instances", "label_counts", "annotated_planes", "spacing", "unit", "frame_interval",
                       "time_unit", "source", "image_class", "annotation", "annotation_history",
                       "unpainted_background", "added"}},
     "models": {"v001": {"state": "claimed" | "ready", "created", "task", "encoder", "status",
                         "epochs_run", "best", "device", "duration_s", "tuned"}}}

An image's ``axes`` are ``yx``, ``yxc``, ``zyx``/``zyxc`` (a volume) or ``tyx``/``tyxc`` (a
time-lapse; see :mod:`.layout`). ``spacing`` is its physical size per *spatial* axis, in ``unit``
(the project's ``unit`` when absent): ``[z, y, x]`` for a volume (``[y, x]`` when the plane spacing
is unknown), ``[y, x]`` for a plane or a time-lapse, or null (the project's ``pixel_size`` then
applies). Import converts a file's voxel size into the project's unit where both are known
lengths. A time-lapse records the time between frames as ``frame_interval`` (a number, or null when
unknown) in ``time_unit`` (``s``, ``ms``, ``min``, ``h``); other images have neither key. These keys
are optional: records written before them read as unknown.

Format 1 (napari-seg-box 0.1) is migrated when a store is opened: axes and per-class annotated-pixel
counts are added to each image (one read of each annotation, once), and the index of model versions
is built from their ``model.json`` files.
"""

from __future__ import annotations

import datetime as _dt
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DataError, StoreError

FORMAT_VERSION = 2
MANIFEST = "segbox.json"
MARKER = "napari_seg_box"
SPLITS = ("train", "validation", "test")
TASKS = ("segmentation", "classification")
ORIGINS = ("drawn", "imported", "corrected", "predicted")
MIN_SIDE = 8  # pixels: smaller planes cannot be segmented
DEFAULT_COLORS = (  # the Okabe-Ito palette first (colour-blind safe), every one visible on a grey image
    "#000000",  # unused: label 0 = unlabelled
    "#56b4e9",  # background: sky blue, not grey on grey
    "#e69f00",
    "#009e73",
    "#cc79a7",
    "#f0e442",
    "#0072b2",
    "#d55e00",
    "#9467bd",
    "#8c564b",
    "#17becf",
)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------- records
@dataclass(frozen=True)
class ClassInfo:
    """One annotation class: its label value in the labels layer, name and display colour."""

    value: int
    name: str
    color: str


@dataclass(frozen=True)
class ImageRecord:
    """What the store knows of one image (the pixels stay in the store until asked for)."""

    name: str
    split: str
    shape: tuple[int, ...]
    dtype: str
    axes: str  # "yx", "yxc", "zyx", "zyxc" (a volume), "tyx" or "tyxc" (a time-lapse) (see .layout)
    channels: int
    has_labels: bool
    has_instances: bool
    pixel_size: tuple[float, float] | None  # (y, x), the image's own or the project's
    spacing: tuple[float, ...] | None  # the image's own, per spatial axis: (z, y, x) for a volume, (y, x) else
    source: str | None
    label_counts: tuple[int, ...]  # annotated pixels per class (index 0 = class 1)
    image_class: str | None  # an image-level class (classification projects)
    annotation: Mapping[str, Any] | None  # provenance of the current annotation revision
    unpainted_background: bool = False  # the annotation is dense: unpainted pixels are class 1
    unit: str | None = None  # the unit of spacing / pixel_size (the project's unless the image has its own)
    frame_interval: float | None = None  # a time-lapse: the time between frames, in time_unit (None: unknown)
    time_unit: str | None = None
    annotated_planes: tuple[int, ...] | None = None  # a stack's planes that hold labels (None: a plane, or not recorded)

    @classmethod
    def from_entry(cls, name: str, rec: Mapping[str, Any], project_pixel_size=None, project_unit: str | None = None) -> ImageRecord:
        """The record of image ``name`` from its manifest entry ``rec``."""
        spacing = tuple(rec["spacing"]) if rec.get("spacing") else None
        return cls(
            name=name,
            split=rec["split"],
            shape=tuple(rec["shape"]),
            dtype=rec["dtype"],
            axes=rec["axes"],
            channels=rec["channels"],
            has_labels=bool(rec.get("labels")),
            has_instances=bool(rec.get("instances")),
            pixel_size=spacing[-2:] if spacing else project_pixel_size,
            spacing=spacing,
            source=rec.get("source"),
            label_counts=tuple(rec.get("label_counts") or ()),
            image_class=rec.get("image_class"),
            annotation=rec.get("annotation"),
            unpainted_background=bool(rec.get("unpainted_background")),
            unit=(rec.get("unit") if spacing else None) or project_unit,
            frame_interval=rec.get("frame_interval"),
            time_unit=rec.get("time_unit"),
            annotated_planes=None if rec.get("annotated_planes") is None else tuple(rec["annotated_planes"]),
        )

    @property
    def voxel_size(self) -> tuple[float, float, float] | None:
        """(z, y, x) of a volume whose plane spacing is known; None otherwise (a plane, a time-lapse,
        a volume of unknown section thickness)."""
        return tuple(self.spacing) if self.spacing is not None and len(self.spacing) == 3 else None

    @property
    def is_stack(self) -> bool:
        """Has planes: a volume or a time-lapse (both are segmented plane by plane)."""
        return self.axes[0] in "zt"

    @property
    def is_timelapse(self) -> bool:
        """A time-lapse (T, Y, X[, C]): its planes are times, not sections."""
        return self.axes.startswith("t")

    @property
    def is_volume(self) -> bool:
        return self.axes.startswith("z")

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[:-1]) if self.axes.endswith("c") else tuple(self.shape)


@dataclass(frozen=True)
class VersionEntry:
    """The manifest's summary of a model version (listing and resolving read nothing else)."""

    version: str
    created: str | None
    task: str
    encoder: str | None
    status: str | None
    epochs_run: int
    best: Mapping[str, Any]
    device: str | None
    duration_s: float
    tuned: bool

    @classmethod
    def from_manifest(cls, version: str, e: Mapping[str, Any]) -> VersionEntry:
        return cls(
            version,
            e.get("created"),
            e.get("task", "segmentation"),
            e.get("encoder"),
            e.get("status"),
            int(e.get("epochs_run") or 0),
            dict(e.get("best") or {}),
            e.get("device"),
            float(e.get("duration_s") or 0.0),
            bool(e.get("tuned")),
        )

    def describe(self) -> str:
        """One line for people: 'v003  (resnet34, val IoU 0.873, completed)' ('val F1' for a classifier)."""
        for key, word in (("val_f1", "F1"), ("val_iou", "IoU")):
            if isinstance(self.best.get(key), (int, float)):
                return f"{self.version}  ({self.encoder}, val {word} {self.best[key]:.3f}, {self.status})"
        return self.version


# ---------------------------------------------------------------------- checks
_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")


def check_name(name: str) -> str:
    """An image name: free text, but never a path (it names output files) nor invisible."""
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"Image names must be non-empty text; got {name!r}.")
    if name != name.strip() or _BAD_NAME.search(name) or name in (".", "..") or len(name) > 200:
        raise DataError(
            f"Invalid image name {name!r}: use up to 200 characters without '/', '\\', control characters "
            "or spaces at either end (it becomes the name of output files)."
        )
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        raise DataError(f"Invalid image name {name!r}: it holds invisible control characters.")
    return name


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}: use one of {', '.join(SPLITS)}.")
    return split


def class_list(names: Sequence[str], colors: Sequence[str] | None, *, allow_empty: bool = False) -> list[dict]:
    """The manifest's class entries. ``allow_empty``: a classification project may start with no
    class (its classes come with the first import)."""
    names = [str(n).strip() for n in names]
    if (not names and not allow_empty) or any(not n for n in names):
        raise DataError("Give at least one class name (for example: background, nucleus).")
    if len(set(names)) != len(names):
        raise DataError(f"Class names must be unique: {names}.")
    folded: dict[str, str] = {}
    for n in names:
        if n.casefold() in folded:
            raise DataError(
                f"The class names {folded[n.casefold()]!r} and {n!r} differ only in case: they would read as one class "
                "on other systems and to people. Use one spelling (rename the folder or the class)."
            )
        folded[n.casefold()] = n
    colors = list(colors or [])
    return [
        {"name": n, "color": colors[i] if i < len(colors) else DEFAULT_COLORS[1 + i % (len(DEFAULT_COLORS) - 1)]}
        for i, n in enumerate(names)
    ]


def pixel_size_list(pixel_size: float | Sequence[float] | None, n: int = 2) -> list[float] | None:
    """A pixel size as a list of positive numbers: one value (y = x), (y, x), or, for a stack of
    ``n = 3`` spatial axes, (z, y, x) (given as (y, x), the plane spacing stays unknown)."""
    if pixel_size is None:
        return None
    ps = [float(pixel_size)] * 2 if np.isscalar(pixel_size) else [float(p) for p in pixel_size]
    if len(ps) not in (2, n) or any(not np.isfinite(p) or p <= 0 for p in ps):
        forms = "(y, x)" + (" or (z, y, x)" if n == 3 else "")
        raise DataError(f"Pixel size must be one positive number or {forms}; got {pixel_size!r}.")
    return ps


def annotated_planes(labels: np.ndarray, axes: str) -> list[int] | None:
    """The planes of a stack's labels that hold annotated pixels (None for a plane): the manifest
    keeps them, so that the list of images can say which sections are annotated without reading."""
    if axes[0] not in "zt":
        return None
    return np.flatnonzero(np.asarray(labels).reshape(labels.shape[0], -1).any(axis=1)).tolist()


def check_image_array(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8)
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise DataError(f"Images must hold numbers (uint8, uint16, float...); got dtype {image.dtype}.")
    # the canonical native dtype: tifffile's int64 is numpy's 'longlong', which zarr does not know;
    # big-endian data (from some TIFFs) becomes native
    canonical = np.dtype(f"{image.dtype.kind}{image.dtype.itemsize}")
    return image if image.dtype == canonical and image.dtype.isnative and type(image.dtype) is type(canonical) else image.astype(canonical)


def check_plane_size(shape: Sequence[int], axes: str) -> None:
    yx = [n for a, n in zip(axes, shape) if a in "yx"]
    if min(yx) < MIN_SIDE:
        raise DataError(f"The image is too small ({yx[0]}x{yx[1]} pixels): at least {MIN_SIDE}x{MIN_SIDE} is needed.")


def check_instances(instances: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    instances = np.asarray(instances)
    if instances.shape != tuple(shape):
        raise DataError(f"Instance labels of shape {instances.shape} do not match the image's {tuple(shape)}.")
    if not np.issubdtype(instances.dtype, np.integer) or int(instances.min(initial=0)) < 0:
        raise DataError("Instance labels must be non-negative integers (0 = no object).")
    from .masks import sequential_ids

    return sequential_ids(instances)


def slug(name: str) -> str:
    return (re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image")[:80]


def provenance(origin: str, model_version: str | None, revision: str | None) -> dict:
    return {"origin": origin, "model_version": model_version, "time": now_iso(), "revision": revision}


def plane_name(image: str, z: int | None) -> str:
    """How plane ``z`` of a stack is named in tables and reports: ``"stack[z=3]"``."""
    return image if z is None else f"{image}[z={z}]"


def existing(manifest: dict, name: str) -> str:
    if name not in manifest["images"]:
        known = ", ".join(list(manifest["images"])[:10]) or "none yet"
        raise StoreError(f"No image named {name!r} in the project (images: {known}).")
    return name


# ---------------------------------------------------------------------- migration
def migrate(manifest: Any, project) -> tuple[dict, bool]:
    """Check a manifest's format and bring an older one up to date; returns (manifest, migrated)."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("images"), dict) or not isinstance(manifest.get("classes"), list):
        raise StoreError(f"The manifest {MANIFEST} of {project.url} is damaged (not a napari-seg-box manifest): restore it from a backup.")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StoreError(f"The manifest {MANIFEST} of {project.url} is damaged (format version {version!r}): restore it from a backup.")
    if version > FORMAT_VERSION:
        raise StoreError(
            f"The project at {project.url} has format version {version!r}, newer than this napari-seg-box "
            f"understands ({FORMAT_VERSION}): update napari-seg-box (pip install -U napari-seg-box)."
        )
    if version == FORMAT_VERSION:
        return manifest, False
    m = dict(manifest)  # format 1
    k = len(m["classes"])
    images = {}
    for name, rec in m["images"].items():
        rec = dict(rec)
        counts = None
        if rec.get("labels"):
            import zarr

            labels = np.asarray(zarr.open_array(store=project._storage.zarr_store(), path=rec["labels"], mode="r")[...])
            counts = np.bincount(labels.ravel(), minlength=k + 1)[1 : k + 1].astype(int).tolist()
        rec.update(
            axes="yxc" if len(rec["shape"]) == 3 else "yx",
            spacing=rec.pop("pixel_size", None),
            label_counts=counts,
            image_class=None,
            annotation={"origin": "imported", "model_version": None, "time": rec.get("added"), "revision": rec["labels"]}
            if rec.get("labels")
            else None,
            annotation_history=[],
        )
        images[name] = rec
    m["images"] = images
    m["models"] = _index_of_model_files(project)
    m.pop("tuning", None)
    m.update(format_version=FORMAT_VERSION, task="segmentation", generation=int(m.get("generation", 0)))
    return m, True


def _index_of_model_files(project) -> dict:
    from .versions import ModelVersion

    index = {}
    for v in project.list_dir("models"):
        if project.exists(f"models/{v}/model.json"):
            try:
                mv = ModelVersion.from_json({"version": v, **project.read_json(f"models/{v}/model.json")})
            except StoreError:
                continue  # damaged: left out of the index, its files are kept
            index[v] = mv.index_entry()
    return index
