"""Volumes and time-lapses imported as one image each, with their voxel size and time axis (ImageJ,
OME-TIFF, OME-Zarr, folders of slices), and the bad inputs that are refused with advice."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from imageio.v3 import imwrite

from napari_seg_box.cli import main as cli
from napari_seg_box.core import DataError, Project, import_images
from napari_seg_box.layers import layer_scale

from ..conftest import isbi

VOXEL = (0.05, 0.004, 0.004)


def _planes(n: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``n`` real ISBI slices (uint8) and their masks (255 = cell), cropped to ``size``."""
    pairs = [isbi(i % 6) for i in range(n)]
    return np.stack([p[0][:size, :size] for p in pairs]), np.stack([p[1][:size, :size] for p in pairs])


@pytest.fixture
def project(tmp_path, shared_data):
    """A project that already holds one image: a refused import must leave exactly that."""
    p = Project.create(tmp_path / "p.zarr", classes=["membrane", "cell"])
    p.add_image("before", _planes(1)[0][0])
    return p


def _unchanged(project: Project) -> None:
    assert Project.open(project.url).image_names() == ["before"]


# ---------------------------------------------------------------------- voxel size from files
def test_imagej_stack_keeps_its_shape_and_voxel_size(project, tmp_path):
    volume, _ = _planes(6)
    meta = {"spacing": 0.05, "unit": "um", "axes": "ZYX"}
    tifffile.imwrite(tmp_path / "vol.tif", volume, imagej=True, resolution=(1 / 0.004, 1 / 0.004), metadata=meta)
    assert import_images(project, tmp_path / "vol.tif") == ["vol"]
    rec = project.image_record("vol")
    assert (rec.axes, rec.shape, rec.is_stack, rec.is_timelapse) == ("zyx", (6, 64, 64), True, False)
    np.testing.assert_allclose(rec.spacing, VOXEL)
    assert rec.unit == "µm" and rec.pixel_size == pytest.approx((0.004, 0.004))
    np.testing.assert_allclose(layer_scale(rec), VOXEL)  # napari shows the volume with its z spacing
    np.testing.assert_array_equal(project.get_image("vol"), volume)
    # a file in nanometres is converted into the project's unit
    meta = {"spacing": 50.0, "unit": "nm", "axes": "ZYX"}
    tifffile.imwrite(tmp_path / "nm.tif", volume, imagej=True, resolution=(1 / 4.0, 1 / 4.0), metadata=meta)
    import_images(project, tmp_path / "nm.tif")
    np.testing.assert_allclose(project.image_record("nm").spacing, VOXEL)


def test_ome_tiff_keeps_its_voxel_size(project, tmp_path):
    volume, _ = _planes(5)
    meta = {"axes": "ZYX", "PhysicalSizeX": 4.0, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 4.0, "PhysicalSizeYUnit": "nm"}
    meta.update(PhysicalSizeZ=0.05, PhysicalSizeZUnit="µm")
    tifffile.imwrite(tmp_path / "vol.ome.tif", volume, ome=True, metadata=meta)
    assert import_images(project, tmp_path / "vol.ome.tif") == ["vol.ome"]
    rec = project.image_record("vol.ome")
    assert rec.axes == "zyx" and rec.shape == (5, 64, 64)
    np.testing.assert_allclose(rec.spacing, VOXEL)


def _ome_zarr(path, data, axes, scale, units):
    import zarr

    root = zarr.open_group(str(path), mode="w")
    named = [{"name": a, "type": {"t": "time", "c": "channel"}.get(a, "space"), **({"unit": units[a]} if a in units else {})} for a in axes]
    transforms = [{"type": "scale", "scale": list(scale)}]
    root.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [{"axes": named, "datasets": [{"path": "0", "coordinateTransformations": transforms}]}],
    }
    root.create_array("0", data=data)


