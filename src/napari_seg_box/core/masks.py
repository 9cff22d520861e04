"""Reading mask files: which kind of mask a file holds, and its values as project labels.

A mask may be binary (two values such as 0/255 or 0/1), class-indexed (0..K-1, 0 = first class),
instance labels (each id an object; ids need not be consecutive; huge ids are renumbered), project
labels already (0 = unlabelled, 1..K), or a colour image saved by a paint program: a grey image
stored as RGB is read as grey, and every other colour is an object (or the foreground of a
two-colour mask). The kind chosen is always returned, so that import can say it. A file that is an
image rather than a mask (values changing from pixel to pixel) is refused with a message.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError

MASK_KINDS = ("auto", "binary", "classes", "instances", "labels")


def interpret_mask(mask: np.ndarray, *, kind: str = "auto", n_classes: int = 2) -> tuple[np.ndarray, np.ndarray | None]:
    """Turn a mask file's values into project labels (0 = unlabelled, 1..K) and instance ids.

    kind:
      ``binary``    two values (0/255, 0/1, False/True): low -> class 1, high -> class 2;
      ``classes``   class indices 0..K-1 (0 = first class, usually background) -> 1..K;
      ``instances`` object ids (0 = background): class 1 background, class 2 objects, plus the
                    ids (renumbered 1..N when they are large) as instance ground truth;
      ``labels``    already project labels (0 = unlabelled) -> kept;
      ``auto``      :func:`mask_kind` decides (and says what it chose).
    """
    labels, instances, _ = read_mask(mask, kind=kind, n_classes=n_classes)
    return labels, instances


def read_mask(mask: np.ndarray, *, kind: str = "auto", n_classes: int = 2) -> tuple[np.ndarray, np.ndarray | None, str]:
    """:func:`interpret_mask` that also returns the kind it read the mask as."""
    if kind not in MASK_KINDS:
        raise DataError(f"Unknown mask kind {kind!r}: use one of {', '.join(MASK_KINDS)}.")
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] in (3, 4):  # RGB(A) saved by paint programs
        mask = colours_to_ids(mask)
        if kind == "classes":
            raise DataError(
                "A colour mask cannot hold class indices: save one grey value per class (0, 1, 2...), or use --mask-kind instances."
            )
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == bool):
        if np.issubdtype(mask.dtype, np.floating) and np.all(np.isfinite(mask)) and np.all(np.mod(mask, 1) == 0):
            mask = mask.astype(np.int64)
        else:
            raise DataError("Masks must hold whole numbers (binary, class indices or instance ids): this looks like an image, not a mask.")
    values = np.unique(mask)
    if kind == "auto":
        kind = mask_kind(mask, values, n_classes)
    if kind == "binary":
        if len(values) > 2:
            raise DataError(f"A binary mask must have two values; this one has {len(values)}: read it as instances or classes (mask kind).")
        high = values.max(initial=0)
        fg = (mask == high) & (high > 0)
        return (1 + fg).astype(np.uint8), None, kind
    if kind == "instances":
        if int(values.min(initial=0)) < 0:
            raise DataError("Instance masks must not hold negative ids.")
        return (1 + (mask > 0)).astype(np.uint8), sequential_ids(mask, values), kind
    if kind == "classes":
        if int(values.min(initial=0)) < 0 or int(values.max(initial=0)) > n_classes - 1:
            raise DataError(
                f"Class mask values {int(values.min())}..{int(values.max())} do not fit the project's {n_classes} classes "
                "(0..K-1 expected): add classes first or choose mask kind 'instances'."
            )
        return (mask.astype(np.int64) + 1).astype(np.uint8), None, kind
    if int(values.max(initial=0)) > n_classes or int(values.min(initial=0)) < 0:
        raise DataError(f"Label values must be 0..{n_classes} (0 = unlabelled).")
    return mask.astype(np.uint8), None, kind


def mask_kind(mask: np.ndarray, values: np.ndarray, n_classes: int) -> str:
    """The kind of a mask read with ``kind="auto"``: two values -> binary; values beyond the
    classes -> instances; otherwise classes. A grey image given as a mask is refused."""
    if len(values) <= 2 and (values.max(initial=0) > 1 or n_classes == 2):
        return "binary"
    if values.max(initial=0) > n_classes - 1:
        if looks_like_an_image(mask, len(values)):
            raise DataError(
                f"This mask has {len(values)} values that change from pixel to pixel: it looks like an image, not a mask "
                "(masks hold one value per object or class). Give the masks' folder as masks, or --mask-kind to force a reading."
            )
        return "instances"
    return "classes"


def looks_like_an_image(mask: np.ndarray, n_values: int) -> bool:
    """True when the values are not regions: far more connected runs of one value than values
    (an instance mask has about one region per id; a grey image has many per grey level)."""
    from skimage.measure import label

    if n_values < 16:
        return False
    step = max(1, int(np.ceil(np.sqrt(mask.size / 262_144))))  # about 512x512 pixels are enough
    sample = np.ascontiguousarray(mask[..., ::step, ::step]).astype(np.int64) + 1
    regions = int(label(sample, background=0, connectivity=1).max())
    return regions > 8 * n_values


def colours_to_ids(rgb: np.ndarray) -> np.ndarray:
    """An RGB(A) mask as integer ids: grey (R = G = B) stays its grey value; otherwise black is 0
    and every other colour gets its own id 1..N (in order of first appearance, top to bottom)."""
    rgb = np.asarray(rgb)[..., :3]
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0]
    flat = rgb.reshape(-1, 3).astype(np.uint32)
    codes = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    colours, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    order = np.argsort(first)  # ids by first appearance
    rank = np.empty(len(colours), np.int64)
    rank[order] = np.arange(len(colours))
    black = np.flatnonzero(colours == 0)
    ids = rank + 1
    if len(black):
        ids = np.where(colours == 0, 0, rank + 1 - (rank > rank[black[0]]))
    return ids[inverse].reshape(rgb.shape[:-1]).astype(np.uint32)


def sequential_ids(instances: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
    """Instance ids as uint32, renumbered 1..N (in order of value) when the largest id does not fit
    or is far beyond the number of objects (a lookup of size max id + 1 would not fit in memory)."""
    values = np.unique(instances) if values is None else values
    top = int(values.max(initial=0))
    if top <= np.iinfo(np.uint32).max and top < 4 * len(values) + 1024:
        return instances.astype(np.uint32)
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(instances.astype(np.int64))[0].astype(np.uint32)
