"""The project store: images, annotations, classes, splits, model versions and results in one place.

A project store is a zarr v3 group, on a local folder (the default) or on any fsspec URL such as
``s3://bucket/prefix`` on an S3-compatible server (MinIO, Ceph, AWS)::

    project/
      zarr.json                 zarr group; attributes mark it as a napari-seg-box project
      segbox.json               the manifest: classes, pixel size, images with split and arrays
      images/<key>/image        (Y, X) or (Y, X, C) array, written once
      images/<key>/labels-<r>   annotation revision r: 0 = unlabelled, 1..K = classes
      images/<key>/instances-<r>  optional instance ground truth (0 = none, ids = objects)
      models/<version>/weights.safetensors, models/<version>/model.json
      results/<kind>/<name>/...  evaluation and quantification tables

Crash safety: array data is always written under a new name and becomes current only when the
manifest (a single small JSON object) is replaced atomically (``os.replace`` on a local disk, a
single PUT on object stores). A process killed half-way leaves the previous manifest, which points
only at complete arrays. Model versions exist once their ``model.json`` (written last, atomically,
with the weights' SHA-256) exists.

Credentials are never written into the store: storage options are used to connect and forgotten.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import DataError, StoreError

FORMAT_VERSION = 1
MANIFEST = "segbox.json"
MARKER = "napari_seg_box"
SPLITS = ("train", "validation", "test")

DEFAULT_COLORS = (
    "#000000",  # unused: label 0 = unlabelled
    "#7f7f7f",
    "#ff7f0e",
    "#1f77b4",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
)


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
    channels: int
    has_labels: bool
    has_instances: bool
    pixel_size: tuple[float, float] | None
    source: str | None


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def resolve_storage_options(url: str, storage_options: Mapping[str, Any] | None = None) -> dict:
    """Storage options for ``url``: explicit options first, then the environment.

    For ``s3://`` URLs the endpoint (MinIO and other S3-compatible servers) comes from the
    ``endpoint_url`` option or the ``AWS_ENDPOINT_URL`` / ``S3_ENDPOINT_URL`` environment
    variables; keys come from the option or the usual ``AWS_*`` variables, handled by s3fs.
    """
    opts = dict(storage_options or {})
    if url.startswith(("s3://", "s3a://")):
        endpoint = opts.pop("endpoint_url", None) or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get(
            "S3_ENDPOINT_URL"
        )
        if endpoint:
            client_kwargs = dict(opts.pop("client_kwargs", {}) or {})
            client_kwargs.setdefault("endpoint_url", endpoint)
            opts["client_kwargs"] = client_kwargs
    return opts


def is_remote(url: str) -> bool:
    return "://" in str(url) and not str(url).startswith("file://")


def _slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"
    return s[:80]


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}: use one of {', '.join(SPLITS)}.")
    return split


class Project:
    """A segmentation project store (see the module docstring for its layout).

    Create one with :meth:`Project.create`, open one with :meth:`Project.open`. All methods read and
    write the store directly; the object keeps no state that the store does not hold, except a
    cached copy of the manifest that every write refreshes.
    """

    def __init__(self, url: str, *, storage_options: Mapping[str, Any] | None = None, _manifest: dict | None = None):
        import fsspec

        self.url = str(url).rstrip("/")
        self._opts = resolve_storage_options(self.url, storage_options)
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **self._opts)
        self._remote = is_remote(self.url)
        self._zstore = None
        self._manifest = _manifest if _manifest is not None else self._read_manifest()

    # ------------------------------------------------------------------ opening / creating
    @classmethod
    def create(
        cls,
        url: str | os.PathLike,
        *,
        classes: Sequence[str] = ("background", "foreground"),
        colors: Sequence[str] | None = None,
        pixel_size: float | Sequence[float] | None = None,
        unit: str = "µm",
        storage_options: Mapping[str, Any] | None = None,
        exist_ok: bool = False,
    ) -> "Project":
        """Create a new project store at ``url`` (a folder path or fsspec URL).

        ``classes`` are the annotation classes in label order: the first is label 1 (usually the
        background, which is a class like any other), label 0 always means *unlabelled*.
        With ``exist_ok=True`` an existing project is opened instead (its classes are kept).
        """
        url = str(url)
        if cls.is_project(url, storage_options=storage_options):
            if exist_ok:
                return cls.open(url, storage_options=storage_options)
            raise StoreError(f"A project store already exists at {url}: open it with Project.open (or `info`).")
        import fsspec
        import zarr

        fs, root = fsspec.core.url_to_fs(url, **resolve_storage_options(url, storage_options))
        if fs.exists(root) and fs.isfile(root):
            raise StoreError(f"{url} is a file, not a folder: choose a new folder for the project store.")
        if fs.exists(root) and fs.ls(root):
            raise StoreError(
                f"{url} exists and is not empty, and it is not a napari-seg-box project: "
                "choose a new or empty folder so that nothing there is overwritten."
            )
        manifest = {
            "format_version": FORMAT_VERSION,
            "created": now_iso(),
            "classes": _class_list(classes, colors),
            "pixel_size": _pixel_size(pixel_size),
            "unit": unit,
            "images": {},
            "tuning": {},
        }
        project = cls(url, storage_options=storage_options, _manifest=manifest)
        zarr.open_group(store=project._zarr_store(), mode="w", attributes={MARKER: {"format_version": FORMAT_VERSION, "kind": "project"}})
        project._write_manifest(manifest)
        return project

    @classmethod
    def open(cls, url: str | os.PathLike, *, storage_options: Mapping[str, Any] | None = None) -> "Project":
        """Open an existing project store; raises :class:`StoreError` when ``url`` is not one."""
        url = str(url)
        if not cls.is_project(url, storage_options=storage_options):
            _check_reachable(url, storage_options)
            raise StoreError(
                f"No napari-seg-box project store at {url}. Create one with "
                f"`napari-seg-box init {url}` or Project.create({url!r})."
            )
        return cls(url, storage_options=storage_options)

    @staticmethod
    def is_project(url: str | os.PathLike, *, storage_options: Mapping[str, Any] | None = None) -> bool:
        """True when ``url`` holds a napari-seg-box project (never raises for ordinary paths)."""
        import fsspec

        url = str(url)
        try:
            fs, root = fsspec.core.url_to_fs(url, **resolve_storage_options(url, storage_options))
            raw = fs.cat_file(f"{root.rstrip('/')}/zarr.json")
            meta = json.loads(raw)
        except Exception:
            return False
        return isinstance(meta, dict) and MARKER in (meta.get("attributes") or {})

    # ------------------------------------------------------------------ low-level file access
    def _path(self, rel: str) -> str:
        parts = rel.replace("\\", "/").split("/")
        if rel.startswith("/") or ".." in parts:
            raise StoreError(f"The path {rel!r} leaves the project store: use a path inside it (no '..', not absolute).")
        return f"{self.root.rstrip('/')}/{rel}" if rel else self.root

    def _zarr_store(self):
        if self._zstore is None:
            import zarr.storage

            if self._remote:
                self._zstore = zarr.storage.FsspecStore.from_url(self.url, storage_options=self._opts)
            else:
                os.makedirs(self.root, exist_ok=True)
                self._zstore = zarr.storage.LocalStore(self.root)
        return self._zstore

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file into the store atomically: readers see the old or the new file, whole."""
        path = self._path(rel)
        if self._remote:
            self.fs.pipe_file(path, data)  # one PUT: atomic on S3-compatible stores
            return
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def read_bytes(self, rel: str) -> bytes:
        try:
            return self.fs.cat_file(self._path(rel))
        except FileNotFoundError as err:
            raise StoreError(f"{rel} is missing from the project store {self.url}.") from err

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self._path(rel))

    def list_dir(self, rel: str) -> list[str]:
        """Names directly under ``rel`` (empty when it does not exist)."""
        path = self._path(rel)
        if not self.fs.exists(path):
            return []
        return sorted(os.path.basename(p.rstrip("/")) for p in self.fs.ls(path, detail=False))

    def remove(self, rel: str) -> None:
        path = self._path(rel)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2, default=_json_default).encode())

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    # ------------------------------------------------------------------ manifest
    def _read_manifest(self) -> dict:
        try:
            manifest = json.loads(self.fs.cat_file(self._path(MANIFEST)))
        except FileNotFoundError as err:
            raise StoreError(f"{self.url} has no {MANIFEST}: it is not a complete napari-seg-box project.") from err
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise StoreError(
                f"The project at {self.url} has format version {version}, newer than this napari-seg-box "
                f"understands ({FORMAT_VERSION}): update napari-seg-box (pip install -U napari-seg-box)."
            )
        return manifest

    def _write_manifest(self, manifest: dict) -> None:
        manifest["modified"] = now_iso()
        self.write_json(MANIFEST, manifest)
        self._manifest = manifest

    def refresh(self) -> "Project":
        """Re-read the manifest (after another process changed the store)."""
        self._manifest = self._read_manifest()
        return self

    @property
    def manifest(self) -> dict:
        """A copy of the manifest (for display; change the store through the methods)."""
        return json.loads(json.dumps(self._manifest))

    # ------------------------------------------------------------------ classes and metadata
    @property
    def classes(self) -> list[ClassInfo]:
        return [ClassInfo(i + 1, c["name"], c["color"]) for i, c in enumerate(self._manifest["classes"])]

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self._manifest["classes"]]

    @property
    def n_classes(self) -> int:
        return len(self._manifest["classes"])

    @property
    def pixel_size(self) -> tuple[float, float] | None:
        ps = self._manifest.get("pixel_size")
        return tuple(ps) if ps else None

    @property
    def unit(self) -> str:
        return self._manifest.get("unit") or "px"

    def set_classes(self, names: Sequence[str], colors: Sequence[str] | None = None) -> None:
        """Rename classes or add new ones. Removing classes that annotations use is refused."""
        new = _class_list(names, colors)
        if len(new) < self.n_classes:
            used = max((len(np.trim_zeros(self.annotation_stats(n), "b")) for n in self.image_names()), default=0)
            if used > len(new):
                raise DataError(
                    f"Annotations use class {used} but only {len(new)} classes were given: "
                    "relabel or remove those annotations first (nothing was changed)."
                )
        manifest = self.manifest
        manifest["classes"] = new
        self._write_manifest(manifest)

    def set_pixel_size(self, pixel_size: float | Sequence[float] | None, unit: str | None = None) -> None:
        manifest = self.manifest
        manifest["pixel_size"] = _pixel_size(pixel_size)
        if unit:
            manifest["unit"] = unit
        self._write_manifest(manifest)

    # ------------------------------------------------------------------ images
    def image_names(self, split: str | None = None) -> list[str]:
        images = self._manifest["images"]
        return [n for n, rec in images.items() if split is None or rec["split"] == _check_split(split)]

    def image_record(self, name: str) -> ImageRecord:
        rec = self._entry(name)
        return ImageRecord(
            name=name,
            split=rec["split"],
            shape=tuple(rec["shape"]),
            dtype=rec["dtype"],
            channels=rec["channels"],
            has_labels=bool(rec.get("labels")),
            has_instances=bool(rec.get("instances")),
            pixel_size=tuple(rec["pixel_size"]) if rec.get("pixel_size") else self.pixel_size,
            source=rec.get("source"),
        )

    def images(self, split: str | None = None) -> list[ImageRecord]:
        return [self.image_record(n) for n in self.image_names(split)]

    def _entry(self, name: str) -> dict:
        try:
            return self._manifest["images"][name]
        except KeyError:
            known = ", ".join(list(self._manifest["images"])[:10]) or "none yet"
            raise StoreError(f"No image named {name!r} in the project (images: {known}).") from None

    def add_image(
        self,
        name: str,
        image: np.ndarray,
        *,
        labels: np.ndarray | None = None,
        instances: np.ndarray | None = None,
        split: str = "train",
        channel_axis: int | None = None,
        pixel_size: float | Sequence[float] | None = None,
        source: str | None = None,
        overwrite: bool = False,
    ) -> str:
        """Add one 2D image, optionally with annotations, and return its name.

        ``image`` is (Y, X) or multichannel with ``channel_axis`` (default: the last axis when it
        has at most 4 entries). It is stored channel-last. ``labels`` holds 0 = unlabelled and
        1..K = classes; ``instances`` optional ground-truth object ids (for object metrics).
        For stacks use :meth:`add_stack`.
        """
        _check_split(split)
        image = as_channel_last(np.asarray(image), channel_axis=channel_axis)
        if name in self._manifest["images"] and not overwrite:
            raise StoreError(f"An image named {name!r} is already in the project: choose another name or pass overwrite=True.")
        channels = 1 if image.ndim == 2 else int(image.shape[-1])
        others = {r["channels"] for n, r in self._manifest["images"].items() if n != name}
        if others and channels not in others:
            raise DataError(
                f"The image {name!r} has {channels} channel(s) but the project's images have {others.pop()}: "
                "one model needs one kind of image. Convert it (e.g. RGB to grayscale) or use another project."
            )
        if labels is not None:
            labels = self._check_labels(labels, image.shape[:2])
        if instances is not None:
            instances = _check_instances(instances, image.shape[:2])
        key = f"{_slug(name)}-{uuid.uuid4().hex[:8]}"
        rec = {
            "key": key,
            "split": split,
            "shape": list(image.shape),
            "dtype": str(image.dtype),
            "channels": channels,
            "array": f"images/{key}/image",
            "labels": None,
            "instances": None,
            "pixel_size": _pixel_size(pixel_size),
            "source": source,
            "added": now_iso(),
        }
        self._write_array(rec["array"], image)
        if labels is not None:
            rec["labels"] = self._write_revision(key, "labels", labels)
        if instances is not None:
            rec["instances"] = self._write_revision(key, "instances", instances)
        manifest = self.manifest
        old = manifest["images"].get(name)
        manifest["images"][name] = rec
        self._write_manifest(manifest)
        if old:
            self.remove(f"images/{old['key']}")
        return name

    def add_stack(self, name: str, stack: np.ndarray, *, labels: np.ndarray | None = None, **kwargs) -> list[str]:
        """Add a (Z, Y, X[, C]) stack as one image per slice, named ``<name>_z000`` ... ."""
        stack = np.asarray(stack)
        if labels is not None and np.shape(labels)[0] != stack.shape[0]:
            raise DataError(f"The stack has {stack.shape[0]} slices but its labels have {np.shape(labels)[0]}.")
        return [
            self.add_image(f"{name}_z{z:03d}", stack[z], labels=None if labels is None else labels[z], **kwargs)
            for z in range(stack.shape[0])
        ]

    def remove_image(self, name: str) -> None:
        rec = self._entry(name)
        manifest = self.manifest
        del manifest["images"][name]
        self._write_manifest(manifest)
        self.remove(f"images/{rec['key']}")

    def set_split(self, name: str, split: str) -> None:
        _check_split(split)
        self._entry(name)
        manifest = self.manifest
        manifest["images"][name]["split"] = split
        self._write_manifest(manifest)

    def image_array(self, name: str):
        """The image as a lazy zarr array (Y, X[, C]): nothing is read until indexed."""
        import zarr

        return zarr.open_array(store=self._zarr_store(), path=self._entry(name)["array"], mode="r")

    def get_image(self, name: str) -> np.ndarray:
        return np.asarray(self.image_array(name)[...])

    def get_labels(self, name: str) -> np.ndarray | None:
        """The current annotation of ``name`` (0 = unlabelled), or None when it has none."""
        return self._read_revision(name, "labels")

    def get_instances(self, name: str) -> np.ndarray | None:
        return self._read_revision(name, "instances")

    def set_labels(self, name: str, labels: np.ndarray | None) -> None:
        """Save the annotation of ``name`` (crash-safe: the old one stays until the new is whole).

        ``None`` removes the annotation.
        """
        rec = self._entry(name)
        new = None
        if labels is not None:
            labels = self._check_labels(labels, tuple(rec["shape"][:2]))
            new = self._write_revision(rec["key"], "labels", labels)
        manifest = self.manifest
        old = manifest["images"][name]["labels"]
        manifest["images"][name]["labels"] = new
        self._write_manifest(manifest)
        if old and old != new:
            self.remove(old)

    def set_instances(self, name: str, instances: np.ndarray | None) -> None:
        rec = self._entry(name)
        new = None
        if instances is not None:
            new = self._write_revision(rec["key"], "instances", _check_instances(instances, tuple(rec["shape"][:2])))
        manifest = self.manifest
        old = manifest["images"][name]["instances"]
        manifest["images"][name]["instances"] = new
        self._write_manifest(manifest)
        if old and old != new:
            self.remove(old)

    def annotation_stats(self, name: str) -> np.ndarray:
        """Annotated pixels per class of one image: array of length K (index 0 = class 1)."""
        labels = self.get_labels(name)
        if labels is None:
            return np.zeros(self.n_classes, dtype=np.int64)
        counts = np.bincount(labels.ravel(), minlength=self.n_classes + 1)
        return counts[1 : self.n_classes + 1].astype(np.int64)

    def summary(self) -> dict:
        """Everything `napari-seg-box info` prints, as a dict."""
        per_class = np.zeros(self.n_classes, dtype=np.int64)
        images = []
        for rec in self.images():
            stats = self.annotation_stats(rec.name)
            per_class += stats
            images.append(
                {
                    "name": rec.name,
                    "split": rec.split,
                    "shape": list(rec.shape),
                    "dtype": rec.dtype,
                    "annotated_pixels": int(stats.sum()),
                    "has_instances": rec.has_instances,
                }
            )
        return {
            "url": self.url,
            "format_version": self._manifest["format_version"],
            "classes": [{"value": c.value, "name": c.name, "color": c.color} for c in self.classes],
            "pixel_size": self.pixel_size,
            "unit": self.unit,
            "images": images,
            "splits": {s: len(self.image_names(s)) for s in SPLITS},
            "annotated_pixels_per_class": {c.name: int(n) for c, n in zip(self.classes, per_class)},
            "model_versions": [
                {"version": m["version"], "created": m.get("created"), "encoder": m.get("encoder"), "best": m.get("best_metrics")}
                for m in self.model_versions()
            ],
        }

    # ------------------------------------------------------------------ array helpers
    def _check_labels(self, labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.shape != tuple(shape):
            raise DataError(f"Labels of shape {labels.shape} do not match the image's {tuple(shape)}.")
        if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
            if not np.all(np.mod(labels, 1) == 0):
                raise DataError("Labels must be whole numbers: 0 = unlabelled, 1..K = classes.")
        labels = labels.astype(np.int64, copy=False)
        lo, hi = int(labels.min(initial=0)), int(labels.max(initial=0))
        if lo < 0 or hi > self.n_classes:
            raise DataError(
                f"Labels hold values {lo}..{hi} but the project has {self.n_classes} classes "
                f"({', '.join(self.class_names)}; 0 = unlabelled): add classes with set_classes or fix the labels."
            )
        return labels.astype(np.uint8 if self.n_classes < 255 else np.uint16)

    def _write_array(self, rel: str, data: np.ndarray) -> None:
        import zarr

        chunks = tuple(min(s, 512) for s in data.shape[:2]) + tuple(data.shape[2:])
        arr = zarr.create_array(store=self._zarr_store(), name=rel, shape=data.shape, dtype=data.dtype, chunks=chunks, overwrite=True)
        arr[...] = data

    def _write_revision(self, key: str, kind: str, data: np.ndarray) -> str:
        rel = f"images/{key}/{kind}-{uuid.uuid4().hex[:12]}"
        self._write_array(rel, data)
        return rel

    def _read_revision(self, name: str, kind: str) -> np.ndarray | None:
        import zarr

        rel = self._entry(name).get(kind)
        if not rel:
            return None
        return np.asarray(zarr.open_array(store=self._zarr_store(), path=rel, mode="r")[...])

    # ------------------------------------------------------------------ model versions
    def model_versions(self) -> list[dict]:
        """Metadata of every complete model version, oldest first."""
        out = []
        for v in self.list_dir("models"):
            if self.exists(f"models/{v}/model.json"):
                try:
                    out.append(self.read_json(f"models/{v}/model.json"))
                except (ValueError, StoreError):
                    continue
        return sorted(out, key=lambda m: m.get("version", ""))

    def new_version_id(self) -> str:
        """The next free version id: v001, v002, ... ."""
        used = [int(m.group(1)) for v in self.list_dir("models") if (m := re.fullmatch(r"v(\d+)", v))]
        return f"v{max(used, default=0) + 1:03d}"

    def save_model_version(self, version: str, weights: bytes, metadata: dict) -> str:
        """Store a model version: weights first, then ``model.json`` (atomic) that makes it exist."""
        if not re.fullmatch(r"[A-Za-z0-9._-]+", version):
            raise StoreError(f"Invalid model version id {version!r}: use letters, digits, '.', '_' or '-'.")
        if self.exists(f"models/{version}/model.json"):
            raise StoreError(f"Model version {version} already exists: versions are never overwritten (use new_version_id()).")
        self.write_bytes(f"models/{version}/weights.safetensors", weights)
        meta = dict(metadata)
        meta["version"] = version
        meta["weights_sha256"] = hashlib.sha256(weights).hexdigest()
        meta.setdefault("created", now_iso())
        self.write_json(f"models/{version}/model.json", meta)
        return version

    def update_model_metadata(self, version: str, **changes: Any) -> dict:
        meta = self.model_metadata(version)
        meta.update(changes)
        self.write_json(f"models/{version}/model.json", meta)
        return meta

    def model_metadata(self, version: str | None = None) -> dict:
        """Metadata of ``version`` (default: the newest)."""
        version = self.resolve_version(version)
        return self.read_json(f"models/{version}/model.json")

    def model_weights(self, version: str | None = None) -> bytes:
        """The safetensors bytes of ``version``, checked against the SHA-256 in its metadata."""
        meta = self.model_metadata(version)
        data = self.read_bytes(f"models/{meta['version']}/weights.safetensors")
        if hashlib.sha256(data).hexdigest() != meta.get("weights_sha256"):
            raise StoreError(f"The weights of model version {meta['version']} are damaged (checksum mismatch): retrain or restore them.")
        return data

    def resolve_version(self, version: str | None) -> str:
        versions = [m["version"] for m in self.model_versions()]
        if not versions:
            raise StoreError(f"The project {self.url} has no model version yet: train one first (`napari-seg-box train`).")
        if version in (None, "latest"):
            return versions[-1]
        if version == "best":
            scored = [m for m in self.model_versions() if m.get("best_metrics")]
            if scored:
                return max(scored, key=lambda m: m["best_metrics"].get("val_iou", -1))["version"]
            return versions[-1]
        if version not in versions:
            raise StoreError(f"No model version {version!r} in the project (versions: {', '.join(versions)}).")
        return version


# ---------------------------------------------------------------------- helpers
def _class_list(names: Sequence[str], colors: Sequence[str] | None) -> list[dict]:
    names = [str(n).strip() for n in names]
    if not names or any(not n for n in names):
        raise DataError("Give at least one class name (for example: background, nucleus).")
    if len(set(names)) != len(names):
        raise DataError(f"Class names must be unique: {names}.")
    colors = list(colors or [])
    out = []
    for i, n in enumerate(names):
        color = colors[i] if i < len(colors) else DEFAULT_COLORS[1 + i % (len(DEFAULT_COLORS) - 1)]
        out.append({"name": n, "color": color})
    return out


def _pixel_size(pixel_size: float | Sequence[float] | None) -> list[float] | None:
    if pixel_size is None:
        return None
    ps = [float(pixel_size)] * 2 if np.isscalar(pixel_size) else [float(p) for p in pixel_size]
    if len(ps) != 2 or any(p <= 0 for p in ps):
        raise DataError(f"Pixel size must be one positive number or two (y, x); got {pixel_size!r}.")
    return ps


def _check_reachable(url: str, storage_options: Mapping[str, Any] | None) -> None:
    """Raise a StoreError that says so when the store's location cannot be reached at all."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url, **resolve_storage_options(url, storage_options))
        fs.exists(root)
    except Exception as err:
        raise StoreError(
            f"Cannot reach the project store at {url}: {type(err).__name__}: {err}. "
            "Check the URL, the endpoint (--endpoint-url / AWS_ENDPOINT_URL) and the credentials."
        ) from err


def _check_instances(instances: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    instances = np.asarray(instances)
    if instances.shape != tuple(shape):
        raise DataError(f"Instance labels of shape {instances.shape} do not match the image's {tuple(shape)}.")
    if not np.issubdtype(instances.dtype, np.integer) or int(instances.min(initial=0)) < 0:
        raise DataError("Instance labels must be non-negative integers (0 = no object).")
    return instances.astype(np.uint32)


def as_channel_last(image: np.ndarray, *, channel_axis: int | None = None) -> np.ndarray:
    """Return a 2D image as (Y, X) or (Y, X, C); raise a clear error for anything else."""
    if image.dtype == bool:
        image = image.astype(np.uint8)
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise DataError(f"Images must hold numbers (uint8, uint16, float...); got dtype {image.dtype}.")
    if channel_axis is not None:
        if image.ndim != 3:
            raise DataError(f"channel_axis={channel_axis} given but the image has {image.ndim} dimensions (expected 3).")
        image = np.moveaxis(image, channel_axis, -1)
    elif image.ndim == 3 and image.shape[-1] <= 4:
        pass
    elif image.ndim == 3 and image.shape[0] <= 4:
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3):
        raise DataError(
            f"Expected a 2D image (Y, X) or (Y, X, C); got shape {image.shape}. "
            "For a stack of slices use add_stack (or `import` of a multipage TIFF)."
        )
    if image.ndim == 3 and image.shape[-1] > 4 and channel_axis is None:
        raise DataError(
            f"Shape {image.shape} looks like a stack of {image.shape[0]} slices, not channels: add it with add_stack, "
            "or pass channel_axis for a multichannel image."
        )
    if min(image.shape[:2]) < 8:
        raise DataError(f"The image is too small ({image.shape[0]}x{image.shape[1]} pixels): at least 8x8 is needed.")
    return np.ascontiguousarray(image)


def _json_default(obj: Any):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def iter_training_pairs(project: Project, splits: Iterable[str] = ("train", "validation")):
    """Yield (name, image, labels) for annotated images of the given splits (never ``test``)."""
    for rec in project.images():
        if rec.split in splits and rec.has_labels:
            yield rec.name, project.get_image(rec.name), project.get_labels(rec.name)
