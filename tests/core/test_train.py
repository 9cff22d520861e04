"""Training on real data (DSB2018 nuclei quadrants, ISBI 2012 EM), tiny U-Nets on CPU."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_seg_box.core import ConfigError, DataError, Project
from napari_seg_box.core.errors import CancelledError, StoreError
from napari_seg_box.core.events import EpochEnd, Message, Preview, StepLoss
from napari_seg_box.core.train import TrainConfig, iter_train, lr_at, train, unfinished_runs

from ..conftest import isbi, nuclei_quadrants

TINY = dict(encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8), augmentation="light")


def tiny(**kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "patch_size": 64, "batch_size": 8, "learning_rate": 5e-3, "steps_per_epoch": 6, "epochs": 2, **kw})


def collect(gen):
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        return stop.value, events


def test_training_learns_on_real_nuclei(nuclei_project):
    """Loss falls, validation IoU beats a threshold, the automatic LR is chosen, metadata is complete."""
    cfg = tiny(epochs=4, steps_per_epoch=10, patch_size=96, learning_rate=None)
    version, events = collect(iter_train(nuclei_project, cfg))
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    steps = [e for e in events if isinstance(e, StepLoss)]
    assert [e.epoch for e in epochs] == [1, 2, 3, 4]
    assert np.mean([s.loss for s in steps[-10:]]) < 0.6 * np.mean([s.loss for s in steps[:5]])
    info = nuclei_project.model_version(version)
    t = info.training
    assert t.best["val_iou"] > 0.75, t.history
    assert t.status == "completed" and t.epochs_run == 4
    assert 1e-4 <= t.chosen["learning_rate"] <= 1e-2  # from the LR finder
    assert TrainConfig.from_dict(t.config) == cfg  # the whole configuration is saved with the version
    assert t.duration_s > 0 and t.device.startswith("CPU") and "torch" in info.provenance.packages
    assert info.class_names == ("background", "nucleus") and info.task == "segmentation" and not info.boundary
    assert info.provenance.train_images == ("q0", "q1")
    assert info.provenance.validation_images == ("q2",)  # marked; q3 (test) never used
    assert len(info.provenance.data_fingerprint) == 64
    h = t.history[-1]
    for key in ("train_loss", "val_loss", "train_acc", "val_acc", "train_iou", "val_iou", "val_iou_per_class", "seconds", "images_per_s"):
        assert key in h, key
    assert len(h["val_iou_per_class"]) == 2
    assert any(isinstance(e, Preview) and e.prediction.shape == e.image.shape for e in events)
    assert nuclei_project.list_dir("training") == []  # the resumable checkpoint is removed once complete


def test_same_seed_same_model_and_reload_identical(nuclei_project):
    import torch

    from napari_seg_box.core.infer import load_model

    v1 = train(nuclei_project, tiny(epochs=1, steps_per_epoch=3))
    v2 = train(nuclei_project, tiny(epochs=1, steps_per_epoch=3))
    m1, m2 = nuclei_project.model_version(v1), nuclei_project.model_version(v2)
    assert m1.weights_sha256 == m2.weights_sha256
    assert m1.training.history[0]["train_loss"] == m2.training.history[0]["train_loss"]
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 1, 64, 64)).astype(np.float32))
    a, _ = load_model(nuclei_project, v1, device="cpu")
    b, _ = load_model(nuclei_project, v1, device="cpu")
    with torch.inference_mode():
        assert torch.equal(a(x), b(x))


def test_cancel_keeps_best_and_resume_continues(nuclei_project):
    cancel = threading.Event()
    gen = iter_train(nuclei_project, tiny(epochs=3, distance=None), cancel=cancel)  # automatic: on for these nuclei
    events = []
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            version = stop.value
            break
        events.append(ev)
        if isinstance(ev, StepLoss) and ev.epoch == 2 and ev.step == 2:
            cancel.set()
    # stopped within one step of the request (losses are reported one step late, so step 3 was in flight)
    assert [e.step for e in events if isinstance(e, StepLoss) and e.epoch == 2] == [1, 2, 3]
    meta = nuclei_project.model_version(version).training
    assert meta.status == "stopped" and meta.best["epoch"] == 1
    from napari_seg_box.core.infer import Predictor, predict

    probs = predict(nuclei_project.get_image("q3"), Predictor.from_project(nuclei_project, version, device="cpu"))
    # touching nuclei: the classes and a distance output (chosen automatically, kept on resume)
    assert probs.shape == (3, 256, 256) and np.allclose(probs[:2].sum(0), 1, atol=1e-4) and 0 <= probs[2].min() <= probs[2].max() <= 1
    runs = unfinished_runs(nuclei_project)
    assert len(runs) == 1 and runs[0]["epoch"] == 1

    version2, events2 = collect(iter_train(nuclei_project, resume=True))
    first = next(e for e in events2 if isinstance(e, StepLoss))
    assert first.epoch == 2  # continues after the last finished epoch
    meta2 = nuclei_project.model_version(version2).training
    assert version2 != version and meta2.status == "completed"
    assert nuclei_project.model_version(version2).distance and meta2.chosen["distance"] is True
    assert [h["epoch"] for h in meta2.history] == [1, 2, 3]
    assert meta2.history[0] == meta.history[0]
    assert meta2.duration_s > meta.duration_s  # the time before the stop counts (it was lost before)
    assert unfinished_runs(nuclei_project) == []
    with pytest.raises(StoreError, match="no unfinished training run"):
        next(iter_train(nuclei_project, resume=True))


def test_cancel_before_first_epoch_saves_nothing(nuclei_project):
    cancel = threading.Event()
    gen = iter_train(nuclei_project, tiny(epochs=2), cancel=cancel)
    with pytest.raises(CancelledError, match="nothing was saved"):
        for ev in gen:
            if isinstance(ev, StepLoss):
                cancel.set()
    assert nuclei_project.model_versions() == []


def test_sparse_scribbles_train(tmp_path, shared_data):
    """Only nucleus centres and a few background lines are painted (0 elsewhere): the model still segments."""
    from scipy.ndimage import binary_erosion
    from skimage.morphology import disk

    project = Project.create(tmp_path / "sparse.zarr", classes=["background", "nucleus"])
    quads = nuclei_quadrants()
    for name, image, inst in quads[:2]:
        sparse = np.zeros(inst.shape, np.uint8)
        sparse[binary_erosion(inst > 0, structure=disk(3), border_value=1)] = 2
        bg = binary_erosion(inst == 0, structure=disk(4), border_value=1)
        lines = np.zeros_like(bg)
        lines[::16] = True
        lines[:, ::16] = True
        sparse[bg & lines] = 1
        assert (sparse > 0).mean() < 0.35
        project.add_image(name, image, labels=sparse, split="train")
    name, image, inst = quads[2]
    project.add_image(name, image, labels=(1 + (inst > 0)).astype(np.uint8), split="validation")  # dense truth
    version = train(project, tiny(epochs=4, steps_per_epoch=8, patch_size=96))
    per_class = max(project.model_version(version).training.history, key=lambda h: h["val_iou"])["val_iou_per_class"]
    assert per_class[1] > 0.55, per_class  # nucleus IoU on dense held-out truth


def test_isbi_multiclass_and_automatic_region_split(tmp_path, shared_data):
    """ISBI EM (membrane / interior) with three classes; one image: validation from its bottom rows."""
    project = Project.create(tmp_path / "em.zarr", classes=["membrane", "interior", "dark"])
    image, mask = isbi(0)
    labels = np.where(mask > 0, 2, 1).astype(np.uint8)
    labels[(image < 40) & (mask > 0)] = 3  # a third class: dark interior
    project.add_image("em0", image[:256, :256], labels=labels[:256, :256])
    version, events = collect(iter_train(project, tiny(epochs=1, steps_per_epoch=3)))
    info = project.model_version(version)
    assert info.spec.classes == 3 and len(info.training.history[0]["val_iou_per_class"]) == 3
    assert "bottom" in info.provenance.validation
    assert any("Validation: automatic" in getattr(e, "text", "") for e in events)


def test_automatic_image_split_and_settings(tmp_path, shared_data):
    project = Project.create(tmp_path / "auto.zarr", classes=["background", "nucleus"])
    for name, image, inst in nuclei_quadrants():
        project.add_image(name, image, labels=(1 + (inst > 0)).astype(np.uint8), split="train")
    cfg = TrainConfig(epochs=1, steps_per_epoch=2, learning_rate=1e-3, **TINY)  # patch and batch automatic
    version, events = collect(iter_train(project, cfg))
    info = project.model_version(version)
    assert len(info.provenance.validation_images) == 1 and len(info.provenance.train_images) == 3
    chosen = info.training.chosen
    patch = chosen["patch_size"]  # about 6 nucleus diameters (~25 px), a multiple of 32
    assert patch % 32 == 0 and 128 <= patch <= 192
    assert chosen["batch_size"] == (8 if patch <= 128 else 4)  # CPU defaults
    assert any("automatic: patch size, batch size" in getattr(e, "text", "") for e in events)


def test_finetune_starts_from_the_version(nuclei_project):
    base = train(nuclei_project, tiny(epochs=3, steps_per_epoch=8))
    base_iou = nuclei_project.model_version(base).best["val_iou"]
    tuned = train(nuclei_project, tiny(epochs=1, steps_per_epoch=1, learning_rate=1e-6, finetune_from=base))
    scratch = train(nuclei_project, tiny(epochs=1, steps_per_epoch=1, learning_rate=1e-6))
    iou = {v: nuclei_project.model_version(v).best["val_iou"] for v in (tuned, scratch)}
    assert iou[tuned] > base_iou - 0.05 and iou[tuned] > iou[scratch] + 0.2, (base_iou, iou)
    assert nuclei_project.model_version(tuned).provenance.finetuned_from == base


def test_finetune_into_other_channels_is_refused(nuclei_project, tmp_path):
    base = train(nuclei_project, tiny(epochs=1, steps_per_epoch=1))
    rgb = np.stack([nuclei_project.get_image("q0")] * 3, -1)
    labels = nuclei_project.get_labels("q0")
    for name in nuclei_project.image_names():
        nuclei_project.remove_image(name)
    nuclei_project.add_image("rgb", rgb, labels=labels, split="train")
    with pytest.raises(DataError, match="expects 1-channel images"):
        train(nuclei_project, tiny(finetune_from=base))


def test_efficientnet_learns_in_few_steps(nuclei_project):
    """EfficientNet's batch norms track their statistics as fast as the others' (smp keeps TensorFlow's
    momentum 0.01, with which a short training predicts badly in eval mode)."""
    import torch

    from napari_seg_box.core.models import ENCODERS, ModelSpec, build_model

    for encoder in ENCODERS:
        model = build_model(ModelSpec(encoder=encoder, encoder_depth=3, decoder_channels=(32, 16, 8)))
        assert {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.1}, encoder
    version = train(nuclei_project, tiny(epochs=4, steps_per_epoch=10, patch_size=96, encoder="efficientnet-b0"))
    assert nuclei_project.model_version(version).best["val_iou"] > 0.7


def test_out_of_memory_halves_the_batch_and_retries_the_step(nuclei_project, monkeypatch):
    """The CUDA out-of-memory path, simulated on the CPU (the runtime claims CUDA, the model refuses
    batches over 2): the batch is halved twice and each retry reuses the step's samples, so the
    background data thread is never asked for more batches than it makes (it hung before)."""
    import torch

    from napari_seg_box.core.train import loop as train_mod

    init, build = train_mod._Runtime.__init__, train_mod.build_model

    def as_if_cuda(self, cfg, device=None):
        init(self, cfg, device)
        self.cuda = True  # data thread and out-of-memory handling; precision stays float32

    def small_memory(*args, **kwargs):
        def refuse(module, inputs):
            if inputs[0].shape[0] > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        model = build(*args, **kwargs)
        model.register_forward_pre_hook(refuse)
        return model

    monkeypatch.setattr(train_mod._Runtime, "__init__", as_if_cuda)
    monkeypatch.setattr(train_mod, "build_model", small_memory)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: self)
    version, events = collect(iter_train(nuclei_project, tiny(batch_size=8, steps_per_epoch=2, epochs=2)))
    halved = [e.text for e in events if isinstance(e, Message) and "halved" in e.text]
    assert halved == [
        "GPU out of memory: batch size halved to 4; training continues.",
        "GPU out of memory: batch size halved to 2; training continues.",
    ]
    meta = nuclei_project.model_version(version).training
    assert meta.chosen["batch_size"] == 2
    assert [h["epoch"] for h in meta.history] == [1, 2]
    assert len([e for e in events if isinstance(e, StepLoss)]) == 4


@pytest.mark.parametrize("loss", ["focal", "edge_weighted", "ce"])
def test_other_losses_train(nuclei_project, loss):
    version = train(nuclei_project, tiny(epochs=3, steps_per_epoch=8, loss=loss))
    history = nuclei_project.model_version(version).training.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert max(h["val_iou"] for h in history) > 0.6, history


def test_boundary_class_learns_and_splits_along_boundaries(nuclei_project, tmp_path):
    """boundary=True: a third output learns the nuclei's outer pixels; metrics, labels and evaluation
    stay in the project's two classes; post-processing splits along the boundaries."""
    from napari_seg_box.core.infer import Predictor, predict
    from napari_seg_box.core.infer_large import predict_large
    from napari_seg_box.core.train import boundary_mask
    from napari_seg_box.workflows.evaluate import evaluate_project

    version = train(nuclei_project, tiny(epochs=4, steps_per_epoch=10, patch_size=96, boundary=True))
    info = nuclei_project.model_version(version)
    assert info.spec.classes == 3 and info.boundary and info.boundary_width == 2
    assert info.class_names == ("background", "nucleus")
    assert len(info.training.history[-1]["val_iou_per_class"]) == 2  # folded: the project's classes
    assert info.best["val_iou"] > 0.7, info.training.history

    predictor = Predictor.from_project(nuclei_project, version, device="cpu")
    assert (predictor.outputs, predictor.classes, predictor.boundary) == (3, 2, True)
    probs = predict(nuclei_project.get_image("q3"), predictor, tile_size=128)
    assert probs.shape == (3, 256, 256)
    inst = nuclei_project.get_instances("q3")
    ring = boundary_mask(inst, 2)
    assert probs[2][ring].mean() > 2.5 * probs[2][(inst > 0) & ~ring].mean()  # it learnt where boundaries are (untrained: equal)
    ev = evaluate_project(nuclei_project, version, save=False, predict_config={"tile_size": 128})
    assert ev.summary["objects"]["nucleus"]["f1@0.5"] > 0.5
    group = predict_large(nuclei_project.get_image("q3"), str(tmp_path / "big.zarr"), predictor, tile_size=128)
    assert set(np.unique(group["labels"][...])) <= {1, 2} and group["probabilities"].shape == (3, 256, 256)

    three = Project.create(tmp_path / "three.zarr", classes=["background", "a", "b"])
    three.add_image("x", nuclei_project.get_image("q0"), labels=nuclei_project.get_labels("q0"))
    with pytest.raises(ConfigError, match="one object class"):
        train(three, tiny(boundary=True))
    with pytest.raises(ConfigError, match="boundary_width"):
        TrainConfig(boundary=True, boundary_width=0)


