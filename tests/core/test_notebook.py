"""The training notebook for a GPU elsewhere: exported from the real nuclei project, executed headless
(nbclient, a kernel of this interpreter), its model archive imported back into the project."""

from __future__ import annotations

import argparse
import json
import sys
import zipfile

import numpy as np
import pytest

from napari_seg_box.core import ConfigError, DataError, Project
from napari_seg_box.core.notebook import EPOCHS_ENV, SKIP_INSTALL_ENV, default_config, export_notebook
from napari_seg_box.core.train import TrainConfig

from ..conftest import SECRET, nuclei_quadrants

TINY = dict(encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8), augmentation="light")


def tiny(**kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "patch_size": 64, "batch_size": 8, "learning_rate": 5e-3, "steps_per_epoch": 3, "epochs": 3, **kw})


def cells(path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell) -> str:
    return "".join(cell["source"])


def run_cli(argv: list[str]) -> int:
    from napari_seg_box.cli.notebook import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def kernel_of_this_python(tmp_path, monkeypatch) -> str:
    """A kernelspec that runs this very interpreter (the venv), found first through JUPYTER_PATH."""
    folder = tmp_path / "jupyter" / "kernels" / "segbox-test"
    folder.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": "segbox", "language": "python"}
    (folder / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "segbox-test"


@pytest.mark.slow
def test_notebook_trains_elsewhere_and_its_model_comes_back(nuclei_project, tmp_path, monkeypatch):
    import nbclient  # the notebook extra, part of the testing extra: a missing one fails, it is not skipped
    import nbformat
    import torch
    from safetensors.torch import load as load_bytes

    from napari_seg_box.core.infer import Predictor, predict
    from napari_seg_box.core.model_io import import_model, read_version_archive
    from napari_seg_box.core.models import build_model

    out = tmp_path / "colab"
    paths = export_notebook(nuclei_project, out, config=tiny(steps_per_epoch=2, batch_size=4))
    assert paths == {"notebook": out / "train_nuclei.ipynb", "data": out / "nuclei-data.zip"}

    # the data zip: the training part of the store, nothing else
    with zipfile.ZipFile(paths["data"]) as z:
        names = z.namelist()
        manifest = json.loads(z.read("nuclei.zarr/segbox.json"))
    assert all(n.startswith("nuclei.zarr/") for n in names)
    assert not [n for n in names if n.startswith("nuclei.zarr/models/")] and manifest["models"] == {}
    assert {n: r["split"] for n, r in manifest["images"].items()} == {"q0": "train", "q1": "train", "q2": "validation"}  # no q3 (test)
    assert all(r["labels"] and r["instances"] for r in manifest["images"].values())
    assert [c["name"] for c in manifest["classes"]] == nuclei_project.class_names

    # the notebook: valid nbformat 4, a Python 3 kernel, the cells in order
    nb = nbformat.read(paths["notebook"], as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    texts = [c.source for c in nb.cells]
    assert nb.cells[0].cell_type == "markdown" and "Change runtime type > GPU" in texts[0] and "nuclei-data.zip" in texts[0]
    assert "%pip install -q napari-seg-box" in texts[1] and SKIP_INSTALL_ENV in texts[1]
    assert "zipfile" in texts[2] and "torch.cuda.is_available()" in texts[3]
    params = nb.cells[4]
    assert params.metadata.tags == ["parameters"] and "'epochs': 3," in params.source and EPOCHS_ENV in params.source
    assert "iter_train_model" in texts[5] and "matplotlib" in texts[6] and "export_version_archive" in texts[7]
    assert "napari-seg-box import-model " in texts[7] and repr(str(nuclei_project.url)) in texts[7]

    # run it headless as Colab would (install skipped, 1 epoch; tuning off, injected papermill-style)
    monkeypatch.setenv(SKIP_INSTALL_ENV, "1")
    monkeypatch.setenv(EPOCHS_ENV, "1")
    nb.cells.insert(5, nbformat.v4.new_code_cell("TUNE = False  # injected parameters"))
    kernel = kernel_of_this_python(tmp_path, monkeypatch)
    nbclient.NotebookClient(nb, kernel_name=kernel, timeout=600, resources={"metadata": {"path": str(out)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.output_type == "stream")
    assert "epoch   1/1" in printed and "epoch   2/" not in printed, printed
    assert any("image/png" in o.get("data", {}) for o in nb.cells[7].outputs)  # the curves
    archives = sorted(out.glob("*.segbox-model.zip"))
    assert [a.name for a in archives] == ["nuclei-notebook-v001.segbox-model.zip"]
    assert f"napari-seg-box import-model {nuclei_project.url} {archives[0].name}" in printed

    # back home: a new version, as the notebook trained it
    imported = import_model(nuclei_project, archives[0])
    assert [e.version for e in nuclei_project.model_versions()] == [imported.version]
    t = imported.training
    assert t.status == "imported" and t.epochs_run == 1 and len(t.history) == 1 and t.history[0]["epoch"] == 1
    assert TrainConfig.from_dict(t.config) == tiny(epochs=1, steps_per_epoch=2, batch_size=4)
    assert imported.provenance.train_images == ("q0", "q1") and imported.provenance.validation_images == ("q2",)

    # it predicts the held-out image exactly as the archive's weights and the notebook's own model do
    image = nuclei_project.get_image("q3")
    here = predict(image, Predictor.from_project(nuclei_project, imported.version, device="cpu"))
    info, weights = read_version_archive(archives[0])
    model = build_model(info.spec)
    model.load_state_dict(load_bytes(weights))
    model.eval()
    from_archive = predict(image, Predictor(model, info, torch.device("cpu")))
    there = predict(image, Predictor.from_project(Project.open(out / "nuclei.zarr"), "latest", device="cpu"))
    assert here.shape == (2, *image.shape) and np.isfinite(here).all()
    np.testing.assert_array_equal(here, from_archive)
    np.testing.assert_array_equal(here, there)


def test_bad_inputs_are_refused_before_anything_is_written(tmp_path, nuclei_project):
    empty = Project.create(tmp_path / "empty.zarr")
    (name, image, inst) = nuclei_quadrants()[0]
    empty.add_image("unlabelled", image)
    empty.add_image("held out", image, labels=(1 + (inst > 0)).astype(np.uint8), split="test")
    with pytest.raises(DataError, match="no annotated training images.*annotate.*import masks"):
        export_notebook(empty, tmp_path / "nb")
    assert not (tmp_path / "nb").exists()

    with pytest.raises(ConfigError, match="cannot fine-tune v001"):
        export_notebook(nuclei_project, tmp_path / "nb", config=tiny(finetune_from="v001"))
    with pytest.raises(ConfigError, match="does not exist"):
        export_notebook(nuclei_project, tmp_path / "nb", config=tiny(encoder_weights_file=str(tmp_path / "missing.safetensors")))
    assert not (tmp_path / "nb").exists()

    paths = export_notebook(nuclei_project, tmp_path / "nb", config=tiny())
    before = {k: p.read_bytes() for k, p in paths.items()}
    with pytest.raises(DataError, match="exists already") as err:
        export_notebook(nuclei_project, tmp_path / "nb", config=tiny(epochs=9))
    assert "--overwrite" in err.value.for_face("cli") and "overwrite=True" in str(err.value)
    assert {k: p.read_bytes() for k, p in paths.items()} == before
    export_notebook(nuclei_project, tmp_path / "nb", config=tiny(epochs=9), overwrite=True)
    assert "'epochs': 9," in source(cells(paths["notebook"])[4])

    # local encoder weights travel in the data zip, and the settings name them there
    (tmp_path / "encoder.safetensors").write_bytes(b"encoder weights")
    paths = export_notebook(
        nuclei_project, tmp_path / "nb", config=tiny(encoder_weights_file=str(tmp_path / "encoder.safetensors")), overwrite=True
    )
    assert "'encoder_weights_file': 'nuclei-weights/encoder.safetensors'," in source(cells(paths["notebook"])[4])
    with zipfile.ZipFile(paths["data"]) as z:
        assert z.read("nuclei-weights/encoder.safetensors") == b"encoder weights"


def test_default_settings_come_from_the_latest_training(nuclei_project):
    from napari_seg_box.core.models import ModelSpec
    from napari_seg_box.core.versions import ModelVersion, Training

    def save(config: dict) -> None:  # the description is what counts here, not the weights
        spec = ModelSpec(in_channels=1, classes=2, encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8))
        nuclei_project.save_model_version(b"weights", ModelVersion(spec, ("background", "nucleus"), training=Training(config=config)))

    assert default_config(nuclei_project) == TrainConfig()  # no model yet
    save({})  # a model that does not say how it was trained (imported)
    assert default_config(nuclei_project) == TrainConfig()
    save(tiny(device="cpu", epochs=7).to_dict())
    save(tiny(finetune_from="v002", epochs=10).to_dict())
    # the fine-tuning run (newest) needs its starting version: the run before it is taken, on any device
    assert default_config(nuclei_project) == tiny(epochs=7, device="auto")


def test_cli_export_notebook(nuclei_project, tmp_path, capsys):
    out = tmp_path / "nb"
    argv = ["export-notebook", str(nuclei_project.url), "--out", str(out), "--epochs", "4", "--package", "napari-seg-box>=0.1"]
    assert run_cli(argv) == 0
    printed = capsys.readouterr().out
    assert "train_nuclei.ipynb" in printed and "nuclei-data.zip" in printed and "import-model" in printed
    nb = cells(out / "train_nuclei.ipynb")
    assert "%pip install -q 'napari-seg-box>=0.1'" in source(nb[1])  # quoted: > is no shell redirection
    assert "'epochs': 4," in source(nb[4]) and "'encoder': 'resnet34'," in source(nb[4])
    with pytest.raises(DataError, match="exists already"):
        run_cli(argv)
    assert run_cli([*argv[:-4], "--epochs", "5", "--no-data", "--overwrite"]) == 0
    assert "'epochs': 5," in source(cells(out / "train_nuclei.ipynb")[4])


@pytest.mark.s3
def test_s3_store_is_opened_by_url_and_no_secret_is_written(s3_env, tmp_path):
    project = Project.create("s3://lab/nuclei.zarr", storage_options={"endpoint_url": s3_env})
    (_, image, inst) = nuclei_quadrants()[0]
    project.add_image("q0", image, labels=(1 + (inst > 0)).astype(np.uint8))
    paths = export_notebook(project, tmp_path / "nb", config=tiny())
    assert list(paths) == ["notebook"] and [p.name for p in (tmp_path / "nb").iterdir()] == ["train_nuclei.ipynb"]
    text = paths["notebook"].read_text(encoding="utf-8")
    nb = cells(paths["notebook"])
    assert "'s3://lab/nuclei.zarr'" in source(nb[2]) and s3_env in source(nb[2]) and "AWS_SECRET_ACCESS_KEY" in source(nb[2])
    assert SECRET not in text and "segbox-test-key-id" not in text
    assert "nothing to import" in source(nb[7])
