"""Bad input, names and concurrency (issue: "the cases where data is lost, results are silently
wrong, or files land outside the output folder"): one test per case, each failing on the code
before the fix. The parallel-writer and shared-version-id cases are in test_architecture.py."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from imageio.v3 import imwrite

from napari_seg_box.cli import main as cli
from napari_seg_box.core import ConfigError, DataError, Project, StoreError, import_images
from napari_seg_box.core.infer import predict
from napari_seg_box.core.quantify import quantify_labels
from napari_seg_box.core.quantify_batch import quantify_batch

from ..conftest import nuclei_quadrants
from ._models import nuclei_project_with_model, save_tiny_model


@pytest.fixture
def nuclei_files(tmp_path):
    """Two nuclei quadrants as image files with binary masks: raw/q0.tif + masks/q0.png ..."""
    (tmp_path / "raw").mkdir()
    (tmp_path / "masks").mkdir()
    for name, image, inst in nuclei_quadrants()[:2]:
        tifffile.imwrite(tmp_path / "raw" / f"{name}.tif", image)
        imwrite(tmp_path / "masks" / f"{name}.png", ((inst > 0) * 255).astype(np.uint8))
    return tmp_path


# ---------------------------------------------------------------------- silent loss or wrong results
def test_parallel_cli_imports_keep_every_image(tmp_path):
    for tag in "ab":
        (tmp_path / tag).mkdir()
        for i in range(6):
            imwrite(tmp_path / tag / f"{tag}{i}.png", np.full((32, 32), i * 40, np.uint8))
    store = str(tmp_path / "p.zarr")
    assert cli(["init", store]) == 0
    procs = [
        subprocess.Popen([sys.executable, "-m", "napari_seg_box", "import", store, "--images", str(tmp_path / tag)], stderr=subprocess.PIPE)
        for tag in "ab"
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    project = Project.open(store)
    assert sorted(project.image_names()) == sorted(f"{t}{i}" for t in "ab" for i in range(6))
    assert all(project.get_image(n).shape == (32, 32) for n in project.image_names())


def test_names_never_become_paths(nuclei_files, tmp_path, capsys):
    store = str(tmp_path / "p.zarr")
    cli(["init", store])
    code = cli(["import", store, "--images", str(nuclei_files / "raw"), "--masks", str(nuclei_files / "masks"), "--prefix", "../escape/"])
    assert code == 1 and "Invalid image name" in capsys.readouterr().err
    assert Project.open(store).image_names() == []  # nothing half-imported
    p = Project.open(store)
    for bad in ("", "a\nb", "..", "sub/dir/x", "/abs/x", "C:\\evil"):
        with pytest.raises(DataError, match="name"):
            p.add_image(bad, np.zeros((32, 32), np.uint8))
    # a store from a shared bucket may carry any name: outputs stay inside --out all the same
    p.add_image("ok", nuclei_quadrants()[0][1], labels=np.ones((256, 256), np.uint8))
    manifest = json.loads((tmp_path / "p.zarr" / "segbox.json").read_text())
    manifest["images"]["../../outside"] = manifest["images"].pop("ok")
    (tmp_path / "p.zarr" / "segbox.json").write_text(json.dumps(manifest))
    out = tmp_path / "deep" / "out"
    assert cli(["export", store, "--out", str(out)]) == 1
    assert "Invalid image name" in capsys.readouterr().err
    save_tiny_model(Project.open(store))
    code = cli(["predict", store, "--out", str(out), "--tile-size", "128", "--json"])
    rows = json.loads(capsys.readouterr().out)["images"]
    assert code == 1 and "Invalid image name" in rows[0]["error"]
    assert (
        not (tmp_path / "outside.tif").exists() and not list(tmp_path.glob("*outside*")) and not list((tmp_path / "deep").glob("*outside*"))
    )


def test_nan_and_inf_pixels_do_not_blank_the_prediction(nuclei_project, tmp_path):
    v = nuclei_project_with_model(nuclei_project)
    image = nuclei_project.get_image("q3").astype(np.float32)
    clean = predict(image, nuclei_project, version=v, tile_size=128)
    dirty = image.copy()
    dirty[5, 5], dirty[100, 7], dirty[200, 200] = np.nan, np.inf, -np.inf
    probs = predict(dirty, nuclei_project, version=v, tile_size=128)
    fg = (clean.argmax(0) == 1) & (probs.argmax(0) == 1)
    assert np.isfinite(probs).all() and fg.sum() > 0.95 * (clean.argmax(0) == 1).sum()
    import zarr

    zarr.save_array(str(tmp_path / "dirty.zarr"), dirty)
    from napari_seg_box.core.infer_large import predict_large

    group = predict_large(str(tmp_path / "dirty.zarr"), str(tmp_path / "out.zarr"), nuclei_project, version=v, tile_size=128)
    assert (np.asarray(group["labels"][...]) == 2).sum() > 0.95 * (clean.argmax(0) == 1).sum()
    with pytest.raises(DataError, match="no finite number"):
        predict(np.full((64, 64), np.nan, np.float32), nuclei_project, version=v, tile_size=64)


def test_colour_masks_are_read_by_colour(tmp_path):
    _, image, inst = nuclei_quadrants()[0]
    green = np.zeros((*inst.shape, 3), np.uint8)
    green[inst > 0] = (0, 200, 0)  # a binary mask painted green
    p = Project.create(tmp_path / "p.zarr")
    tifffile.imwrite(tmp_path / "img.tif", image)
    imwrite(tmp_path / "img_mask.png", green)
    names = import_images(p, tmp_path / "img.tif", tmp_path / "img_mask.png")
    assert names.mask_kinds == {"img": "binary"}
    np.testing.assert_array_equal(p.get_labels("img"), 1 + (inst > 0))
    # a colour-coded instance mask: each colour an object
    rng = np.random.default_rng(1)
    palette = rng.integers(30, 255, (int(inst.max()) + 1, 3)).astype(np.uint8)
    palette[0] = 0
    imwrite(tmp_path / "img2_mask.png", palette[inst])
    tifffile.imwrite(tmp_path / "img2.tif", image)
    names = import_images(p, tmp_path / "img2.tif", tmp_path / "img2_mask.png")
    assert names.mask_kinds == {"img2": "instances"}
    got = p.get_instances("img2")
    assert len(np.unique(got)) == len(np.unique(inst)) and ((got > 0) == (inst > 0)).all()


def test_quantify_matches_predict_outputs_and_reports_unmatched_images(nuclei_project, nuclei_files, tmp_path, capsys):
    v = nuclei_project_with_model(nuclei_project)
    pred = tmp_path / "pred"
    assert (
        cli(
            ["predict", nuclei_project.url, "--images", str(nuclei_files / "raw"), "--out", str(pred), "--version", v, "--tile-size", "128"]
        )
        == 0
    )
    capsys.readouterr()
    q = quantify_batch(str(pred / "*_instances.tif"), images=str(nuclei_files / "raw"))  # the README's recipe
    assert "intensity_mean" in q.objects and q.objects["intensity_mean"].notna().all()
    whole = quantify_batch(str(pred))  # the folder: objects only, not the class labels beside them
    assert sorted(whole.images["image"].unique()) == ["q0_instances", "q1_instances"]
    assert whole.images["coverage_percent"].max() < 50
    (tmp_path / "other").mkdir()
    tifffile.imwrite(tmp_path / "other" / "q0.tif", nuclei_quadrants()[0][1])
    tifffile.imwrite(tmp_path / "other" / "unrelated.tif", nuclei_quadrants()[0][1])
    some = quantify_batch(str(pred / "*_instances.tif"), images=str(tmp_path / "other"))  # q1 has no intensity image
    assert [e["image"] for e in some.errors] == ["q1_instances"] and "No intensity image" in some.errors[0]["error"]
    (tmp_path / "unrelated").mkdir()
    tifffile.imwrite(tmp_path / "unrelated" / "other.tif", nuclei_quadrants()[0][1])
    with pytest.raises(DataError, match="No label image matches an intensity image"):
        quantify_batch(str(pred / "*_instances.tif"), images=str(tmp_path / "unrelated"))


def test_predict_refuses_two_inputs_with_one_output_name(nuclei_project, nuclei_files, tmp_path, capsys):
    v = nuclei_project_with_model(nuclei_project)
    (tmp_path / "d2").mkdir()
    tifffile.imwrite(tmp_path / "d2" / "q0.tif", nuclei_quadrants()[2][1])
    code = cli(
        [
            "predict",
            nuclei_project.url,
            "--images",
            str(nuclei_files / "raw"),
            str(tmp_path / "d2"),
            "--out",
            str(tmp_path / "o"),
            "--version",
            v,
        ]
    )
    assert code == 1 and "would overwrite each other: q0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_reimport_keeps_held_out_images_held_out(nuclei_files, tmp_path):
    p = Project.create(tmp_path / "p.zarr")
    import_images(p, nuclei_files / "raw", nuclei_files / "masks")
    p.set_split("q1", "test")
    import_images(p, nuclei_files / "raw", nuclei_files / "masks", overwrite=True)
    assert {r.name: r.split for r in p.images()} == {"q0": "train", "q1": "test"}
    import_images(p, nuclei_files / "raw", overwrite=True, split="validation")  # asked: changed
    assert {r.split for r in p.images()} == {"validation"}


@pytest.mark.parametrize(
    "encoder",
    ["resnet18", "resnet34", "resnet50", "efficientnet-b0", "efficientnet-b1", "efficientnet-b2", "efficientnet-b3", "mobilenet_v2"],
)
def test_local_encoder_weights_load_for_every_encoder(tmp_path, encoder):
    import torch
    from safetensors.torch import save_file

    from napari_seg_box.core.models import ModelSpec, build_model

    torch.manual_seed(1)
    donor = build_model(ModelSpec(encoder=encoder, in_channels=3, classes=2))  # ImageNet-like: 3 input channels
    state = {f"encoder.{k}": v.contiguous() for k, v in donor.encoder.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.manual_seed(2)
    model = build_model(ModelSpec(encoder=encoder, in_channels=1, classes=2), encoder_weights_file=tmp_path / "w.safetensors")
    own, theirs = model.encoder.state_dict(), donor.encoder.state_dict()
    same = [k for k in own if own[k].shape == theirs[k].shape and torch.equal(own[k], theirs[k])]
    assert len(same) >= len(own) - 2, f"{len(same)} of {len(own)} tensors loaded"
    first = next(k for k in own if own[k].ndim == 4)  # the input convolution, adapted from 3 channels to 1
    torch.testing.assert_close(own[first], theirs[first].sum(1, keepdim=True))
    torch.save({k: torch.zeros(1) for k in ["x"]}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="do not fit"):
        build_model(ModelSpec(encoder=encoder), encoder_weights_file=tmp_path / "other.pth")


def test_channel_first_images_train_and_predict(tmp_path, capsys):
    _, image, inst = nuclei_quadrants()[0]
    two = np.stack([image, image[::-1]])[:, :128, :128]  # (2, 128, 128): channel first
    tifffile.imwrite(tmp_path / "two.tif", two)
    imwrite(tmp_path / "two_mask.png", ((inst[:128, :128] > 0) * 255).astype(np.uint8))
    store = str(tmp_path / "p.zarr")
    cli(["init", store])
    assert cli(["import", store, "--images", str(tmp_path / "two.tif"), "--masks", str(tmp_path / "two_mask.png")]) == 0
    assert Project.open(store).image_record("two").channels == 2
    args = [
        "--epochs",
        "1",
        "--encoder",
        "resnet18",
        "--encoder-depth",
        "3",
        "--patch-size",
        "64",
        "--batch-size",
        "2",
        "--steps-per-epoch",
        "2",
        "--lr",
        "1e-3",
    ]
    assert cli(["train", store, *args]) == 0
    assert cli(["predict", store, "--images", str(tmp_path / "two.tif"), "--out", str(tmp_path / "o"), "--tile-size", "64"]) == 0
    assert tifffile.imread(tmp_path / "o" / "two_labels.tif").shape == (128, 128)


def test_oversized_patch_is_capped_with_a_message(nuclei_project):
    from napari_seg_box.core.events import Message
    from napari_seg_box.core.events import run_to_end as drive
    from napari_seg_box.core.train import TrainConfig, iter_train

    said = []
    cfg = TrainConfig(epochs=1, encoder="resnet18", encoder_depth=3, patch_size=4096, batch_size=2, steps_per_epoch=1, learning_rate=1e-3)
    version = drive(iter_train(nuclei_project, cfg), lambda e: said.append(e.text) if isinstance(e, Message) else None)
    assert any("Patch size 4096 is larger than the images (256 px at most): training with 256" in t for t in said)
    assert nuclei_project.model_version(version).training.chosen["patch_size"] == 256


def test_import_is_all_or_nothing_and_says_how_to_overwrite(tmp_path, capsys):
    (tmp_path / "mixed").mkdir()
    imwrite(tmp_path / "mixed" / "a_gray.png", np.zeros((32, 32), np.uint8))
    imwrite(tmp_path / "mixed" / "b_rgb.png", np.zeros((32, 32, 3), np.uint8))
    store = str(tmp_path / "p.zarr")
    cli(["init", store])
    assert cli(["import", store, "--images", str(tmp_path / "mixed")]) == 1
    assert "different channel counts" in capsys.readouterr().err and Project.open(store).image_names() == []
    imwrite(tmp_path / "one.png", np.zeros((32, 32), np.uint8))
    assert cli(["import", store, "--images", str(tmp_path / "one.png")]) == 0
    assert cli(["import", store, "--images", str(tmp_path / "one.png")]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_huge_instance_ids_are_renumbered(tmp_path):
    _, image, inst = nuclei_quadrants()[0]
    huge = np.where(inst > 0, inst.astype(np.int64) + 2**31, 0)
    p = Project.create(tmp_path / "p.zarr")
    tifffile.imwrite(tmp_path / "h.tif", image)
    tifffile.imwrite(tmp_path / "h_mask.tif", huge)
    import_images(p, tmp_path / "h.tif", tmp_path / "h_mask.tif", mask_kind="instances")
    got = p.get_instances("h")
    assert got.max() == len(np.unique(inst)) - 1 and ((got > 0) == (inst > 0)).all()
    q = quantify_labels(huge, image, kind="instances")  # measured with the image's own ids
    assert len(q.objects) == len(np.unique(inst)) - 1 and q.objects["label"].min() > 2**31
    from napari_seg_box.core.metrics import match_instances

    assert match_instances(huge, huge)[0.5]["f1"] == 1.0


def test_int64_and_big_endian_tiffs_import(tmp_path):
    p = Project.create(tmp_path / "p.zarr")
    data = np.arange(64 * 64, dtype=np.int64).reshape(64, 64)
    tifffile.imwrite(tmp_path / "big.tif", data)
    tifffile.imwrite(tmp_path / "be.tif", data.astype(">u2"))
    import_images(p, [tmp_path / "big.tif", tmp_path / "be.tif"])
    np.testing.assert_array_equal(p.get_image("big"), data)
    np.testing.assert_array_equal(p.get_image("be"), data.astype(np.uint16))


# ---------------------------------------------------------------------- unclear errors: a sentence, not a traceback
def test_mask_kind_is_always_said(nuclei_files, tmp_path, capsys):
    store = str(tmp_path / "p.zarr")
    cli(["init", store])
    odd = np.zeros((64, 64), np.uint8)
    odd[:10], odd[20:30], odd[40:50] = 1, 2, 255  # 0/1/2/255: read as instances
    imwrite(tmp_path / "odd.png", np.zeros((64, 64), np.uint8))
    imwrite(tmp_path / "odd_mask.png", odd)
    assert cli(["import", store, "--images", str(tmp_path / "odd.png"), "--masks", str(tmp_path / "odd_mask.png")]) == 0
    assert "masks read as instance ids (objects): odd" in capsys.readouterr().out


def test_a_grey_image_given_as_mask_is_refused(nuclei_files, tmp_path):
    p = Project.create(tmp_path / "p.zarr")
    with pytest.raises(DataError, match="looks like an image, not a mask"):
        import_images(p, nuclei_files / "raw" / "q0.tif", nuclei_files / "raw" / "q1.tif")
    assert p.image_names() == []


def test_three_planes_with_three_plane_mask_import_as_a_stack(tmp_path):
    p = Project.create(tmp_path / "p.zarr")
    planes = np.stack([q[1][:64, :64] for q in nuclei_quadrants()[:3]])
    masks = np.stack([(q[2][:64, :64] > 0).astype(np.uint8) * 255 for q in nuclei_quadrants()[:3]])
    tifffile.imwrite(tmp_path / "s.tif", planes)
    tifffile.imwrite(tmp_path / "s_mask.tif", masks)
    import_images(p, tmp_path / "s.tif", tmp_path / "s_mask.tif")
    assert p.image_record("s").axes == "zyx" and p.get_labels("s").shape == (3, 64, 64)


@pytest.mark.parametrize(
    "manifest, message",
    [
        (b'{"format_version": 2, "cla', "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "damaged"),
        (b'{"format_version": "2", "images": {}, "classes": []}', "damaged"),
    ],
)
def test_damaged_manifest_gives_a_sentence(tmp_path, capsys, manifest, message):
    store = tmp_path / "p.zarr"
    Project.create(store)
    (store / "segbox.json").write_bytes(manifest)
    assert cli(["info", str(store)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_lost_array_and_lost_chunk_are_reported_not_read_as_zeros(tmp_path, capsys):
    import shutil

    p = Project.create(tmp_path / "p.zarr")
    labels = np.ones((1024, 600), np.uint8)
    p.add_image("a", np.zeros((1024, 600), np.uint8), labels=labels)
    p.add_image("b", np.zeros((64, 64), np.uint8))
    chunk_dir = tmp_path / "p.zarr" / p.manifest["images"]["a"]["labels"] / "c"
    victim = next(f for f in chunk_dir.rglob("*") if f.is_file())
    victim.unlink()  # one chunk of the annotation is gone
    with pytest.raises(StoreError, match="annotation of 'a' is damaged"):
        Project.open(tmp_path / "p.zarr").get_labels("a")
    shutil.rmtree(tmp_path / "p.zarr" / p.manifest["images"]["b"]["array"])
    assert cli(["info", str(tmp_path / "p.zarr")]) == 0  # the rest of the project stays usable
    with pytest.raises(StoreError, match="image array of 'b'"):
        Project.open(tmp_path / "p.zarr").get_image("b")


def test_model_json_without_version_loads(nuclei_project):
    v = save_tiny_model(nuclei_project)
    from pathlib import Path

    path = Path(nuclei_project.url) / "models" / v / "model.json"
    meta = json.loads(path.read_text())
    del meta["version"]
    path.write_text(json.dumps(meta))
    assert Project.open(nuclei_project.url).model_version(v).version == v


def test_pickled_encoder_weights_are_refused_without_advising_unsafe_loading(tmp_path):
    import torch

    from napari_seg_box.core.models import ModelSpec, build_model

    torch.save(build_model(ModelSpec(encoder="resnet18")).encoder, tmp_path / "model.pt")  # a whole pickled module
    with pytest.raises(ConfigError, match="does not load pickled models") as err:
        build_model(ModelSpec(encoder="resnet18"), encoder_weights_file=tmp_path / "model.pt")
    assert "weights_only=False" not in str(err.value)


def test_train_config_file_must_be_an_object(nuclei_project, tmp_path, capsys):
    (tmp_path / "cfg.json").write_text("[1, 2, 3]")
    assert cli(["train", nuclei_project.url, "--config", str(tmp_path / "cfg.json")]) == 1
    assert "JSON object" in capsys.readouterr().err


def test_outputs_naming_an_existing_file_are_refused(nuclei_project, tmp_path, capsys):
    v = nuclei_project_with_model(nuclei_project)
    (tmp_path / "taken").write_text("my notes")
    for argv in (
        ["predict", nuclei_project.url, "--out", str(tmp_path / "taken"), "--version", v],
        ["evaluate", nuclei_project.url, "--csv", str(tmp_path / "taken"), "--version", v, "--tile-size", "128"],
        ["export", nuclei_project.url, "--out", str(tmp_path / "taken")],
        ["quantify", "--store", nuclei_project.url, "--out", str(tmp_path / "taken")],
    ):
        assert cli(argv) == 1, argv
        assert "is a file" in capsys.readouterr().err
    assert (tmp_path / "taken").read_text() == "my notes"


@pytest.mark.parametrize("size", ["0", "-1"])
def test_bad_pixel_size_fails_once_up_front(nuclei_project, tmp_path, capsys, size):
    assert cli(["quantify", "--store", nuclei_project.url, "--out", str(tmp_path / "q"), "--pixel-size", size]) == 1
    err = capsys.readouterr().err
    assert "Pixel size must be" in err and err.count("Pixel size") == 1 and not (tmp_path / "q").exists()


def test_split_with_an_unknown_name_changes_nothing(nuclei_project, capsys):
    assert cli(["split", nuclei_project.url, "test", "q0", "missing", "q1"]) == 1
    assert "No image named 'missing'" in capsys.readouterr().err
    assert [r.split for r in Project.open(nuclei_project.url).images()] == ["train", "train", "validation", "test"]


def test_channel_axis_out_of_range_is_a_sentence(nuclei_files, tmp_path, capsys):
    store = str(tmp_path / "p.zarr")
    cli(["init", store])
    assert cli(["import", store, "--images", str(nuclei_files / "raw"), "--channel-axis", "7"]) == 1
    assert "channel_axis=7 does not fit" in capsys.readouterr().err


@pytest.mark.s3
def test_s3_init_without_bucket_or_server_gives_a_sentence(s3_env, capsys):
    from ..conftest import free_port

    assert cli(["init", "s3://no-such-bucket/p", "--endpoint-url", s3_env]) == 1
    assert "bucket 'no-such-bucket' does not exist" in capsys.readouterr().err
    closed = f"http://127.0.0.1:{free_port()}"
    assert cli(["init", "s3://lab/p", "--endpoint-url", closed]) == 1
    err = capsys.readouterr().err
    assert "Cannot reach the project store" in err and "Traceback" not in err


def test_training_on_an_image_with_nan_pixels_learns(tmp_path):
    from napari_seg_box.core.train import TrainConfig, train

    p = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus"])
    for (name, image, inst), split in zip(nuclei_quadrants()[:3], ["train", "train", "validation"]):
        image = image.astype(np.float32)
        image[10:12, 10:12] = np.nan  # a few dead pixels
        p.add_image(name, image, labels=(1 + (inst > 0)).astype(np.uint8), split=split)
    cfg = TrainConfig(epochs=2, encoder="resnet18", encoder_depth=3, patch_size=64, batch_size=8, steps_per_epoch=6, learning_rate=5e-3)
    version = train(p, cfg)  # before: "The loss became nan ... lower the learning rate"
    assert p.model_version(version).best["val_iou"] > 0.5
