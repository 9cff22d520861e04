"""From the probabilities of a stack to labels whose objects are 3D: post-processing of volumes.

:func:`~.postprocess.postprocess` turns the (K, Y, X) probabilities of one plane into labels; a
volume predicted slice by slice (``iter_predict`` of a (Z, Y, X) stack gives (Z, K, Y, X)) made
into labels plane by plane counts an object that spans 20 sections 20 times. :func:`postprocess_volume`
applies the same :class:`~.postprocess.PostprocessConfig` (the same steps, settings tuned on
planes) to the whole volume, so that objects are connected in z, with the voxel size in mind:

- threshold and class (per voxel, :func:`~.postprocess.foreground_semantic` on each plane);
- opening: 3D, with an ellipsoid of radius ``opening`` in-plane pixels in *physical* units (so it
  is the 2D disk of :func:`postprocess` on each plane when the z spacing is more than ``opening``
  in-plane pixels, as in serial-section EM, and a ball for isotropic voxels);
- hole filling: per plane (2D), as tuned on planes; a hole open in z is filled in each section;
- erosion: voxels nearer than ``erosion`` in-plane pixels (physical distance, an exact Euclidean
  distance transform with the voxel size) to the object's border are removed before labelling;
  objects grow back within the mask (``expand_labels(spacing=voxel_size)``, by the width x sqrt(2)
  as :func:`postprocess` does);
- objects: 3D connected components (faces touch, 6-connectivity), or a 3D watershed: on the
  distance transform computed with ``sampling=voxel_size``, seeded at its maxima at least
  ``seed_distance`` in-plane pixels apart in *physical* distance, basins whose peak is less than one
  in-plane pixel above the pass to a higher one merged (so a z-elongated object of anisotropic voxels, whose
  outline changes a little from section to section, is not cut along z); for a boundary or
  distance model the per-voxel boundary probability / predicted distance is flooded in 3D as
  :func:`postprocess` does;
- ``min_size`` is a voxel count (``min_volume``, physical, overrides it); ``remove_border``
  removes objects touching any of the six faces of the volume.

A voxel size is checked by :func:`.voxels.check_voxel_size` (the one rule of import and measurement).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from .config import as_config
from .errors import ConfigError, DataError
from .postprocess import PlaneSteps, PostprocessConfig, PostprocessResult, foreground_semantic, objects_by_class, postprocess, split_outputs
from .voxels import check_voxel_size

JOINS = ("auto", "3d", "stitch")
STITCH_ANISOTROPY = 3.0  # "auto" joins objects by stitching from this z / xy voxel-size ratio on
# an object continues the one of the plane before from this IoU on. Low, because the profiles of an
# oblique object in sections much thicker than a pixel overlap only in part (true ISBI cells, 4
# sections: 58 % span more than one at 0.25, 27 % at 0.5), and safe, because each object continues
# at most one (pairs taken best first), so two objects are never merged into one
STITCH_IOU = 0.25


def _check_probs4(probabilities) -> np.ndarray:
    probs = np.asarray(probabilities)
    if probs.ndim != 4:
        hint = " (one plane: use postprocess)" if probs.ndim == 3 else ""
        raise DataError(
            f"Expected (Z, K, Y, X) probabilities of a stack, as iter_predict returns for a (Z, Y, X) image; got shape {probs.shape}{hint}."
        )
    if probs.shape[0] == 0:
        raise DataError("The probabilities hold no plane (Z = 0): predict a stack with at least one plane.")
    return probs


def _ellipsoid(radius_px: float, vs: tuple[float, float, float]) -> np.ndarray:
    """Boolean structuring element: the voxels within ``radius_px`` in-plane pixels (physical: radius_px
    * y size) of the centre. For voxels with a z size above the radius it is a 2D disk (one plane)."""
    r_phys = radius_px * vs[1]
    half = [int(np.floor(r_phys / s + 1e-9)) for s in vs]
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    dist2 = sum((g * s) ** 2 for g, s in zip(grids, vs))
    return dist2 <= r_phys**2 + 1e-9


def _fill_holes_per_plane(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    return np.stack([ndi.binary_fill_holes(plane) for plane in mask])


def _erode(mask: np.ndarray, width_px: int, vs: tuple[float, float, float]) -> np.ndarray:
    """Voxels farther than ``width_px`` in-plane pixels (physical) from the outside (the volume's
    faces count as outside, as in ``binary_erosion``)."""
    from scipy import ndimage as ndi

    dist = ndi.distance_transform_edt(np.pad(mask, 1), sampling=vs)[1:-1, 1:-1, 1:-1]
    return mask & (dist > width_px * vs[1] + 1e-9)


def _shape_watershed(mask: np.ndarray, seed_distance: int, vs: tuple[float, float, float]) -> np.ndarray:
    """Watershed of a 3D mask on its distance transform, in physical units throughout.

    The relief is the distance transform with ``sampling=vs``, smoothed by a Gaussian of one voxel
    along each axis (of one in-plane pixel along an axis sampled finer), so that the jitter of an
    outline from section to section is averaged along z. Seeds are its local maxima (one per
    plateau), kept greedily at least ``seed_distance`` in-plane pixels apart in physical distance,
    the highest first; a component without a seed gets one at its deepest voxel. Basins whose peak
    stands less than one in-plane pixel above the pass to a higher basin are merged into it (the
    h-maxima rule, on the basins' adjacency: fast on large volumes). Both rules are physical: a
    z-elongated object of anisotropic voxels whose width wobbles a little between sections stays one.
    """
    from scipy import ndimage as ndi
    from scipy.spatial import cKDTree
    from skimage import measure, segmentation

    comps = measure.label(mask, connectivity=1)
    distance = ndi.distance_transform_edt(mask, sampling=vs).astype(np.float32)
    smooth = ndi.gaussian_filter(distance, sigma=[max(vs[1] / s, 1.0) for s in vs], mode="constant")
    smooth[~mask] = 0
    r_phys = seed_distance * vs[1]
    size = [2 * max(1, int(np.floor(r_phys / s + 1e-9))) + 1 for s in vs]  # the neighbours at least, z included
    plateaus, n = ndi.label((smooth == ndi.maximum_filter(smooth, size=size, mode="constant")) & mask)  # face-connected
    markers = np.zeros(mask.shape, np.int32)
    if n:
        flat = np.flatnonzero(plateaus)
        _, first = np.unique(plateaus.ravel()[flat], return_index=True)  # one voxel of plateau 1..n (equal heights)
        order = np.argsort(-smooth.ravel()[flat[first]], kind="stable")
        pts = np.column_stack(np.unravel_index(flat[first[order]], mask.shape)) * np.asarray(vs)
        tree = cKDTree(pts)
        dropped = np.zeros(n, bool)
        keep = []
        for i in range(n):
            if not dropped[i]:
                keep.append(i)
                dropped[[j for j in tree.query_ball_point(pts[i], r_phys - 1e-9) if j > i]] = True
        lut = np.zeros(n + 1, np.int32)
        lut[order[keep] + 1] = np.arange(1, len(keep) + 1, dtype=np.int32)
        markers = lut[plateaus]  # a kept plateau seeds as a whole (a z-ridge is one seed)
    n_comps = int(comps.max())
    seeded = np.bincount(comps[markers > 0], minlength=n_comps + 1) > 0
    seeded[0] = True
    if not seeded.all():  # a component without a seed (all suppressed): one at its deepest voxel
        deepest = np.zeros(n_comps + 1, np.float32)
        np.maximum.at(deepest, comps.ravel(), smooth.ravel())
        at = np.flatnonzero(~seeded[comps.ravel()] & (smooth.ravel() == deepest[comps.ravel()]))
        _, first = np.unique(comps.ravel()[at], return_index=True)
        markers.flat[at[first]] = np.arange(1, len(first) + 1, dtype=np.int32) + int(markers.max())
    labels = segmentation.watershed(-smooth, markers, mask=mask).astype(np.int32)
    return _merge_shallow_basins(labels, smooth, vs[1])


def _merge_shallow_basins(labels: np.ndarray, height: np.ndarray, h: float) -> np.ndarray:
    """Merge each basin whose peak is less than ``h`` above its highest pass to a higher basin."""
    n = int(labels.max())
    if n < 2:
        return labels
    top = np.zeros(n + 1)
    np.maximum.at(top, labels.ravel(), height.ravel())
    keys, passes = [], []
    for axis in range(labels.ndim):
        a = labels[(slice(None),) * axis + (slice(None, -1),)]
        b = labels[(slice(None),) * axis + (slice(1, None),)]
        touch = (a != b) & (a > 0) & (b > 0)
        if touch.any():
            la, lb = a[touch].astype(np.int64), b[touch].astype(np.int64)
            ha = height[(slice(None),) * axis + (slice(None, -1),)][touch]
            hb = height[(slice(None),) * axis + (slice(1, None),)][touch]
            keys.append(np.minimum(la, lb) * (n + 1) + np.maximum(la, lb))
            passes.append(np.minimum(ha, hb))
    if not keys:
        return labels
    pairs, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    level = np.full(len(pairs), -np.inf)
    np.maximum.at(level, inverse, np.concatenate(passes))
    parent = np.arange(n + 1)

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for k in np.argsort(-level, kind="stable"):  # highest passes first (a component tree)
        ra, rb = root(int(pairs[k] // (n + 1))), root(int(pairs[k] % (n + 1)))
        if ra != rb and min(top[ra], top[rb]) - level[k] < h:
            low, high = (ra, rb) if top[ra] < top[rb] else (rb, ra)
            parent[low] = high
    lut = np.array([root(i) for i in range(n + 1)], np.int32)
    return lut[labels]


class VolumeSteps(PlaneSteps):
    """The shape steps of :func:`~.postprocess.objects_by_class` in a volume of voxel size ``vs``
    (the module docstring says how each one is done)."""

    def __init__(self, config: PostprocessConfig, vs: tuple[float, float, float], min_volume: float | None = None):
        super().__init__(config)
        self.vs, self.min_volume = vs, min_volume

    @property
    def filters_size(self) -> bool:
        return self.min_volume is not None or bool(self.config.min_size)

    def too_small(self, sizes: np.ndarray) -> np.ndarray:
        if self.min_volume is not None:
            return sizes * float(np.prod(self.vs)) < self.min_volume
        return sizes < self.config.min_size

    def open(self, mask: np.ndarray) -> np.ndarray:
        from scipy import ndimage as ndi

        return ndi.binary_opening(mask, structure=_ellipsoid(self.config.opening, self.vs))

    def fill(self, mask: np.ndarray) -> np.ndarray:
        return _fill_holes_per_plane(mask)

    def erode(self, mask: np.ndarray) -> np.ndarray:
        return _erode(mask, self.config.erosion, self.vs)

    def expand(self, lab: np.ndarray) -> np.ndarray:
        from skimage import segmentation

        return segmentation.expand_labels(lab, distance=self.config.erosion * self.vs[1] * np.sqrt(2), spacing=self.vs)

    def split(self, seeds: np.ndarray) -> np.ndarray:
        from skimage import measure

        if self.config.instances == "components" or not seeds.any():
            return measure.label(seeds, connectivity=1).astype(np.int32)
        return _shape_watershed(seeds, self.config.seed_distance, self.vs)


def postprocess_volume(
    probabilities: np.ndarray,
    config: PostprocessConfig | dict | None = None,
    *,
    voxel_size: float | Sequence[float] | None = None,
    boundary: bool = False,
    distance: bool = False,
    min_volume: float | None = None,
    join: str = "auto",
    stitch_threshold: float = STITCH_IOU,
    **overrides,
) -> PostprocessResult:
    """Turn the (Z, K, Y, X) probabilities of a stack into 3D semantic and instance labels (pure).

    Parameters
    ----------
    probabilities : (Z, K, Y, X) float array, as ``iter_predict`` returns for a (Z, Y, X) stack:
        per-class probabilities (class 1 = background); a boundary model (``boundary=True``) adds a
        last boundary channel, a distance model (``distance=True``) a last distance channel.
    config : :class:`~.postprocess.PostprocessConfig` (or its dict); keyword arguments override
        fields. Lengths (``opening``, ``erosion``, ``seed_distance``) are in in-plane pixels and are
        applied as physical distances (times the y voxel size); ``min_size`` is a voxel count.
    voxel_size : (z, y, x) voxel size (any one unit), or one number (isotropic); None = (1, 1, 1).
    boundary, distance : the probabilities come from a boundary / distance model.
    min_volume : objects smaller than this volume (``voxel_size`` units cubed) are removed;
        overrides ``min_size`` when given.
    join : how objects become 3D. ``"3d"``: the steps above on the whole volume (3D components or
        watershed). ``"stitch"``: each plane is post-processed as :func:`~.postprocess.postprocess`
        does (the settings were tuned on planes), then an object continues the object of the
        plane before that overlaps it most, when their IoU is at least ``stitch_threshold``
        (:func:`stitch_planes`, as cellpose stitches 2D masks): for strongly anisotropic stacks,
        where a thin gap in a membrane of one section would join two cells in 3D. ``"auto"``:
        stitch when the z spacing is :data:`STITCH_ANISOTROPY` times the pixel size or more.

    Returns
    -------
    :class:`~.postprocess.PostprocessResult` with ``semantic`` (Z, Y, X) project labels,
    ``instances`` (Z, Y, X) int32 ids of 3D objects (0 = none) and the class of each object.

    Raises
    ------
    DataError : probabilities not 4D, a bad voxel size, a boundary model without 3 channels.
    ConfigError : a bad setting or ``min_volume``.
    """
    config = as_config(PostprocessConfig, config, overrides)
    probs = _check_probs4(probabilities)
    vs = check_voxel_size(voxel_size) or (1.0, 1.0, 1.0)
    if min_volume is not None and (
        isinstance(min_volume, bool) or not isinstance(min_volume, numbers.Real) or not np.isfinite(min_volume) or min_volume < 0
    ):
        raise ConfigError(f"min_volume must be a volume >= 0 in voxel-size units cubed (got {min_volume!r}), or None to use min_size.")
    if stitches(vs, join):
        res = _stitched(probs, config, stitch_threshold, boundary=boundary, distance=distance)
        if min_volume is not None:
            sizes = np.bincount(res.instances.ravel())
            small = np.flatnonzero(sizes * float(np.prod(vs)) < min_volume)
            drop = np.isin(res.instances, small[small > 0])
            res.instances[drop], res.semantic[drop] = 0, 1
            res.instance_classes = {i: c for i, c in res.instance_classes.items() if i not in set(small.tolist())}
        return res
    cube, relief = split_outputs(np.moveaxis(probs, 1, 0), boundary=boundary, distance=distance)  # (K, Z, Y, X) view
    semantic = np.stack([foreground_semantic(cube[:, z], config.threshold) for z in range(cube.shape[1])])
    return objects_by_class(semantic, max(cube.shape[0], 2), VolumeSteps(config, vs, min_volume), **relief)


def stitches(voxel_size, join: str = "auto") -> bool:
    """Whether objects of a volume of ``voxel_size`` are joined across planes by stitching (``join``
    ``"auto"``: the z spacing is :data:`STITCH_ANISOTROPY` times the pixel size or more)."""
    if join not in JOINS:
        raise ConfigError(f"join must be one of {', '.join(JOINS)} (got {join!r}).")
    vs = check_voxel_size(voxel_size) or (1.0, 1.0, 1.0)
    return join == "stitch" or (join == "auto" and vs[0] >= STITCH_ANISOTROPY * vs[1])


def truth_objects_volume(
    labels, instances=None, *, classes, voxel_size=None, join: str = "auto", stitch_threshold: float = STITCH_IOU
) -> dict:
    """Ground-truth 3D objects per object class of an annotated (Z, Y, X) volume: the stored
    ``instances`` (3D ids) where there are some, else each class's regions joined across planes the
    way :func:`postprocess_volume` joins predicted ones (stitched planes, or 3D components)."""
    from skimage.measure import label

    out = {}
    for c in classes:
        mask = labels == c
        if instances is not None:
            out[c] = np.where(mask, instances, 0).astype(np.int64)
        elif stitches(voxel_size, join):
            out[c] = stitch_planes(np.stack([label(m, connectivity=1) for m in mask]), threshold=stitch_threshold)
        else:
            out[c] = label(mask, connectivity=1)
    return out


def _stitched(probs: np.ndarray, config: PostprocessConfig, threshold: float, **facts) -> PostprocessResult:
    """Plane-by-plane :func:`~.postprocess.postprocess`, objects stitched across planes class by class."""
    planes = [postprocess(p, config, **facts) for p in probs]
    semantic = np.stack([r.semantic for r in planes])
    flat = np.stack([r.instances for r in planes])
    cls = np.zeros(flat.shape, np.int16)
    for z, r in enumerate(planes):
        if r.instance_classes:
            lut = np.zeros(max(r.instance_classes) + 1, np.int16)
            lut[list(r.instance_classes)] = list(r.instance_classes.values())
            cls[z] = lut[r.instances]
    instances = np.zeros(flat.shape, np.int32)
    classes: dict[int, int] = {}
    for c in sorted({c for r in planes for c in r.instance_classes.values()}):
        joined = stitch_planes(np.where(cls == c, flat, 0), threshold=threshold)
        n = int(joined.max())
        offset = len(classes)
        instances[joined > 0] = joined[joined > 0] + offset
        classes.update(dict.fromkeys(range(offset + 1, offset + n + 1), c))
    return PostprocessResult(semantic, instances, classes)


def stitch_planes(instances: np.ndarray, *, threshold: float = STITCH_IOU) -> np.ndarray:
    """Join the 2D objects of a stack's planes into 3D objects (cellpose's stitching, one to one).

    Parameters
    ----------
    instances : (Z, Y, X) int array of object ids per plane (ids of different planes unrelated).
    threshold : an object continues the object of the plane before when their IoU is at least this;
        pairs are taken best first, each object at most once.

    Returns
    -------
    (Z, Y, X) int32 ids 1..N of the 3D objects (an object that skips a plane starts anew).
    """
    from .metrics import iou_matrix

    inst = np.asarray(instances)
    if inst.ndim != 3:
        raise DataError(f"Expected (Z, Y, X) object ids; got shape {inst.shape}.")
    if not 0 < threshold <= 1:
        raise ConfigError(f"stitch_threshold must be in (0, 1] (got {threshold!r}).")
    out = np.zeros(inst.shape, np.int32)
    next_id = 1
    for z in range(inst.shape[0]):
        ids = np.unique(inst[z][inst[z] > 0])
        new: dict[int, int] = {}
        if z and len(ids) and out[z - 1].any():
            iou, prev_ids, cur_ids = iou_matrix(out[z - 1], inst[z])
            pi, ci = np.nonzero(iou >= threshold)
            taken: set[int] = set()
            for k in np.argsort(-iou[pi, ci], kind="stable"):
                p, c = int(prev_ids[pi[k]]), int(cur_ids[ci[k]])
                if p not in taken and c not in new:
                    new[c] = p
                    taken.add(p)
        for i in ids:
            if int(i) not in new:
                new[int(i)] = next_id
                next_id += 1
        lut = np.zeros(int(ids.max()) + 1 if len(ids) else 1, np.int32)
        for i, j in new.items():
            lut[i] = j
        out[z] = lut[inst[z]]
    return out
