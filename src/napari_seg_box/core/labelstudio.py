"""Label Studio interoperability: import annotations from a Label Studio JSON export, export pre-annotations.

:func:`import_labelstudio` reads Label Studio's JSON export (a list of tasks, each with its
``data.image`` and ``annotations``): brush masks (``brushlabels``, run-length ``rle``) and polygons
(``polygonlabels``, points in percent of the image's size) become project labels, label names map
to the project's classes. The latest annotation of a task that was not cancelled counts; results
are painted in their order (a later one wins where two overlap); pixels no result covers stay
unlabelled (0). All or nothing: every image path is resolved and every result decoded before the
first image is added, and one problem stops the import with a list of all of them.

:func:`~.labelstudio_export.export_labelstudio_predictions` goes the other way: a model version's
predictions as Label Studio tasks with ``predictions`` (pre-annotations to correct), the labeling
configuration that shows them, and optionally the images as PNG files.

Label Studio (or its SDK) is not needed: the brush format is read and written by
:mod:`.labelstudio_rle`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from .errors import DataError
from .labelstudio_export import export_labelstudio_predictions, iter_export_labelstudio_predictions, labeling_config
from .labelstudio_rle import decode_rle, encode_rle

__all__ = [
    "LabelStudioImport",
    "decode_rle",
    "encode_rle",
    "export_labelstudio_predictions",
    "import_labelstudio",
    "iter_export_labelstudio_predictions",
    "labeling_config",
]

UPLOAD_PREFIX = re.compile(r"^[0-9a-fA-F]{8}-(.+)$")  # Label Studio's uploads: /data/upload/<project>/<8 hex>-<name>
SHOWN = 10  # problems listed by name in an error message


class LabelStudioImport(list):
    """The names :func:`import_labelstudio` added (a list), with the tasks it passed over:
    ``skipped`` (task ids without a submitted annotation) and ``ignored`` (result types it does not
    import, such as ``rectanglelabels``, with their counts)."""

    skipped: list
    ignored: dict[str, int]


@dataclass
class _Task:
    """One task to import: where its image is, and the regions to paint (class value, kind, payload)."""

    tid: Any
    ref: str
    name: str
    path: str | None = None
    size: tuple[int, int] | None = None  # (height, width) the annotation was drawn on
    regions: list[tuple[int, str, Any]] = field(default_factory=list)


def import_labelstudio(
    project,
    export_json: str | os.PathLike | Sequence[Mapping],
    *,
    images_root: str | os.PathLike | None = None,
    class_map: Mapping[str, str] | None = None,
    split: str | None = None,
    overwrite: bool = False,
    unpainted_background: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> LabelStudioImport:
    """Import the annotated images of a Label Studio JSON export into ``project``; returns their names.

    Parameters
    ----------
    export_json : the export file (Label Studio: Export > JSON), or its list of tasks.
    images_root : local folder holding the images. Task paths ``/data/upload/<n>/<hash>-<name>``,
        ``/data/local-files/?d=<path>``, ``http(s)://.../<name>`` and plain names are looked up in it:
        by relative path, then by file name anywhere under it, with or without the upload prefix
        ``<8 hex>-``. ``s3://`` (and other fsspec) URLs are read directly, with ``storage_options``
        (endpoint and keys default to ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``...).
    class_map : ``{Label Studio label: project class}`` for labels named otherwise than the classes.
    split : split of the new images (default ``train``; a replaced image keeps its own).
    overwrite : replace images of the same name (else their names are an error).
    unpainted_background : the pixels no region covers are background (class 1), as when only
        objects were painted (:meth:`~.store.Project.set_unpainted_background`).

    Images are named after their file, without extension and upload prefix. Each annotation is
    recorded with origin ``imported``. Raises :class:`DataError` listing every image that cannot be
    found, every result that cannot be read and every unknown label; nothing is imported then.
    """
    if project.task != "segmentation":
        raise DataError("Label Studio brush and polygon annotations label pixels: import them into a segmentation project.")
    tasks_in = _load_tasks(export_json)
    classes = _class_values(project, class_map)
    problems: dict[str, list[str]] = {"missing": [], "results": [], "labels": [], "names": []}
    result = LabelStudioImport()
    result.skipped, result.ignored = [], {}
    tasks: list[_Task] = []
    finder = _Finder(images_root, storage_options)
    for k, raw in enumerate(tasks_in):
        task = _plan_task(raw, k, classes, problems, result)
        if task is None:
            continue
        task.path = finder.find(task.ref)
        if task.path is None:
            problems["missing"].append(f"{task.ref} (task {task.tid})")
        tasks.append(task)
    _check_names(project, tasks, overwrite, problems)
    if any(problems.values()):
        raise _problems_error(problems, project, images_root, len(tasks))
    if not tasks:
        return result

    def items():
        for task in tasks:
            image = finder.read(task.path)
            h, w = task.size or image.shape[:2]
            if tuple(image.shape[:2]) != (h, w):
                raise DataError(
                    f"Task {task.tid}: the image {task.path} is {image.shape[1]} x {image.shape[0]} pixels but it was annotated at "
                    f"{w} x {h} (original_width x original_height): it is not the file that was annotated. Nothing was imported."
                )
            yield task.name, image, dict(labels=_paint(task, project.n_classes), split=split, source=task.ref, origin="imported")

    result.extend(project.add_images(items(), overwrite=overwrite))
    if unpainted_background:
        project.set_unpainted_background(list(result))
    return result


# ---------------------------------------------------------------------- reading the export
def _load_tasks(export_json) -> list:
    if isinstance(export_json, (str, os.PathLike)):
        try:
            tasks = json.loads(Path(export_json).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"No Label Studio export at {export_json}.") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{export_json} is not a JSON file ({err}): export the project from Label Studio as JSON.") from err
    else:
        tasks = export_json
    if isinstance(tasks, dict):  # one task
        tasks = [tasks]
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise DataError("A Label Studio JSON export is a list of tasks: export the project from Label Studio as JSON.")
    if tasks and not any("annotations" in t or "completions" in t or "data" in t for t in tasks):
        raise DataError("These tasks hold no 'data' and no 'annotations': export the project as JSON (not JSON-MIN or CSV).")
    return tasks


def _class_values(project, class_map: Mapping[str, str] | None) -> dict[str, int]:
    """{label name: class value} of the project's classes and the renames of ``class_map``."""
    values = {name: i + 1 for i, name in enumerate(project.class_names)}
    out = dict(values)
    for label, ours in (class_map or {}).items():
        if ours not in values:
            raise DataError(
                f"class_map sends {label!r} to {ours!r}, which is not a class of the project ({', '.join(project.class_names)}).",
                hints={"cli": "Check the --map LABEL=CLASS options.", "python": "Check class_map."},
            )
        out[label] = values[ours]
    return out


