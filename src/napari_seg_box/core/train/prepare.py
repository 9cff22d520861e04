"""Training data preparation: annotated images -> normalised regions, targets, weights, validation split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from ..data import DEFAULT_PERCENTILES, labels_to_target, normalize
from ..errors import ConfigError, DataError, OneClassError
from ..losses import IGNORE, edge_weight_map
from ..store import Plane, iter_annotated_planes
from .config import TrainConfig

_VAL_TILE = 512  # validation regions are cut into crops of at most this size


# ---------------------------------------------------------------------- data
@dataclass
class _Item:
    """One training or validation region: normalised image, target, optional edge weights."""

    name: str
    split: str  # of the image it comes from
    image: np.ndarray  # (Y, X, C) float32
    target: np.ndarray  # (Y, X) int16, IGNORE = unlabelled
    weight: np.ndarray | None = None
    distance: np.ndarray | None = None  # (Y, X) float32 normalised distance to the object border (distance models)
    coords: np.ndarray | None = None  # (N, 2) annotated pixels (subsampled)
    fg_coords: np.ndarray | None = None  # annotated non-background pixels
    emphasis: float = 1.0  # per-pixel sampling weight (recent corrections when fine-tuning)

    @property
    def annotated(self) -> int:
        return int((self.target != IGNORE).sum())


@dataclass
class _Data:
    train: list[_Item]
    val: list[_Item]
    classes: list[str]
    channels: int
    fingerprint: str
    train_names: list[str]
    val_names: list[str]
    split: str  # how validation was chosen
    object_diameter: float | None
    val_rows: dict[str, int]  # validation plane -> its first validation row (0: the whole plane)
    distance: bool = False  # the model learns a distance output (after the classes)
    touching: float = 0.0  # share of the objects touching another object
    revisions: dict[str, str] = field(default_factory=dict)  # image -> the annotation revision read
    context: int = 0  # 2.5D input: neighbouring planes on each side (channels = image channels x (2 context + 1))


def auto_context(records) -> int:
    """The neighbouring planes on each side for 2.5D input (``TrainConfig(context=None)``), from the
    annotated volumes among ``records``: 0 when there are none (2D images only) or a time-lapse is
    among them; 2 when the voxels are near isotropic (section spacing < 2x the pixel size: a
    neighbour two sections away is still close); else 1 (serial sections, confocal stacks: the
    nearest sections only; also when the spacing is not known)."""
    volumes = [r for r in records if r.is_stack and r.has_labels]
    if not volumes or any(getattr(r, "is_timelapse", False) for r in volumes):
        return 0
    ratios = [v[0] / float(np.sqrt(v[1] * v[2])) for v in (r.voxel_size for r in volumes) if v is not None]
    return 2 if ratios and len(ratios) == len(volumes) and max(ratios) < 2 else 1


def _fingerprint(planes: list[Plane]) -> str:
    h = hashlib.sha256()
    for p in planes:
        h.update(p.name.encode())
        h.update(str(p.pixels.shape).encode() + str(p.pixels.dtype).encode())
        h.update(np.ascontiguousarray(p.pixels).tobytes())
        h.update(np.ascontiguousarray(p.labels).tobytes())
    return h.hexdigest()


def _instances_for(plane: Plane) -> np.ndarray:
    """Instance ids for edge weights: stored instances, else connected components of non-background."""
    from skimage.measure import label

    if plane.instances is not None:
        return plane.instances
    return label(plane.labels >= 2, connectivity=1)


BOUNDARY = 2  # target index of the boundary class (after background 0 and the object class 1)


def boundary_mask(instances: np.ndarray, width: int = 2) -> np.ndarray:
    """(Y, X) bool: the outer ``width`` pixels of every object of an instance image (touching
    objects each keep their own boundary pixels; object pixels next to background are boundary)."""
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    inside = instances > 0
    edge = find_boundaries(instances, connectivity=1, mode="inner") & inside
    if width > 1:
        edge = ndi.binary_dilation(edge, iterations=width - 1, mask=inside)
    return edge


TOUCHING_SHARE = 0.1  # automatic distance output from this share of objects touching another object


def touching_objects(instances: np.ndarray) -> tuple[int, int]:
    """(objects 4-adjacent to a *different* object, objects) of an instance image: 0 touch when
    objects are connected components; crowded nuclei (DSB 2018): about a third. Counted per object,
    not per pixel, so that large and small objects weigh the same."""
    ids = np.unique(instances[instances > 0])
    touch: set[int] = set()
    for a, b in ((instances[1:], instances[:-1]), (instances[:, 1:], instances[:, :-1])):
        meet = (a > 0) & (b > 0) & (a != b)
        touch.update(np.unique(a[meet]).tolist(), np.unique(b[meet]).tolist())
    return len(touch), len(ids)


def distance_map(instances: np.ndarray) -> np.ndarray:
    """(Y, X) float32 in [0, 1]: each object's Euclidean distance to its own border (touching objects
    each end at their common border), divided by the object's largest; 0 outside objects. The
    target of the distance output: its maxima are object centres, its valleys where objects meet."""
    from scipy import ndimage as ndi

    out = np.zeros(instances.shape, np.float32)
    for i, box in enumerate(ndi.find_objects(instances), start=1):
        if box is None:
            continue
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        own = instances[box] == i
        d = ndi.distance_transform_edt(np.pad(own, 1))[1:-1, 1:-1]
        out[box][own] = (d[own] / d.max()).astype(np.float32)
    return out


def _fold_boundary(t):
    """Class indices with the boundary (2) counted as the object (1): metrics are of the project's classes."""
    return t.clamp(max=1)


