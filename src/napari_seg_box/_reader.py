"""napari reader for napari-seg-box project stores.

Returns ``None`` for anything that is not a project store (other zarr files included), so it never
takes files away from other readers. Each image of the store opens as an image layer (lazy zarr
array) plus a labels layer with the project's class colours, linked to the store through the layer
metadata (:mod:`.layers`) so the writer and the widgets can save back.
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

    return read_project if Project.is_project(_store_of(path)) else None


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
