"""Label Studio interoperability on real data: brush run-lengths checked against Label Studio's own
converter (label-studio-converter, a test dependency), exports built with its encoder imported
into a project, and predictions exported as pre-annotations that its decoder reads back."""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET

import imageio.v3 as iio
import numpy as np
import pytest
from label_studio_converter import brush
from skimage.draw import polygon

from napari_seg_box.core import Project
from napari_seg_box.core.errors import DataError
from napari_seg_box.core.labelstudio import decode_rle, encode_rle, export_labelstudio_predictions, import_labelstudio
from napari_seg_box.core.labelstudio_export import labeling_config_path
from tests.conftest import nuclei, nuclei_quadrants

from ._models import save_tiny_model


def ref_rle(mask: np.ndarray) -> list[int]:
    """The reference encoder, as Label Studio's docs use it for a 0/255 mask."""
    return brush.mask2rle((np.asarray(mask) > 0).astype(np.uint8) * 255)


def ref_alpha(rle: list[int], h: int, w: int) -> np.ndarray:
    return brush.decode_rle(rle).reshape(h, w, 4)[:, :, 3]


def brush_result(mask, label, rid="b"):
    h, w = mask.shape
    value = {"format": "rle", "rle": ref_rle(mask), "brushlabels": [label]}
    return {
        "id": rid,
        "type": "brushlabels",
        "from_name": "tag",
        "to_name": "image",
        "original_width": w,
        "original_height": h,
        "value": value,
    }


def polygon_result(points_px, label, h, w, rid="p"):
    """A polygon given in pixel-centre coordinates (col, row), stored as Label Studio does: percent of the size."""
    points = [[(c + 0.5) / w * 100, (r + 0.5) / h * 100] for c, r in points_px]
    value = {"points": points, "polygonlabels": [label], "closed": True}
    return {
        "id": rid,
        "type": "polygonlabels",
        "from_name": "poly",
        "to_name": "image",
        "original_width": w,
        "original_height": h,
        "value": value,
    }


def task(tid, image, *annotations):
    return {"id": tid, "data": {"image": image}, "annotations": list(annotations)}


def annotation(aid, results, updated="2024-01-01T10:00:00Z", cancelled=False):
    return {"id": aid, "result": results, "was_cancelled": cancelled, "updated_at": updated, "created_at": updated}


@pytest.fixture
def nuclei_files(tmp_path, shared_data):
    """The DSB nuclei image and quadrant q1 as the PNG files that were uploaded to Label Studio."""
    image, inst = nuclei()
    q1 = nuclei_quadrants()[1]
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    iio.imwrite(root / "nuclei.png", image)  # 16-bit PNG
    iio.imwrite(root / "sub" / "q1.png", q1[1])
    return root, (image, inst), (q1[1], q1[2])


# ---------------------------------------------------------------------- the brush format
def test_rle_matches_the_reference_on_real_and_random_masks(shared_data):
    _, inst = nuclei()
    mask = inst > 0
    ref = ref_rle(mask)
    np.testing.assert_array_equal(decode_rle(ref, *mask.shape), mask * 255)
    assert encode_rle(mask) == ref  # byte for byte
    np.testing.assert_array_equal(ref_alpha(encode_rle(mask), *mask.shape), mask * 255)
    rng = np.random.default_rng(0)
    # odd sizes; a full 150 x 150 mask has a run longer than 2**16 values (split into pieces)
    for h, w in [(1, 1), (7, 13), (37, 53), (150, 150), (129, 3)]:
        for p in (0.0, 0.3, 0.97, 1.0):
            m = rng.random((h, w)) < p
            assert encode_rle(m) == brush.encode_rle(np.repeat(m.astype(np.uint8).ravel() * 255, 4)), (h, w, p)
            np.testing.assert_array_equal(decode_rle(ref_rle(m), h, w), m * 255)
            np.testing.assert_array_equal(ref_alpha(encode_rle(m), h, w), m * 255)


def _bits(value: int, n: int) -> str:
    return format(value, f"0{n}b")