def _image_ref(raw: Mapping) -> str | None:
    data = raw.get("data") or {}
    if isinstance(data.get("image"), str):
        return data["image"]
    texts = [v for v in data.values() if isinstance(v, str)]
    return texts[0] if len(texts) == 1 else None


def _latest(raw: Mapping) -> Mapping | None:
    done = [a for a in raw.get("annotations") or raw.get("completions") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not done:
        return None
    return max(done, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))


def _plan_task(raw: Mapping, k: int, classes: dict[str, int], problems, result) -> _Task | None:
    """What to import of one task: its image reference and its regions (decoded to check them)."""
    tid = raw.get("id", f"#{k + 1}")
    annotation = _latest(raw)
    if annotation is None:
        result.skipped.append(tid)
        return None
    ref = _image_ref(raw)
    if ref is None:
        problems["results"].append(f"task {tid}: no image in its data (keys: {', '.join(raw.get('data') or {}) or 'none'})")
        return None
    task = _Task(tid, ref, _image_name(ref))
    for item in annotation.get("result") or []:
        kind = str(item.get("type", "")).lower()
        if kind not in ("brushlabels", "polygonlabels"):
            result.ignored[kind or "unknown"] = result.ignored.get(kind or "unknown", 0) + 1
            continue
        value = item.get("value") or {}
        labels = value.get(kind) or []
        where = f"task {tid}, {kind} {item.get('id', '')}".rstrip()
        if len(labels) != 1:
            problems["results"].append(f"{where}: {len(labels)} labels {labels} (one class per region is needed)")
            continue
        if labels[0] not in classes:
            problems["labels"].append(labels[0])
            continue
        size = _size_of(item, where, problems)
        if size is None:
            continue
        if task.size is not None and task.size != size:
            problems["results"].append(f"{where}: drawn at {size[1]} x {size[0]}, other regions at {task.size[1]} x {task.size[0]}")
            continue
        task.size = size
        try:
            payload = _brush(value, item, size, where) if kind == "brushlabels" else _polygon(value, size, where)
        except DataError as err:
            problems["results"].append(str(err))
            continue
        task.regions.append((classes[labels[0]], kind, payload))
    return task  # a submitted annotation without regions: the image, unlabelled