def test_ome_zarr_keeps_its_voxel_size_and_time_axis(project, tmp_path):
    volume, _ = _planes(5)
    units = {"z": "micrometer", "y": "micrometer", "x": "micrometer", "t": "second"}
    _ome_zarr(tmp_path / "vol.ome.zarr", volume[None], "czyx", (1.0, *VOXEL), units)
    _ome_zarr(tmp_path / "movie.ome.zarr", volume, "tyx", (2.5, 0.1, 0.1), units)
    assert import_images(project, [tmp_path / "vol.ome.zarr", tmp_path / "movie.ome.zarr"]) == ["vol.ome", "movie.ome"]
    vol, movie = project.image_record("vol.ome"), project.image_record("movie.ome")
    assert vol.axes == "zyx" and vol.shape == (5, 64, 64)  # the channel axis of length 1 is dropped
    np.testing.assert_allclose(vol.spacing, VOXEL)
    assert (movie.axes, movie.is_timelapse, movie.is_stack) == ("tyx", True, True)
    assert movie.frame_interval == 2.5 and movie.time_unit == "s" and movie.spacing == pytest.approx((0.1, 0.1))
    assert layer_scale(movie) == pytest.approx((1.0, 0.1, 0.1))  # time is no spatial axis: scale 1


def test_given_voxel_or_pixel_size_wins_over_the_file(project, tmp_path):
    volume, _ = _planes(4)
    meta = {"spacing": 0.5, "unit": "um", "axes": "ZYX"}
    tifffile.imwrite(tmp_path / "vol.tif", volume, imagej=True, resolution=(10.0, 10.0), metadata=meta)
    import_images(project, tmp_path / "vol.tif", voxel_size=VOXEL)
    np.testing.assert_allclose(project.image_record("vol").spacing, VOXEL)
    import_images(project, tmp_path / "vol.tif", pixel_size=0.2, prefix="px_")  # (y, x) given, z from the file
    np.testing.assert_allclose(project.image_record("px_vol").spacing, (0.5, 0.2, 0.2))


# ---------------------------------------------------------------------- folders of slices
def test_a_folder_of_slices_is_one_volume_in_natural_order(project, tmp_path):
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells_masks").mkdir()
    _, masks = _planes(5)
    numbers = [1, 2, 3, 9, 10]  # name order would put slice_10 second
    for k, n in enumerate(numbers):
        imwrite(tmp_path / "cells" / f"slice_{n}.png", np.full((64, 64), 10 * (k + 1), np.uint8))
        imwrite(tmp_path / "cells_masks" / f"slice_{n}.png", masks[k])
    assert import_images(project, tmp_path / "cells", tmp_path / "cells_masks", as_volume=True, voxel_size=VOXEL) == ["cells"]
    rec = project.image_record("cells")
    assert (rec.axes, rec.shape, rec.has_labels) == ("zyx", (5, 64, 64), True)
    assert project.get_image("cells")[:, 0, 0].tolist() == [10, 20, 30, 40, 50]
    np.testing.assert_array_equal(project.get_labels("cells"), 1 + (masks > 0))  # mask slices in the same order
    np.testing.assert_allclose(rec.spacing, VOXEL)
    # the command line: a glob of slices read as the frames of a time-lapse
    code = cli(["import", project.url, "--images", str(tmp_path / "cells" / "slice_*.png"), "--volume", "--axes", "tyx", "--prefix", "t_"])
    movie = Project.open(project.url).image_record("t_cells")
    assert code == 0 and movie.is_timelapse and movie.shape == (5, 64, 64)


def test_slices_of_different_shapes_name_the_first_odd_file(project, tmp_path):
    (tmp_path / "vol").mkdir()
    for n in range(1, 12):
        imwrite(tmp_path / "vol" / f"s{n}.png", np.zeros((48 if n in (7, 11) else 64, 64), np.uint8))
    with pytest.raises(DataError, match=r"s7\.png has shape \(48, 64\).*same shape"):
        import_images(project, tmp_path / "vol", as_volume=True)
    _unchanged(project)


