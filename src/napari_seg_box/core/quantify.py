"""Measurements of segmented images: per image and class, per object.

No torch here (quantification runs on clusters without it). Per image and class: object count,
coverage (% of the image area), mean / median / total object area. Per object: area, perimeter,
equivalent diameter, eccentricity, solidity, major / minor axis length, orientation, centroid, and
intensity mean / max / integrated in the original image (per channel). Lengths and areas are in
physical units when the pixel size is known; column names say the unit (``area_um2``,
``perimeter_um``; ``_px`` / ``_px2`` otherwise). With anisotropic pixels (py != px) the area and
centroid are exact, lengths use the geometric mean pixel size.

Batches of images: :mod:`.quantify_batch`; volumes and time-lapses: :mod:`.volume_measure`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigError, DataError
from .manifest import pixel_size_list

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
        if "frame" in self.images and self.images["frame"].notna().any():  # time-lapses: one row per frame, and a plot over time
            from .plots import frame_table, plot_over_time

            frames = frame_table(self)
            paths.append(os.path.join(str(folder), "frames.csv"))
            frames.to_csv(paths[-1], index=False)
            if plots:
                paths.append(plot_over_time(frames, os.path.join(str(folder), "over_time.png")))
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
        raise DataError(
            f"Expected a 2D label image (Y, X); got shape {labels.shape}. Measure a volume with measure_volume, a time-lapse with measure_timelapse."
        )
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
        ids = None
        if inst.size and int(inst.max()) > 4 * inst.size + 1024:  # huge ids (2**31): bincount and regionprops allocate by id
            ids, inst = np.unique(inst, return_inverse=True)
            inst = inst.reshape(labels.shape) + (ids[0] != 0)
            ids = ids if ids[0] != 0 else ids[1:]
        counts = np.bincount(inst.ravel()) if inst.size else np.zeros(1, np.int64)  # one scan: the ids present, object pixels
        n = int(np.count_nonzero(counts[1:]))
        class_px = int(inst.size - counts[0])
        row = {"image": name, "class": c, "class_name": cname(c), "n_objects": n}
        if n:
            kwargs = {}
            if image is not None:
                kwargs["intensity_image"] = image
            t = measure.regionprops_table(
                inst, properties=props + (["intensity_mean", "intensity_max"] if image is not None else []), **kwargs
            )
            label = t["label"].astype(np.int64) if ids is None else ids[t["label"] - 1]  # the image's own ids
            a = "px2" if not ps else f"{u}2"
            area = t["area"]
            cols = {"image": name, "class": c, "class_name": cname(c), "label": label}
            cols[f"area_{a}"] = area * area1
            cols["area_px"] = area.astype(np.int64)
            cols[f"perimeter_{u}"] = t["perimeter"] * lin
            cols[f"equivalent_diameter_{u}"] = t["equivalent_diameter_area"] * lin
            cols["eccentricity"] = t["eccentricity"]
            cols["solidity"] = t["solidity"]
            cols[f"major_axis_length_{u}"] = t["axis_major_length"] * lin
            cols[f"minor_axis_length_{u}"] = t["axis_minor_length"] * lin
            cols["orientation_rad"] = t["orientation"]
            cols[f"centroid_y_{u}"] = t["centroid-0"] * (ps[0] if ps else 1.0)
            cols[f"centroid_x_{u}"] = t["centroid-1"] * (ps[1] if ps else 1.0)
            if image is not None:
                for k in [k for k in t if k.startswith("intensity_mean")]:
                    suffix = k[len("intensity_mean") :].replace("-", "_c")
                    cols[f"intensity_mean{suffix}"] = t[k]
                    cols[f"intensity_max{suffix}"] = t["intensity_max" + k[len("intensity_mean") :]]
                    cols[f"intensity_integrated{suffix}"] = t[k] * area
            obj_frames.append(pd.DataFrame(cols))  # one construction, not a column at a time
            areas = cols[f"area_{a}"]
            row.update(
                {f"mean_area_{a}": float(areas.mean()), f"median_area_{a}": float(np.median(areas)), f"total_area_{a}": float(areas.sum())}
            )
        row["coverage_percent"] = 100.0 * class_px / total if total else 0.0
        img_rows.append(row)
    if not img_rows:  # nothing but background: one row that says so
        img_rows.append({"image": name, "class": np.nan, "class_name": "", "n_objects": 0, "coverage_percent": 0.0})
    objects = pd.concat(obj_frames, ignore_index=True) if obj_frames else pd.DataFrame(columns=["image", "class", "class_name", "label"])
    images = pd.DataFrame(img_rows)
    images["pixel_size"] = None if not ps else f"{ps[0]:g}x{ps[1]:g} {unit}"
    images["error"] = None
    return Quantification(objects, images, unit=u)