def test_decode_reads_literal_blocks_as_the_editor_writes_them():
    """Label Studio's editor packs anti-aliased RGBA canvases with thi.ng's encoder: literal blocks
    of many values and other word sizes, which the reference decoder reads; so must ours."""
    rng = np.random.default_rng(1)
    h, w = 9, 11
    values = rng.integers(0, 256, h * w * 4)
    values[40:200] = 0  # a long run
    sizes = (3, 4, 8, 16)
    out = _bits(values.size, 32) + _bits(7, 5) + "".join(_bits(s - 1, 4) for s in sizes)
    i = 0
    while i < values.size:
        run = 1
        while i + run < values.size and values[i + run] == values[i] and run < 256:
            run += 1
        if run > 2:
            out += "1" + "10" + _bits(run - 1, 8) + _bits(int(values[i]), 8)
            i += run
        else:
            n = int(min(rng.integers(1, 15), values.size - i))
            out += "0" + "01" + _bits(n - 1, 4) + "".join(_bits(int(v), 8) for v in values[i : i + n])
            i += n
    out += "0" * (-len(out) % 8)
    rle = [int(out[k : k + 8], 2) for k in range(0, len(out), 8)]
    expected = ref_alpha(rle, h, w)
    np.testing.assert_array_equal(expected, values.reshape(h, w, 4)[:, :, 3])
    np.testing.assert_array_equal(decode_rle(rle, h, w), expected)
    with pytest.raises(DataError, match="damaged"):
        decode_rle(rle[: len(rle) // 2], h, w)


# ---------------------------------------------------------------------- import
def test_image_names_drop_the_upload_prefix_only_from_uploads():
    from napari_seg_box.core.labelstudio import _image_name

    assert _image_name("/data/upload/4/0a1b2c3d-well%203.png") == "well 3"
    assert _image_name("http://localhost:8080/data/upload/4/0a1b2c3d-well3.tif") == "well3"
    assert _image_name("/data/local-files/?d=plate%2F20240101-well3.png") == "20240101-well3"  # a date, not a hash
    assert _image_name("s3://bucket/raw/20240101-well3.png") == "20240101-well3"
    assert _image_name("https://example.org/img/cells.v2.jpg?token=1") == "cells.v2"


def test_import_brush_and_polygon_from_uploads_and_local_files(tmp_path, nuclei_files):
    root, (image, inst), (q1, q1_inst) = nuclei_files
    project = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus", "debris"])
    h, w = inst.shape
    left = np.zeros_like(inst, bool)
    left[:, : w // 2] = True
    rect = {"id": "r", "type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": 5, "height": 5, "rectanglelabels": ["debris"]}}
    t1 = task(
        1,
        "/data/upload/1/abcd1234-nuclei.png",
        annotation(11, [brush_result(left & (inst == 0), "background", "b1"), brush_result(inst > 0, "nucleus"), rect]),
    )
    tri = [(20, 30), (200, 60), (90, 240)]  # (col, row) of pixel centres
    qh, qw = q1.shape
    older = annotation(21, [brush_result(np.ones_like(q1, bool), "nucleus")], updated="2024-01-01T10:00:00Z")
    latest = annotation(22, [brush_result(q1_inst > 0, "nucleus"), polygon_result(tri, "debris", qh, qw)], updated="2024-02-01T10:00:00Z")
    cancelled = annotation(23, [brush_result(np.ones_like(q1, bool), "debris")], updated="2024-03-01T10:00:00Z", cancelled=True)
    t2 = task(2, "/data/local-files/?d=sub%2Fq1.png", older, cancelled, latest)
    t3 = task(3, "/data/upload/1/ffffffff-never-annotated.png")
    export = tmp_path / "export.json"
    export.write_text(json.dumps([t1, t2, t3]))

    names = import_labelstudio(project, export, images_root=root)

    assert list(names) == ["nuclei", "q1"] and names.skipped == [3] and names.ignored == {"rectanglelabels": 1}
    expected = np.where(inst > 0, 2, np.where(left, 1, 0))
    np.testing.assert_array_equal(project.get_labels("nuclei"), expected)
    np.testing.assert_array_equal(project.get_image("nuclei"), image)
    rr, cc = polygon([r for _, r in tri], [c for c, _ in tri], shape=q1.shape)
    expected_q1 = np.where(q1_inst > 0, 2, 0)
    expected_q1[rr, cc] = 3  # the polygon comes after the brush: it wins where they overlap
    assert 3000 < len(rr) < 30000
    np.testing.assert_array_equal(project.get_labels("q1"), expected_q1)
    rec = project.image_record("q1")
    assert rec.split == "train" and rec.annotation["origin"] == "imported" and rec.source == t2["data"]["image"]


def test_unresolved_images_are_all_listed_and_nothing_is_imported(tmp_path, nuclei_files):
    root, (image, inst), _ = nuclei_files
    project = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus"])
    good = task(1, "/data/upload/3/abcd1234-nuclei.png", annotation(1, [brush_result(inst > 0, "nucleus")]))
    missing = [f"/data/upload/3/0123abcd-gone{i}.png" for i in range(12)] + ["http://example.org/data/elsewhere.png"]
    tasks = [good] + [task(10 + i, ref, annotation(1, [brush_result(inst > 0, "nucleus")])) for i, ref in enumerate(missing)]
    with pytest.raises(DataError) as err:
        import_labelstudio(project, tasks, images_root=root)
    msg = str(err.value)
    assert "13 of 14 image(s) cannot be found" in msg and "images_root" in msg and "Nothing was imported" in msg
    assert all(ref in msg for ref in missing[:10]) and "and 3 more" in msg
    assert project.refresh().image_names() == [] and project.list_dir("images") == []
    with pytest.raises(DataError, match="cannot be found .no images folder"):
        import_labelstudio(project, [good])


def test_rle_of_another_size_and_a_file_of_another_size_import_nothing(tmp_path, nuclei_files):
    root, (image, inst), (q1, q1_inst) = nuclei_files
    project = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus"])
    good = task(1, "nuclei.png", annotation(1, [brush_result(inst > 0, "nucleus")]))
    bad = brush_result(q1_inst > 0, "nucleus")
    bad["original_width"] = 255  # the run-length holds 256 x 256 pixels
    with pytest.raises(DataError) as err:
        import_labelstudio(project, [good, task(7, "sub/q1.png", annotation(1, [bad]))], images_root=root)
    msg = str(err.value)
    assert "task 7" in msg and "255 x 256" in msg and "65,536 pixels" not in msg and "Nothing was imported" in msg
    # a run-length that fits its sizes, on a file of another size (decoded after the first image was staged)
    wrong_file = task(8, "/data/upload/1/abcd1234-nuclei.png", annotation(1, [brush_result(q1_inst > 0, "nucleus")]))
    with pytest.raises(DataError, match=r"Task 8: .* is 512 x 512 pixels but it was annotated at 256 x 256"):
        import_labelstudio(
            project, [task(9, "sub/q1.png", annotation(1, [brush_result(q1_inst > 0, "nucleus")])), wrong_file], images_root=root
        )
    assert project.refresh().image_names() == [] and set(project.list_dir("images")) <= {"zarr.json"}  # the staged q1 is gone


def test_unknown_labels_name_the_classes_and_class_map_renames(tmp_path, nuclei_files):
    root, (image, inst), _ = nuclei_files
    project = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus"])
    tasks = [
        task(1, "/data/upload/1/abcd1234-nuclei.png", annotation(1, [brush_result(inst > 0, "Nucleus"), brush_result(inst == 0, "bg")]))
    ]
    with pytest.raises(DataError) as err:
        import_labelstudio(project, tasks, images_root=root)
    assert "'Nucleus'" in str(err.value) and "'bg'" in str(err.value) and "(background, nucleus)" in str(err.value)
    assert "class_map" in str(err.value) and "--map" in err.value.for_face("cli")
    assert project.image_names() == []
    names = import_labelstudio(project, tasks, images_root=root, class_map={"Nucleus": "nucleus", "bg": "background"}, split="test")
    np.testing.assert_array_equal(project.get_labels(names[0]), np.where(inst > 0, 2, 1))
    assert project.image_record("nuclei").split == "test"
    with pytest.raises(DataError, match="already in the project"):
        import_labelstudio(project, tasks, images_root=root, class_map={"Nucleus": "nucleus", "bg": "background"})


def test_import_reads_s3_images(tmp_path, s3_env, monkeypatch, shared_data):
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env)
    name, q0, q0_inst = nuclei_quadrants()[0]
    png = tmp_path / "q0.png"
    iio.imwrite(png, q0)
    boto3.client("s3", endpoint_url=s3_env).put_object(Bucket="lab", Key="ls/q0.png", Body=png.read_bytes())
    project = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus"])
    tasks = [task(1, "s3://lab/ls/q0.png", annotation(1, [brush_result(q0_inst > 0, "nucleus")]))]
    with pytest.raises(DataError, match="s3://lab/ls/none.png"):
        import_labelstudio(project, tasks + [task(2, "s3://lab/ls/none.png", annotation(1, [brush_result(q0_inst > 0, "nucleus")]))])
    assert import_labelstudio(project, tasks) == ["q0"]
    np.testing.assert_array_equal(project.get_image("q0"), q0)
    np.testing.assert_array_equal(project.get_labels("q0"), np.where(q0_inst > 0, 2, 0))


# ---------------------------------------------------------------------- export of predictions
def _model_version(project) -> str:
    """A tiny untrained U-Net whose seed makes it paint about a fifth of the nuclei images as nucleus
    (fitting one takes a minute on a busy 2-core machine; the format is what is tested here)."""
    return save_tiny_model(project, seed=1)


def test_export_predictions_reads_back_with_the_reference_decoder(tmp_path, nuclei_project):
    from napari_seg_box.core.events import run_to_end
    from napari_seg_box.core.infer import Predictor, iter_predict

    version = _model_version(nuclei_project)
    out = tmp_path / "ls" / "preds.json"
    url = "/data/local-files/?d=images/{name}.png"
    pp = {"instances": "components", "min_size": 20}  # objects as connected components: no watershed to wait for
    path = export_labelstudio_predictions(
        nuclei_project, out, names=["q2", "q3"], image_url=url, write_images=True, from_name="tag", postprocess=pp
    )
    assert path == out
    tasks = json.loads(out.read_text())
    predictor = Predictor.from_project(nuclei_project, version)
    assert [t["data"]["image"] for t in tasks] == ["/data/local-files/?d=images/q2.png", "/data/local-files/?d=images/q3.png"]
    for name, t in zip(["q2", "q3"], tasks):
        (pred,) = t["predictions"]
        probs = run_to_end(iter_predict(nuclei_project.get_image(name), predictor))
        semantic = predictor.postprocess(probs, pp).semantic
        assert pred["model_version"] == f"napari-seg-box {version}" and abs(pred["score"] - probs.max(axis=0).mean()) < 1e-3
        (region,) = pred["result"]  # the nucleus only: background is what is not painted
        assert region["type"] == "brushlabels" and region["from_name"] == "tag" and region["to_name"] == "image"
        assert (region["original_width"], region["original_height"], region["image_rotation"]) == (256, 256, 0)
        assert region["value"]["format"] == "rle" and region["value"]["brushlabels"] == ["nucleus"]
        decoded = ref_alpha(region["value"]["rle"], 256, 256)
        assert 0.05 < (semantic == 2).mean() < 0.9  # both classes are predicted: a real test of the regions
        np.testing.assert_array_equal(decoded > 0, semantic == 2)
        png = iio.imread(out.parent / f"{name}.png")
        assert png.shape == (256, 256) and png.dtype == np.uint8 and png.std() > 10
    config = ET.fromstring(labeling_config_path(out).read_text())
    labels = config.find("BrushLabels")
    assert labels.get("name") == "tag" and labels.get("toName") == config.find("Image").get("name") == "image"
    assert [x.get("value") for x in labels] == ["background", "nucleus"] and all(x.get("background", "").startswith("#") for x in labels)

    # the round trip: the pre-annotations, submitted unchanged, come back as the predicted labels
    for t in tasks:
        t["annotations"] = [{"id": 1, "result": t["predictions"][0]["result"]}]
    back = Project.create(tmp_path / "back.zarr", classes=["background", "nucleus"])
    assert import_labelstudio(back, tasks, images_root=out.parent, unpainted_background=True) == ["q2", "q3"]
    rec = back.image_record("q3")
    np.testing.assert_array_equal(back.get_labels("q3"), np.where(semantic == 2, 2, 0))
    assert rec.unpainted_background and rec.annotation["origin"] == "imported"


# ---------------------------------------------------------------------- the command line
def run_cli(argv):
    from napari_seg_box.cli.labelstudio import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_import_and_export(tmp_path, nuclei_files, nuclei_project, capsys):
    root, (image, inst), _ = nuclei_files
    store = tmp_path / "cli.zarr"
    Project.create(store, classes=["background", "nucleus"])
    export = tmp_path / "export.json"
    export.write_text(
        json.dumps([task(1, "/data/upload/1/abcd1234-nuclei.png", annotation(1, [brush_result(inst > 0, "Nucleus")])), task(2, "x.png")])
    )
    argv = [
        "import-labelstudio",
        str(store),
        "--json",
        str(export),
        "--images-root",
        str(root),
        "--map",
        "Nucleus=nucleus",
        "--split",
        "validation",
    ]
    assert run_cli(argv) == 0
    out = capsys.readouterr().out
    assert "Imported 1 image(s)" in out and "1 with annotations" in out and "1 task(s) without a submitted annotation" in out
    project = Project.open(store)
    assert project.image_record("nuclei").split == "validation"
    np.testing.assert_array_equal(project.get_labels("nuclei"), np.where(inst > 0, 2, 0))
    with pytest.raises(Exception, match="LABEL=CLASS"):
        run_cli(argv[:-3] + ["Nucleus"])

    _model_version(nuclei_project)
    preds = tmp_path / "out" / "preds.json"
    assert (
        run_cli(["export-labelstudio", nuclei_project.url, "--out", str(preds), "--images", "q3", "--image-url", "s3://b/{name}.png"]) == 0
    )
    assert "label_config.xml" in capsys.readouterr().out
    (t,) = json.loads(preds.read_text())
    assert t["data"]["image"] == "s3://b/q3.png" and t["predictions"][0]["result"][0]["value"]["brushlabels"] == ["nucleus"]
    assert labeling_config_path(preds).is_file() and not (preds.parent / "q3.png").exists()
