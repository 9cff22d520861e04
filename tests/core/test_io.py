"""Import of folders, PyJAMAS layouts, multipage TIFF stacks and OME-Zarr; mask kinds; export; bad files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from imageio.v3 import imwrite

from napari_seg_box.cli import main as cli
from napari_seg_box.core import DataError, Project, export_annotations, find_pairs, import_images, interpret_mask

from ..conftest import isbi, nuclei


@pytest.fixture
def em_folders(tmp_path, shared_data):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in (0, 1, 2):
        image, mask = isbi(i)
        imwrite(tmp_path / "images" / f"em{i}.png", image)
        imwrite(tmp_path / "masks" / f"em{i}_mask.png", mask)
    imwrite(tmp_path / "images" / "unlabelled.png", isbi(3)[0])
    return tmp_path


def test_interpret_mask_kinds():
    binary = np.array([[0, 255], [255, 0]], np.uint8)
    labels, inst = interpret_mask(binary)
    assert labels.tolist() == [[1, 2], [2, 1]] and inst is None
    instances = np.array([[0, 7], [183, 183]], np.uint16)
    labels, inst = interpret_mask(instances)
    assert labels.tolist() == [[1, 2], [2, 2]] and inst.tolist() == [[0, 7], [183, 183]]
    classes = np.array([[0, 1], [2, 2]], np.uint8)
    labels, _ = interpret_mask(classes, n_classes=3)
    assert labels.tolist() == [[1, 2], [3, 3]]
    labels, _ = interpret_mask(classes, kind="labels", n_classes=3)
    assert labels.tolist() == classes.tolist()
    with pytest.raises(DataError, match="do not fit"):
        interpret_mask(np.array([[0, 5]]), kind="classes", n_classes=3)
    with pytest.raises(DataError, match="whole numbers"):
        interpret_mask(np.array([[0.5, 1.0]]))
    with pytest.raises(DataError, match="Unknown mask kind"):
        interpret_mask(binary, kind="magic")


def test_import_flat_folders_matches_names(em_folders):
    pairs = find_pairs(em_folders / "images", em_folders / "masks")
    assert {p.name: bool(p.mask) for p in pairs} == {"em0": True, "em1": True, "em2": True, "unlabelled": False}
    p = Project.create(em_folders / "p.zarr", classes=["membrane", "cell"])
    names = import_images(p, em_folders / "images", em_folders / "masks", split="validation")
    assert sorted(names) == ["em0", "em1", "em2", "unlabelled"]
    image, mask = isbi(1)
    np.testing.assert_array_equal(p.get_image("em1"), image)
    np.testing.assert_array_equal(p.get_labels("em1"), 1 + (mask == 255))
    assert p.get_labels("unlabelled") is None
    assert {r.split for r in p.images()} == {"validation"}


def test_the_layouts_people_keep_masks_in_are_found_without_a_masks_folder(em_folders, tmp_path):
    """Issue 20, point 2: ``images/`` + ``masks/`` under one parent, and masks beside their images, are
    found from the parent folder alone; a folder to predict or measure leaves such masks out."""
    from napari_seg_box.core.io import image_inputs

    parent = {p.name: p.mask for p in find_pairs(em_folders)}
    assert {n: bool(m) for n, m in parent.items()} == {"em0": True, "em1": True, "em2": True, "unlabelled": False}
    beside = tmp_path / "beside"
    beside.mkdir()
    for i in (0, 1):
        image, mask = isbi(i)
        imwrite(beside / f"cells_0{i}.png", image)
        imwrite(beside / f"cells_0{i}_mask.png", mask)
    pairs = find_pairs(beside)
    assert [(p.name, p.mask.endswith(f"{p.name}_mask.png")) for p in pairs] == [("cells_00", True), ("cells_01", True)]
    assert [p.rsplit("/", 1)[1] for p in image_inputs(beside)] == ["cells_00.png", "cells_01.png"]
    assert len(image_inputs(str(beside / "*_mask.png"))) == 2  # asked for by name, a mask is an image


def test_import_pyjamas_layout_and_instance_masks(tmp_path, shared_data):
    image, mask = nuclei()
    for i, (y, x) in enumerate([(0, 0), (256, 256)]):
        (tmp_path / "root" / f"sample{i}" / "image").mkdir(parents=True)
        (tmp_path / "root" / f"sample{i}" / "mask").mkdir(parents=True)
        tifffile.imwrite(tmp_path / "root" / f"sample{i}" / "image" / "img.tif", image[y : y + 256, x : x + 256])
        tifffile.imwrite(tmp_path / "root" / f"sample{i}" / "mask" / "img.tif", mask[y : y + 256, x : x + 256])
    p = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus"])
    assert import_images(p, tmp_path / "root") == ["sample0", "sample1"]
    np.testing.assert_array_equal(p.get_instances("sample1"), mask[256:, 256:])
    np.testing.assert_array_equal(p.get_labels("sample0"), 1 + (mask[:256, :256] > 0))


def test_import_multipage_tiff_stack(tmp_path, shared_data):
    stack = np.stack([isbi(i)[0] for i in range(5)])
    masks = np.stack([isbi(i)[1] for i in range(5)])
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    tifffile.imwrite(tmp_path / "stack_labels.tif", masks)
    p = Project.create(tmp_path / "p.zarr")
    names = import_images(p, tmp_path / "stack.tif", tmp_path / "stack_labels.tif")
    assert names == ["stack"]  # one image, a stack of 5 planes (not 5 images)
    assert (p.image_record("stack").axes, p.image_record("stack").shape) == ("zyx", (5, 512, 512))
    np.testing.assert_array_equal(p.get_image("stack")[3], stack[3])
    np.testing.assert_array_equal(p.get_labels("stack")[4], 1 + (masks[4] > 0))
    # the same stack as 3 planes of one project image, and a 3-plane image as channels when asked
    q = Project.create(tmp_path / "q.zarr")
    tifffile.imwrite(tmp_path / "three.tif", stack[:3])
    assert import_images(q, tmp_path / "three.tif", stack=True) == ["three"]
    assert q.image_record("three").axes == "zyx"
    r = Project.create(tmp_path / "r.zarr")
    import_images(r, tmp_path / "three.tif")
    assert (r.image_record("three").axes, r.image_record("three").channels) == ("yxc", 3)


def test_import_ome_zarr_with_labels(tmp_path, shared_data):
    import zarr

    image, mask = nuclei()
    root = zarr.open_group(str(tmp_path / "nuclei.ome.zarr"), mode="w")
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [{"path": "0"}]}]}
    root.create_array("0", data=image[None])
    labels = root.create_group("labels")
    labels.attrs["ome"] = {"version": "0.5", "labels": ["nuclei"]}
    lg = labels.create_group("nuclei")
    lg.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes[1:], "datasets": [{"path": "0"}]}]}
    lg.create_array("0", data=mask)
    from napari_seg_box.core import read_ome_zarr

    img, lab = read_ome_zarr(str(tmp_path / "nuclei.ome.zarr"))
    assert img.shape == (512, 512) and lab.shape == (512, 512)
    np.testing.assert_array_equal(lab, mask)


def test_export_annotations_round_trip(em_folders):
    p = Project.create(em_folders / "p.zarr", classes=["membrane", "cell"])
    import_images(p, em_folders / "images", em_folders / "masks")
    written = export_annotations(p, em_folders / "out")
    assert sorted(w.rsplit("/", 1)[-1] for w in written) == ["em0.tif", "em1.tif", "em2.tif"]
    np.testing.assert_array_equal(tifffile.imread(em_folders / "out" / "em2.tif"), p.get_labels("em2"))


def test_bad_files_leave_project_unchanged(em_folders):
    p = Project.create(em_folders / "p.zarr", classes=["membrane", "cell"])
    (em_folders / "images" / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match="Cannot read"):
        import_images(p, em_folders / "images", em_folders / "masks")
    assert p.image_names() == [], "nothing is written when one file is bad"
    with pytest.raises(DataError, match="Nothing found"):
        import_images(p, em_folders / "nope")
    (em_folders / "masks2").mkdir()
    imwrite(em_folders / "masks2" / "zzz.png", isbi(0)[1])
    with pytest.raises(DataError, match="match no image"):
        find_pairs(em_folders / "images", em_folders / "masks2")
    imwrite(em_folders / "small_mask.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match="shape"):
        import_images(p, em_folders / "images" / "em0.png", em_folders / "small_mask.png")
    assert p.image_names() == []


def test_cli_init_import_info_split_export(em_folders, capsys):
    store = str(em_folders / "cli.zarr")
    assert cli(["init", store, "--classes", "membrane,cell", "--pixel-size", "0.004"]) == 0
    assert cli(["import", store, "--images", str(em_folders / "images"), "--masks", str(em_folders / "masks")]) == 0
    assert cli(["split", store, "test", "em2"]) == 0
    capsys.readouterr()
    assert cli(["info", store]) == 0
    out = capsys.readouterr().out
    assert "Images: 4 (train 3, validation 0, test 1)" in out
    assert "0.004 x 0.004" in out and "1 = membrane" in out
    assert cli(["info", store, "--json"]) == 0
    import json

    summary = json.loads(capsys.readouterr().out)
    image, mask = isbi(0)
    assert summary["annotated_pixels_per_class"]["cell"] == sum(int((isbi(i)[1] == 255).sum()) for i in range(3))
    assert cli(["export", store, "--out", str(em_folders / "exported")]) == 0
    assert (em_folders / "exported" / "em0.tif").exists()
    # errors: one line, exit code 1, no traceback
    assert cli(["info", str(em_folders / "missing.zarr")]) == 1
    assert "No napari-seg-box project store" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["init", "import", "info", "split", "export"])
def test_cli_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli([command, "--help"])
    assert exit_info.value.code == 0
    assert "STORE" in capsys.readouterr().out