def _object_diameter(labels_list) -> float | None:
    from skimage.measure import label, regionprops

    diam = []
    for labels in labels_list:
        for r in regionprops(label(labels >= 2, connectivity=1)):
            if r.area >= 9:
                diam.append(r.equivalent_diameter_area)
    return float(np.median(diam)) if diam else None


def _coords(mask: np.ndarray, rng: np.random.Generator, limit: int = 200_000) -> np.ndarray:
    c = np.argwhere(mask).astype(np.int32)
    if len(c) > limit:
        c = c[rng.choice(len(c), limit, replace=False)]
    return c


def _split_rows(target: np.ndarray, fraction: float) -> int:
    """Row where the bottom ``fraction`` of the annotated pixels begins."""
    per_row = (target != IGNORE).sum(axis=1)
    cum = np.cumsum(per_row)
    return int(np.searchsorted(cum, cum[-1] * (1 - fraction)))


def _prepare_data(project, cfg: TrainConfig, distance: bool | None = False, *, validation_of=None) -> _Data:
    """The run's training and validation regions; ``distance``: learn the distance output (``None``:
    when the annotated objects touch, :data:`TOUCHING_SHARE`). ``validation_of``: the
    :class:`~..versions.Provenance` of the version a run fine-tunes: when no image is marked for
    validation, its automatic validation part is kept (both versions are scored on the same pixels,
    which neither trained on), and what was annotated since trains."""
    revisions = {r.name: r.annotation["revision"] for r in project.images() if r.annotation and r.annotation.get("revision")}
    context = auto_context([r for r in project.images() if r.split in ("train", "validation")]) if cfg.context is None else cfg.context
    planes = [p for p in iter_annotated_planes(project, ("train", "validation"), context=context) if (p.labels > 0).any()]
    if not planes:
        raise DataError(
            "No annotated images to train on: paint some labels (0 = unlabelled; 1.. = classes) on at least one "
            "train or validation image of the project, then save them."
        )
    K = project.n_classes
    if K < 2:
        raise DataError("Training needs at least two classes (for example background and nucleus): add a class to the project.")
    if cfg.boundary and K != 2:
        raise ConfigError(
            f"The boundary class works with one object class (a two-class project), but this project has {K} classes: "
            "train without boundary=True (the watershed still splits touching objects), or use a two-class project."
        )
    channels = {1 if p.pixels.ndim == 2 else p.pixels.shape[-1] for p in planes}
    if len(channels) > 1:
        raise DataError(f"The annotated images have different channel counts {sorted(channels)}: train on images with the same channels.")
    rng = np.random.default_rng(cfg.seed)
    fingerprint = _fingerprint(planes)
    diameter = _object_diameter([p.labels for p in planes])
    instances = (
        {p.name: _instances_for(p) for p in planes} if (cfg.loss == "edge_weighted" or cfg.boundary or distance is not False) else {}
    )
    counts = np.array([touching_objects(i) for i in instances.values()]).reshape(-1, 2).sum(axis=0)
    touching = float(counts[0] / counts[1]) if counts[1] else 0.0
    if distance is None:
        distance = touching >= TOUCHING_SHARE

    def item(plane: Plane) -> _Item:
        target = labels_to_target(plane.labels, ignore_index=IGNORE).astype(np.int16)
        weight = dist = None
        inst = instances.get(plane.name)
        if cfg.loss == "edge_weighted":
            weight = edge_weight_map(inst, target, w0=cfg.edge_w0, sigma=cfg.edge_sigma)
        if cfg.boundary:  # class index 2: the object's outer pixels
            target[boundary_mask(inst, cfg.boundary_width) & (target == 1)] = BOUNDARY
        if distance:
            dist = distance_map(inst)
        return _Item(plane.name, plane.split, normalize(plane.pixels, percentiles=DEFAULT_PERCENTILES), target, weight, dist)

    items = [item(p) for p in planes]
    marked, kept = [it for it in items if it.split == "validation"], None
    if marked:
        train = [it for it in items if it.split != "validation"]
        val, split = marked, f"{len(marked)} image(s) marked validation"
        if not train:
            raise DataError("Every annotated image is marked 'validation': mark at least one as 'train'.")
    elif (kept := _kept_validation(items, validation_of)) is not None:
        train, val, val_rows, split = kept
    elif len(items) >= 4:
        n_val = max(1, round(len(items) * cfg.validation_fraction))
        order = rng.permutation(len(items))
        val = [items[i] for i in sorted(order[:n_val])]
        train = [items[i] for i in sorted(order[n_val:])]
        split = f"automatic: {n_val} of {len(items)} images"
    else:
        cuts = {}  # the bottom rows of each region, where both parts are 16 rows or more and the bottom is annotated
        for it in items:
            cut = _split_rows(it.target, cfg.validation_fraction)
            if 16 <= cut <= it.target.shape[0] - 16 and (it.target[cut:] != IGNORE).any():
                cuts[it.name] = cut
        train, val, val_rows = _apart(items, cuts)
        if not val:
            raise DataError(
                "No validation is possible: the annotations are too small to keep a part aside. Annotate a second image "
                "(or a larger area), or mark an annotated image as 'validation'."
            )
        split = "automatic: bottom ~20% of each image's annotated rows"
    if not any(it.annotated for it in train):
        raise DataError("The training part has no annotated pixels: annotate more, or mark fewer images as validation.")
    painted = set().union(*(np.unique(it.target[it.target != IGNORE]).tolist() for it in items))
    if len(painted) < 2:  # nothing to tell that class from: the model would call everything by its name
        raise one_class_error(project, sorted({p.image for p in planes}), project.class_names[painted.pop()] if painted else "?")
    for it in train:
        it.coords = _coords(it.target != IGNORE, rng)
        it.fg_coords = _coords(it.target >= 1, rng)
    if marked or (kept is None and len(items) >= 4):
        val_rows = {it.name: 0 for it in val}
    val = [crop for it in val for crop in _tiles(it)]
    return _Data(
        train=[it for it in train if it.annotated],
        val=[it for it in val if it.annotated],
        classes=project.class_names,
        channels=channels.pop(),
        fingerprint=fingerprint,
        train_names=sorted({it.name for it in train}),
        val_names=sorted({it.name.split(" (rows")[0] for it in val}),
        split=split,
        object_diameter=diameter,
        val_rows=val_rows,
        distance=bool(distance),
        touching=touching,
        revisions={p.image: revisions[p.image] for p in planes if p.image in revisions},
        context=context,
    )


