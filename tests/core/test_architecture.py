"""The architecture issue's regressions: each failed on the code before the redesign.

- a user's PostprocessConfig for a boundary model gave a phantom class 3 (evaluation raised);
- a (3, Y, X) array was stored as 3 channels but predicted as a 3-plane stack, even by a 3-channel model;
- the stored pixel size beat the one the user gave to segment_and_quantify (the CLI did the opposite);
- ``predict STORE --json`` reported ``"failed": 0`` and exited 0 when images failed, and printed
  "Predicted 1 image(s)" when a glob matched nothing;
- two handles / two processes writing one store dropped each other's images (local and S3), and two
  versions saved at once could share an id;
- resolving ``best`` and loading its weights read every model.json (33 reads with 10 versions);
- stores of format 1 (napari-seg-box 0.1) open, migrated, with their models usable.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_seg_box import evaluate_project, segment_and_quantify
from napari_seg_box.cli import main as cli
from napari_seg_box.core import ConfigError, DataError, Project, StoreError
from napari_seg_box.core.infer import Predictor, predict
from napari_seg_box.core.postprocess import PostprocessConfig

from ..conftest import nuclei_quadrants
from ._models import nuclei_project_with_model, save_tiny_model


def test_own_postprocess_config_for_a_boundary_model_makes_no_phantom_class(nuclei_project):
    v = save_tiny_model(nuclei_project, classes=3, boundary_width=2)  # background, nucleus + a boundary output
    predictor = Predictor.from_project(nuclei_project, v)
    assert predictor.boundary and predictor.classes == 2 and predictor.outputs == 3
    ev = evaluate_project(nuclei_project, v, postprocess=PostprocessConfig(threshold=0.4), save=False, predict_config={"tile_size": 128})
    assert ev.summary["postprocess"]["threshold"] == 0.4
    assert list(ev.per_class["class"]) == ["background", "nucleus"]  # no class 3
    probs = predict(nuclei_project.get_image("q3"), predictor, tile_size=128)
    assert probs.shape[0] == 3
    assert set(np.unique(predictor.postprocess(probs, PostprocessConfig(threshold=0.4)).semantic)) <= {1, 2}


def test_three_plane_array_reads_the_same_in_the_store_and_in_prediction(tmp_path):
    rng = np.random.default_rng(0)
    rgb_first = rng.integers(0, 255, (3, 64, 64), dtype=np.uint8)  # channel-first RGB
    p = Project.create(tmp_path / "rgb.zarr")
    p.add_image("rgb", rgb_first)
    assert (p.image_record("rgb").axes, p.image_record("rgb").channels) == ("yxc", 3)
    v3 = save_tiny_model(p, in_channels=3)
    assert predict(rgb_first, p, version=v3, tile_size=64).shape == (2, 64, 64)  # an image, not 3 planes
    assert predict(p.get_image("rgb"), p, version=v3, tile_size=64).shape == (2, 64, 64)

    q = Project.create(tmp_path / "gray.zarr")
    q.add_image("plane", rgb_first[0])
    q.add_image("stack", rgb_first)  # single-channel project: 3 planes
    assert (q.image_record("stack").axes, q.image_record("stack").shape) == ("zyx", (3, 64, 64))
    v1 = save_tiny_model(q, in_channels=1)
    assert predict(rgb_first, q, version=v1, tile_size=64).shape == (3, 2, 64, 64)
    with pytest.raises(DataError, match="expects 1-channel"):
        predict(rgb_first, q, version=v1, channel_axis=0, tile_size=64)  # asked to read it as channels


def test_explicit_pixel_size_wins_over_the_stored_one(nuclei_project):
    nuclei_project.set_pixel_size(0.5)
    v = nuclei_project_with_model(nuclei_project)
    stored, _ = segment_and_quantify(nuclei_project, v, names=["q3"], predict_config={"tile_size": 128})
    given, _ = segment_and_quantify(nuclei_project, v, names=["q3"], pixel_size=2.0, predict_config={"tile_size": 128})
    np.testing.assert_allclose(stored.objects["area_um2"], stored.objects["area_px"] * 0.25)
    np.testing.assert_allclose(given.objects["area_um2"], given.objects["area_px"] * 4.0)


def test_predict_store_reports_failures_and_empty_inputs(nuclei_project, tmp_path, capsys):
    v = nuclei_project_with_model(nuclei_project)
    broken = nuclei_project.manifest["images"]["q1"]["array"]
    nuclei_project.remove(broken)  # one image's pixels lost (a deleted folder, a bad sync)
    out = tmp_path / "pred"
    code = cli(["predict", nuclei_project.url, "--out", str(out), "--tile-size", "128", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 1 and summary["failed"] == 1 and summary["model_version"] == v
    failed = [r for r in summary["images"] if r["error"]]
    assert [r["name"] for r in failed] == ["q1"] and "missing or damaged" in failed[0]["error"]
    assert {p.name for p in out.iterdir()} == {f"q{i}_{k}.tif" for i in (0, 2, 3) for k in ("labels", "instances")}
    code = cli(["predict", nuclei_project.url, "--out", str(out), "--tile-size", "128"])
    assert code == 1 and "Predicted 3 of 4 image(s)" in capsys.readouterr().out
    code = cli(["predict", nuclei_project.url, "--images", str(tmp_path / "nomatch*.tif"), "--out", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 1 and "No images to predict" in err and not (tmp_path / "none").exists() or not any((tmp_path / "none").iterdir())


def test_two_handles_do_not_drop_each_others_writes(tmp_path):
    image = np.zeros((32, 32), np.uint8)
    a = Project.create(tmp_path / "p.zarr")
    b = Project.open(tmp_path / "p.zarr")
    a.add_image("x", image)
    b.add_image("y", image)  # b's manifest predates x
    b.set_split("y", "test")
    a.set_labels("x", np.ones((32, 32), np.uint8))  # a's manifest predates y
    fresh = Project.open(tmp_path / "p.zarr")
    assert fresh.image_names() == ["x", "y"] and fresh.image_record("y").split == "test" and fresh.image_record("x").has_labels
    assert fresh.generation == 4  # after creation: 2 images, a split, a labels revision


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from napari_seg_box.core import Project
    from napari_seg_box.core.models import ModelSpec
    from napari_seg_box.core.versions import ModelVersion, Training
    url, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    opts = {"endpoint_url": sys.argv[4]} if len(sys.argv) > 4 else None
    p = Project.open(url, storage_options=opts)
    spec = ModelSpec("resnet18", 1, 2, 3, (32, 16, 8))
    for i in range(n):
        p.add_image(f"{tag}{i}", np.full((16, 16), i, np.uint8), labels=np.ones((16, 16), np.uint8))
        p.save_model_version(f"{tag}{i}".encode() * 1000, ModelVersion(spec, ("a", "b"), training=Training(run=f"{tag}{i}")))
    """
)


