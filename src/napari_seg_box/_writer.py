"""napari writer: save a labels layer's annotation into a napari-seg-box project store."""

from __future__ import annotations

from .core.errors import StoreError


def write_labels(path: str, data, meta: dict) -> list[str]:
    """Save labels into the project store at ``path`` for the image the layer is linked to.

    The layer must come from the store (reader or Annotate widget): its metadata names the image
    (``segbox_image``). Saving is crash-safe; the previous annotation stays until the new one is whole.
    """
    import numpy as np

    from .core.store import Project
    from .layers import IMAGE_KEY, ORIGIN_KEY

    image = (meta.get("metadata") or {}).get(IMAGE_KEY)
    if not image:
        raise StoreError(
            "This labels layer is not linked to an image of a project store: open the store in napari "
            "(File > Open) or use the Annotate widget to add the image, then save again."
        )
    project = Project.open(path)
    project.set_labels(image, np.asarray(data), **dict((meta.get("metadata") or {}).get(ORIGIN_KEY) or {}))
    return [path]
