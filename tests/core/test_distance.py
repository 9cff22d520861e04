"""Issue 21, point 2: a distance output that knows where touching objects split."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seg_box.core import ConfigError, DataError, Project
from napari_seg_box.core.events import Message
from napari_seg_box.core.postprocess import PostprocessConfig, postprocess
from napari_seg_box.core.train import TrainConfig
from napari_seg_box.core.train.prepare import _prepare_data, distance_map, touching_objects

from ..conftest import isbi, nuclei_quadrants
from .test_train import collect, tiny


def _two_touching_discs(shape=(60, 90)):
    """Two discs of radius 16 meeting on a short common border, and a small lone disc."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inst = np.zeros(shape, np.int32)
    inst[(yy - 30) ** 2 + (xx - 25) ** 2 < 16**2] = 1
    inst[((yy - 30) ** 2 + (xx - 53) ** 2 < 16**2) & (inst == 0)] = 2
    inst[(yy - 8) ** 2 + (xx - 82) ** 2 < 5**2] = 3
    return inst


def test_distance_target_peaks_at_centres_and_meets_at_the_common_border():
    inst = _two_touching_discs()
    d = distance_map(inst)
    assert d.dtype == np.float32 and d.min() == 0.0 and d.max() == pytest.approx(1.0)
    for i, centre in ((1, (30, 25)), (2, (30, 53)), (3, (8, 82))):
        assert d[inst == i].max() == pytest.approx(1.0)  # each object normalised by its own largest distance
        assert d[centre] > 0.9
    assert (d[inst == 0] == 0).all()
    # where the two discs meet, each is at its border: the relief has a valley between the centres
    meet = np.flatnonzero((inst[:, :-1] == 1) & (inst[:, 1:] == 2))
    assert len(meet) and d[30, 39] < 0.15 and d[30, 40] < 0.15
    assert touching_objects(inst) == (2, 3)
    assert touching_objects(np.zeros((5, 5), np.int32)) == (0, 0)


def test_postprocess_grows_objects_from_the_predicted_centres():
    inst = _two_touching_discs()
    fg = (inst > 0).astype(np.float32)
    probs = np.stack([1 - fg, fg, distance_map(inst)])
    res = postprocess(probs, PostprocessConfig(min_size=0), distance=True)
    assert res.n_objects == 3
    for i in (1, 2, 3):  # each object found whole: the split follows the valley, not a straight cut elsewhere
        ids, counts = np.unique(res.instances[inst == i], return_counts=True)
        assert counts.max() / (inst == i).sum() > 0.97
    # without the distance channel read as such, the same mask is one object per component
    merged = postprocess(probs[:2], PostprocessConfig(min_size=0, instances="components"))
    assert merged.n_objects == 2
    # a seed level above every centre leaves each connected region one object (never lost)
    assert postprocess(probs, PostprocessConfig(min_size=0, seed_level=0.99), distance=True).n_objects >= 2
    # seeds="shape": the distance transform of the mask, as for a model without the output (tuning's fallback)
    shape = postprocess(probs, PostprocessConfig(min_size=0, seeds="shape", seed_distance=5), distance=True)
    assert np.array_equal(shape.instances, postprocess(probs[:2], PostprocessConfig(min_size=0, seed_distance=5)).instances)
    assert "centres above 0.5" in PostprocessConfig().objects_in_words(distance=True)
    assert PostprocessConfig(seeds="shape").objects_in_words(distance=True) == "watershed, seed distance 5 px"
    with pytest.raises(DataError, match="boundary or a distance"):
        postprocess(probs, boundary=True, distance=True)
    with pytest.raises(ConfigError, match="seed_level"):
        PostprocessConfig(seed_level=1.5)