def _parallel_writers(url: str, tmp_path, opts: list[str]) -> Project:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = [subprocess.Popen([sys.executable, str(script), url, tag, "6", *opts], stderr=subprocess.PIPE) for tag in ("a", "b")]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    return Project.open(url, storage_options={"endpoint_url": opts[0]} if opts else None)


def _check_nothing_lost(project: Project) -> None:
    assert sorted(project.image_names()) == sorted(f"{t}{i}" for t in "ab" for i in range(6))
    for name in project.image_names():
        assert project.annotation_stats(name).tolist() == [256, 0]
    versions = [e.version for e in project.model_versions()]
    assert versions == [f"v{i:03d}" for i in range(1, 13)]  # twelve distinct ids, none shared
    runs = set()
    for v in versions:
        info = project.model_version(v)
        assert project.model_weights(info) == info.training.run.encode() * 1000  # each version is whole and its own
        runs.add(info.training.run)
    assert len(runs) == 12


def test_two_processes_write_one_local_store_and_nothing_is_lost(tmp_path):
    Project.create(tmp_path / "p.zarr", classes=["a", "b"])
    _check_nothing_lost(_parallel_writers(str(tmp_path / "p.zarr"), tmp_path, []))


@pytest.mark.s3
def test_two_processes_write_one_s3_store_and_nothing_is_lost(s3_env, tmp_path):
    url = "s3://lab/parallel"
    Project.create(url, classes=["a", "b"], storage_options={"endpoint_url": s3_env})
    _check_nothing_lost(_parallel_writers(url, tmp_path, [s3_env]))