def _size_of(item: Mapping, where: str, problems) -> tuple[int, int] | None:
    try:
        return int(item["original_height"]), int(item["original_width"])
    except (KeyError, TypeError, ValueError):
        problems["results"].append(f"{where}: no original_width / original_height")
        return None


def _brush(value: Mapping, item: Mapping, size: tuple[int, int], where: str):
    fmt = value.get("format", "rle")
    rle = value.get("rle", item.get("rle"))
    if fmt != "rle" or rle is None:
        raise DataError(f"{where}: brush format {fmt!r} (only 'rle' brushes can be read)")
    decode_rle(rle, *size, what=where)  # checked now: nothing is imported when one is damaged
    return rle


def _polygon(value: Mapping, size: tuple[int, int], where: str) -> np.ndarray:
    try:
        points = np.asarray(value.get("points"), dtype=float)
    except (TypeError, ValueError):
        points = np.empty((0,))
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3 or not np.isfinite(points).all():
        raise DataError(f"{where}: a polygon needs 3 or more [x, y] points (in percent of the image)")
    return points


def _paint(task: _Task, n_classes: int) -> np.ndarray | None:
    """The task's project labels: its regions painted in order; None when it has none."""
    if not task.regions:
        return None
    h, w = task.size
    labels = np.zeros((h, w), np.uint8 if n_classes < 255 else np.uint16)
    for value, kind, payload in task.regions:
        if kind == "brushlabels":
            labels[decode_rle(payload, h, w) > 0] = value
        else:
            labels[polygon_mask(payload, h, w)] = value
    return labels


def polygon_mask(points_percent: np.ndarray, height: int, width: int) -> np.ndarray:
    """The pixels of a Label Studio polygon (points [x, y] in percent of the image's width and
    height): those whose centre lies inside it (a point at x% lies x% across the pixel grid's width,
    so pixel column j, spanning [j, j + 1), has its centre at j + 0.5)."""
    from skimage.draw import polygon

    pts = np.asarray(points_percent, dtype=float)
    rows = pts[:, 1] / 100.0 * height - 0.5
    cols = pts[:, 0] / 100.0 * width - 0.5
    mask = np.zeros((height, width), bool)
    rr, cc = polygon(rows, cols, shape=(height, width))
    mask[rr, cc] = True
    return mask


def _image_name(ref: str) -> str:
    """The image's name in the project: its file name without extension and, for an upload, without
    the prefix Label Studio added (only there: ``20240101-well3.png`` elsewhere keeps its date)."""
    if "/data/local-files" in ref:
        name = PurePosixPath(_local_files_path(ref)).name
    else:
        name = PurePosixPath(unquote(urlparse(ref).path) if "://" in ref or ref.startswith("/data/") else ref).name
    match = UPLOAD_PREFIX.match(name)
    if match and "/data/upload/" in ref:
        name = match.group(1)
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return stem or name


def _local_files_path(ref: str) -> str:
    return unquote((parse_qs(urlparse(ref).query).get("d") or [""])[0])


def _check_names(project, tasks: list[_Task], overwrite: bool, problems) -> None:
    seen: dict[str, Any] = {}
    for task in tasks:
        if task.name in seen:
            problems["names"].append(f"{task.name!r} (tasks {seen[task.name]} and {task.tid})")
        seen[task.name] = task.tid
    if not overwrite:
        known = set(project.image_names())
        problems["names"] += [f"{t.name!r} (task {t.tid}) is already in the project" for t in tasks if t.name in known]


