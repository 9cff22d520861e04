"""bioimage.io model packages: export passes bioimage.io's own test_model offline for the three weight
formats, import brings the same model back, and bad packages are refused with a clear error."""

from __future__ import annotations

import dataclasses
import json
import zipfile

import numpy as np
import pytest

from napari_seg_box.cli import main
from napari_seg_box.core.errors import ConfigError, DataError, StoreError
from napari_seg_box.core.events import run_to_end
from napari_seg_box.core.infer import Predictor, iter_predict
from napari_seg_box.core.postprocess import PostprocessConfig
from napari_seg_box.core.versions import Tuning

from ..conftest import nuclei_quadrants
from ._models import fit_tiny_model, save_tiny_model


def _fitted(project, **kwargs) -> str:
    """A tiny U-Net fitted for a few steps on the training quadrants, saved with tuned post-processing."""
    pairs = [(project.get_image(r.name), project.get_labels(r.name)) for r in project.images("train")]
    model = fit_tiny_model([p[0] for p in pairs], [p[1] for p in pairs], steps=25)
    tuning = Tuning(PostprocessConfig(min_size=12, seed_distance=4), score=0.8, metric="f1@0.5", images=("q2",))
    return save_tiny_model(project, model=model, tuning=tuning, **kwargs)


def _predict(project, version, image):
    return run_to_end(iter_predict(image, Predictor.from_project(project, version)))


@pytest.mark.slow
def test_exported_package_passes_test_model_and_imports_back_identical(nuclei_project, tmp_path, capsys):
    from napari_seg_box.core.bioimageio_export import check_package

    v = _fitted(nuclei_project)
    out = tmp_path / "nuclei-model.zip"
    code = main(["export-model", str(nuclei_project.url), "--version", v, "--out", str(out), "--author", "Ada Lovelace;EMBL"])
    assert code == 0 and out.is_file()
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        rdf = z.read("rdf.yaml").decode()
        test_input = np.load(z.open("test_input.npy"))
        readme = z.read("README.md").decode()
    assert {"weights.pt", "weights.torchscript.pt", "weights.onnx", "cover.png", "model.json", "postprocessing.json"} <= names
    assert "scale_range" in rdf and "softmax" in rdf and "segmentation_models_pytorch" in rdf and "Ada Lovelace" in rdf
    # the test input is real: the centre of the project's test image, raw intensities
    q3 = nuclei_project.get_image("q3")
    assert test_input.shape == (1, 1, 256, 256) and np.array_equal(test_input[0, 0], q3.astype(np.float32))
    assert "background, nucleus" in readme and "## Validation" in readme and "Tuned post-processing" in readme

    result = check_package(out)  # bioimage.io's own test_model, offline, every weight format
    reproduced = [name for status, name in result["tests"] if name.startswith("Reproduce test outputs") and status == "passed"]
    assert result["status"] == "passed", result["errors"]
    assert len(reproduced) == 3, result["tests"]  # pytorch_state_dict, torchscript, onnx

    capsys.readouterr()
    assert main(["import-model", str(nuclei_project.url), str(out), "--json"]) == 0
    imported = json.loads(capsys.readouterr().out)["version"]
    mv = nuclei_project.model_version(imported)
    assert mv.training.status == "imported" and str(out) in mv.provenance.imported_from
    assert mv.tuning is not None and mv.tuning.config.min_size == 12  # the tuned post-processing came back
    assert mv.class_names == ("background", "nucleus") and mv.normalization == nuclei_project.model_version(v).normalization
    image = nuclei_project.get_image("q2")
    assert np.array_equal(_predict(nuclei_project, v, image), _predict(nuclei_project, imported, image))


@pytest.mark.slow
def test_a_distance_model_exports_its_activations_inside_the_network(nuclei_project, tmp_path):
    from napari_seg_box.core.bioimageio_export import check_package, export_package
    from napari_seg_box.core.model_io import import_model

    v = save_tiny_model(nuclei_project, classes=3, distance=True, seed=1)
    out = export_package(nuclei_project, tmp_path / "distance.zip", version=v, weight_formats=("pytorch_state_dict", "torchscript"))
    with zipfile.ZipFile(out) as z:
        rdf = z.read("rdf.yaml").decode()
        expected = np.load(z.open("test_output.npy"))
    assert "UnetWithDistance" in rdf and "bioimageio_arch.py" in rdf and "softmax" not in rdf
    # classes sum to one, the distance channel is a sigmoid
    assert np.allclose(expected[0, :2].sum(axis=0), 1, atol=1e-5) and expected[0, 2].min() >= 0 and expected[0, 2].max() <= 1
    assert check_package(out)["status"] == "passed"
    mv = import_model(nuclei_project, out)
    assert mv.distance and mv.n_classes == 2
    image = nuclei_project.get_image("q1")
    assert np.array_equal(_predict(nuclei_project, v, image), _predict(nuclei_project, mv.version, image))


