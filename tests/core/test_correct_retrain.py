"""The human-in-the-loop cycle on real nuclei: correct a prediction, save it with its provenance,
fine-tune on it, and let the model say where to annotate next."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seg_box.core import ConfigError, DataError, Project
from napari_seg_box.core.correct import (
    annotation_from_prediction,
    check_classes,
    delete_object,
    merge_objects,
    object_at,
    relabel_object,
    save_correction,
    split_object,
)
from napari_seg_box.core.errors import StoreError
from napari_seg_box.core.events import Message
from napari_seg_box.core.infer import Predictor, predict
from napari_seg_box.core.suggest import disagreement, rank, suggest, uncertainty, uncertainty_map
from napari_seg_box.core.train import finetune_config, train
from napari_seg_box.workflows.evaluate import evaluate_project

from ..conftest import nuclei_quadrants
from ._models import fitted_nuclei_model, save_tiny_model
from .test_train import tiny


def _predicted(project, version, name):
    predictor = Predictor.from_project(project, version)
    probs = predict(project.get_image(name), predictor)
    return predictor, probs, predictor.postprocess(probs)


def test_a_corrected_prediction_is_saved_with_its_provenance_and_objects(nuclei_project):
    version = save_tiny_model(nuclei_project, model=fitted_nuclei_model())
    predictor, probs, result = _predicted(nuclei_project, version, "q3")
    labels = annotation_from_prediction(result.semantic, probs, min_confidence=0.9)
    assert (labels == 0).any() and (labels == 2).any()  # unsure pixels left unlabelled, objects kept
    assert (annotation_from_prediction(result.semantic) == result.semantic).all()
    instances = result.instances.astype(np.int32).copy()
    ids = [i for i in np.unique(instances) if i]
    assert len(ids) > 5

    # delete an object by clicking inside it: it becomes background
    first = ids[0]
    ys, xs = np.nonzero(instances == first)
    assert object_at(instances, (ys[0], xs[0])) == first and object_at(instances, (-5, 3)) == 0
    n = (instances == first).sum()
    assert delete_object(labels, instances, first) == n
    assert not (instances == first).any() and (labels[ys, xs] == 1).all()
    with pytest.raises(DataError, match="no object"):
        delete_object(labels, instances, first)
    # relabel, merge two, split one along a line across it
    second, third = ids[1], ids[2]
    relabel_object(labels, instances, second, 1)
    assert (labels[instances == second] == 1).all()
    size3 = (instances == third).sum()
    merge_objects(labels, instances, second, third)
    assert not (instances == third).any() and (instances == second).sum() >= size3
    biggest = max(ids[3:], key=lambda i: (instances == i).sum())
    ys, xs = np.nonzero(instances == biggest)
    cy = int(ys.mean())
    with pytest.raises(DataError, match="does not cut"):
        split_object(labels, instances, biggest, (cy, xs.min() + 1), (cy, xs.min() + 2))
    new = split_object(labels, instances, biggest, (cy, xs.min() - 2), (cy, xs.max() + 2), relief=1 - probs[1])
    top, bottom = (instances == biggest), (instances == new)
    assert top.any() and bottom.any() and top.sum() + bottom.sum() == len(ys)
    above, below = sorted((np.nonzero(top)[0], np.nonzero(bottom)[0]), key=np.mean)
    assert above.max() <= cy + 1 and below.min() >= cy - 1  # the parts lie on either side of the line

    save_correction(nuclei_project, "q3", labels, model_version=version, instances=instances)
    history = nuclei_project.annotation_history("q3")
    assert history[-1]["origin"] == "corrected" and history[-1]["model_version"] == version
    assert (nuclei_project.get_labels("q3") == labels).all()
    stored = nuclei_project.get_instances("q3")
    assert (stored[labels <= 1] == 0).all() and (stored == new).any()

    nuclei_project.remove_image("q3")
    with pytest.raises(StoreError, match="was removed from the project after it was predicted"):
        save_correction(nuclei_project, "q3", labels, model_version=version)


def test_correcting_with_a_model_of_other_classes_is_refused(tmp_path, shared_data):
    project = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus", "mitotic"])
    version = save_tiny_model(project, classes=2)
    with pytest.raises(DataError, match="the project's classes are background, nucleus, mitotic"):
        check_classes(project, project.model_version(version))


def test_finetuning_on_corrections_improves_held_out_iou(tmp_path, shared_data):
    """Start from a model of one quadrant; correct two more quadrants (to the truth, as a user
    would); fine-tune: the held-out quadrant's IoU rises above the starting version's."""
    project = Project.create(tmp_path / "n.zarr", classes=["background", "nucleus"])
    q = nuclei_quadrants()
    for (name, image, _), split in zip(q, ["train", "train", "validation", "test"]):
        project.add_image(name, image, split=split)
    project.set_labels("q0", (1 + (q[0][2] > 0)).astype(np.uint8))
    sparse = np.zeros((256, 256), np.uint8)  # the first model's validation: a strip of q2
    sparse[:64] = 1 + (q[2][2][:64] > 0)
    project.set_labels("q2", sparse)
    project.set_labels("q3", (1 + (q[3][2] > 0)).astype(np.uint8))
    base = train(project, tiny(epochs=2, steps_per_epoch=3, learning_rate=3e-3))
    before = evaluate_project(project, base, save=False).summary["pixel"]["per_class"]["nucleus"]["iou"]

    for name, _, inst in (q[1], q[2]):
        save_correction(project, name, (1 + (inst > 0)).astype(np.uint8), model_version=base, instances=inst)
    events = []
    cfg = finetune_config(project, "latest", epochs=4, steps_per_epoch=6, batch_size=8)
    assert cfg.finetune_from == base and cfg.encoder == "resnet18" and cfg.recent_weight > 1 and cfg.schedule == "cosine"
    tuned = train(project, cfg, on_event=events.append)
    after = evaluate_project(project, tuned, save=False).summary["pixel"]["per_class"]["nucleus"]["iou"]
    info = project.model_version(tuned)
    assert info.provenance.finetuned_from == base
    assert info.training.start["version"] == base and 0 <= info.training.start["val_iou"] <= 1
    assert info.provenance.validation_images == project.model_version(base).provenance.validation_images  # the same validation
    texts = " ".join(e.text for e in events if isinstance(e, Message))
    assert "1 image(s) annotated or corrected since" in texts and f"{base} on the same images" in texts  # q1 trains, q2 validates
    assert after > before + 0.03, (before, after)


def test_finetuning_keeps_the_architecture(nuclei_project):
    import torch

    from napari_seg_box.core.models import ModelSpec, build_model

    version = save_tiny_model(nuclei_project)
    with pytest.raises(ConfigError, match="fine-tuning keeps its architecture"):
        finetune_config(nuclei_project, version, encoder="resnet50")
    assert finetune_config(nuclei_project, version, encoder="resnet18").encoder == "resnet18"
    # a version whose weights are of another network is refused with a clear error, not half-loaded
    torch.manual_seed(0)
    other = build_model(ModelSpec(in_channels=1, classes=2, encoder="resnet18", encoder_depth=4, decoder_channels=(64, 32, 16, 8)))
    wrong = save_tiny_model(nuclei_project, model=other)
    with pytest.raises(DataError, match="do not fit"):
        train(nuclei_project, tiny(epochs=1, steps_per_epoch=1, finetune_from=wrong))


def test_uncertainty_is_an_image_in_zero_one(nuclei_project):
    predictor = Predictor.from_project(nuclei_project, save_tiny_model(nuclei_project, model=fitted_nuclei_model()))
    image = nuclei_project.get_image("q3")
    for mode in ("entropy", "tta"):
        u = uncertainty_map(image, predictor, mode=mode)
        assert u.shape == image.shape and u.dtype == np.float32
        assert u.min() >= 0 and u.max() <= 1 and u.max() > 0.3
    flat = np.full((2, 4, 4), 0.5, np.float32)
    assert np.allclose(uncertainty(flat), 1.0)
    sure = np.zeros((2, 4, 4), np.float32)
    sure[1] = 1
    assert np.allclose(uncertainty(sure), 0.0, atol=1e-4)
    assert np.allclose(disagreement([sure, sure]), 0.0, atol=1e-4) and disagreement([sure, sure[::-1]]).min() > 0.99


def test_suggestions_put_the_hard_region_first(tmp_path, shared_data):
    project = Project.create(tmp_path / "s.zarr", classes=["background", "nucleus"])
    q = nuclei_quadrants()
    project.add_image("q0", q[0][1], labels=(1 + (q[0][2] > 0)).astype(np.uint8), split="train")
    version = save_tiny_model(project, model=fitted_nuclei_model())
    easy = q[3][1]
    hard = easy.copy()
    rng = np.random.default_rng(0)
    hard[128:, :128] = rng.integers(0, int(easy.max()) + 1, (128, 128)).astype(easy.dtype)  # noise: neither nucleus nor background
    project.add_image("easy", easy)
    project.add_image("hard", hard)
    project.add_image("held out", q[2][1], split="test")
    picks = suggest(project, version, top=2)
    assert [s.image for s in picks] == ["hard", "easy"] and picks[0].uncertainty > picks[1].uncertainty
    tiles = suggest(project, version, top=3, tile=128, images=["hard"])
    assert tiles[0].box == (128, 0, 256, 128) and all(t.image == "hard" for t in tiles)
    assert "held out" not in {s.image for s in suggest(project, version, top=10)}
    for name in ("easy", "hard"):
        project.set_labels(name, np.ones((256, 256), np.uint8))
    with pytest.raises(DataError, match="nothing to suggest"):
        suggest(project, version)


def test_diversity_keeps_near_copies_apart():
    feats = np.array([[1, 0], [1, 0.01], [0, 1]], float)
    scores = np.array([1.0, 0.99, 0.8])
    assert [i for i, _ in rank(scores, feats, 3, diversity=0)] == [0, 1, 2]
    assert [i for i, _ in rank(scores, feats, 3, diversity=0.5)] == [0, 2, 1]
    # pooled ReLU features of one kind of image all point one way (raw cosine > 0.99 here): only
    # their deviations from the mean tell a near copy (1) from another region (2)
    alike = np.array([[10, 10, 1.0, 0], [10, 10, 0.95, 0], [10, 10, 0, 1.0]])
    assert [i for i, _ in rank(scores, alike, 3, diversity=0.5)] == [0, 2, 1]


def test_suggestions_differ_from_what_is_annotated():
    feats = np.array([[10, 10, 1.0, 0], [10, 10, 0, 1.0]])
    scores = np.array([1.0, 0.9])
    assert [i for i, _ in rank(scores, feats, 2)] == [0, 1]
    assert [i for i, _ in rank(scores, feats, 2, known=np.array([[10, 10, 0.98, 0]]))] == [1, 0]


def test_suggestions_read_only_the_annotated_sections_of_an_annotated_stack(tmp_path, shared_data, monkeypatch):
    from napari_seg_box.core import planes

    project = Project.create(tmp_path / "v.zarr", classes=["background", "nucleus"])
    q = nuclei_quadrants()
    volume = np.stack([q[i][1] for i in (0, 1, 2, 0, 1)])
    labels = np.zeros(volume.shape, np.uint8)
    labels[1] = 1 + (q[1][2] > 0)
    labels[3] = 1 + (q[0][2] > 0)
    project.add_image("stack", volume, labels=labels, axes="zyx", split="train")
    project.add_image("new", q[3][1])
    version = save_tiny_model(project, model=fitted_nuclei_model())
    assert project.image_record("stack").annotated_planes == (1, 3)
    read = []
    real = planes.with_context
    monkeypatch.setattr(planes, "with_context", lambda a, z, k: read.append(z) or real(a, z, k))
    assert [s.image for s in suggest(project, version, top=1)] == ["new"]
    assert read == [1, 3, None]  # the annotated sections of the stack, then the candidate


def test_cli_suggests_then_finetunes_from_latest(tmp_path, shared_data, capsys):
    import json

    from napari_seg_box.cli import main

    url = tmp_path / "c.zarr"
    project = Project.create(url, classes=["background", "nucleus"])
    q = nuclei_quadrants()
    for (name, image, inst), split in zip(q, ["train", None, "validation", None]):
        labels = (1 + (inst > 0)).astype(np.uint8) if split else None
        project.add_image(name, image, labels=labels, split=split or "train")
    version = save_tiny_model(project, model=fitted_nuclei_model())
    assert main(["suggest", str(url), "--top", "3", "--json"]) == 0
    picks = json.loads(capsys.readouterr().out)
    assert sorted(p["image"] for p in picks) == ["q1", "q3"] and picks[0]["uncertainty"] >= picks[1]["uncertainty"]
    assert main(["suggest", str(url), "--top", "1"]) == 0
    assert "--finetune-from latest" in capsys.readouterr().out

    save_correction(project, "q1", (1 + (q[1][2] > 0)).astype(np.uint8), model_version=version)
    argv = ["train", str(url), "--finetune-from", "latest", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--no-tune"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert f"{version} on the same images: IoU" in out.out and "1 image(s) annotated or corrected since" in out.err
    assert project.model_version("latest").provenance.finetuned_from == version
    assert main([*argv[:4], "--encoder", "resnet50"]) == 1
    assert "fine-tuning keeps its architecture" in capsys.readouterr().err


def test_finetuning_keeps_the_automatic_validation_part(nuclei_project):
    """Both versions are scored on the same pixels, which neither trained on; the correction trains."""
    q2 = nuclei_project.get_labels("q2")
    nuclei_project.set_labels("q2", None)
    nuclei_project.set_split("q2", "train")  # no image marked: validation is chosen automatically (rows of q0, q1)
    base = train(nuclei_project, tiny(epochs=1, steps_per_epoch=1))
    before = nuclei_project.model_version(base).provenance
    assert before.validation.startswith("automatic") and set(before.validation_rows) == {"q0", "q1"}
    save_correction(nuclei_project, "q2", q2, model_version=base)
    tuned = train(nuclei_project, finetune_config(nuclei_project, base, epochs=1, steps_per_epoch=1, batch_size=4))
    after = nuclei_project.model_version(tuned).provenance
    assert after.validation_rows == before.validation_rows and "kept from the version fine-tuned" in after.validation
    assert "q2" in after.train_images and "q2" not in after.validation_images


def test_recent_is_what_the_version_did_not_train_on_even_in_the_same_second(nuclei_project, monkeypatch):
    """Timestamps have a resolution of one second: on a fast machine (CI) images imported in the
    second a version was saved counted as annotated since (and the correction was missed before
    that). The version records the annotation revisions it trained on: "recent" is exact."""
    from napari_seg_box.core import manifest, store_versions
    from napari_seg_box.core.train.finetune import recent_images

    for module in (manifest, store_versions):  # everything below happens in one second
        monkeypatch.setattr(module, "now_iso", lambda: "2099-12-01T10:00:00+00:00", raising=False)
    nuclei_project.set_labels("q0", nuclei_project.get_labels("q0"))  # a new revision, trained on
    version = nuclei_project.model_version(train(nuclei_project, tiny(epochs=1, steps_per_epoch=1)))
    assert set(version.provenance.annotation_revisions) == {"q0", "q1", "q2"}  # train and validation, not the test image
    assert recent_images(nuclei_project, version) == {"q3"}  # the held-out image was not trained on
    save_correction(nuclei_project, "q1", nuclei_project.get_labels("q1"), model_version=version.version)
    assert recent_images(nuclei_project, version) == {"q1", "q3"}
    # a version that does not record its revisions: its corrections, and what was saved after it
    tiny_version = nuclei_project.model_version(save_tiny_model(nuclei_project))
    assert recent_images(nuclei_project, tiny_version) == set()  # the same second: left out
    save_correction(nuclei_project, "q2", nuclei_project.get_labels("q2"), model_version=tiny_version.version)
    monkeypatch.setattr(manifest, "now_iso", lambda: "2099-12-01T10:00:01+00:00")
    nuclei_project.set_labels("q0", nuclei_project.get_labels("q0"))
    assert recent_images(nuclei_project, tiny_version) == {"q0", "q2"}
