"""Volumes end to end: sparse section annotation trains (2D and 2.5D), whole-volume prediction (in
memory and block by block), 3D objects in evaluation and measurement. Real data: ISBI 2012 sections."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seg_box.core import Project
from napari_seg_box.core.errors import ConfigError, DataError
from napari_seg_box.core.infer import Predictor, predict
from napari_seg_box.core.metrics import pixel_metrics
from napari_seg_box.core.train import TrainConfig, train
from tests.conftest import isbi
from tests.core._models import TINY

VOXEL = (0.05, 0.004, 0.004)
CROP = (slice(0, 192), slice(0, 192))


def isbi_volume(sections=range(6)):
    """Consecutive ISBI sections, cropped: (Z, 192, 192) images and project labels (1 membrane, 2 interior)."""
    pairs = [isbi(i) for i in sections]
    images = np.stack([im[CROP] for im, _ in pairs])
    labels = np.stack([np.where(m[CROP] > 0, 2, 1).astype(np.uint8) for _, m in pairs])
    return images, labels


def tiny(**kw) -> TrainConfig:
    settings = dict(epochs=6, patch_size=96, batch_size=4, steps_per_epoch=12, learning_rate=3e-3, augmentation="light", patience=0)
    return TrainConfig(**{**TINY, **settings, **kw})


@pytest.fixture(scope="module")
def sparse_volume(tmp_path_factory):
    """A 6-section volume of which only sections 1 and 4 are annotated, and a 2.5D model trained on them."""
    images, labels = isbi_volume()
    sparse = np.zeros_like(labels)
    sparse[[1, 4]] = labels[[1, 4]]
    project = Project.create(tmp_path_factory.mktemp("vol") / "p.zarr", classes=["membrane", "interior"])
    project.add_image("stack", images, labels=sparse, stack=True, pixel_size=VOXEL)
    version = train(project, tiny(context=None))
    return project, version, images, labels


def test_sparse_sections_train_a_25d_model_that_segments_the_unannotated_ones(sparse_volume):
    project, version, images, labels = sparse_volume
    info = project.model_version(version)
    assert info.context == 1  # automatic: 50 nm sections, 4 nm pixels (anisotropy 12.5) -> one neighbour each side
    assert info.in_channels == 3 and info.image_channels == 1
    assert set(info.provenance.train_images) | set(info.provenance.validation_images) == {"stack[z=1]", "stack[z=4]"}
    probs = predict(images, Predictor.from_project(project, version), stack=True)
    assert probs.shape == (6, 2, 192, 192)
    pred = np.argmax(probs, axis=1) + 1
    unseen = [0, 2, 3, 5]
    scores = pixel_metrics(labels[unseen], pred[unseen], 2, class_names=["membrane", "interior"])
    # all-interior would score membrane IoU 0 and accuracy ~0.78: the model has learnt the membranes
    assert scores["per_class"]["membrane"]["iou"] > 0.45, scores
    assert scores["accuracy"] > 0.85, scores


def test_25d_prediction_block_by_block_equals_in_memory(sparse_volume, tmp_path):
    import zarr

    from napari_seg_box.core.infer_large import predict_large

    project, version, images, _ = sparse_volume
    predictor = Predictor.from_project(project, version)
    src = zarr.create_array(str(tmp_path / "vol.zarr"), shape=images.shape, dtype=images.dtype, chunks=(1, 64, 64))
    src[...] = images
    group = predict_large(str(tmp_path / "vol.zarr"), str(tmp_path / "out.zarr"), predictor, tile_size=96)
    memory = np.stack([predictor.labels(p) for p in predict(images, predictor, stack=True, tile_size=96)])
    assert group["labels"].shape == images.shape and group["probabilities"].shape == (6, 2, 192, 192)
    np.testing.assert_array_equal(group["labels"][...], memory)


def test_context_is_refused_for_time_lapses_and_checked(tmp_path):
    images, labels = isbi_volume(range(3))
    project = Project.create(tmp_path / "movie.zarr", classes=["membrane", "interior"])
    project.add_image("movie", images, labels=labels, axes="TYX")
    assert project.image_record("movie").is_timelapse
    with pytest.raises(DataError, match="time-lapse"):
        train(project, tiny(context=1, epochs=1))
    with pytest.raises(ConfigError, match="context"):
        TrainConfig(context=9)


def test_a_dense_test_volume_is_scored_and_measured_in_3d(sparse_volume):
    from napari_seg_box.workflows.evaluate import evaluate_project
    from napari_seg_box.workflows.segment import segment_and_quantify

    project, version, images, labels = sparse_volume
    project.add_image("held_out", images[:4], labels=labels[:4], stack=True, pixel_size=VOXEL, split="test")
    ev = evaluate_project(project, version, save=False)
    cells = ev.summary["objects_3d"]["held_out"]["interior"]
    per_section = ev.summary["objects"]["interior"]
    # a cell spanning the 4 sections is one true 3D object, four 2D ones
    assert 0 < cells["n_true"] < per_section["n_true"]
    assert 0.0 <= cells["f1@0.5"] <= 1.0
    q, found = segment_and_quantify(project, version, names=["held_out"])
    assert found["held_out"].shape == (4, 192, 192)
    rows = q.objects[q.objects["image"] == "held_out"]
    assert "volume_um3" in rows and "z_extent_um" in rows
    assert len(rows) == len(np.unique(found["held_out"])) - 1  # one row per 3D object, not per section
    assert rows["z_sections"].max() > 1


def test_orthogonal_fusion_averages_three_orientations_and_is_refused_when_anisotropic(sparse_volume, tmp_path):
    from napari_seg_box.core.events import ItemDone, run_to_end
    from napari_seg_box.core.infer import PredictConfig, check_orthogonal
    from napari_seg_box.workflows.predict import iter_predict_project

    project, version, images, _ = sparse_volume
    predictor = Predictor.from_project(project, version)
    cube = images[:, :32, :32].repeat(4, axis=0)[:24]  # 24 x 32 x 32: every orientation tiles
    fused = predict(cube, predictor, stack=True, orthogonal=True, tile_size=32)
    along = [predict(np.moveaxis(cube, a, 0), predictor, stack=True, tile_size=32) for a in (0, 1, 2)]
    expected = (along[0] + along[1].transpose(2, 1, 0, 3) + along[2].transpose(2, 1, 3, 0)) / 3
    np.testing.assert_allclose(fused, expected, atol=1e-5)
    with pytest.raises(DataError, match="thicker than its pixels"):
        check_orthogonal(project.image_record("stack"), PredictConfig(orthogonal=True))  # 50 nm sections, 4 nm pixels
    iso = Project.create(tmp_path / "iso.zarr", classes=["membrane", "interior"])
    iso.add_image("cube", cube, stack=True, pixel_size=(0.01, 0.01, 0.01))
    iso.add_image("plane", images[0])
    check_orthogonal(iso.image_record("cube"), PredictConfig(orthogonal=True))  # near isotropic: accepted
    with pytest.raises(DataError, match="not a volume"):
        check_orthogonal(iso.image_record("plane"), PredictConfig(orthogonal=True))
    done = []  # the batch reports the refused image and goes on: nothing predicted
    assert run_to_end(iter_predict_project(project, version, names=["stack"], orthogonal=True), done.append) == {}
    assert "thicker than its pixels" in next(e.error for e in done if isinstance(e, ItemDone))


def test_a_timelapse_is_segmented_frame_by_frame_with_a_table_over_time(tmp_path):
    import pandas as pd

    from napari_seg_box.workflows.segment import segment_and_quantify
    from tests.core._models import save_tiny_model

    images, _ = isbi_volume(range(3))
    project = Project.create(tmp_path / "movie.zarr", classes=["membrane", "interior"])
    project.add_image("movie", images, axes="TYX", frame_interval=60)
    q, found = segment_and_quantify(project, save_tiny_model(project))
    assert found["movie"].shape == (3, 192, 192)
    rows = q.images[q.images["movie"] == "movie"]
    assert sorted(rows["frame"].unique()) == [0, 1, 2] and list(rows["time_s"].unique()) == [0.0, 60.0, 120.0]
    assert "volume_um3" not in q.objects  # time is not space: objects of each frame, in 2D
    written = q.save(tmp_path / "out", formats=("csv",))
    frames = pd.read_csv(tmp_path / "out" / "frames.csv")
    assert list(frames["frame"].unique()) == [0, 1, 2] and (frames["count"] >= 0).all()
    assert str(tmp_path / "out" / "over_time.png") in written


def test_automatic_context_follows_the_voxel_anisotropy(tmp_path):
    from napari_seg_box.core.train.prepare import auto_context

    images, labels = isbi_volume(range(3))
    project = Project.create(tmp_path / "a.zarr", classes=["membrane", "interior"])
    project.add_image("plane", images[0], labels=labels[0])
    assert auto_context(project.images()) == 0  # 2D images only
    project.add_image("iso", images, labels=labels, stack=True, pixel_size=(0.1, 0.08, 0.08))
    assert auto_context(project.images()) == 2  # near-isotropic: two sections each side
    project.add_image("em", images, labels=labels, stack=True, pixel_size=VOXEL)
    assert auto_context(project.images()) == 1  # serial sections 12.5x the pixel: the nearest only
    project.add_image("movie", images, labels=labels, axes="TYX")
    assert auto_context(project.images()) == 0  # a time-lapse among them: no context across time
