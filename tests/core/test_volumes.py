"""Volumes (Z, Y, X) and time-lapses (T, Y, X): 3D objects in post-processing, measurement and
matching; frame-by-frame measurement of movies. Hand-made shapes with exact answers, and real
serial-section EM (ISBI 2012, 4x4x50 nm voxels)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seg_box.core import ConfigError, DataError
from napari_seg_box.core.metrics import match_instances, object_metrics, pixel_metrics
from napari_seg_box.core.plots import frame_table, plot_over_time
from napari_seg_box.core.postprocess import postprocess
from napari_seg_box.core.quantify import quantify_labels
from napari_seg_box.core.volume import postprocess_volume
from napari_seg_box.core.volume_measure import measure_timelapse, measure_volume
from napari_seg_box.core.voxels import check_voxel_size

from ..conftest import isbi


def probs_from_mask(mask: np.ndarray, p: float = 0.9) -> np.ndarray:
    """(Z, K=2, Y, X) probabilities, as iter_predict gives for a stack."""
    fg = np.where(mask, p, 1 - p).astype(np.float32)
    return np.stack([1 - fg, fg], axis=1)


def ball(shape, centre, radius, voxel_size=(1.0, 1.0, 1.0), semi_axes=None) -> np.ndarray:
    """Voxels of a ball (or an ellipsoid of ``semi_axes``) in physical units."""
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    axes = semi_axes or (radius,) * 3
    return sum((((g - c) * s) / a) ** 2 for g, c, s, a in zip(grids, centre, voxel_size, axes)) <= 1.0


# ---------------------------------------------------------------------- 3D objects
def test_a_blob_over_five_slices_is_one_object_not_five():
    mask = np.zeros((7, 40, 40), bool)
    mask[1:6] = ball((1, 40, 40), (0, 20, 20), 8)[0]  # the same disk on sections 1..5
    probs = probs_from_mask(mask)
    per_plane = sum(postprocess(probs[z], instances="components", min_size=0).n_objects for z in range(7))
    assert per_plane == 5
    for mode in ("components", "watershed"):
        r = postprocess_volume(probs, voxel_size=(12.0, 1.0, 1.0), instances=mode, min_size=0)
        assert r.n_objects == 1, mode
        assert r.instances.shape == mask.shape and r.instances.dtype == np.int32
        assert ((r.instances > 0) == mask).all() and (r.semantic == np.where(mask, 2, 1)).all()
    q = measure_volume(np.where(mask, 2, 1), voxel_size=(12.0, 1.0, 1.0), class_names=["background", "blob"])
    assert len(q.objects) == 1 and q.images.loc[0, "n_objects"] == 1
    row = q.objects.iloc[0]
    assert (row["z_sections"], row["z_first"], row["z_last"], row["z_extent_um"]) == (5, 1, 5, 60.0)
    assert row["volume_vx"] == mask.sum() and row["volume_um3"] == pytest.approx(12.0 * mask.sum())
    assert row["class_name"] == "blob"
    # plane by plane (the 2D measurement) the same blob is five objects
    assert sum(len(quantify_labels(np.where(mask[z], 2, 1)).objects) for z in range(7)) == 5


def test_isbi_cells_are_objects_through_the_sections():
    """Four consecutive EM sections (4x4x50 nm): a cell's profiles in successive sections overlap,
    so 3D objects are far fewer than the profiles counted section by section, and span sections."""
    images, labels = zip(*(isbi(i) for i in range(4)))
    image, cells = np.stack(images), np.stack(labels) > 127
    probs = probs_from_mask(cells)
    settings = dict(instances="components", erosion=3, min_size=300)  # erosion cuts the leaks through thin membranes
    per_section = sum(postprocess(probs[z], **settings).n_objects for z in range(4))
    r = postprocess_volume(probs, voxel_size=(50, 4, 4), join="3d", **settings)
    assert per_section > 150
    assert 10 < r.n_objects < per_section / 3
    # by default (anisotropy 12.5) a cell's profiles are stitched section to section: no leak through a membrane gap
    stitched = postprocess_volume(probs, voxel_size=(50, 4, 4), instances="components", min_size=30)
    per_section = sum(postprocess(probs[z], instances="components", min_size=30).n_objects for z in range(4))
    assert per_section / 3 < stitched.n_objects < per_section / 1.5
    spans = np.array([len(np.unique(np.nonzero(stitched.instances == i)[0])) for i in range(1, stitched.n_objects + 1)])
    assert (spans > 1).mean() > 0.5 and (spans == 4).any()
    q = measure_volume(r.semantic, image, instances=r.instances, voxel_size=(50, 4, 4), unit="nm", class_names=["membrane", "cell"])
    objs = q.objects
    assert len(objs) == r.n_objects and q.images.loc[0, "n_objects"] == r.n_objects
    assert (objs["z_sections"] > 1).mean() > 0.8
    assert objs["z_extent_nm"].max() == 200.0  # 4 sections x 50 nm
    assert (objs["volume_vx"] >= 300).all()
    np.testing.assert_allclose(objs["volume_nm3"], objs["volume_vx"] * 50 * 4 * 4)
    assert q.images.loc[0, "voxel_size"] == "50x4x4 nm"
    # intensities of the real image: cell interiors are brighter than membranes
    assert objs["intensity_mean"].median() > image[~cells].mean()
    one = objs.iloc[0]
    sel = r.instances == one["label"]
    assert one["intensity_mean"] == pytest.approx(image[sel].mean())
    assert one["intensity_integrated"] == pytest.approx(image[sel].astype(float).sum())


def test_ellipsoid_measured_exactly_with_anisotropic_voxels():
    vs, (a, b, c) = (4.0, 1.0, 1.0), (40.0, 25.0, 20.0)  # semi-axes in physical units (z, y, x)
    centre = (14.5, 34.5, 29.5)  # voxel coordinates
    mask = ball((30, 70, 60), centre, None, vs, semi_axes=(a, b, c))
    image = np.full(mask.shape + (2,), 7.0)
    image[..., 1] = 3.0
    q = measure_volume(np.where(mask, 2, 1).astype(np.uint8), image, voxel_size=vs, class_names=["background", "cell"])
    row = q.objects.iloc[0]
    volume = 4 / 3 * np.pi * a * b * c
    p = 1.6075  # Knud-Thomsen's approximation of an ellipsoid's surface (error <= 1.06 %)
    surface = 4 * np.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)
    assert row["volume_um3"] == pytest.approx(volume, rel=0.02)
    assert row["volume_um3"] == row["volume_vx"] * 4.0
    assert row["surface_area_um2"] == pytest.approx(surface, rel=0.03)
    assert row["equivalent_diameter_um"] == pytest.approx(np.cbrt(6 * row["volume_um3"] / np.pi))
    assert row["equivalent_diameter_um"] == pytest.approx(2 * np.cbrt(a * b * c), rel=0.01)
    assert (row["z_sections"], row["z_first"], row["z_last"]) == (20, 5, 24)
    assert row["z_extent_um"] == pytest.approx(2 * a)
    assert (row["centroid_z_um"], row["centroid_y_um"], row["centroid_x_um"]) == pytest.approx((centre[0] * 4.0, centre[1], centre[2]))
    assert (row["bbox_z0"], row["bbox_z1"], row["bbox_y0"], row["bbox_y1"]) == (5, 25, 10, 60)
    assert (row["intensity_mean_c0"], row["intensity_max_c0"], row["intensity_mean_c1"]) == (7.0, 7.0, 3.0)
    assert row["intensity_integrated_c1"] == pytest.approx(3.0 * mask.sum())
    img = q.images.iloc[0]
    assert img["coverage_percent"] == pytest.approx(100 * mask.sum() / mask.size)
    assert img["mean_volume_um3"] == img["total_volume_um3"] == row["volume_um3"]
    assert (img["voxel_size"], img["error"]) == ("4x1x1 µm", None)
    # without a voxel size: voxel units, said in the column names
    bare = measure_volume(np.where(mask, 2, 1), kind="semantic")
    cols = set(bare.objects.columns)
    assert {"volume_vx3", "volume_vx", "surface_area_px2", "equivalent_diameter_px", "z_extent_px", "centroid_z_px"} <= cols
    assert bare.objects.loc[0, "volume_vx3"] == mask.sum() and bare.images.loc[0, "voxel_size"] is None


def test_many_objects_and_huge_ids_in_one_pass():
    vol = np.zeros((8, 120, 120), np.int64)
    ids = []
    for k, (z, y, x) in enumerate(np.ndindex(2, 12, 12)):
        ids.append(2**40 + 7 * k)  # ids far beyond the number of objects
        vol[4 * z : 4 * z + 3, 10 * y + 2 : 10 * y + 7, 10 * x + 2 : 10 * x + 6] = ids[-1]
    q = measure_volume(vol, kind="instances", voxel_size=(2.0, 0.5, 0.5), unit="um", class_names=["cube"])
    objs = q.objects
    assert len(objs) == 288 and sorted(objs["label"]) == ids
    assert (objs["volume_vx"] == 60).all() and np.allclose(objs["volume_um3"], 60 * 0.5)
    assert (objs["z_sections"] == 3).all() and (objs["class_name"] == "cube").all()
    # each a 6 x 2.5 x 2 um box: its surface is read as a smooth one (rounded edges), a little below the box's
    box = 2 * (6 * 2.5 + 6 * 2.0 + 2.5 * 2.0)
    assert objs["surface_area_um2"].between(0.8 * box, 1.0 * box).all()
    assert objs["surface_area_um2"].nunique() == 1  # the same shape measures the same wherever it lies


def test_watershed_splits_touching_balls_but_not_an_object_along_z():
    vs = (4.0, 1.0, 1.0)
    shape = (14, 60, 90)
    two = ball(shape, (6.5, 30, 30), 16, vs) | ball(shape, (6.5, 30, 57), 16, vs)
    comp = postprocess_volume(probs_from_mask(two), voxel_size=vs, instances="components", min_size=0, join="3d")
    ws = postprocess_volume(probs_from_mask(two), voxel_size=vs, instances="watershed", seed_distance=5, min_size=0, join="3d")
    assert comp.n_objects == 1 and ws.n_objects == 2
    assert (ws.instances > 0).sum() == two.sum()  # splitting loses no voxel
    sizes = np.bincount(ws.instances.ravel())[1:]
    assert abs(sizes[0] - sizes[1]) < 0.1 * sizes.mean()
    assert {len(np.unique(np.nonzero(ws.instances == i)[2] >= 44)) for i in (1, 2)} == {1}  # each ball on its own side

    # a column through 16 sections (12x anisotropic, like serial EM) whose width wobbles section to section
    column = np.zeros((20, 60, 60), bool)
    yy, xx = np.mgrid[:60, :60]
    for z in range(2, 18):
        r = 10 + z % 2 + (z % 3 == 0)
        column[z] = (yy - 30) ** 2 + (xx - 30) ** 2 <= r * r
    for voxel in ((12.0, 1.0, 1.0), (4.0, 1.0, 1.0), None):
        for join in ("3d", "auto"):
            assert (
                postprocess_volume(probs_from_mask(column), voxel_size=voxel, instances="watershed", min_size=0, join=join).n_objects == 1
            )
    tall = ball((24, 40, 40), (11.5, 20, 20), None, semi_axes=(11, 7, 7))  # an isotropic ellipsoid, long in z
    assert postprocess_volume(probs_from_mask(tall), instances="watershed", min_size=0).n_objects == 1


def test_boundary_model_splits_along_its_boundaries_in_3d():
    Z, Y, X = 5, 30, 50
    obj = np.zeros((Z, Y, X), bool)
    obj[:, 5:25, 5:45] = True
    edge = np.zeros_like(obj)
    edge[:, 5:25, 24:26] = True  # the boundary the network saw between two touching cells
    p_edge = np.where(edge, 0.8, 0.05)
    p_obj = np.where(obj & ~edge, 0.9, 0.1)
    p_bg = np.clip(1 - p_obj - p_edge, 0, 1)
    probs = np.stack([p_bg, p_obj, p_edge], axis=1).astype(np.float32)  # (Z, 3, Y, X)
    r = postprocess_volume(probs, boundary=True, min_size=0)
    assert r.n_objects == 2 and set(r.instance_classes.values()) == {2}
    for i in (1, 2):
        assert len(np.unique(np.nonzero(r.instances == i)[0])) == Z  # each spans every section
    assert set(np.unique(r.semantic)) == {1, 2}


def test_opening_border_and_min_volume_in_3d():
    vs = (12.0, 1.0, 1.0)
    mask = np.zeros((6, 40, 40), bool)
    mask[2:4, 5:25, 5:25] = True
    mask[2:4, 30, 5:35] = True  # a one-pixel line: gone after an opening of radius 2
    probs = probs_from_mask(mask)
    # with z spacing 12x the in-plane one, the 3D opening is the 2D disk of each plane
    vol = postprocess_volume(probs, voxel_size=vs, instances="none", opening=2, fill_holes=False, min_size=0)
    planes = np.stack([postprocess(probs[z], instances="none", opening=2, fill_holes=False, min_size=0).semantic for z in range(6)])
    np.testing.assert_array_equal(vol.semantic, planes)
    assert (vol.semantic[2:4, 30, 5:35] == 1).all()
    # isotropic: the same two-section plate is thinner than a ball of radius 2 and is opened away
    assert (postprocess_volume(probs, instances="none", opening=2, fill_holes=False, min_size=0).semantic == 1).all()

    cubes = np.zeros((10, 30, 30), bool)
    cubes[0:3, 2:7, 2:7] = True  # touches the top face only (z = 0): 75 voxels
    cubes[4:7, 10:20, 10:20] = True  # inside: 300 voxels
    probs = probs_from_mask(cubes)
    r = postprocess_volume(probs, instances="components", min_size=0, remove_border=True)
    assert r.n_objects == 1 and (r.instances[4:7, 10:20, 10:20] > 0).all() and not r.instances[0:3].any()
    assert (r.semantic[0:3, 2:7, 2:7] == 1).all()
    vs2 = (2.0, 1.0, 1.0)  # 75 voxels = 150, 300 voxels = 600 cubic units
    assert postprocess_volume(probs, voxel_size=vs2, instances="components", min_size=0, min_volume=200).n_objects == 1
    assert postprocess_volume(probs, voxel_size=vs2, instances="components", min_size=500, min_volume=100).n_objects == 2
    assert postprocess_volume(probs, voxel_size=vs2, instances="components", min_size=100).n_objects == 1  # min_size: voxels
    with pytest.raises(ConfigError, match="min_volume"):
        postprocess_volume(probs, min_volume=-1)


@pytest.mark.parametrize("bad", [0, -1.0, (0.05, 0.004), (1, 1, 1, 1), (0.05, 0, 0.004), (np.nan, 1, 1), (1, -2, 1), "4"])
def test_bad_voxel_sizes_say_what_to_give(bad):
    labels = np.ones((3, 10, 10), np.uint8)
    labels[1, 3:6, 3:6] = 2
    for call in (
        lambda: postprocess_volume(probs_from_mask(labels == 2), voxel_size=bad),
        lambda: measure_volume(labels, voxel_size=bad),
        lambda: check_voxel_size(bad),
    ):
        with pytest.raises(DataError, match=r"give the voxel size as three positive numbers \(z, y, x\)"):
            call()


def test_wrong_shapes_are_refused_with_what_to_do():
    with pytest.raises(DataError, match="one plane: use postprocess"):
        postprocess_volume(np.zeros((2, 10, 10), np.float32))
    with pytest.raises(DataError, match=r"\(Z, Y, X\)"):
        measure_volume(np.ones((10, 10), np.uint8))
    with pytest.raises(DataError, match="differ in size"):
        measure_volume(np.ones((2, 10, 10), np.uint8), np.zeros((2, 10, 9)))
    assert check_voxel_size(None) is None and check_voxel_size(2) == (2.0, 2.0, 2.0)


def test_object_metrics_match_3d_objects():
    truth = np.zeros((6, 20, 20), np.int32)
    truth[1:5, 2:8, 2:8] = 1
    truth[0:3, 10:15, 10:15] = 7
    pred = np.zeros_like(truth)
    pred[1:5, 2:8, 2:9] = 3  # IoU 6/7 with object 1
    m = match_instances(truth, pred)[0.5]
    assert (m["tp"], m["fp"], m["fn"]) == (1, 0, 1)
    assert m["mean_matched_iou"] == pytest.approx(6 / 7)
    # the same object labelled section by section is four objects, each a quarter of it: no match
    per_section = np.zeros_like(truth)
    for z in range(1, 5):
        per_section[z][truth[z] == 1] = z
    s = match_instances(np.where(truth == 1, 1, 0), per_section)[0.5]
    assert (s["tp"], s["fp"], s["fn"], s["n_pred"]) == (0, 4, 1, 4)
    assert object_metrics(truth, truth)["f1@0.9"] == 1.0
    px = pixel_metrics(np.where(truth > 0, 2, 1), np.where(pred > 0, 2, 1), 2)
    assert px["per_class"]["class 2"]["iou"] == pytest.approx((truth == 1).sum() / ((truth > 0) | (pred > 0)).sum())


# ---------------------------------------------------------------------- time-lapses
def test_timelapse_is_measured_frame_by_frame(tmp_path):
    movie = np.ones((4, 40, 40), np.uint8)
    movie[:, 5:10, 5:10] = 2  # a cell that stays in place in every frame
    movie[1:, 20:26, 20:26] = 2  # a second cell appears at frame 1
    movie[2, 30:35, 5:8] = 3  # a dot in frame 2 only
    image = np.zeros((4, 40, 40), np.uint16)
    image[:, 5:10, 5:10] = np.arange(1, 5)[:, None, None] * 10  # brighter over time
    q = measure_timelapse(movie, image, pixel_size=0.5, class_names=["background", "cell", "dot"], frame_interval=30, time_unit="s")
    objs = q.objects
    assert {"frame", "time_s"} <= set(objs.columns) and {"frame", "time_s"} <= set(q.images.columns)
    # the cell that stays put is counted in each of the 4 frames, never joined across them
    still = objs[(objs["class"] == 2) & (objs["area_px"] == 25)].sort_values("frame")
    assert list(still["frame"]) == [0, 1, 2, 3] and list(still["time_s"]) == [0.0, 30.0, 60.0, 90.0]
    assert list(still["intensity_mean"]) == [10.0, 20.0, 30.0, 40.0]
    assert list(still["image"]) == [f"movie[t={t}]" for t in range(4)]
    table = frame_table(q)
    cells = table[table["class_name"] == "cell"]
    dots = table[table["class_name"] == "dot"]
    assert list(cells["count"]) == [1, 2, 2, 2] and list(dots["count"]) == [0, 0, 1, 0]
    assert list(cells["coverage_percent"]) == pytest.approx([100 * 25 / 1600] + [100 * 61 / 1600] * 3)
    assert cells["mean_area_um2"].tolist() == pytest.approx([6.25, 7.625, 7.625, 7.625])
    assert dots["mean_area_um2"].isna().tolist() == [True, True, False, True]
    assert list(table["time_s"].unique()) == [0.0, 30.0, 60.0, 90.0]
    path = plot_over_time(table, tmp_path / "plots" / "over_time.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # without an interval: frames only; a bad interval or a 2D image says what to give
    assert "time_s" not in measure_timelapse(movie).images.columns
    with pytest.raises(DataError, match="frame_interval"):
        measure_timelapse(movie, frame_interval=0)
    with pytest.raises(DataError, match=r"\(T, Y, X\)"):
        measure_timelapse(movie[0])
    with pytest.raises(DataError, match="measure_timelapse"):
        frame_table(quantify_labels(movie[0]))


def test_stitching_joins_overlapping_profiles_one_to_one():
    """Two objects drifting across sections stay two; one that skips a section starts anew; a
    profile overlapping two of the section before continues only the better one."""
    from napari_seg_box.core.volume import stitch_planes

    planes = np.zeros((4, 20, 40), np.int32)
    planes[0, 2:10, 2:12], planes[0, 2:10, 20:30] = 5, 9  # ids of a plane are its own
    planes[1, 3:11, 3:13], planes[1, 3:11, 21:31] = 1, 2  # both move by one pixel
    planes[2, 3:11, 4:30] = 7  # one profile over both: it continues the better match only
    planes[3, 12:18, 2:10] = 3  # elsewhere: a new object
    out = stitch_planes(planes)
    assert out[0, 5, 5] == out[1, 5, 5] and out[0, 5, 25] == out[1, 5, 25] and out[1, 5, 5] != out[1, 5, 25]
    assert out[2, 5, 10] in (out[1, 5, 5], out[1, 5, 25])
    assert out[3, 15, 5] not in (out[0, 5, 5], out[0, 5, 25])
    assert len(np.unique(out[out > 0])) == 3
    with pytest.raises(ConfigError, match="stitch_threshold"):
        stitch_planes(planes, threshold=0)


def test_quantify_measures_volumes_in_3d_from_files_and_the_store(tmp_path, capsys):
    """`quantify --voxel-size` measures a stack of label files in 3D; a store volume is measured in 3D
    with its own voxel size; without either, a stack of files stays plane by plane."""
    import pandas as pd
    import tifffile

    from napari_seg_box.cli import main
    from napari_seg_box.core import Project
    from napari_seg_box.core.quantify_batch import quantify_batch

    vs = (2.0, 1.0, 1.0)
    shape = (10, 40, 60)
    inst = ball(shape, (4.5, 20, 15), 8, vs).astype(np.uint16) + 2 * ball(shape, (4.5, 20, 42), 8, vs).astype(np.uint16)
    tifffile.imwrite(tmp_path / "cells.tif", inst)
    assert main(["quantify", str(tmp_path / "cells.tif"), "--voxel-size", "2", "1", "1", "--out", str(tmp_path / "q"), "--no-plots"]) == 0
    objs = pd.read_csv(tmp_path / "q" / "objects.csv")
    assert len(objs) == 2 and (objs["z_sections"] > 1).all()
    np.testing.assert_allclose(objs["volume_um3"], objs["volume_vx"] * 2.0)
    per_plane = quantify_batch(str(tmp_path / "cells.tif"))
    assert len(per_plane.objects) > 2 and "area_px2" in per_plane.objects  # no voxel size: plane by plane, as before
    project = Project.create(tmp_path / "p.zarr", classes=["background", "cell"])
    project.add_image("vol", np.zeros(shape, np.uint8), labels=(1 + (inst > 0)).astype(np.uint8), stack=True, pixel_size=vs)
    q = quantify_batch(project=project)
    assert len(q.objects) == 2 and q.objects["volume_um3"].sum() == pytest.approx((inst > 0).sum() * 2.0)