def test_bad_configurations_give_clear_errors(nuclei_project, tmp_path):
    with pytest.raises(ConfigError, match="multiple of 32.*try 96"):
        TrainConfig(patch_size=100)
    with pytest.raises(ConfigError, match="Unknown encoder"):
        TrainConfig(encoder="vgg99")
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="Unknown training settings: colour"):
        TrainConfig.from_dict({"epochs": 3, "colour": "red"})
    assert TrainConfig.from_dict(tiny().to_dict()) == tiny()

    empty = Project.create(tmp_path / "empty.zarr", classes=["background", "cell"])
    empty.add_image("a", np.zeros((64, 64), np.uint8))
    with pytest.raises(DataError, match="No annotated images"):
        train(empty, tiny())

    one = Project.create(tmp_path / "one.zarr", classes=["background", "cell"])
    labels = np.zeros((64, 64), np.uint8)
    labels[10, 10:20] = 2
    labels[11, 10:20] = 1
    one.add_image("a", np.zeros((64, 64), np.uint8), labels=labels)
    with pytest.raises(DataError, match="No validation is possible"):
        train(one, tiny())
    assert one.get_labels("a").sum() == labels.sum()  # nothing the user stored is touched


def test_lr_schedule_shapes():
    total = 100
    one = [lr_at(s, total, 1e-3, "onecycle") for s in range(total)]
    assert one[0] == pytest.approx(1e-3 / 25) and max(one) == pytest.approx(1e-3, rel=1e-3)
    assert np.argmax(one) == pytest.approx(30, abs=1) and one[-1] == pytest.approx(1e-6)
    assert all(lr_at(s, total, 1e-3, "constant") == 1e-3 for s in range(total))
    cos = [lr_at(s, total, 1e-3, "cosine") for s in range(total)]
    assert cos[-1] == pytest.approx(1e-5) and max(cos) == pytest.approx(1e-3, rel=1e-2)


