"""Measurements of segmented images: per image and class, per object; in batches, in parallel with dask.

No torch here (quantification runs on clusters without it). Per image and class: object count,
coverage (% of the image area), mean / median / total object area. Per object: area, perimeter,
equivalent diameter, eccentricity, solidity, major / minor axis length, orientation, centroid, and
intensity mean / max / integrated in the original image (per channel). Lengths and areas are in
physical units when the pixel size is known; column names say the unit (``area_um2``,
``perimeter_um``; ``_px`` / ``_px2`` otherwise). With anisotropic pixels (py != px) the area and
centroid are exact, lengths use the geometric mean pixel size.

Batches (:func:`iter_quantify` / :func:`quantify_batch`) take a folder, a glob, a list of files, a
zarr / OME-Zarr, or a project store; each task reads one image, measures it and keeps only tables,
so one image is in memory per worker. Tasks run with dask: local threads or processes, or an
existing ``dask.distributed`` scheduler (``scheduler="tcp://host:8786"``). A file that cannot be
read gives a row with its ``error`` and the batch goes on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigError, DataError
from .events import ItemDone, Progress, run_to_end
from .manifest import pixel_size_list, plane_name
from .scheduling import run_tasks

QUANTIFY_FORMAT_VERSION = 1


def _unit_name(unit: str | None) -> str:
    u = (unit or "px").strip()
    return {"µm": "um", "μm": "um", "micron": "um", "microns": "um", "micrometer": "um"}.get(u, u.replace(" ", "_"))


def _pixel_size(pixel_size) -> tuple[float, float] | None:
    ps = pixel_size_list(pixel_size)
    return tuple(ps) if ps else None


def measuring_scale(
    pixel_size, unit: str | None, stored_pixel_size=None, stored_unit: str | None = None
) -> tuple[tuple[float, float] | None, str]:
    """The pixel size and unit to measure with: an explicit value (a function's argument, a CLI
    option, a widget's field) wins over the one stored with the image or the project; no pixel size
    at all measures in pixels. The one rule of every measurement."""
    ps = _pixel_size(pixel_size) if pixel_size is not None else _pixel_size(stored_pixel_size)
    return ps, (unit or stored_unit or "µm")


@dataclass
class Quantification:
    """Tables of measurements.

    objects : pandas DataFrame, one row per object.
    images : pandas DataFrame, one row per (image, class); a failed image has one row with ``error``.
    """

    objects: Any
    images: Any
    unit: str = "px"
    errors: list[dict] = field(default_factory=list)

    def save(self, folder, *, formats: Sequence[str] = ("csv", "parquet"), plots: bool = True) -> list[str]:
        """Write ``objects`` and ``images`` tables (CSV and Parquet) and PNG plots into ``folder``."""
        from .io import output_dir

        output_dir(folder)
        paths = []
        for name in ("objects", "images"):
            df = getattr(self, name)
            if "csv" in formats:
                p = os.path.join(str(folder), f"{name}.csv")
                df.to_csv(p, index=False)
                paths.append(p)
            if "parquet" in formats:
                p = os.path.join(str(folder), f"{name}.parquet")
                df.to_parquet(p, index=False)
                paths.append(p)
        if plots:
            from .plots import plot_quantification

            paths += plot_quantification(self, folder)
        return paths


def object_parts(labels: np.ndarray, instances: np.ndarray | None, kind: str, background: Sequence[int]) -> list[tuple[int, np.ndarray]]:
    """[(class value, instance label image of that class)]: the objects :func:`quantify_labels` measures."""
    from skimage import measure

    if kind == "instances":
        return [(1, labels.astype(np.int64))]
    out = []
    classes = [int(c) for c in np.unique(labels) if int(c) not in background]
    for c in classes:
        mask = labels == c
        if instances is not None:
            out.append((c, np.where(mask, instances, 0).astype(np.int64)))
        else:
            out.append((c, measure.label(mask, connectivity=1).astype(np.int64)))
    return out


def quantify_labels(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    *,
    instances: np.ndarray | None = None,
    kind: str = "semantic",
    pixel_size: float | Sequence[float] | None = None,
    unit: str = "µm",
    class_names: Sequence[str] | None = None,
    background: Sequence[int] = (0, 1),
    name: str = "image",
) -> Quantification:
    """Measure the objects of one label image.

    Parameters
    ----------
    labels : (Y, X) int array. ``kind="semantic"``: project class labels (0 = unlabelled, 1 =
        background, 2..K = classes), objects = connected components of each class (or ``instances``).
        ``kind="instances"``: object ids (0 = none), all of one class.
    image : optional (Y, X) or (Y, X, C) intensity image for intensity measurements.
    instances : optional (Y, X) object ids that split the classes of ``labels`` into objects.
    pixel_size : pixel size (one value, or (y, x)) in ``unit``; None measures in pixels.
    class_names : names of label values 1..K (``class_names[0]`` is label 1).
    background : label values that are not objects (semantic kind).
    name : image name written in the tables.

    Returns
    -------
    :class:`Quantification` with ``objects`` (one row per object) and ``images`` (one row per class).
    """
    import pandas as pd
    from skimage import measure

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise DataError(f"Expected a 2D label image (Y, X); got shape {labels.shape}. Quantify stacks slice by slice.")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool) and not np.all(np.mod(labels, 1) == 0):
        raise DataError("Label images must hold whole numbers (class values or object ids).")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise DataError("Label images must be non-negative (0 = background / unlabelled).")
    if kind not in ("semantic", "instances"):
        raise ConfigError(f"kind must be 'semantic' or 'instances' (got {kind!r}).")
    if image is not None:
        image = np.asarray(image)
        if image.shape[:2] != labels.shape:
            raise DataError(f"Image {image.shape} and labels {labels.shape} differ in size: give the image the labels were made from.")
    if instances is not None and np.shape(instances) != labels.shape:
        raise DataError(f"Instances {np.shape(instances)} and labels {labels.shape} differ in size.")
    ps = _pixel_size(pixel_size)
    u = _unit_name(unit) if ps else "px"
    lin = float(np.sqrt(ps[0] * ps[1])) if ps else 1.0
    area1 = ps[0] * ps[1] if ps else 1.0
    names = list(class_names or [])

    def cname(c):
        if kind == "instances":
            return names[0] if names else "object"
        return names[c - 1] if 0 < c <= len(names) else f"class {c}"

    obj_frames = []
    img_rows = []
    total = labels.size
    props = [
        "label",
        "area",
        "perimeter",
        "equivalent_diameter_area",
        "eccentricity",
        "solidity",
        "axis_major_length",
        "axis_minor_length",
        "orientation",
        "centroid",
    ]
    for c, inst in object_parts(labels, None if instances is None else np.asarray(instances), kind, background):
        n = int(len(np.unique(inst)) - (1 if (inst == 0).any() else 0))
        row = {"image": name, "class": c, "class_name": cname(c), "n_objects": n}
        if n:
            kwargs = {}
            if image is not None:
                kwargs["intensity_image"] = image
            ids = None
            if int(inst.max()) > 4 * n + 1024:  # huge ids (2**31): regionprops would allocate by id
                ids, inst = np.unique(inst, return_inverse=True)
                inst = inst.reshape(labels.shape) + (ids[0] != 0)
                ids = ids if ids[0] != 0 else ids[1:]
            t = measure.regionprops_table(
                inst, properties=props + (["intensity_mean", "intensity_max"] if image is not None else []), **kwargs
            )
            df = pd.DataFrame(t)
            if ids is not None:
                df["label"] = ids[df["label"].to_numpy() - 1]  # the image's own ids
            out = pd.DataFrame({"image": name, "class": c, "class_name": cname(c), "label": df["label"].astype(np.int64)})
            a = "px2" if not ps else f"{u}2"
            out[f"area_{a}"] = df["area"] * area1
            out["area_px"] = df["area"].astype(np.int64)
            out[f"perimeter_{u}"] = df["perimeter"] * lin
            out[f"equivalent_diameter_{u}"] = df["equivalent_diameter_area"] * lin
            out["eccentricity"] = df["eccentricity"]
            out["solidity"] = df["solidity"]
            out[f"major_axis_length_{u}"] = df["axis_major_length"] * lin
            out[f"minor_axis_length_{u}"] = df["axis_minor_length"] * lin
            out["orientation_rad"] = df["orientation"]
            out[f"centroid_y_{u}"] = df["centroid-0"] * (ps[0] if ps else 1.0)
            out[f"centroid_x_{u}"] = df["centroid-1"] * (ps[1] if ps else 1.0)
            if image is not None:
                chans = [k for k in df.columns if k.startswith("intensity_mean")]
                for k in chans:
                    suffix = k[len("intensity_mean") :].replace("-", "_c")
                    out[f"intensity_mean{suffix}"] = df[k]
                    out[f"intensity_max{suffix}"] = df["intensity_max" + k[len("intensity_mean") :]]
                    out[f"intensity_integrated{suffix}"] = df[k] * df["area"]
            obj_frames.append(out)
            areas = out[f"area_{a}"]
            class_px = int((inst > 0).sum())
            row.update(
                {f"mean_area_{a}": float(areas.mean()), f"median_area_{a}": float(areas.median()), f"total_area_{a}": float(areas.sum())}
            )
        else:
            class_px = 0
        row["coverage_percent"] = 100.0 * class_px / total if total else 0.0
        img_rows.append(row)
    if not img_rows:  # nothing but background: one row that says so
        img_rows.append({"image": name, "class": np.nan, "class_name": "", "n_objects": 0, "coverage_percent": 0.0})
    objects = pd.concat(obj_frames, ignore_index=True) if obj_frames else pd.DataFrame(columns=["image", "class", "class_name", "label"])
    images = pd.DataFrame(img_rows)
    images["pixel_size"] = None if not ps else f"{ps[0]:g}x{ps[1]:g} {unit}"
    images["error"] = None
    return Quantification(objects, images, unit=u)


# ---------------------------------------------------------------------- batches
@dataclass(frozen=True)
class QuantifyTask:
    """One image of a batch: where to read its labels (and intensity image) from."""

    name: str
    labels: str | None = None  # file path / zarr URL of the label image
    image: str | None = None  # file path of the intensity image
    store: str | None = None  # project store URL (labels/instances read from it)
    store_options: tuple = ()
    images_from: str | None = None  # where intensity images were looked for (none matched when image is None)


def tasks_from(source=None, *, images=None, project=None) -> list[QuantifyTask]:
    """Build tasks from label files (folder, glob, list, zarr) and matching intensity images, or a
    project store (its annotated images, instances where present)."""
    if project is not None:
        opts = tuple(sorted(project.storage_options.items()))
        return [QuantifyTask(n, store=project.url, store_options=opts) for n in project.image_names() if project.image_record(n).has_labels]
    from .io import PREDICTION_EXTRAS, _expand, _mask_key, _stem

    if source is None:
        raise DataError("Give label images to quantify (a folder, glob, list of files or a zarr), or a project store.")
    if isinstance(source, (str, os.PathLike)) and str(source).rstrip("/").lower().endswith(".zarr") and images is None:
        return [QuantifyTask(_stem(str(source).rstrip("/")), labels=str(source))]
    paths = _expand(source)
    # a folder written by `predict`: measure <name>_instances.tif, not its _labels / _probabilities
    objects = {_stem(p)[: -len("_instances")] for p in paths if _stem(p).endswith("_instances")}
    paths = [p for p in paths if not any(_stem(p).endswith(x) and _stem(p)[: -len(x)] in objects for x in PREDICTION_EXTRAS)]
    img_by_key = {}
    if images is not None:
        for p in _expand(images):
            img_by_key[_mask_key(p)] = p
    where = None if images is None else str(images)
    tasks = [
        QuantifyTask(_stem(p), labels=p, image=img_by_key.get(_mask_key(p)) or img_by_key.get(_stem(p)), images_from=where) for p in paths
    ]
    if images is not None and tasks and all(t.image is None for t in tasks):
        raise DataError(
            f"No label image matches an intensity image in {images} (e.g. {tasks[0].labels}): name them alike "
            "(a.tif with a.tif, a_instances.tif or a_mask.tif), or leave out --images to measure shapes only."
        )
    return tasks


def _read_task(task: QuantifyTask):
    """(labels, image, instances, pixel_size, unit, class_names, kind) of one task."""
    if task.store:
        from .store import Project

        project = Project.open(task.store, storage_options=dict(task.store_options))
        labels = project.get_labels(task.name)
        if labels is None:
            raise DataError(f"{task.name} has no annotation in the store.")
        rec = project.image_record(task.name)
        return (
            labels,
            project.get_image(task.name),
            project.get_instances(task.name),
            rec.pixel_size,
            project.unit,
            project.class_names,
            "semantic",
        )
    from .io import read_image, read_ome_zarr

    if task.labels.rstrip("/").lower().endswith(".zarr"):
        image, labels = read_ome_zarr(task.labels)
        if labels is None:  # a plain zarr of labels
            labels, image = image, None
        return labels, image, None, None, "µm", None, "instances"
    labels = read_image(task.labels)
    if task.image is None and task.images_from:  # reported, not measured without intensities in silence
        raise DataError(f"No intensity image in {task.images_from} matches {task.labels}: name it alike (a.tif with a_instances.tif).")
    image = read_image(task.image) if task.image else None
    return labels, image, None, None, "µm", None, "instances"


def _quantify_task(task: QuantifyTask, options: dict) -> tuple[Any, Any]:
    """Run one task; never raises for bad input: returns an error row instead."""
    import pandas as pd

    try:
        labels, image, instances, ps, unit, names, kind = _read_task(task)
        kind = options.get("kind") or kind
        ps, unit = measuring_scale(options.get("pixel_size"), options.get("unit"), ps, unit)
        names = options.get("class_names") or names
        if labels.ndim == 3:  # a stack of label images: plane by plane
            qs = [
                quantify_labels(
                    labels[z], None if image is None else image[z], instances=None if instances is None else instances[z],
                    kind=kind, pixel_size=ps, unit=unit, class_names=names, name=plane_name(task.name, z),
                )
                for z in range(labels.shape[0])
            ]  # fmt: skip
            return pd.concat([q.objects for q in qs], ignore_index=True), pd.concat([q.images for q in qs], ignore_index=True)
        q = quantify_labels(labels, image, instances=instances, kind=kind, pixel_size=ps, unit=unit, class_names=names, name=task.name)
        if options.get("phenotype") is not None:  # a classifier names each object's phenotype
            from .classify.phenotype import add_phenotypes

            parts = object_parts(labels.astype(np.int64), instances, kind, options.get("background", (0, 1)))
            return add_phenotypes(q.objects, q.images, image, parts, options["phenotype"])
        return q.objects, q.images
    except Exception as err:  # the batch goes on; the row says what went wrong
        msg = f"{type(err).__name__}: {err}" if not isinstance(err, DataError) else str(err)
        return pd.DataFrame(), pd.DataFrame(
            [{"image": task.name, "class": np.nan, "class_name": "", "n_objects": np.nan, "coverage_percent": np.nan, "error": msg}]
        )


def iter_quantify(
    source=None,
    *,
    images=None,
    project=None,
    kind: str | None = None,
    pixel_size: float | Sequence[float] | None = None,
    unit: str | None = None,
    class_names: Sequence[str] | None = None,
    phenotype=None,
    scheduler: str = "threads",
    workers: int = 1,
    cancel=None,
) -> Iterator[Any]:
    """Quantify many label images (a generator yielding :class:`ItemDone` per image).

    Parameters
    ----------
    source : label images: folder, glob, list of files, or a zarr / OME-Zarr (labels group).
    images : matching intensity images (folder, glob or list; matched by name).
    project : a project store instead: its annotated images (labels, instances, pixel size).
    kind : ``"instances"`` (object ids; default for files) or ``"semantic"`` (class labels).
    scheduler : ``"sync"``, ``"threads"``, ``"processes"`` or a ``dask.distributed`` scheduler
        address (``"tcp://host:8786"``).
    workers : parallel tasks for local schedulers (images in memory at once).
    phenotype : a :class:`~.classify.phenotype.PhenotypeModel`: each object is classified (columns
        ``phenotype``, its confidence and probabilities) and each image row counts the objects and
        their coverage per phenotype (2D images with intensities).

    Returns
    -------
    :class:`Quantification` of the whole batch (rows of unreadable images carry ``error``).
    """
    import pandas as pd

    tasks = tasks_from(source, images=images, project=project)
    if not tasks:
        raise DataError(f"No label images found in {source}.")
    _pixel_size(pixel_size)  # a bad pixel size fails here, once, not on every image
    options = {"kind": kind, "pixel_size": pixel_size, "unit": unit, "class_names": class_names, "phenotype": phenotype}
    results: list[tuple[int, Any, Any]] = []
    total = len(tasks)
    yield Progress(0, total, stage="quantify")
    for i, (objs, imgs) in run_tasks(_quantify_task, tasks, options, scheduler=scheduler, workers=workers, cancel=cancel):
        results.append((i, objs, imgs))
        err = imgs["error"].dropna().tolist() if "error" in imgs else []
        yield ItemDone(len(results) - 1, total, tasks[i].name, error=err[0] if err else None)
    results.sort(key=lambda r: r[0])
    objects = [r[1] for r in results if len(r[1])]
    objects = pd.concat(objects, ignore_index=True) if objects else pd.DataFrame(columns=["image", "class", "class_name", "label"])
    image_rows = pd.concat([r[2] for r in results], ignore_index=True)
    if "error" not in image_rows:
        image_rows["error"] = None
    errors = image_rows[image_rows["error"].notna()][["image", "error"]].to_dict("records")
    unit_cols = [c for c in objects.columns if c.startswith("perimeter_")]
    return Quantification(objects, image_rows, unit=unit_cols[0][len("perimeter_") :] if unit_cols else "px", errors=errors)


def quantify_batch(source=None, **kwargs) -> Quantification:
    """Blocking :func:`iter_quantify`."""
    return run_to_end(iter_quantify(source, **kwargs))
