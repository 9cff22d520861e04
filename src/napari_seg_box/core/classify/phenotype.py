"""Object phenotyping: a classifier applied to crops around the objects of a segmentation.

Crops are the object's bounding box padded by ``pad`` (a share of its larger side) or, with
``size``, a fixed square centred on the object; ``mask`` adds the object's mask as a last channel
(so that a classifier can tell the object from its neighbours in the crop). The same crop settings
must serve to export training crops (:func:`object_crops`) and to phenotype (:func:`phenotype_objects`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError

MIN_CROP = 16  # pixels: the smallest side of a bounding-box crop


@dataclass(frozen=True)
class CropSettings:
    """How objects are cut out: ``size`` px squares, or bounding boxes padded by ``pad``; ``mask`` adds a mask channel."""

    size: int | None = None
    pad: float = 0.25
    mask: bool = False

    def __post_init__(self):
        if self.size is not None and not 4 <= self.size <= 2048:
            raise DataError(f"Crop size must be 4 to 2048 pixels, got {self.size}.")
        if not 0 <= self.pad <= 2:
            raise DataError(f"Crop padding must be 0 to 2 (a share of the object's size), got {self.pad}.")


def object_crops(image: np.ndarray, labels: np.ndarray, settings: CropSettings = CropSettings()) -> tuple[list[int], list[np.ndarray]]:
    """The object ids of ``labels`` (Y, X; 0 = background) and a (h, w, C[+1]) crop of ``image``
    (Y, X[, C]) around each, zero outside the image."""
    from scipy import ndimage as ndi

    image = np.asarray(image)
    image = image[..., None] if image.ndim == 2 else image
    labels = np.asarray(labels)
    if labels.shape != image.shape[:2]:
        raise DataError(f"The labels {labels.shape} and the image {image.shape[:2]} differ in size: give the labels of this image.")
    ids, crops = [], []
    for i, sl in enumerate(ndi.find_objects(labels)):
        if sl is None:
            continue
        oid = i + 1
        (y0, y1), (x0, x1) = (sl[0].start, sl[0].stop), (sl[1].start, sl[1].stop)
        if settings.size:
            cy, cx, half = (y0 + y1) // 2, (x0 + x1) // 2, settings.size // 2
            y0, y1, x0, x1 = cy - half, cy - half + settings.size, cx - half, cx - half + settings.size
        else:  # the padded bounding box, at least MIN_CROP on each side (a speck still shows its surroundings)
            m = int(round(settings.pad * max(y1 - y0, x1 - x0)))
            my, mx = max(m, (MIN_CROP - (y1 - y0) + 1) // 2), max(m, (MIN_CROP - (x1 - x0) + 1) // 2)
            y0, y1, x0, x1 = y0 - my, y1 + my, x0 - mx, x1 + mx
        crop = _window(image, y0, y1, x0, x1)
        if settings.mask:
            mask = _window((labels == oid)[..., None].astype(image.dtype), y0, y1, x0, x1)
            crop = np.concatenate([crop, mask * _mask_value(image.dtype)], axis=-1)
        ids.append(oid)
        crops.append(crop)
    return ids, crops


def phenotype_objects(image: np.ndarray, labels: np.ndarray, classifier, settings: CropSettings = CropSettings(), *, batch_size: int = 64):
    """Classify every object of ``labels``: a table with ``label``, ``class``, ``confidence`` and
    ``p_<class>`` per object (pandas; empty when there is no object). ``classifier``: a :class:`~.model.Classifier`."""
    ids, crops = object_crops(image, labels, settings)
    if crops and crops[0].shape[-1] != classifier.info.in_channels:
        hint = " (it was trained with a mask channel: pass mask=True)" if crops[0].shape[-1] + 1 == classifier.info.in_channels else ""
        raise DataError(
            f"The object crops have {crops[0].shape[-1]} channel(s) but model version {classifier.info.version} takes "
            f"{classifier.info.in_channels}{hint}: use a phenotype model trained on crops like these."
        )
    table = classifier.classify(crops, names=[str(i) for i in ids], batch_size=batch_size)
    table.insert(0, "label", np.asarray(ids, dtype=np.int64))
    return table.drop(columns="name")


def _window(array: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """``array[y0:y1, x0:x1]`` with zeros where the window leaves the array."""
    h, w = array.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0) + array.shape[2:], array.dtype)
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = array[sy0:sy1, sx0:sx1]
    return out


def _mask_value(dtype) -> float:
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


@dataclass(frozen=True)
class PhenotypeModel:
    """Where a phenotype classifier lives (picklable: batch workers load it themselves, once each)."""

    store: str
    version: str | None = None
    store_options: tuple = ()
    crop: CropSettings = field(default_factory=CropSettings)
    device: str = "auto"

    def load(self):
        """The :class:`~.model.Classifier` (loaded once per process and version)."""
        from .model import cached_classifier

        return cached_classifier(self.store, self.version, self.store_options, self.device)


def add_phenotypes(objects, images, image, parts, model: PhenotypeModel):
    """The tables of a quantification with phenotypes: each object row gains ``phenotype``,
    ``phenotype_confidence`` and ``p_<phenotype>``; each image row (one per class) gains
    ``n_<phenotype>`` and ``coverage_<phenotype>_percent``. ``parts``: the ``(class value, object
    ids)`` images the objects were measured in."""
    import pandas as pd

    if image is None:
        raise DataError("Phenotyping needs the intensity images: give them with the label images (--images).")
    clf = model.load()
    tables = []
    for c, inst in parts:
        t = phenotype_objects(image, inst, clf, model.crop).rename(columns={"class": "phenotype", "confidence": "phenotype_confidence"})
        t.insert(0, "class", c)
        tables.append(t)
    names = clf.class_names
    if not tables or not sum(len(t) for t in tables):
        for n in names:
            images[f"n_{n}"] = 0
            images[f"coverage_{n}_percent"] = 0.0
        return objects, images
    found = pd.concat(tables, ignore_index=True)
    objects = objects.merge(found, on=["class", "label"], how="left")
    total = float(np.prod(np.shape(image)[:2]))
    for n in names:
        mine = objects[objects["phenotype"] == n]
        counts = mine.groupby("class").size()
        area = mine.groupby("class")["area_px"].sum()
        images[f"n_{n}"] = images["class"].map(counts).fillna(0).astype(int)
        images[f"coverage_{n}_percent"] = 100.0 * images["class"].map(area).fillna(0) / total
    return objects, images


def export_object_crops(project, out, settings: CropSettings = CropSettings(), *, splits=("train", "validation", "test")) -> dict[str, int]:
    """Training data for a phenotype classifier: a crop around every annotated object of a
    segmentation project, written as ``out/<object class>/<image>_<id>.tif`` (an ImageFolder layout
    that ``import --class-folders`` reads; sort the crops into phenotype folders before importing, or
    keep the object classes). Objects are the stored instances, else the connected regions of each
    class. Returns the number of crops per class."""
    import os

    import tifffile

    from ..manifest import slug
    from ..planes import iter_annotated_planes

    if project.task != "segmentation":
        raise DataError("Object crops come from a segmentation project (its annotated objects): this one classifies images.")
    counts: dict[str, int] = {}
    names = project.class_names
    for plane in iter_annotated_planes(project, splits):
        for c in np.unique(plane.labels):
            if c <= 1:  # unlabelled, background
                continue
            mask = plane.labels == c
            objects = np.where(mask, plane.instances, 0) if plane.instances is not None else _components(mask)
            ids, crops = object_crops(plane.pixels, objects, settings)
            folder = os.path.join(str(out), slug(names[c - 1]))
            os.makedirs(folder, exist_ok=True)
            for i, crop in zip(ids, crops):
                tifffile.imwrite(os.path.join(folder, f"{slug(plane.name)}_{i}.tif"), crop)
            counts[names[c - 1]] = counts.get(names[c - 1], 0) + len(ids)
    if not counts:
        raise DataError("No annotated object to crop: paint objects (a class other than the background) first.")
    return counts


def _components(mask: np.ndarray) -> np.ndarray:
    from skimage.measure import label

    return label(mask, connectivity=1)
