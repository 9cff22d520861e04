"""Issue 21: a plain ``train`` leaves a version with tuned post-processing; a time budget instead of epochs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_seg_box.core import ConfigError, Project
from napari_seg_box.core.events import EpochEnd, Message
from napari_seg_box.core.train import TrainConfig, iter_train

from ..conftest import nuclei_quadrants
from .test_train import collect, tiny

TINY_CLI = [
    "--encoder", "resnet18", "--encoder-depth", "3", "--decoder-channels", "32", "16", "8", "--patch-size", "96",
    "--batch-size", "8", "--lr", "5e-3", "--steps-per-epoch", "8", "--augment", "light",
]  # fmt: skip


def test_plain_train_tunes_on_the_part_it_kept_aside(tmp_path, capsys):
    """A user who gives only --epochs gets an automatic validation split; `evaluate` used untuned
    defaults (a fixed 5 px seed distance) and `tune` refused ("No annotated validation images")."""
    from napari_seg_box.cli import main
    from napari_seg_box.workflows.tune import tuning_planes

    p = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus"])
    for name, image, inst in nuclei_quadrants()[:2]:  # nothing marked validation
        p.add_image(name, image, labels=(1 + (inst > 0)).astype(np.uint8), instances=inst)
    assert main(["train", p.url, "--epochs", "4", *TINY_CLI, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    info = Project.open(p.url).model_version(summary["version"])
    rows = info.provenance.validation_rows
    assert set(rows) == {"q0", "q1"} and all(150 < r < 256 for r in rows.values()), rows  # the bottom ~20 % of each
    assert info.tuning is not None and summary["postprocess"] == info.tuning.config.to_dict()
    assert info.tuning.images == ("q0", "q1") and info.tuning.score > 0.5, info.tuning
    planes = tuning_planes(p, info)
    assert [pl.labels.shape for pl in planes] == [(256 - rows["q0"], 256), (256 - rows["q1"], 256)]
    # the seed distances and minimum sizes follow the nuclei's size, not fixed pixel counts
    areas = np.concatenate([np.bincount(inst.ravel())[1:] for _, _, inst in nuclei_quadrants()[:2]])
    diameter = 2 * np.sqrt(np.median(areas[areas > 0]) / np.pi)
    assert 0.15 * diameter < min(info.tuning.grid["seed_distance"]) and max(info.tuning.grid["seed_distance"]) < 0.8 * diameter
    assert info.tuning.grid["seed_distance"] != [3, 5, 8, 12]
    # re-tuning works without images marked validation, on the same part
    assert main(["tune", p.url, "--thresholds", "0.4", "0.5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["combinations"] > 2
    assert main(["train", p.url, "--epochs", "1", *TINY_CLI, "--no-tune", "--json"]) == 0
    assert Project.open(p.url).model_version(json.loads(capsys.readouterr().out)["version"]).tuning is None


def test_time_budget_fits_the_epochs_and_ends_within_it(nuclei_project):
    budget_s = 24.0
    version, events = collect(iter_train(nuclei_project, tiny(minutes=budget_s / 60, epochs=1, learning_rate=None)))
    t = nuclei_project.model_version(version).training
    # an automatic learning rate skips the range test under a budget (it took 3 of 4 minutes of a 1-minute budget)
    assert t.chosen["learning_rate"] == 3e-3 and not any(getattr(e, "stage", "") == "finding the learning rate" for e in events)
    epoch_s = [h["seconds"] for h in t.history]
    assert t.status == "completed"
    if epoch_s[0] < budget_s / 4:  # the budget, not epochs=1, decides (on a loaded machine one epoch may fill it)
        assert t.epochs_run >= 2, epoch_s
    assert t.duration_s <= budget_s + max(epoch_s) + 3, (t.duration_s, epoch_s)  # within the budget, + one epoch at most
    planned = [e.epochs for e in events if isinstance(e, EpochEnd)]
    said = [e.text for e in events if isinstance(e, Message) and e.topic == "budget"]
    assert said and said[0].startswith("Time budget 0.4 min") and "epoch(s) in all" in said[0], said
    # the last epoch said how many were planned then; when the budget ran out sooner, the run says so
    assert len(planned) == t.epochs_run and planned[-1] >= t.epochs_run
    assert planned[-1] == t.epochs_run or f": {t.epochs_run} epoch(s) in all" in said[-1], (planned[-1], said[-1])
    assert t.config["minutes"] == pytest.approx(0.4)
    for bad in (0, -1, "ten", True):
        with pytest.raises(ConfigError, match="minutes"):
            TrainConfig(minutes=bad)


def test_imagenet_weights_come_through_the_cache_and_offline_says_what_to_do(nuclei_project, tmp_path, monkeypatch):
    """ImageNet weights through segmentation-models-pytorch's Hugging Face cache: here a cache made
    locally (no download in tests), with the hub offline."""
    import huggingface_hub.constants as hub
    import torch
    from safetensors.torch import save_file
    from segmentation_models_pytorch.encoders import encoders

    from napari_seg_box.core.models import ModelSpec, build_model, imagenet_weights_file

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="could not be downloaded .* local weights file"):
        collect(iter_train(nuclei_project, tiny(pretrained=True)))
    assert nuclei_project.model_versions() == []

    where = encoders["resnet18"]["pretrained_settings"]["imagenet"]
    snapshot = tmp_path / "hub" / f"models--{where['repo_id'].replace('/', '--')}" / "snapshots" / where["revision"]
    snapshot.mkdir(parents=True)
    rgb = build_model(ModelSpec("resnet18", 3, 2)).encoder.state_dict()  # ImageNet-like: 3 input channels
    weights = {k: v + 0.01 for k, v in rgb.items() if v.dtype.is_floating_point}
    save_file(weights, str(snapshot / "model.safetensors"))
    assert imagenet_weights_file("resnet18") == str(snapshot / "model.safetensors")
    model = build_model(ModelSpec("resnet18", 1, 2, 3, (32, 16, 8)), pretrained=True)
    assert torch.equal(model.encoder.layer1[0].conv1.weight, weights["layer1.0.conv1.weight"])
    version, _ = collect(iter_train(nuclei_project, tiny(pretrained=True, epochs=1)))
    assert nuclei_project.model_version(version).training.config["pretrained"] is True