def test_version_archive_round_trip_through_the_cli(nuclei_project, tmp_path, capsys):
    v = save_tiny_model(nuclei_project, seed=3)
    assert main(["export-model", str(nuclei_project.url), "--version", v, "--format", "segbox", "--out", str(tmp_path)]) == 0
    archive = tmp_path / f"nuclei-{v}.segbox-model.zip"
    assert archive.is_file()
    capsys.readouterr()
    assert main(["import-model", str(nuclei_project.url), str(archive)]) == 0
    assert "imported" in capsys.readouterr().out
    new = nuclei_project.refresh().model_versions()[-1].version
    assert new != v and nuclei_project.model_weights(new) == nuclei_project.model_weights(v)


def test_damaged_weights_are_never_exported(nuclei_project, tmp_path):
    from napari_seg_box.core.bioimageio_export import export_package
    from napari_seg_box.core.model_io import export_version_archive

    v = save_tiny_model(nuclei_project)
    path = f"models/{v}/weights.safetensors"
    data = bytearray(nuclei_project.read_bytes(path))
    data[-1] ^= 0xFF
    nuclei_project.write_bytes(path, bytes(data))
    with pytest.raises(StoreError, match="damaged"):
        export_package(nuclei_project, tmp_path / "out" / "m.zip", version=v)
    with pytest.raises(StoreError, match="damaged"):
        export_version_archive(nuclei_project, v, tmp_path / "out" / "m.segbox-model.zip")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_2d5_models_and_unknown_formats_are_refused_clearly(nuclei_project, tmp_path):
    from napari_seg_box.core.bioimageio_export import export_package

    v = save_tiny_model(nuclei_project)
    mv = nuclei_project.model_version(v)
    with pytest.raises(ConfigError, match="weight format"):
        export_package(nuclei_project, tmp_path / "m.zip", version=v, weight_formats=("keras",))
    spec = dataclasses.replace(mv.spec, in_channels=3)
    ctx = nuclei_project.save_model_version(nuclei_project.model_weights(v), dataclasses.replace(mv, spec=spec, context=1))
    with pytest.raises(ConfigError, match="2.5D"):
        export_package(nuclei_project, tmp_path / "m.zip", version=ctx.version)


def test_a_package_of_another_architecture_is_refused_naming_it(nuclei_project, tmp_path):
    """A bioimage.io package whose network is not an smp U-Net: the error names its architecture,
    and nothing is added to the store."""
    from napari_seg_box.core.bioimageio_export import export_package
    from napari_seg_box.core.model_io import import_model

    v = save_tiny_model(nuclei_project)
    out = export_package(nuclei_project, tmp_path / "m.zip", version=v, weight_formats=("pytorch_state_dict",))
    folder = tmp_path / "unpacked"
    with zipfile.ZipFile(out) as z:
        z.extractall(folder)
    rdf = (folder / "rdf.yaml").read_text()
    assert "callable: Unet" in rdf and "import_from: segmentation_models_pytorch" in rdf
    (folder / "rdf.yaml").write_text(
        rdf.replace("callable: Unet", "callable: StarDist2D").replace("segmentation_models_pytorch", "stardist")
    )
    before = [e.version for e in nuclei_project.model_versions()]
    with pytest.raises(DataError, match="StarDist2D from stardist"):
        import_model(nuclei_project, folder / "rdf.yaml")
    with pytest.raises(DataError, match="No model file"):
        import_model(nuclei_project, tmp_path / "missing.zip")
    assert [e.version for e in nuclei_project.model_versions()] == before


def test_the_classes_of_an_imported_model_must_match_the_project(nuclei_project, tmp_path):
    from napari_seg_box.core import Project
    from napari_seg_box.core.model_io import export_version_archive, import_model

    archive = export_version_archive(nuclei_project, save_tiny_model(nuclei_project), tmp_path / "a.zip")
    other = Project.create(tmp_path / "mito.zarr", classes=["background", "mitochondrion"])
    name, image, inst = nuclei_quadrants()[0]
    other.add_image(name, image)
    with pytest.raises(DataError, match="nucleus.*mitochondrion"):
        import_model(other, archive)
    assert other.model_versions() == []
