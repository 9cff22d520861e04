"""The project store: images, annotations, classes, splits, model versions and results in one place.

A project store is a zarr v3 group, on a local folder (the default) or on any fsspec URL such as
``s3://bucket/prefix`` on an S3-compatible server (MinIO, Ceph, AWS)::

    project/
      zarr.json                 zarr group; attributes mark it as a napari-seg-box project
      segbox.json               the manifest: task, classes, pixel size, images, index of model versions
      images/<key>/image        (Y, X[, C]) image or (Z, Y, X[, C]) volume / time-lapse, written once
      images/<key>/labels-<r>   annotation revision r: 0 = unlabelled, 1..K = classes
      images/<key>/instances-<r>  optional instance ground truth (0 = none, ids = objects)
      models/<version>/weights.safetensors, models/<version>/model.json   (see :mod:`.versions`)
      results/<kind>/<name>/...  evaluation and quantification tables

Crash safety: array data is always written under a new name and becomes current only when the
manifest (a single small JSON object) is replaced atomically. A process killed half-way leaves the
previous manifest, which points only at complete arrays. A model version is listed once its files
are whole and the manifest's index says so.

Parallel writers (a napari session autosaving while a CLI import runs, two trainings finishing
together, two machines on one S3 bucket): every change of the manifest is a compare-and-swap
(:meth:`.storage.Storage.transact`) applied to the freshly read manifest, so nobody's images,
annotations or versions are lost, and version ids are claimed inside it (never shared). A handle
reads the manifest when opened and after each of its own writes; :meth:`Project.refresh` re-reads it.

Credentials are never written into the store: storage options are used to connect and forgotten.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import DataError, StoreError
from .manifest import (
    FORMAT_VERSION,
    MANIFEST,
    MARKER,
    SPLITS,
    TASKS,
    ClassInfo,
    ImageRecord,
    VersionEntry,
    class_list,
    migrate,
    now_iso,
    pixel_size_list,
)
from .planes import Plane, iter_annotated_planes
from .storage import Storage, is_remote, json_default
from .store_images import ImagesMixin
from .store_versions import VersionsMixin
from .versions import ModelVersion

__all__ = [
    "ClassInfo",
    "ImageRecord",
    "ModelVersion",
    "Plane",
    "Project",
    "VersionEntry",
    "iter_annotated_planes",
    "FORMAT_VERSION",
    "MANIFEST",
    "SPLITS",
]


class Project(ImagesMixin, VersionsMixin):
    """A project store (see the module docstring for its layout and guarantees).

    Create one with :meth:`Project.create`, open one with :meth:`Project.open`.
    """

    def __init__(self, url: str | os.PathLike, *, storage_options: Mapping[str, Any] | None = None, _manifest: dict | None = None):
        self._storage = Storage(str(url), storage_options)
        self.url = self._storage.url
        self._versions: dict[tuple[str, int | None], ModelVersion] = {}  # model descriptions read by this handle
        self._manifest = _manifest if _manifest is not None else self._read_manifest()

    # ------------------------------------------------------------------ opening / creating
    @classmethod
    def create(
        cls,
        url: str | os.PathLike,
        *,
        classes: Sequence[str] | None = None,
        colors: Sequence[str] | None = None,
        pixel_size: float | Sequence[float] | None = None,
        unit: str = "µm",
        task: str = "segmentation",
        storage_options: Mapping[str, Any] | None = None,
        exist_ok: bool = False,
    ) -> Project:
        """Create a new project store at ``url`` (a folder path or fsspec URL).

        ``classes`` are the annotation classes in label order: the first is label 1 (usually the
        background, which is a class like any other), label 0 always means *unlabelled*; by default
        background and foreground. ``task`` is ``segmentation`` (labels per pixel) or
        ``classification`` (a class per image; no class by default: importing class folders adds them).
        With ``exist_ok=True`` an existing project is opened instead (its classes are kept).
        """
        url = str(url)
        if cls.is_project(url, storage_options=storage_options):
            if exist_ok:
                return cls.open(url, storage_options=storage_options)
            raise StoreError(
                f"A project already exists at {url}.",
                hints={
                    "python": "Open it with Project.open(url), or pass exist_ok=True.",
                    "cli": "Use it as it is (napari-seg-box info shows what it holds), or choose another folder.",
                    "gui": "Open it with Open…, or choose another name for the new project.",
                },
            )
        if task not in TASKS:
            raise DataError(f"Unknown task {task!r}: use one of {', '.join(TASKS)}.")
        manifest = {
            "format_version": FORMAT_VERSION,
            "task": task,
            "created": now_iso(),
            "generation": 0,
            "classes": class_list(
                classes if classes is not None else ("background", "foreground") if task == "segmentation" else (),
                colors,
                allow_empty=task == "classification",
            ),
            "pixel_size": pixel_size_list(pixel_size),
            "unit": unit,
            "images": {},
            "models": {},
        }
        try:
            _create(Storage(url, storage_options), manifest)
        except (StoreError, DataError):
            raise
        except Exception as err:
            if not is_remote(url):
                raise
            raise _unreachable(url, err) from err
        return cls(url, storage_options=storage_options, _manifest=manifest)

    @classmethod
    def open(cls, url: str | os.PathLike, *, storage_options: Mapping[str, Any] | None = None) -> Project:
        """Open an existing project store; raises :class:`StoreError` when ``url`` is not one."""
        url = str(url)
        if not cls.is_project(url, storage_options=storage_options):
            _check_reachable(url, storage_options)
            raise StoreError(
                f"No napari-seg-box project store at {url}.",
                hints={
                    "python": f"Create one with Project.create({url!r}).",
                    "cli": f"Create one with `napari-seg-box init {url}`.",
                    "gui": "Create one with New project… in the Annotate panel, or choose another with Open….",
                },
            )
        return cls(url, storage_options=storage_options)

    @staticmethod
    def is_project(url: str | os.PathLike, *, storage_options: Mapping[str, Any] | None = None) -> bool:
        """True when ``url`` holds a napari-seg-box project (never raises for ordinary paths)."""
        try:
            meta = json.loads(Storage(str(url), storage_options).read_bytes("zarr.json"))
        except Exception:
            return False
        return isinstance(meta, dict) and MARKER in (meta.get("attributes") or {})

    @property
    def storage_options(self) -> dict:
        """The options used to connect (for workers that reopen the store; never saved)."""
        return dict(self._storage.options)

    # ------------------------------------------------------------------ files (for results, checkpoints)
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file into the store atomically: readers see the old or the new file, whole."""
        self._storage.write_bytes(rel, data)

    def read_bytes(self, rel: str) -> bytes:
        return self._storage.read_bytes(rel)

    def exists(self, rel: str) -> bool:
        return self._storage.exists(rel)

    def list_dir(self, rel: str) -> list[str]:
        return self._storage.list_dir(rel)

    def remove(self, rel: str) -> None:
        self._storage.remove(rel)

    def write_json(self, rel: str, obj: Any) -> None:
        self._storage.write_json(rel, obj)

    def read_json(self, rel: str) -> Any:
        return self._storage.read_json(rel)

    # ------------------------------------------------------------------ manifest
    def _read_manifest(self) -> dict:
        try:
            manifest = self._storage.read_json(MANIFEST)
        except StoreError as err:
            if not self._storage.exists(MANIFEST):
                raise StoreError(f"{self.url} has no {MANIFEST}: it is not a complete napari-seg-box project.") from err
            raise
        manifest, migrated = migrate(manifest, self)
        self._manifest = manifest
        if migrated:  # write the migration once (a read-only store keeps it in memory)
            with contextlib.suppress(Exception):  # a read-only store still opens, migrated in memory
                self._update(lambda m: None)
        return self._manifest

    def _update(self, change: Callable[[dict], Any]) -> Any:
        """Apply ``change(manifest)`` (edits in place, returns a result) to the freshly read manifest,
        atomically with respect to other writers; the handle then holds the new manifest."""

        def apply(doc):
            if doc is None:
                raise StoreError(f"{self.url} has no {MANIFEST}: the project was deleted meanwhile.")
            doc, _ = migrate(doc, self)
            result = change(doc)
            doc["generation"] = int(doc.get("generation", 0)) + 1
            doc["modified"] = now_iso()
            return doc, result

        self._manifest, result = self._storage.transact(MANIFEST, apply)
        return result

    def refresh(self) -> Project:
        """Re-read the manifest (after another program changed the store)."""
        self._manifest = self._read_manifest()
        return self

    @property
    def manifest(self) -> dict:
        """A copy of the manifest (for display; change the store through the methods)."""
        return json.loads(json.dumps(self._manifest, default=json_default))

    @property
    def generation(self) -> int:
        """Counts the changes of the manifest (every write adds one)."""
        return int(self._manifest.get("generation", 0))

    # ------------------------------------------------------------------ classes and metadata
    @property
    def task(self) -> str:
        return self._manifest.get("task", "segmentation")

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
        """Rename classes or add new ones. Removing classes that annotations or image classes use is refused."""
        new = class_list(names, colors, allow_empty=self.task == "classification")

        def change(m):
            named = {rec.get("image_class") for rec in m["images"].values()} - {None} - {c["name"] for c in new}
            if named:
                raise DataError(
                    f"Images are of class {sorted(named)[0]!r}, which is not among the classes given: "
                    "give their images another class first (nothing was changed)."
                )
            used = max((len(np.trim_zeros(rec.get("label_counts") or [], "b")) for rec in m["images"].values()), default=0)
            if used > len(new):
                raise DataError(
                    f"Annotations use class {used} but only {len(new)} classes were given: "
                    "relabel or remove those annotations first (nothing was changed)."
                )
            m["classes"] = new

        self._update(change)

    def class_counts(self) -> dict[str, dict[str, int]]:
        """Images per image-level class and split (classification projects): ``{class: {split: n}}``,
        with ``(none)`` for images without a class."""
        counts = {name: dict.fromkeys(SPLITS, 0) for name in self.class_names}
        for rec in self._manifest["images"].values():
            counts.setdefault(rec.get("image_class") or "(none)", dict.fromkeys(SPLITS, 0))[rec["split"]] += 1
        return counts

    def set_pixel_size(self, pixel_size: float | Sequence[float] | None, unit: str | None = None) -> None:
        ps = pixel_size_list(pixel_size)

        def change(m):
            m["pixel_size"] = ps
            if unit:
                m["unit"] = unit

        self._update(change)

    def summary(self) -> dict:
        """Everything `napari-seg-box info` prints, as a dict (reads the manifest only)."""
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
                    "axes": rec.axes,
                    "dtype": rec.dtype,
                    "annotated_pixels": int(stats.sum()),
                    "has_instances": rec.has_instances,
                    "image_class": rec.image_class,
                }
            )
        return {
            "url": self.url,
            "format_version": self._manifest["format_version"],
            "task": self.task,
            "classes": [{"value": c.value, "name": c.name, "color": c.color} for c in self.classes],
            "pixel_size": self.pixel_size,
            "unit": self.unit,
            "images": images,
            "splits": {s: len(self.image_names(s)) for s in SPLITS},
            "images_per_class": self.class_counts(),
            "annotated_pixels_per_class": {c.name: int(n) for c, n in zip(self.classes, per_class)},
            "model_versions": [
                {
                    "version": e.version,
                    "created": e.created,
                    "encoder": e.encoder,
                    "status": e.status,
                    "best": dict(e.best),
                    "tuned": e.tuned,
                }
                for e in self.model_versions()
            ],
        }