def _problems_error(problems, project, images_root, n_tasks) -> DataError:
    def listed(items: list[str]) -> str:
        items = list(dict.fromkeys(items))
        more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
        return "; ".join(items[:SHOWN]) + more

    parts, hints = [], {"python": [], "cli": [], "gui": []}
    if problems["missing"]:
        where = f"under {images_root}" if images_root is not None else "(no images folder was given)"
        parts.append(f"{len(problems['missing'])} of {n_tasks} image(s) cannot be found {where}: {listed(problems['missing'])}.")
        hints["python"].append("Pass images_root= the folder holding the images (found by file name, with or without the upload prefix).")
        hints["cli"].append(
            "Pass --images-root DIR, the folder holding the images (found by file name, with or without the upload prefix)."
        )
    if problems["labels"]:
        known = ", ".join(project.class_names)
        parts.append(f"Label(s) {listed([repr(x) for x in problems['labels']])} are not classes of the project ({known}).")
        hints["python"].append("Rename them with class_map={'label': 'class'} or add the classes with project.set_classes([...]).")
        hints["cli"].append("Rename them with --map 'LABEL=CLASS' or create the project with these classes (init --classes).")
    if problems["results"]:
        parts.append(f"{len(problems['results'])} region(s) cannot be read: {listed(problems['results'])}.")
    if problems["names"]:
        parts.append(f"Image names clash: {listed(problems['names'])}.")
        hints["python"].append("Pass overwrite=True to replace images of the same name, or remove them.")
        hints["cli"].append("Pass --overwrite to replace images of the same name, or remove them.")
    message = " ".join(parts) + " Nothing was imported."
    return DataError(message, hints={face: " ".join(h) for face, h in hints.items() if h})


# ---------------------------------------------------------------------- finding and reading images
class _Finder:
    """Resolves task image references to local paths or fsspec URLs, and reads them."""

    def __init__(self, root, storage_options):
        self.root = None if root is None else Path(root)
        if self.root is not None and not self.root.is_dir():
            remote = "://" in str(root)
            raise DataError(
                f"The images folder {root} "
                + (
                    "is not a local folder: s3:// image URLs in the tasks are read as they are, other images "
                    "need the local folder that holds them."
                    if remote
                    else "does not exist: give the folder that holds the annotated images."
                )
            )
        self.options = dict(storage_options or {})
        self._index: dict[str, list[Path]] | None = None

    def find(self, ref: str) -> str | None:
        parsed = urlparse(ref)
        if parsed.scheme and parsed.scheme not in ("http", "https", "file") and len(parsed.scheme) > 1:
            return ref if self._remote_exists(ref) else None
        if "/data/local-files" in ref:
            rel = _local_files_path(ref)
        elif parsed.scheme == "file":
            rel = unquote(parsed.path)
        elif parsed.scheme in ("http", "https"):
            rel = unquote(PurePosixPath(parsed.path).name)
        else:
            rel = unquote(urlparse(ref).path) if ref.startswith("/data/") else ref  # a URL path of Label Studio's server
        if os.path.isabs(rel) and os.path.isfile(rel) and not rel.startswith("/data/"):
            return rel
        if self.root is None or not rel:
            return None
        direct = self.root / rel.lstrip("/")
        if not rel.startswith("/data/") and direct.is_file():
            return str(direct)
        return self._by_name(PurePosixPath(rel).name)

    def _by_name(self, name: str) -> str | None:
        if self._index is None:
            self._index = {}
            for folder, _, files in os.walk(self.root):
                for f in files:
                    self._index.setdefault(f, []).append(Path(folder) / f)
        match = UPLOAD_PREFIX.match(name)
        for candidate in (name, match.group(1) if match else None):
            found = self._index.get(candidate) if candidate else None
            if found and len(found) == 1:
                return str(found[0])
        return None  # not there, or there twice (which one is meant cannot be told)

    def _fs(self, url: str):
        import fsspec

        from .storage import resolve_storage_options

        return fsspec.core.url_to_fs(url, **resolve_storage_options(url, self.options))

    def _remote_exists(self, url: str) -> bool:
        try:
            fs, path = self._fs(url)
            return bool(fs.isfile(path))
        except Exception:  # unreachable server, no credentials: reported as not found
            return False

    def read(self, path: str) -> np.ndarray:
        from .io import read_image

        if "://" not in path:
            return read_image(path)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                fs, remote = self._fs(path)
                local = os.path.join(tmp, PurePosixPath(remote).name)
                fs.get_file(remote, local)
            except Exception as err:  # the server went away, credentials expired...
                raise DataError(f"Cannot read {path}: {err}. Nothing was imported.") from err
            return read_image(local)
