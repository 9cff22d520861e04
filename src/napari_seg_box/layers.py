"""How napari layers relate to a project store: one place for the plugin's reader, writer and widgets.

Qt-free (napari is imported inside :func:`class_colormap` only). A layer is *linked* to an image of a
store through its metadata (:data:`STORE_KEY`, :data:`IMAGE_KEY`): the reader sets it, the Annotate
widget sets it when it adds an image, and the writer and the widgets save back through it.
"""

from __future__ import annotations

STORE_KEY = "segbox_store"
IMAGE_KEY = "segbox_image"
ORIGIN_KEY = "segbox_origin"  # a labels layer started from a prediction: {"origin": "corrected", "model_version": ...}


def link(store_url: str, image: str) -> dict:
    """The metadata that links a layer to ``image`` of the store at ``store_url``."""
    return {STORE_KEY: str(store_url), IMAGE_KEY: image}


def linked(layer, url: str | None = None, name: str | None = None) -> bool:
    """Whether ``layer`` is linked to a store image (to the store ``url`` / image ``name`` when given)."""
    meta = layer.metadata or {}
    if not meta.get(STORE_KEY) or not meta.get(IMAGE_KEY):
        return False
    return (url is None or str(meta[STORE_KEY]) == str(url)) and (name is None or meta[IMAGE_KEY] == name)


def annotation_origin(layer) -> dict:
    """How a linked labels layer's annotation is recorded when saved (``set_labels`` keywords):
    ``drawn``, or ``corrected`` from the model version whose prediction it started from."""
    return dict((layer.metadata or {}).get(ORIGIN_KEY) or {"origin": "drawn"})


def class_colors(project) -> dict:
    """Label value -> colour of the project's classes; 0 (unlabelled) and None transparent."""
    colors = {None: "transparent", 0: "transparent"}
    colors.update({c.value: c.color for c in project.classes})
    return colors


def class_colormap(project):
    """A napari ``DirectLabelColormap`` with the project's class colours."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict=class_colors(project))


def layer_scale(record) -> tuple[float, ...]:
    """The napari layer scale of a store image (:class:`~.core.manifest.ImageRecord`): its pixel
    size, and for a volume its plane spacing (z; 1 when unknown); a time-lapse's time axis has
    scale 1 (one step per frame: the frame interval is time, not space)."""
    yx = tuple(record.pixel_size or (1.0, 1.0))
    if not record.is_stack:
        return yx
    if getattr(record, "is_timelapse", False):
        return (1.0,) + yx
    if record.voxel_size is not None:
        return record.voxel_size
    return (1.0,) + yx


def is_image(layer) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image)


def is_labels(layer) -> bool:
    from napari.layers import Labels

    return isinstance(layer, Labels)


def image_layer_of(viewer, project, name: str):
    """The image layer linked to store image ``name``, added (linked) when there is none."""
    layer = next((la for la in viewer.layers if is_image(la) and linked(la, project.url, name)), None)
    if layer is None:
        rec = project.image_record(name)
        layer = viewer.add_image(
            project.get_image(name), name=name, rgb=rec.channels == 3, scale=layer_scale(rec), metadata=link(project.url, name)
        )
    return layer


def store_layer(project, layer, name: str, split: str) -> None:
    """Add the data of image ``layer`` to ``project`` as image ``name`` and link the layer to it (a
    3D layer that is not RGB reads as a stack of planes, as napari shows it)."""
    import numpy as np

    data = np.asarray(layer.data)
    stack = False if layer.rgb else (True if data.ndim == 3 else None)
    project.add_image(name, data, split=split, stack=stack, source=f"napari layer {layer.name}", origin="drawn")
    layer.metadata = {**(layer.metadata or {}), **link(project.url, name)}