def test_best_and_its_weights_resolve_in_three_reads(tmp_path):
    from .test_store import tiny_version

    p = Project.create(tmp_path / "p.zarr")
    for i in range(10):
        p.save_model_version(b"w%d" % i, tiny_version(p, val_iou=0.5 + 0.01 * (i == 6)))
    fresh = Project.open(tmp_path / "p.zarr")
    reads = []
    cat = fresh._storage.fs.cat_file
    fresh._storage.fs.cat_file = lambda path, *a, **k: reads.append(path) or cat(path, *a, **k)
    info = fresh.model_version("best")
    assert info.version == "v007" and fresh.model_weights(info) == b"w6"
    assert len(reads) <= 3, reads  # the manifest (re-read to see new versions), model.json, the weights
    fresh.model_version("v007")
    assert len(reads) <= 3, reads  # read once per handle


def test_configs_are_frozen_and_strict():
    from napari_seg_box.core.infer import PredictConfig
    from napari_seg_box.core.train import TrainConfig

    for cls, typo in ((TrainConfig, "epoch"), (PredictConfig, "tile"), (PostprocessConfig, "min_sizes")):
        with pytest.raises(ConfigError, match=f"Unknown .*: {typo}\\. Known: "):
            cls.from_dict({typo: 1})
        with pytest.raises(ConfigError, match="newer than this napari-seg-box"):
            cls.from_dict({"format_version": 99})
        with pytest.raises(AttributeError):
            cls().format_version = 2
        assert cls.from_dict(cls().to_dict()) == cls()
    with pytest.raises(ConfigError, match="JSON object"):
        TrainConfig.from_dict([1, 2])


# ---------------------------------------------------------------------- format 1 stores
def make_format1_store(root, *, boundary: bool = False) -> str:
    """A store as napari-seg-box 0.1 wrote it (format 1 manifest, schema 1 model.json), by hand."""
    import hashlib

    import zarr
    from zarr.storage import LocalStore

    from napari_seg_box.core.models import ModelSpec, build_model, weights_to_bytes

    store = LocalStore(str(root))
    zarr.open_group(store=store, mode="w", attributes={"napari_seg_box": {"format_version": 1, "kind": "project"}})
    images = {}
    for (name, image, inst), split in zip(nuclei_quadrants()[2:], ["validation", "test"]):
        key = f"{name}-0000000{len(images)}"
        labels = (1 + (inst > 0)).astype(np.uint8)
        for rel, data in (
            (f"images/{key}/image", image),
            (f"images/{key}/labels-aaaa", labels),
            (f"images/{key}/instances-bbbb", inst.astype(np.uint32)),
        ):
            zarr.create_array(store=store, name=rel, shape=data.shape, dtype=data.dtype, chunks=data.shape)[...] = data
        images[name] = {
            "key": key, "split": split, "shape": list(image.shape), "dtype": str(image.dtype), "channels": 1,
            "array": f"images/{key}/image", "labels": f"images/{key}/labels-aaaa", "instances": f"images/{key}/instances-bbbb",
            "pixel_size": [0.5, 0.5], "source": "dsb2018", "added": "2026-01-01T00:00:00+00:00",
        }  # fmt: skip
    manifest = {
        "format_version": 1, "created": "2026-01-01T00:00:00+00:00", "modified": "2026-01-02T00:00:00+00:00",
        "classes": [{"name": "background", "color": "#555555"}, {"name": "nucleus", "color": "#ffcc00"}],
        "pixel_size": None, "unit": "µm", "images": images, "tuning": {},
    }  # fmt: skip
    (root / "segbox.json").write_text(json.dumps(manifest))
    spec = ModelSpec("resnet18", 1, 3 if boundary else 2, 3, (32, 16, 8))
    weights = weights_to_bytes(build_model(spec))
    (root / "models" / "v001").mkdir(parents=True)
    (root / "models" / "v001" / "weights.safetensors").write_bytes(weights)
    model = {
        "format_version": 1, "model": spec.to_dict(), "encoder": "resnet18", "class_names": ["background", "nucleus"],
        "boundary": {"width": 2} if boundary else None, "normalization": {"kind": "percentile", "percentiles": [1.0, 99.8]},
        "patch_size": 64, "config": {"epochs": 3}, "chosen": {"patch_size": 64, "batch_size": 8, "learning_rate": 0.003, "steps_per_epoch": 4},
        "training_data": {"fingerprint": "f" * 64, "train_images": ["q0"], "validation_images": ["q2"], "validation": "1 image(s) marked validation"},
        "history": [{"epoch": 1, "val_iou": 0.6}], "best_metrics": {"epoch": 1, "val_iou": 0.6, "val_loss": 0.3, "val_acc": 0.9},
        "status": "completed", "epochs_run": 1, "run": "run-1", "finetuned_from": None, "device": "CPU (2 threads)",
        "duration_s": 12.5, "packages": {"torch": "2.14.1"},
        "postprocess": {"config": {"threshold": 0.4, "min_size": 30, "seed_distance": 8, "instances": "watershed", "boundary": boundary, "format_version": 1},
                        "score": 0.9, "metric": "object_f1@0.5", "images": ["q2"], "grid": {}},
        "version": "v001", "weights_sha256": hashlib.sha256(weights).hexdigest(), "created": "2026-01-02T00:00:00+00:00",
    }  # fmt: skip
    (root / "models" / "v001" / "model.json").write_text(json.dumps(model))
    return str(root)