# ---------------------------------------------------------------------- time-lapses
def test_time_lapses_from_axes_and_from_imagej_frames(project, tmp_path):
    frames, masks = _planes(4)
    tifffile.imwrite(tmp_path / "plain.tif", frames)
    tifffile.imwrite(tmp_path / "plain_mask.tif", masks)
    import_images(project, tmp_path / "plain.tif", tmp_path / "plain_mask.tif", axes="TYX")
    rec = project.image_record("plain")
    assert (rec.axes, rec.is_timelapse, rec.is_stack, rec.frame_interval) == ("tyx", True, True, None)
    np.testing.assert_array_equal(project.get_labels("plain"), 1 + (masks > 0))  # one mask frame per frame
    tifffile.imwrite(tmp_path / "ij.tif", frames, imagej=True, metadata={"axes": "TYX", "finterval": 30.0})
    import_images(project, tmp_path / "ij.tif")
    ij = project.image_record("ij")
    assert (ij.axes, ij.is_timelapse, ij.frame_interval, ij.time_unit) == ("tyx", True, 30.0, "s")
    assert project.manifest["images"]["ij"]["frame_interval"] == 30.0
    # without names the same array is a volume; channels of a time-lapse go last
    import_images(project, tmp_path / "plain.tif", prefix="z_")
    assert project.image_record("z_plain").axes == "zyx" and not project.image_record("z_plain").is_timelapse
    rgb = np.stack([frames] * 3, axis=1)  # (T, C, Y, X)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb)
    q = Project.create(tmp_path / "rgb.zarr")
    import_images(q, tmp_path / "rgb.tif", axes="tcyx")
    assert (q.image_record("rgb").axes, q.image_record("rgb").shape) == ("tyxc", (4, 64, 64, 3))


def test_a_time_lapse_of_volumes_becomes_one_volume_per_time_point(project, tmp_path):
    planes, masks = _planes(6)
    data, labels = planes.reshape(2, 3, 64, 64), masks.reshape(2, 3, 64, 64)
    tifffile.imwrite(tmp_path / "tz.tif", data, imagej=True, metadata={"axes": "TZYX", "spacing": 0.05, "unit": "um"})
    tifffile.imwrite(tmp_path / "tz_mask.tif", labels)
    assert import_images(project, tmp_path / "tz.tif", tmp_path / "tz_mask.tif") == ["tz_t000", "tz_t001"]
    second = project.image_record("tz_t001")
    assert (second.axes, second.shape, second.source.endswith("[t=1]")) == ("zyx", (3, 64, 64), True)
    np.testing.assert_array_equal(project.get_image("tz_t001"), data[1])
    np.testing.assert_array_equal(project.get_labels("tz_t001"), 1 + (labels[1] > 0))


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", [(0.0, 0.004, 0.004), (-0.05, 0.004, 0.004), (float("nan"), 0.004, 0.004), (0.05, 0.004)])
def test_a_bad_voxel_size_is_refused_and_nothing_imported(project, tmp_path, bad):
    tifffile.imwrite(tmp_path / "vol.tif", _planes(3)[0])
    with pytest.raises(
        DataError, match=r"give the voxel size as three positive numbers \(z, y, x\), e\.g\. --voxel-size 0\.05 0\.004 0\.004"
    ):
        import_images(project, tmp_path / "vol.tif", voxel_size=bad)
    _unchanged(project)


def test_cli_refuses_a_bad_voxel_size(project, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "vol.tif", _planes(3)[0])
    assert cli(["import", project.url, "--images", str(tmp_path / "vol.tif"), "--voxel-size", "0", "0.004", "0.004"]) == 1
    assert "--voxel-size 0.05 0.004 0.004" in capsys.readouterr().err
    _unchanged(project)
    code = cli(["import", project.url, "--images", str(tmp_path / "vol.tif"), "--voxel-size", "0.05", "0.004", "0.004"])
    assert code == 0 and "voxel size 0.05 x 0.004 x 0.004" in capsys.readouterr().out


def test_a_mask_with_another_number_of_slices_is_refused(project, tmp_path):
    planes, masks = _planes(30, size=32)
    tifffile.imwrite(tmp_path / "vol.tif", planes)
    tifffile.imwrite(tmp_path / "vol_mask.tif", masks[:28])
    with pytest.raises(DataError, match="mask has 28 slices, the image 30: give one mask slice per image slice"):
        import_images(project, tmp_path / "vol.tif", tmp_path / "vol_mask.tif")
    _unchanged(project)


