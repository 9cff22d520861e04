"""napari reader for napari-seg-box project stores, and OME-Zarr images with NGFF labels.

Returns ``None`` for anything else (other zarr files included), so it never takes files away from
other readers. Each image of a store opens as an image layer (lazy zarr array) plus a labels layer
with the project's class colours, linked to the store through the layer metadata (:mod:`.layers`) so
the writer and the widgets can save back. An OME-Zarr image that lists label images (``labels/``, as
``predict --ome-zarr-labels`` writes them) opens as its image (all levels, lazily) and one labels
layer per label image, with their colours, properties and scale.
"""

from __future__ import annotations


def get_reader(path):
    """The reader of a project store: its folder, or the ``segbox.json`` in it (which only this
    reader claims, so File > Open Files… opens a project without asking which reader to use)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    from .core.store import Project

    if Project.is_project(_store_of(path)):
        return read_project
    return read_ome_zarr_labels if _has_ome_labels(path) else None


def _has_ome_labels(path) -> bool:
    """An OME-Zarr image (a folder) that lists label images; never raises."""
    import os

    path = str(path).rstrip("/")
    if "://" not in path and not os.path.isdir(path):
        return False
    try:
        from .core.ome_zarr_out import is_ome_zarr_image, labels_groups

        return is_ome_zarr_image(path) and bool(labels_groups(path))
    except Exception:
        return False


def _store_of(path) -> str:
    path = str(path).rstrip("/")
    return path[: -len("/segbox.json")] if path.endswith("/segbox.json") else path


def project_layers(project, names=None) -> list[tuple]:
    """Layer data tuples for images of a project (all by default), with linked labels layers."""
    import numpy as np

    from .layers import class_colors, layer_scale, link

    layers = []
    for name in names or project.image_names():
        rec = project.image_record(name)
        scale = layer_scale(rec)
        image = project.image_array(name)
        layers.append((image, {"name": name, "metadata": link(project.url, name), "scale": scale, "rgb": rec.channels == 3}, "image"))
        labels = project.get_labels(name)
        if labels is None:
            labels = np.zeros(rec.spatial_shape, dtype=np.uint8)
        meta = {
            "name": f"{name} annotations",
            "metadata": link(project.url, name),
            "scale": scale,
            "colormap": class_colors(project),
            "opacity": 0.6,
        }
        layers.append((labels, meta, "labels"))
    return layers


def read_project(path):
    from .core.store import Project

    return project_layers(Project.open(_store_of(path if isinstance(path, str) else path[0])))


def read_ome_zarr_labels(path) -> list[tuple]:
    """Layer data tuples of an OME-Zarr image (its levels, lazily; channels as ``channel_axis``) and
    of its label images (channel axis dropped), each with the scale and translation of its level 0."""
    import dask.array as da
    import zarr

    from .core.io_meta import ome_attrs
    from .core.ome_zarr_out import labels_groups, transform_of

    path = str(path if isinstance(path, str) else path[0]).rstrip("/")
    group = zarr.open_group(path, mode="r")
    ms = ome_attrs(group)["multiscales"][0]
    levels = [da.from_zarr(group[d["path"]]) for d in ms["datasets"]]
    found = labels_groups(path)
    name = path.rsplit("/", 1)[-1]
    axes = [a.get("name") if isinstance(a, dict) else a for a in ms.get("axes") or []] or [None] * levels[0].ndim
    c = axes.index("c") if "c" in axes else None
    transforms = ms["datasets"][0].get("coordinateTransformations")
    scale = transform_of(transforms, "scale") or [1.0] * levels[0].ndim
    translate = transform_of(transforms, "translation")
    kwargs = {"name": name}
    if c is not None and levels[0].shape[c] > 1:
        kwargs["channel_axis"] = c
    elif c is not None:
        levels = [lv[tuple(0 if i == c else slice(None) for i in range(lv.ndim))] for lv in levels]
    kept = [i for i in range(len(axes)) if i != c]
    kwargs["scale"] = [scale[i] for i in kept]
    if translate:
        kwargs["translate"] = [translate[i] for i in kept]
    layers = [(levels if len(levels) > 1 else levels[0], kwargs, "image")]
    for lab in found:
        lc = lab["axes"].index("c") if "c" in lab["axes"] else None
        data = [da.from_zarr(a) for a in lab["data"]]
        if lc is not None:
            data = [d[tuple(0 if i == lc else slice(None) for i in range(d.ndim))] for d in data]
        keep = [i for i in range(len(lab["axes"])) if i != lc]
        meta = {"name": f"{name} {lab['name']}", "scale": [lab["scale"][i] for i in keep], "opacity": 0.6}
        if lab["translation"]:
            meta["translate"] = [lab["translation"][i] for i in keep]
        if lab["colors"]:
            meta["colormap"] = {None: "transparent", 0: "transparent", **lab["colors"]}
        if lab["properties"]:
            keys = sorted({k for p in lab["properties"].values() for k in p})
            values = sorted(lab["properties"])
            meta["features"] = {"index": values, **{k: [lab["properties"][v].get(k) for v in values] for k in keys}}
        layers.append((data if len(data) > 1 else data[0], meta, "labels"))
    return layers
