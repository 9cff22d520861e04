"""Project store: round trips, splits, revisions, model versions, and every bad input of the Foundation issue."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_seg_box.core import DataError, Project, StoreError
from napari_seg_box.core.store import FORMAT_VERSION, MANIFEST

from ..conftest import isbi, nuclei


@pytest.fixture
def project(tmp_path):
    return Project.create(tmp_path / "p.zarr", classes=["membrane", "cell"], pixel_size=0.004, unit="µm")


def test_round_trip_images_labels_splits_metadata(tmp_path, shared_data):
    image, mask = isbi(0)
    p = Project.create(tmp_path / "p.zarr", classes=["membrane", "cell"], pixel_size=(0.004, 0.004))
    labels = (1 + (mask > 0)).astype(np.uint8)
    labels[:100] = 0  # sparse: unlabelled rows
    p.add_image("slice0", image, labels=labels, split="train", source="isbi/0.png")
    nimg, ninst = nuclei()
    p2 = Project.create(tmp_path / "n.zarr", classes=["background", "nucleus"])
    p2.add_image("nuclei", nimg, labels=1 + (ninst > 0), instances=ninst, split="test")

    q = Project.open(tmp_path / "p.zarr")
    assert q.class_names == ["membrane", "cell"]
    assert [c.value for c in q.classes] == [1, 2]
    assert q.pixel_size == (0.004, 0.004)
    np.testing.assert_array_equal(q.get_image("slice0"), image)
    np.testing.assert_array_equal(q.get_labels("slice0"), labels)
    rec = q.image_record("slice0")
    assert (rec.split, rec.shape, rec.dtype, rec.channels, rec.source) == ("train", (512, 512), "uint8", 1, "isbi/0.png")
    stats = q.annotation_stats("slice0")
    assert stats.tolist() == [int((labels == 1).sum()), int((labels == 2).sum())]

    q2 = Project.open(tmp_path / "n.zarr")
    assert q2.get_image("nuclei").dtype == np.uint16
    np.testing.assert_array_equal(q2.get_instances("nuclei"), ninst)
    assert len(np.unique(q2.get_instances("nuclei"))) - 1 == 125
    assert q2.image_names("test") == ["nuclei"] and q2.image_names("train") == []

    q.set_split("slice0", "validation")
    assert Project.open(tmp_path / "p.zarr").image_record("slice0").split == "validation"


def test_labels_revisions_replace_old_arrays(project, shared_data):
    image, mask = isbi(1)
    project.add_image("a", image)
    assert project.get_labels("a") is None
    first = np.ones(image.shape, np.uint8)
    project.set_labels("a", first)
    rev1 = project.manifest["images"]["a"]["labels"]
    second = (1 + (mask > 0)).astype(np.uint8)
    project.set_labels("a", second)
    rev2 = project.manifest["images"]["a"]["labels"]
    assert rev1 != rev2
    assert not project.exists(rev1), "the old revision is removed once the new one is current"
    np.testing.assert_array_equal(Project.open(project.url).get_labels("a"), second)
    project.set_labels("a", None)
    assert project.get_labels("a") is None and not project.exists(rev2)


def test_stack_is_one_image_and_multichannel_is_channel_last(tmp_path):
    rng = np.random.default_rng(0)
    p = Project.create(tmp_path / "s.zarr")
    stack = rng.integers(0, 255, (6, 64, 64), dtype=np.uint8)
    labels = np.zeros((6, 64, 64), np.uint8)
    labels[2, :10] = 2  # a few annotated planes, the rest unlabelled
    labels[4, :, :5] = 1
    assert p.add_image("stack", stack, labels=labels, pixel_size=(0.5, 0.1, 0.1)) == "stack"
    rec = p.image_record("stack")
    assert (rec.axes, rec.shape, rec.spatial_shape, rec.spacing, rec.pixel_size) == (
        "zyx",
        (6, 64, 64),
        (6, 64, 64),
        (0.5, 0.1, 0.1),
        (0.1, 0.1),
    )
    np.testing.assert_array_equal(p.get_image("stack"), stack)
    assert p.annotation_stats("stack").tolist() == [320, 640]
    from napari_seg_box.core.store import iter_annotated_planes

    planes = list(iter_annotated_planes(p))
    assert [pl.name for pl in planes] == ["stack[z=2]", "stack[z=4]"]  # unannotated planes are not training data
    np.testing.assert_array_equal(planes[0].pixels, stack[2])
    q = Project.create(tmp_path / "c.zarr")
    q.add_image("two", rng.random((2, 64, 48)).astype(np.float32))  # channel-first in, channel-last stored
    assert q.image_record("two").shape == (64, 48, 2) and q.image_record("two").channels == 2
    q.add_image("three", rng.random((64, 48, 2)).astype(np.float32))
    with pytest.raises(DataError, match="channel"):
        q.add_image("gray", rng.random((64, 48)).astype(np.float32))


def tiny_version(project, val_iou: float):
    from napari_seg_box.core.models import ModelSpec
    from napari_seg_box.core.versions import ModelVersion, Training

    spec = ModelSpec("resnet18", 1, 2, 3, (32, 16, 8))
    return ModelVersion(spec, tuple(project.class_names), training=Training(best={"epoch": 1, "val_iou": val_iou}))


def test_model_versions_checksum_and_order(project):
    assert project.new_version_id() == "v001"
    first = project.save_model_version(b"weights-one", tiny_version(project, 0.7))
    second = project.save_model_version(b"weights-two", tiny_version(project, 0.5))
    assert (first.version, second.version) == ("v001", "v002") and second.created and len(second.weights_sha256) == 64
    assert [e.version for e in project.model_versions()] == ["v001", "v002"]
    assert project.resolve_version(None) == "v002" and project.resolve_version("best") == "v001"
    assert project.model_weights("v001") == b"weights-one"
    assert Project.open(project.url).model_version("v002") == second  # what was saved is what is read
    project.write_bytes("models/v001/weights.safetensors", b"tampered")
    with pytest.raises(StoreError, match="damaged"):
        project.model_weights("v001")
    with pytest.raises(StoreError, match="No model version 'v9'"):
        project.model_version("v9")
    with pytest.raises(StoreError, match="takes a ModelVersion"):
        project.save_model_version(b"other", {"encoder": "resnet18"})


def test_set_classes_keeps_used_classes(project, shared_data):
    image, mask = isbi(2)
    project.add_image("a", image, labels=1 + (mask > 0))
    project.set_classes(["membrane", "cell", "mitochondrion"], colors=["#000001", "#000002", "#ff0000"])
    assert project.n_classes == 3 and project.classes[2].color == "#ff0000"
    with pytest.raises(DataError, match="Annotations use class 2"):
        project.set_classes(["membrane"])
    assert Project.open(project.url).n_classes == 3


# ---------------------------------------------------------------------- bad input: one test each
def test_create_refuses_non_empty_folder_and_existing_project(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    with pytest.raises(StoreError, match="not empty"):
        Project.create(tmp_path / "data")
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep me"
    Project.create(tmp_path / "p.zarr")
    with pytest.raises(StoreError, match="already exists"):
        Project.create(tmp_path / "p.zarr")
    assert Project.create(tmp_path / "p.zarr", exist_ok=True).n_classes == 2


def test_open_non_project_and_other_zarr(tmp_path):
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").create_array("x", shape=(4,), dtype="u1")
    assert not Project.is_project(tmp_path / "other.zarr")
    with pytest.raises(StoreError, match="No napari-seg-box project store"):
        Project.open(tmp_path / "other.zarr")
    with pytest.raises(StoreError, match=r"Create one with Project\.create") as err:
        Project.open(tmp_path / "missing")
    assert "napari-seg-box init" in err.value.for_face("cli") and "New project…" in err.value.for_face("gui")


def test_shape_mismatch_is_refused_and_nothing_changes(project, shared_data):
    image, mask = isbi(3)
    project.add_image("a", image, labels=1 + (mask > 0))
    before = project.get_labels("a")
    with pytest.raises(DataError, match="do not match"):
        project.set_labels("a", np.ones((100, 100), np.uint8))
    with pytest.raises(DataError, match="do not match"):
        project.add_image("b", image, labels=np.ones((10, 10), np.uint8))
    np.testing.assert_array_equal(project.get_labels("a"), before)
    assert project.image_names() == ["a"]


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.full((64, 64), 0.5), "whole numbers"),
        (np.full((64, 64), -1), "values -1"),
        (np.full((64, 64), 3), "project has 2 classes"),
    ],
)
def test_float_negative_and_out_of_range_labels(project, labels, match):
    project.add_image("a", np.zeros((64, 64), np.uint8))
    with pytest.raises(DataError, match=match):
        project.set_labels("a", labels)
    assert project.get_labels("a") is None


def test_mixing_rgb_and_grayscale_is_refused(project):
    project.add_image("gray", np.zeros((64, 64), np.uint8))
    with pytest.raises(DataError, match="channel"):
        project.add_image("rgb", np.zeros((64, 64, 3), np.uint8))
    assert project.image_names() == ["gray"]


def test_newer_format_version_is_refused(project):
    manifest = json.loads(project.read_bytes(MANIFEST))
    manifest["format_version"] = FORMAT_VERSION + 1
    project.write_json(MANIFEST, manifest)
    with pytest.raises(StoreError, match="newer than this napari-seg-box"):
        Project.open(project.url)


def test_paths_cannot_escape_the_store(project, tmp_path):
    with pytest.raises(StoreError, match="leaves the project store"):
        project.write_bytes("../escaped.txt", b"x")
    with pytest.raises(StoreError, match="leaves the project store"):
        project.read_bytes("images/../../escaped.txt")
    assert not (tmp_path / "escaped.txt").exists()
    # image names are free text but never paths: they name output files
    for bad in ("../../evil name", "/abs", "a/b", "", " padded", "a\nb", ".."):
        with pytest.raises(DataError, match="name"):
            project.add_image(bad, np.zeros((32, 32), np.uint8))
    assert project.image_names() == []
    project.add_image("nuclei (DAPI) #1 – µm", np.zeros((32, 32), np.uint8))
    assert project.image_names() == ["nuclei (DAPI) #1 – µm"]


def test_unknown_image_and_split(project):
    with pytest.raises(StoreError, match="No image named 'nope'"):
        project.get_image("nope")
    project.add_image("a", np.zeros((32, 32), np.uint8))
    with pytest.raises(DataError, match="Unknown split"):
        project.set_split("a", "holdout")
    with pytest.raises(StoreError, match="already in the project"):
        project.add_image("a", np.zeros((32, 32), np.uint8))


def test_bad_images(project):
    with pytest.raises(DataError, match="too small"):
        project.add_image("tiny", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="channel_axis"):
        project.add_image("odd", np.zeros((10, 64, 64, 20), np.uint8))
    with pytest.raises(DataError, match="numbers"):
        project.add_image("text", np.array([["a"] * 16] * 16))
    assert project.image_names() == []


def test_pixel_size_of_a_stack_given_as_y_x_is_kept(tmp_path):
    p = Project.create(tmp_path / "s.zarr", pixel_size=0.2)
    p.add_image("stack", np.zeros((6, 32, 32), np.uint8), pixel_size=(0.1, 0.1))
    rec = p.image_record("stack")
    assert rec.pixel_size == (0.1, 0.1) and rec.spacing == (0.1, 0.1)  # z unknown, (y, x) kept
    from napari_seg_box.layers import layer_scale

    assert layer_scale(rec) == (1.0, 0.1, 0.1)
    p.add_image("plane", np.zeros((32, 32), np.uint8))
    assert p.image_record("plane").pixel_size == (0.2, 0.2) and layer_scale(p.image_record("plane")) == (0.2, 0.2)
    with pytest.raises(DataError, match=r"\(z, y, x\)"):
        p.add_image("bad", np.zeros((6, 32, 32), np.uint8), pixel_size=(0.1, 0.1, 0.1, 0.1))


def test_split_into_tiles_keeps_every_pixel_and_holds_part_out(project, shared_data):
    """One large annotated image cut into tiles: the tiles together are the image and its
    annotation, the last is held out for testing, and the image goes only once every tile is saved."""
    image, mask = isbi(0)
    labels = np.where(mask > 0, 2, 1).astype(np.uint8)
    labels[:10] = 0  # part unpainted
    project.add_image("slice", image, labels=labels, split="train")
    project.set_unpainted_background("slice")
    names = project.split_into_tiles("slice", 2, 2)
    assert names == ["slice tile 1-1", "slice tile 1-2", "slice tile 2-1", "slice tile 2-2"]
    assert [project.image_record(n).split for n in names] == ["train", "train", "validation", "test"]
    assert "slice" not in project.image_names()
    assert all(project.image_record(n).unpainted_background for n in names)
    rows = [np.hstack([project.get_image(names[2 * r + c]) for c in range(2)]) for r in range(2)]
    np.testing.assert_array_equal(np.vstack(rows), image)
    rows = [np.hstack([project.get_labels(names[2 * r + c]) for c in range(2)]) for r in range(2)]
    np.testing.assert_array_equal(np.vstack(rows), labels)
    assert project.image_record(names[3]).source == "slice[256:512, 256:512]"

    with pytest.raises(DataError, match="exist already"):  # tiles of a tile would be fine, tiles twice are not
        project.add_image("slice", image)
        project.split_into_tiles("slice", 2, 2)
    assert "slice" in project.image_names() and len(project.image_names()) == 5  # nothing changed
    with pytest.raises(DataError, match="one split per tile"):
        project.split_into_tiles("slice", 1, 2, splits=["train"])
    with pytest.raises(DataError, match="at least 2 tiles"):
        project.split_into_tiles("slice", 1, 1)
    with pytest.raises(StoreError, match="No image named"):
        project.set_unpainted_background(["slice", "missing"])
    assert not project.image_record("slice").unpainted_background  # all or none
    from napari_seg_box.cli import main as cli

    assert cli(["background", project.url, names[0], "--off"]) == 0
    project.refresh()
    assert not project.image_record(names[0]).unpainted_background and project.image_record(names[1]).unpainted_background


def test_add_images_is_all_or_none(tmp_path):
    """One manifest update for many images: a bad one (too small, a repeated name) stores none, and
    the arrays written before it are removed."""
    import numpy as np

    from napari_seg_box.core import DataError, Project

    p = Project.create(tmp_path / "p.zarr", task="classification", classes=["a"])
    good = np.zeros((16, 16), np.uint16)
    for bad in ([("x", good, {}), ("y", np.zeros((4, 4), np.uint16), {})], [("x", good, {}), ("x", good, {})]):
        with pytest.raises(DataError):
            p.add_images(bad)
        assert p.image_names() == [] and p.list_dir("images") == ["zarr.json"]
    assert p.add_images([(f"c{i}", good, {"image_class": "a"}) for i in range(3)]) == ["c0", "c1", "c2"]
    assert p.class_counts() == {"a": {"train": 3, "validation": 0, "test": 0}}
