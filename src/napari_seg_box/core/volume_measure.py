"""Measurements of volumes (Z, Y, X) with 3D objects, and of time-lapses (T, Y, X) frame by frame.

:func:`measure_volume` is :func:`~.quantify.quantify_labels` for a volume: objects are 3D (the
3D connected components of each class, or given ``instances``), measured once however many
sections they span. Per object: volume (physical and voxel count), surface area, equivalent
diameter (of the sphere of the same volume), extent in z (sections spanned x z size; first/last
section), centroid (z, y, x), bounding box and intensity mean / max / integrated per channel. Per
(volume, class): object count, coverage (% of voxels), mean / median / total volume. Column names
say the unit as :func:`quantify_labels` does: ``volume_um3``, ``surface_area_um2``,
``equivalent_diameter_um`` with a voxel size; ``volume_vx3``, ``surface_area_px2``,
``equivalent_diameter_px`` without; ``volume_vx`` is always the voxel count.

Surface areas come from ``skimage.measure.marching_cubes(spacing=voxel_size)`` on each object's
padded bounding box, smoothed first by a Gaussian of up to one voxel (1/15 of the object's extent
along each axis, 0.25 to 1 voxel): marching cubes on the raw binary mask follows the voxel
staircase and overestimates a smooth surface by 10-20 % (more with anisotropic voxels). Smoothed,
an ellipsoid's area is within about 1 %, a ball of radius 5 voxels or more within 5 %; the sharp
edges of a box are rounded (a 10-voxel cube reads about 12 % low).

:func:`measure_timelapse` measures the frames of a (T, Y, X) movie one by one with
:func:`quantify_labels` (time is not space: objects are never joined across frames) and adds
``movie``, ``frame`` (and ``time_<unit>``) columns; :func:`~.plots.frame_table` gives one row per
(movie, frame, class) and :func:`~.plots.plot_over_time` plots counts and coverage over time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import ConfigError, DataError
from .quantify import Quantification, _unit_name, measuring_scale, object_parts, quantify_labels
from .voxels import check_voxel_size


def _check_labels(labels, ndim: int, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != ndim:
        raise DataError(f"Expected a {what} label image; got shape {labels.shape}.")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool) and not np.all(np.mod(labels, 1) == 0):
        raise DataError("Label images must hold whole numbers (class values or object ids).")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise DataError("Label images must be non-negative (0 = background / unlabelled).")
    return labels


def surface_area(mask: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """Surface area of one 3D object (a boolean (Z, Y, X) crop) in ``spacing`` units squared:
    marching cubes on the padded mask smoothed by a Gaussian of 0.25-1 voxel (see the module docstring)."""
    from scipy import ndimage as ndi
    from skimage import measure

    mask = np.asarray(mask, bool)
    if not mask.any():
        return 0.0
    nz = np.nonzero(mask)
    extent = np.array([int(ix.max() - ix.min()) + 1 for ix in nz], float)
    padded = np.pad(mask, 2).astype(np.float32)
    smooth = ndi.gaussian_filter(padded, np.clip(extent / 15.0, 0.25, 1.0), mode="constant")
    field = smooth if smooth.max() > 0.5 + 1e-6 else padded  # a speck the smoothing would lose
    verts, faces, _, _ = measure.marching_cubes(field, 0.5, spacing=tuple(float(s) for s in spacing))
    return float(measure.mesh_surface_area(verts, faces))


def _compact_ids(inst: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(labels for ``find_objects``, lookup from their ids to the object ids, number of objects):
    ids stay as they are when small and are renumbered 1..n when huge (``find_objects`` allocates
    by id)."""
    top = int(inst.max()) if inst.size else 0
    if top <= max(1024, inst.size // 8):
        n = int(np.count_nonzero(np.bincount(inst.ravel(), minlength=top + 1)[1:]))
        return inst.astype(np.int32, copy=False), np.arange(top + 1), n
    ids, compact = np.unique(inst, return_inverse=True)
    compact = compact.reshape(inst.shape) + (0 if ids[0] == 0 else 1)
    lookup = ids if ids[0] == 0 else np.concatenate([[0], ids])
    return compact.astype(np.int32), lookup, len(lookup) - 1


def _object_rows(inst: np.ndarray, image: np.ndarray | None, vs: tuple[float, float, float]) -> dict[str, list]:
    """One pass over the objects' bounding boxes (``find_objects``): raw per-object values."""
    from scipy import ndimage as ndi

    rows: dict[str, list] = {k: [] for k in ("label", "voxels", "surface", "centroid", "bbox", "mean", "max")}
    for i, sl in enumerate(ndi.find_objects(inst)):
        if sl is None:
            continue
        obj = inst[sl] == i + 1
        idx = np.nonzero(obj)
        rows["label"].append(i + 1)
        rows["voxels"].append(len(idx[0]))
        rows["surface"].append(surface_area(obj, vs))
        rows["centroid"].append([(ix.mean() + s.start) * v for ix, s, v in zip(idx, sl, vs)])
        rows["bbox"].append([s.start for s in sl] + [s.stop for s in sl])
        if image is not None:
            values = image[sl][obj].astype(np.float64)  # (n,) or (n, C)
            rows["mean"].append(np.atleast_1d(values.mean(axis=0)))
            rows["max"].append(np.atleast_1d(values.max(axis=0)))
    return rows


def measure_volume(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    *,
    instances: np.ndarray | None = None,
    kind: str = "semantic",
    voxel_size: float | Sequence[float] | None = None,
    unit: str = "µm",
    class_names: Sequence[str] | None = None,
    background: Sequence[int] = (0, 1),
    name: str = "volume",
) -> Quantification:
    """Measure the 3D objects of one label volume.

    Parameters
    ----------
    labels : (Z, Y, X) int array. ``kind="semantic"``: project class labels (0 = unlabelled, 1 =
        background, 2..K = classes), objects = 3D connected components (6-connectivity) of each
        class, or ``instances``. ``kind="instances"``: object ids (0 = none), all of one class.
    image : optional (Z, Y, X) or (Z, Y, X, C) intensity image for intensity measurements.
    instances : optional (Z, Y, X) object ids that split the classes of ``labels`` into objects.
    voxel_size : (z, y, x) voxel size in ``unit`` (or one number, isotropic); None measures in
        voxels (lengths ``_px``, volumes ``_vx3``).
    class_names : names of label values 1..K (``class_names[0]`` is label 1).
    background : label values that are not objects (semantic kind).
    name : volume name written in the ``image`` column of the tables.

    Returns
    -------
    :class:`~.quantify.Quantification`: ``objects`` (one row per 3D object: ``volume_um3``,
    ``volume_vx``, ``surface_area_um2``, ``equivalent_diameter_um``, ``z_extent_um``, ``z_sections``,
    ``z_first``, ``z_last``, ``centroid_{z,y,x}_um``, ``bbox_{z,y,x}{0,1}`` (voxel indices, end
    exclusive), ``intensity_{mean,max,integrated}[_c<i>]``) and ``images`` (one row per class:
    ``n_objects``, ``coverage_percent``, ``mean/median/total_volume_um3``, ``voxel_size``, ``error``).
    """
    import pandas as pd

    labels = _check_labels(labels, 3, "3D (Z, Y, X)")
    if kind not in ("semantic", "instances"):
        raise ConfigError(f"kind must be 'semantic' or 'instances' (got {kind!r}).")
    if image is not None:
        image = np.asarray(image)
        if image.ndim not in (3, 4) or image.shape[:3] != labels.shape:
            raise DataError(
                f"Image {image.shape} and labels {labels.shape} differ in size: give the (Z, Y, X[, C]) image the labels were made from."
            )
    if instances is not None and np.shape(instances) != labels.shape:
        raise DataError(f"Instances {np.shape(instances)} and labels {labels.shape} differ in size.")
    given = check_voxel_size(voxel_size)
    vs = given or (1.0, 1.0, 1.0)
    u = _unit_name(unit) if given else "px"
    vol_col, area_col = (f"volume_{u}3", f"surface_area_{u}2") if given else ("volume_vx3", "surface_area_px2")
    voxel_volume = float(np.prod(vs))
    names = list(class_names or [])

    def cname(c):
        if kind == "instances":
            return names[0] if names else "object"
        return names[c - 1] if 0 < c <= len(names) else f"class {c}"

    obj_frames, img_rows = [], []
    for c, inst in object_parts(labels, None if instances is None else np.asarray(instances), kind, background):
        compact, lookup, n = _compact_ids(inst)
        row = {"image": name, "class": c, "class_name": cname(c), "n_objects": n}
        class_vx = int((inst > 0).sum())
        if n:
            r = _object_rows(compact, image, vs)
            voxels = np.asarray(r["voxels"], np.int64)
            volume = voxels * voxel_volume
            cen, bbox = np.asarray(r["centroid"]), np.asarray(r["bbox"], np.int64)
            labels_out = lookup[np.asarray(r["label"])].astype(np.int64)
            out = pd.DataFrame({"image": name, "class": c, "class_name": cname(c), "label": labels_out})
            out[vol_col] = volume
            out["volume_vx"] = voxels
            out[area_col] = r["surface"]
            out[f"equivalent_diameter_{u}"] = np.cbrt(6.0 * volume / np.pi)
            out["z_sections"] = bbox[:, 3] - bbox[:, 0]
            out[f"z_extent_{u}"] = out["z_sections"] * vs[0]
            out["z_first"], out["z_last"] = bbox[:, 0], bbox[:, 3] - 1
            for k, ax in enumerate("zyx"):
                out[f"centroid_{ax}_{u}"] = cen[:, k]
            for k, ax in enumerate("zyx"):
                out[f"bbox_{ax}0"], out[f"bbox_{ax}1"] = bbox[:, k], bbox[:, k + 3]
            if image is not None:
                means, maxs = np.asarray(r["mean"]), np.asarray(r["max"])
                for ch in range(means.shape[1]):
                    suffix = f"_c{ch}" if image.ndim == 4 else ""
                    out[f"intensity_mean{suffix}"] = means[:, ch]
                    out[f"intensity_max{suffix}"] = maxs[:, ch]
                    out[f"intensity_integrated{suffix}"] = means[:, ch] * voxels
            obj_frames.append(out)
            row.update(
                {
                    f"mean_{vol_col}": float(volume.mean()),
                    f"median_{vol_col}": float(np.median(volume)),
                    f"total_{vol_col}": float(volume.sum()),
                }
            )
        row["coverage_percent"] = 100.0 * class_vx / labels.size if labels.size else 0.0
        img_rows.append(row)
    if not img_rows:  # nothing but background: one row that says so
        img_rows.append({"image": name, "class": np.nan, "class_name": "", "n_objects": 0, "coverage_percent": 0.0})
    objects = pd.concat(obj_frames, ignore_index=True) if obj_frames else pd.DataFrame(columns=["image", "class", "class_name", "label"])
    images = pd.DataFrame(img_rows)
    images["voxel_size"] = None if not given else f"{vs[0]:g}x{vs[1]:g}x{vs[2]:g} {unit}"
    images["error"] = None
    return Quantification(objects, images, unit=u)


# ---------------------------------------------------------------------- time-lapses
def measure_timelapse(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    *,
    pixel_size: float | Sequence[float] | None = None,
    unit: str = "µm",
    class_names: Sequence[str] | None = None,
    instances: np.ndarray | None = None,
    kind: str = "semantic",
    background: Sequence[int] = (0, 1),
    name: str = "movie",
    frame_interval: float | None = None,
    time_unit: str = "s",
) -> Quantification:
    """Measure a (T, Y, X) time-lapse frame by frame (objects are never joined across frames).

    Parameters
    ----------
    labels : (T, Y, X) int array: class labels (``kind="semantic"``) or object ids
        (``kind="instances"``) of each frame; see :func:`~.quantify.quantify_labels`.
    image : optional (T, Y, X) or (T, Y, X, C) intensity movie.
    pixel_size : pixel size (one value, or (y, x)) in ``unit``; None measures in pixels.
    instances : optional (T, Y, X) object ids that split the classes of ``labels``.
    name : the movie's name; frame ``t`` is the image ``"<name>[t=<t>]"`` in the tables.
    frame_interval : time between frames in ``time_unit``; adds a ``time_<time_unit>`` column.

    Returns
    -------
    :class:`~.quantify.Quantification` whose ``objects`` and ``images`` tables have a ``frame``
    column (and ``time_<unit>``), one ``images`` row per (frame, class).
    """
    import pandas as pd

    labels = _check_labels(labels, 3, "(T, Y, X) time-lapse")
    if image is not None and (np.ndim(image) not in (3, 4) or np.shape(image)[:3] != labels.shape):
        raise DataError(
            f"Image {np.shape(image)} and labels {labels.shape} differ in size: give the (T, Y, X[, C]) movie the labels were made from."
        )
    if instances is not None and np.shape(instances) != labels.shape:
        raise DataError(f"Instances {np.shape(instances)} and labels {labels.shape} differ in size.")
    time_col = None
    if frame_interval is not None:
        if (
            isinstance(frame_interval, bool)
            or not isinstance(frame_interval, (int, float, np.number))
            or not np.isfinite(frame_interval)
            or frame_interval <= 0
        ):
            raise DataError(f"frame_interval must be a positive number of {time_unit} between frames (got {frame_interval!r}), or None.")
        time_col = f"time_{_unit_name(time_unit)}"
    objs, imgs, unit_out = [], [], "px"
    for t in range(labels.shape[0]):
        q = quantify_labels(
            labels[t], None if image is None else np.asarray(image[t]), instances=None if instances is None else np.asarray(instances[t]),
            kind=kind, pixel_size=pixel_size, unit=unit, class_names=class_names, background=background, name=f"{name}[t={t}]",
        )  # fmt: skip
        unit_out = q.unit
        for table, into in ((q.objects, objs), (q.images, imgs)):
            table = table.copy()
            table.insert(1, "movie", name)
            table.insert(2, "frame", t)
            if time_col:
                table.insert(3, time_col, t * float(frame_interval))
            into.append(table)
    objects = pd.concat([o for o in objs if len(o)], ignore_index=True) if any(len(o) for o in objs) else objs[0]
    return Quantification(objects, pd.concat(imgs, ignore_index=True), unit=unit_out)


def measure_stack(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    *,
    record=None,
    name: str | None = None,
    instances: np.ndarray | None = None,
    kind: str = "semantic",
    class_names: Sequence[str] | None = None,
    pixel_size=None,
    voxel_size=None,
    unit: str | None = None,
) -> Quantification:
    """Measure a stack as what it is: a time-lapse of the store (``record``, an
    :class:`~.manifest.ImageRecord`) frame by frame (``pixel_size`` given, else its own), a volume in
    3D with ``voxel_size`` given, else its own (:func:`measure_volume`). ``unit``: given, else the
    image's. The one rule of segment-and-quantify and of batch quantification."""
    unit = unit or (record.unit if record is not None else None) or "µm"
    name = name or (record.name if record is not None else "volume")
    if record is not None and record.is_timelapse:
        ps, unit = measuring_scale(pixel_size, unit, record.pixel_size)
        return measure_timelapse(
            labels, image, pixel_size=ps, unit=unit, class_names=class_names, instances=instances, kind=kind, name=name,
            frame_interval=record.frame_interval, time_unit=record.time_unit or "s",
        )  # fmt: skip
    if voxel_size is None and record is not None:
        voxel_size = record.voxel_size
    return measure_volume(
        labels, image, instances=instances, kind=kind, voxel_size=voxel_size, unit=unit, class_names=class_names, name=name
    )