def test_distance_output_is_chosen_when_the_painted_objects_touch(nuclei_project, tmp_path):
    data = _prepare_data(nuclei_project, tiny(), distance=None)
    assert data.distance and 0.15 < data.touching < 0.6, data.touching  # crowded nuclei: about a third touch
    item = data.train[0]
    assert item.distance is not None and item.distance.shape == item.target.shape
    assert item.distance[item.target == 0].max() == 0.0 and item.distance[item.target == 1].max() == pytest.approx(1.0)
    assert all(v.distance is not None for v in data.val)
    # ISBI cells are separated by membrane: no two cells touch, so no distance output
    p = Project.create(tmp_path / "em.zarr", classes=["membrane", "cell"])
    for i in (0, 1):
        image, mask = isbi(i)
        p.add_image(f"s{i}", image, labels=(1 + (mask > 0)).astype(np.uint8))
    em = _prepare_data(p, tiny(), distance=None)
    assert not em.distance and em.touching == 0.0 and em.train[0].distance is None
    assert _prepare_data(p, tiny(), distance=True).distance  # asked for: learnt anyway
    with pytest.raises(ConfigError, match="not both"):
        TrainConfig(boundary=True, distance=True)
    with pytest.raises(ConfigError, match="distance"):
        TrainConfig(distance="yes")


def test_distance_output_learns_to_split_touching_real_nuclei(tmp_path):
    """Trained on two quadrants of real nuclei, the distance output ranks pixels by their true
    distance to the border on an unseen quadrant and its watershed splits touching nuclei."""
    from napari_seg_box.core.infer import Predictor, predict
    from napari_seg_box.core.metrics import match_instances
    from napari_seg_box.workflows.train import iter_train_model

    p = Project.create(tmp_path / "n.zarr", classes=["background", "nucleus"])
    quads = nuclei_quadrants()
    for (name, image, inst), split in zip(quads, ["train", "train", "test", "validation"]):  # q2: half its nuclei touch
        p.add_image(name, image, labels=(1 + (inst > 0)).astype(np.uint8), instances=inst, split=split)
    cfg = tiny(epochs=8, steps_per_epoch=10, patch_size=96, distance=None)  # automatic
    version, events = collect(iter_train_model(p, cfg))
    said = " ".join(e.text for e in events if isinstance(e, Message))
    assert "distance output (automatic:" in said, said
    info = p.model_version(version)
    assert info.distance and info.spec.classes == 3 and info.to_json()["distance"] is True
    assert info.tuning.grid["seeds"] == ["model", "shape"] and "seed_level" in info.tuning.grid  # its centres, or the mask's shape
    _, image, truth = quads[2]
    predictor = Predictor.from_project(p, version)
    probs = predict(image, predictor)
    assert probs.shape == (3, 256, 256) and probs[2].min() >= 0.0 and probs[2].max() <= 1.0
    assert predictor.labels(probs).max() <= 2  # the distance channel is not a class
    inside = truth > 0
    r = np.corrcoef(probs[2][inside], distance_map(truth)[inside])[0, 1]
    assert r > 0.4, r  # 0.52 here (0.30 when the best epoch was chosen by IoU alone, before the distance was learnt)
    # the touching nuclei of the unseen quadrant: how many come out whole and on their own
    touching = {
        int(i) for a, b in ((truth[1:], truth[:-1]), (truth[:, 1:], truth[:, :-1])) for i in np.unique(a[(a > 0) & (b > 0) & (a != b)])
    }
    touching |= {
        int(i) for a, b in ((truth[:-1], truth[1:]), (truth[:, :-1], truth[:, 1:])) for i in np.unique(a[(a > 0) & (b > 0) & (a != b)])
    }
    assert len(touching) == touching_objects(truth.astype(np.int32))[0] >= 15
    found = predictor.postprocess(probs).instances
    merged_once = postprocess(probs[:2], info.postprocess, instances="components").instances  # the same mask, no splitting

    def whole(pred):
        m = match_instances(truth * np.isin(truth, list(touching)), pred, thresholds=(0.5,))[0.5]
        return m["tp"]

    assert whole(found) > whole(merged_once), (whole(found), whole(merged_once))


def test_cli_distance_option_reads_as_the_setting():
    from napari_seg_box.cli import build_parser
    from napari_seg_box.cli.train import _config

    parser = build_parser()
    for word, value in (("auto", None), ("on", True), ("off", False)):
        assert _config(parser.parse_args(["train", "p.zarr", "--distance", word])).distance is value
    assert _config(parser.parse_args(["train", "p.zarr"])).distance is False  # off by default
    with pytest.raises(ConfigError, match="not both"):
        _config(parser.parse_args(["train", "p.zarr", "--distance", "on", "--boundary"]))