def _create(storage: Storage, manifest: dict) -> None:
    """Write a new store's group and manifest, refusing a file or a folder with other contents."""
    import zarr

    fs, root, url = storage.fs, storage.root, storage.url
    if fs.exists(root) and fs.isfile(root):
        raise StoreError(f"{url} is a file, not a folder: choose a new folder for the project store.")
    if fs.exists(root) and fs.ls(root):
        raise StoreError(
            f"{url} exists and is not empty, and it is not a napari-seg-box project: "
            "choose a new or empty folder so that nothing there is overwritten."
        )
    zarr.open_group(store=storage.zarr_store(), mode="w", attributes={MARKER: {"format_version": FORMAT_VERSION, "kind": "project"}})
    try:
        storage.transact(MANIFEST, lambda doc: (manifest, None), create=True)
    except FileExistsError:
        raise StoreError(f"A project store was created at {url} by another program meanwhile: open it instead.") from None


def _unreachable(url: str, err: BaseException) -> StoreError:
    """A StoreError that says what to do about a remote store that cannot be used."""
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, ConnectionError) or any(k in type(err).__name__ for k in ("Connect", "Timeout")):
        return StoreError(
            f"Cannot reach the project store at {url}: {text}. Check the URL, the endpoint (--endpoint-url / AWS_ENDPOINT_URL) "
            "and that the server is running."
        )
    # "403" as an HTTP status only: a port such as 38403 in the endpoint URL is not a refusal.
    refused = any(k in text for k in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"))
    if isinstance(err, PermissionError) or refused or re.search(r"(?<![\d:.])403(?!\d)", text):
        return StoreError(f"Access to {url} was refused ({text}): check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).")
    if isinstance(err, FileNotFoundError) or "NoSuchBucket" in text:
        bucket = url.split("://", 1)[-1].split("/", 1)[0]
        return StoreError(
            f"The bucket {bucket!r} does not exist on this server ({text}): create it first (e.g. `mc mb` / `aws s3 mb`), or check the URL."
        )
    return StoreError(
        f"Cannot reach the project store at {url}: {text}. Check the URL, the endpoint (--endpoint-url / AWS_ENDPOINT_URL) and the credentials."
    )


def _check_reachable(url: str, storage_options: Mapping[str, Any] | None) -> None:
    """Raise a StoreError that says so when the store's location cannot be reached at all."""
    try:
        storage = Storage(url, storage_options)
        storage.fs.exists(storage.root)
    except Exception as err:
        raise _unreachable(url, err) from err