def test_lr_finder_in_range(nuclei_project):
    from napari_seg_box.core.losses import make_loss
    from napari_seg_box.core.models import ModelSpec, build_model
    from napari_seg_box.core.train import lr_find
    from napari_seg_box.core.train.prepare import _prepare_data
    from napari_seg_box.core.train.runtime import _Runtime
    from napari_seg_box.core.train.sampling import _Sampler

    cfg = tiny()
    data = _prepare_data(nuclei_project, cfg)
    model = build_model(ModelSpec("resnet18", 1, 2, 3, (32, 16, 8)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = lr_find(model, _Sampler(data, 64, cfg), _Runtime(cfg), make_loss("dice_ce"), batch_size=4, steps=12)
    assert 1e-4 <= out["lr"] <= 1e-2
    assert len(out["lrs"]) == len(out["losses"]) >= 5 and out["lrs"] == sorted(out["lrs"])
    assert all((v == model.state_dict()[k]).all() for k, v in before.items())  # model restored


def test_train_cli_prints_epochs_and_json(nuclei_project, capsys, tmp_path):
    import json

    from napari_seg_box.cli import main

    tiny_args = [
        "--encoder",
        "resnet18",
        "--encoder-depth",
        "3",
        "--decoder-channels",
        "32",
        "16",
        "8",
        "--patch-size",
        "64",
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
    ]
    assert main(["train", nuclei_project.url, "--epochs", "2", "--steps-per-epoch", "2", *tiny_args]) == 0
    captured = capsys.readouterr()
    assert "epoch   1/2  train loss" in captured.err and "epoch   2/2" in captured.err
    assert "model version v001: completed" in captured.out

    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"epochs": 1, "steps_per_epoch": 1, "augmentation": "none"}))
    assert main(["train", nuclei_project.url, "--config", str(settings), *tiny_args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["version"] == "v002" and summary["epochs_run"] == 1
    assert nuclei_project.model_version("v002").training.config["augmentation"] == "none"

    assert main(["train", nuclei_project.url, "--patch-size", "100"]) == 1
    assert "multiple of 32" in capsys.readouterr().err


def test_short_runs_validate_with_the_current_batch_norm_statistics(tmp_path):
    """A few short epochs at a high learning rate: with the running batch-norm averages the
    validation loss was 10^6 and IoU 0.38 (the widget's curves 'looked broken'); recomputed from
    training batches of the current weights they are what the network really does."""
    p = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus"])
    for (name, image, inst), split in zip(nuclei_quadrants()[:3], ["train", "train", "validation"]):
        labels = np.zeros(inst.shape, np.uint8)
        labels[:160] = 1 + (inst[:160] > 0)
        p.add_image(name, image, labels=labels, split=split)
    cfg = TrainConfig(
        epochs=3, encoder="resnet18", patch_size=128, batch_size=4, steps_per_epoch=4, learning_rate=1e-2, augmentation="light"
    )
    history = p.model_version(train(p, cfg)).training.history
    assert max(h["val_loss"] for h in history) < 5, history
    assert history[-1]["val_iou"] > 0.7, history


def test_objects_painted_alone_are_refused_until_unpainted_means_background(tmp_path, capsys):
    """Painting only the nuclei used to train a useless model that reported validation IoU 1.000."""
    from napari_seg_box.cli import main as cli
    from napari_seg_box.core.errors import OneClassError

    p = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus"])
    for (name, image, inst), split in zip(nuclei_quadrants()[:3], ["train", "train", "validation"]):
        p.add_image(name, image, labels=np.where(inst > 0, 2, 0).astype(np.uint8), split=split)  # objects only
    with pytest.raises(OneClassError, match="Only 'nucleus' is painted") as err:
        train(p, tiny(epochs=1))
    assert err.value.images == ["q0", "q1", "q2"] and "napari-seg-box background" in err.value.for_face("cli")
    assert p.model_versions() == []
    assert cli(["background", p.url, "q0", "q1", "q2"]) == 0 and "are background now" in capsys.readouterr().out
    p.refresh()
    assert all(r.unpainted_background for r in p.images())
    version = train(p, tiny(epochs=3, steps_per_epoch=8, patch_size=96))
    assert 0.6 < p.model_version(version).best["val_iou"] < 0.99  # a real score, not a perfect nonsense one


def test_the_time_left_counts_learning_steps_only(nuclei_project, monkeypatch):
    """The ETA used to spread the data preparation and the learning-rate search over the steps: "ETA
    7:13" with a minute left. Here the clock jumps 1000 s while the settings are chosen: the
    estimates must not grow by it."""
    import time
    import types

    from napari_seg_box.core.events import Progress
    from napari_seg_box.core.train import loop

    jump = [0.0]
    clock = types.SimpleNamespace(**{k: getattr(time, k) for k in ("time", "sleep", "monotonic", "strftime")})
    clock.perf_counter = lambda: time.perf_counter() + jump[0]
    real = loop._settings

    def slow_settings(*args, **kwargs):
        jump[0] += 1000.0  # a very slow learning-rate search
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(loop, "time", clock)
    monkeypatch.setattr(loop, "_settings", slow_settings)
    _, events = collect(iter_train(nuclei_project, tiny(epochs=2, steps_per_epoch=4)))
    steps = [e for e in events if isinstance(e, Progress) and e.stage == "train"]
    assert [e.message for e in steps] == ["epoch 1 of 2"] * 4 + ["epoch 2 of 2"] * 4
    assert all(0 <= e.eta_s < 100 for e in steps), [round(e.eta_s, 1) for e in steps]  # the old way: 1000 s and more
    assert steps[0].eta_s > steps[4].eta_s > steps[-1].eta_s == 0