@pytest.mark.parametrize("boundary", [False, True])
def test_format1_store_opens_migrated_and_its_model_works(tmp_path, boundary):
    url = make_format1_store(tmp_path / "old.zarr", boundary=boundary)
    p = Project.open(url)
    m = json.loads((tmp_path / "old.zarr" / "segbox.json").read_text())
    assert m["format_version"] == 2 and m["models"]["v001"]["state"] == "ready"  # migrated once, on disk
    rec = p.image_record("q3")
    assert (rec.axes, rec.split, rec.pixel_size, rec.has_instances) == ("yx", "test", (0.5, 0.5), True)
    assert p.annotation_stats("q3").sum() == 256 * 256
    info = p.model_version("best")
    assert (info.version, info.boundary, info.training.best["val_iou"], info.provenance.validation_images) == (
        "v001",
        boundary,
        0.6,
        ("q2",),
    )
    assert info.postprocess == PostprocessConfig(threshold=0.4, min_size=30, seed_distance=8)  # "boundary" left the settings
    ev = evaluate_project(p, "v001", save=False, predict_config={"tile_size": 128})
    assert list(ev.per_class["class"]) == ["background", "nucleus"]
    p.add_image("new", np.zeros((64, 64), np.uint16))
    saved = p.save_model_version(p.model_weights("v001"), info)  # e.g. a copy with other tuning
    assert saved.version == "v002" and saved.schema_version == 2
    assert json.loads((tmp_path / "old.zarr" / "models" / "v002" / "model.json").read_text())["schema_version"] == 2
    (tmp_path / "old.zarr" / "models" / "v001" / "weights.safetensors").write_bytes(b"tampered")
    with pytest.raises(StoreError, match="damaged"):
        Project.open(url).model_weights("v001")


def test_listing_annotations_reads_the_manifest_only(tmp_path):
    """Autosave refreshes the Annotate list after every save: it must not read every labels array."""
    p = Project.create(tmp_path / "p.zarr", classes=["background", "cell", "membrane"])
    labels = np.zeros((64, 64), np.uint8)
    labels[:10] = 1
    labels[10:12] = 3
    p.add_image("a", np.zeros((64, 64), np.uint8), labels=labels)
    p.remove(p.manifest["images"]["a"]["labels"])  # were the array read, this would fail
    q = Project.open(tmp_path / "p.zarr")
    assert q.annotation_stats("a").tolist() == [640, 0, 128]
    assert q.summary()["annotated_pixels_per_class"] == {"background": 640, "cell": 0, "membrane": 128}
    assert q.annotation_history("a")[-1]["origin"] == "imported"
    q.set_labels("a", labels, origin="corrected", model_version="v003")
    assert [h["origin"] for h in q.annotation_history("a")] == ["imported", "corrected"]
    assert q.image_record("a").annotation["model_version"] == "v003"