def _apart(items: list[_Item], cuts: dict[str, int]) -> tuple[list[_Item], list[_Item], dict[str, int]]:
    """(train, val, val_rows): the rows of a region from ``cuts[name]`` on validate (0: the whole
    region); a region without a cut (or cut below its end) trains whole."""
    train, val, val_rows = [], [], {}
    for it in items:
        cut = cuts.get(it.name)
        if cut is None or cut >= it.target.shape[0]:
            train.append(it)
            continue
        if cut:
            train.append(_cut(it, slice(0, cut)))
        val.append(_cut(it, slice(cut, None), f"{it.name} (rows {cut}-)") if cut else it)
        val_rows[it.name] = cut
    return train, val, val_rows


def _kept_validation(items: list[_Item], provenance) -> tuple | None:
    """(train, val, val_rows, split) with the automatic validation part of ``provenance`` (a
    fine-tuned version's), or None when there is none to keep (it was marked, or is no longer annotated)."""
    if provenance is None or not (provenance.validation or "").startswith("automatic") or not provenance.validation_rows:
        return None
    rows = provenance.validation_rows
    if not any(it.name in rows for it in items):
        return None
    train, val, val_rows = _apart(items, rows)
    if not val or not train:
        return None
    return train, val, val_rows, f"automatic, kept from the version fine-tuned ({len(val)} region(s))"


def one_class_error(project, images: list[str], name: str) -> OneClassError:
    """Only ``name`` is painted in the training images: say so, and the two ways out."""
    shown = ", ".join(images[:5]) + (f" and {len(images) - 5} more" if len(images) > 5 else "")
    background = project.class_names[0]
    return OneClassError(
        f"Only {name!r} is painted in the training images ({shown}): a network trained on it calls everything {name!r}. "
        f"Either the unpainted pixels of these images are {background!r}, or paint some {background!r} too.",
        images=images,
        hints={
            "python": "For the first, call project.set_unpainted_background(names).",
            "cli": f"For the first, run `napari-seg-box background STORE {' '.join(images[:5])}`.",
            "gui": "Press Start again and choose 'Unpainted pixels are background', or paint some background.",
        },
    )


def _cut(it: _Item, sl, name: str | None = None) -> _Item:
    """The part ``sl`` of a region, with its maps."""
    maps = [None if m is None else m[sl] for m in (it.weight, it.distance)]
    return _Item(name or it.name, it.split, it.image[sl], it.target[sl], *maps)


def _tiles(it: _Item) -> list[_Item]:
    H, W = it.target.shape
    return [_cut(it, (slice(y, y + _VAL_TILE), slice(x, x + _VAL_TILE))) for y in range(0, H, _VAL_TILE) for x in range(0, W, _VAL_TILE)]