def test_an_ambiguous_4d_or_5d_array_asks_for_axes(project, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "four.tif", np.zeros((3, 5, 32, 32), np.uint8))
    tifffile.imwrite(tmp_path / "five.tif", np.zeros((2, 3, 2, 32, 32), np.uint8))
    for name in ("four", "five"):
        with pytest.raises(DataError, match=r"--axes, e\.g\. TZYX .* or ZCYX") as err:
            import_images(project, tmp_path / f"{name}.tif")
        assert 'axes="TZYX"' in str(err.value)  # the Python face says the keyword
    assert cli(["import", project.url, "--images", str(tmp_path / "four.tif")]) == 1
    assert "Add --axes TZYX" in capsys.readouterr().err
    _unchanged(project)
    assert import_images(project, tmp_path / "four.tif", axes="tzyx") == ["four_t000", "four_t001", "four_t002"]  # once named
    assert project.image_record("four_t002").shape == (5, 32, 32)


def test_bad_axes_and_bad_time_lapse_masks_are_refused(project, tmp_path):
    planes, masks = _planes(6)
    tifffile.imwrite(tmp_path / "vol.tif", planes)
    with pytest.raises(DataError, match="name 4 axes but .* has 3"):
        import_images(project, tmp_path / "vol.tif", axes="TZYX")
    with pytest.raises(DataError, match="Cannot read the axes 'QYX'"):
        import_images(project, tmp_path / "vol.tif", axes="QYX")
    tifffile.imwrite(tmp_path / "tz.tif", planes.reshape(2, 3, 64, 64), imagej=True, metadata={"axes": "TZYX"})
    tifffile.imwrite(tmp_path / "tz_mask.tif", masks[:3])  # one volume's mask for two time points
    with pytest.raises(DataError, match="one volume per time point"):
        import_images(project, tmp_path / "tz.tif", tmp_path / "tz_mask.tif")
    _unchanged(project)


def test_a_zarr_group_of_several_arrays_is_not_ome_zarr(project, tmp_path):
    import zarr

    group = zarr.open_group(str(tmp_path / "bare.zarr"), mode="w")
    group.create_array("raw", data=np.zeros((32, 32), np.uint8))
    group.create_array("segmentation", data=np.zeros((32, 32), np.uint8))
    with pytest.raises(DataError, match=r"not OME-Zarr.*several arrays \(raw, segmentation\)"):
        import_images(project, tmp_path / "bare.zarr")
    _unchanged(project)
    zarr.save_array(str(tmp_path / "single.zarr"), np.full((32, 32), 7, np.uint8))  # a bare array stays readable
    assert import_images(project, tmp_path / "single.zarr") == ["single"]
    assert import_images(project, tmp_path / "bare.zarr" / "raw") == ["raw"]  # one array of the group, by its path


def test_store_reads_named_axes(tmp_path):
    p = Project.create(tmp_path / "s.zarr")
    q = Project.create(tmp_path / "two.zarr")
    q.add_image("czyx", np.zeros((2, 5, 32, 32), np.uint8), axes="CZYX", pixel_size=VOXEL)
    assert (q.image_record("czyx").axes, q.image_record("czyx").shape) == ("zyxc", (5, 32, 32, 2))
    np.testing.assert_allclose(q.image_record("czyx").spacing, VOXEL)
    p.add_image("movie", np.zeros((5, 32, 32), np.uint8), axes="tyx", frame_interval=0.5, time_unit="sec")
    movie = p.image_record("movie")
    assert movie.is_timelapse and movie.frame_interval == 0.5 and movie.time_unit == "s"
    with pytest.raises(DataError, match="time-lapse has no z"):
        p.add_image("bad", np.zeros((5, 32, 32), np.uint8), axes="TYX", pixel_size=VOXEL)
    with pytest.raises(DataError, match="time-lapse of volumes"):
        p.add_image("bad", np.zeros((2, 5, 32, 32), np.uint8), axes="TZYX")
