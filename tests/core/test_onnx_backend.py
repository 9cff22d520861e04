"""The ONNX Runtime backend: the same probabilities and labels as torch on a fitted model and real images."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from napari_seg_box.core import ConfigError, Project  # noqa: E402
from napari_seg_box.core import onnx_backend as ob  # noqa: E402
from napari_seg_box.core.infer import PredictConfig, Predictor, predict  # noqa: E402

from ..conftest import isbi, nuclei  # noqa: E402
from ._models import fitted_nuclei_model, save_tiny_model, with_distance_output  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def onnx_cache(tmp_path_factory):
    """Exported graphs go to a folder of this module's, not the user's cache."""
    folder = tmp_path_factory.mktemp("onnx-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ob.CACHE_ENV, str(folder))
        yield folder


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The tiny U-Net briefly fitted on two nuclei quadrants, saved as a model version, with a torch predictor."""
    project = Project.create(tmp_path_factory.mktemp("onnx") / "p.zarr", classes=["background", "nucleus"])
    version = save_tiny_model(project, model=fitted_nuclei_model(STEPS))
    return project, version, Predictor.from_project(project, version, device="cpu")


STEPS = 12  # a few seconds of fitting: 0.7 IoU on the held-out nuclei quadrant


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.argmax(a, 0) == np.argmax(b, 0)))


@pytest.mark.parametrize("tta", ["none", "flips"])
def test_onnx_predicts_what_torch_predicts(fitted, tta):
    """A real 300 x 200 nuclei crop (not a multiple of the 128 tile): probabilities to 1e-4, labels on >= 99.9 % of pixels."""
    _, _, torch_pr = fitted
    image = nuclei()[0][100:400, 150:350]
    ref = predict(image, torch_pr, tile_size=128, tta=tta)
    got = predict(image, torch_pr, tile_size=128, tta=tta, backend="onnx")
    onnx_pr = torch_pr.with_backend("onnx")
    assert isinstance(onnx_pr.network, ob.OnnxNetwork) and onnx_pr.backend == "onnx" and torch_pr.backend == "torch"
    assert got.shape == ref.shape == (2, 300, 200)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert agreement(got, ref) >= 0.999
    truth = nuclei()[1][100:400, 150:350] > 0
    pred = ref.argmax(0) == 1
    assert (pred & truth).sum() / (pred | truth).sum() > 0.4  # a fitted model: it finds the nuclei (IoU 0.47)
    assert onnx_pr.with_backend("torch") is torch_pr and torch_pr.with_backend("onnx") is onnx_pr  # built once, kept


def test_onnx_on_an_em_slice_and_the_cached_graph(fitted, onnx_cache):
    """Another real image (an ISBI EM crop, 200 x 300), a predictor loaded with backend="onnx" (the
    graph from the disk cache this time), and the same labels through Predictor.labels."""
    project, version, torch_pr = fitted
    torch_pr.with_backend("onnx")  # exported (once) into the cache
    pr = Predictor.from_project(project, version, device="cpu", backend="onnx")
    cached = onnx_cache / f"{pr.network.key}.onnx"
    assert not pr.network.exported and cached.is_file() and pr.network.key == torch_pr.with_backend("onnx").network.key
    image = isbi(0)[0][:200, 100:400]
    ref, got = predict(image, torch_pr, tile_size=128), predict(image, pr, tile_size=128)  # the config's "torch" keeps pr as loaded
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert np.mean(pr.labels(got) == torch_pr.labels(ref)) >= 0.999
    cached.write_bytes(b"a damaged file")  # exported again, not an error
    again = Predictor.from_project(project, version, device="cpu", backend="onnx")
    assert again.network.exported and cached.stat().st_size > 10**5


def test_distance_and_boundary_models_through_onnx(tmp_path):
    project = Project.create(tmp_path / "d.zarr", classes=["background", "nucleus"])
    image = nuclei()[0][:256, 256:]
    v = save_tiny_model(project, model=with_distance_output(fitted_nuclei_model(STEPS)), classes=3, distance=True)
    torch_pr = Predictor.from_project(project, v, device="cpu")
    onnx_pr = torch_pr.with_backend("onnx")
    ref, got = predict(image, torch_pr, tile_size=128), predict(image, onnx_pr, tile_size=128)
    assert got.shape == (3, 256, 256)
    np.testing.assert_allclose(got, ref, atol=1e-4)  # softmax of the classes, sigmoid of the distance: the same code
    a, b = torch_pr.postprocess(ref), onnx_pr.postprocess(got)
    assert a.instances.max() > 5 and abs(int(a.instances.max()) - int(b.instances.max())) <= 1
    assert np.mean((a.instances > 0) == (b.instances > 0)) >= 0.999
    vb = save_tiny_model(project, classes=3, boundary_width=2, seed=3)  # a boundary model (random weights)
    torch_b = Predictor.from_project(project, vb, device="cpu")
    np.testing.assert_allclose(predict(image, torch_b, tile_size=128, backend="onnx"), predict(image, torch_b, tile_size=128), atol=1e-4)


def test_export_onnx_graph_is_dynamic_raw_logits(tmp_path):
    import onnx
    import onnxruntime
    import torch

    from napari_seg_box.core.models import ModelSpec, build_model

    from ._models import TINY

    torch.manual_seed(0)
    model = build_model(ModelSpec(in_channels=2, classes=3, **TINY)).train()
    path = ob.export_onnx(model, 2, tmp_path / "sub" / "m.onnx")
    assert path.is_file() and model.training  # exported from an eval copy: the model is untouched
    graph = onnx.load(str(path)).graph
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (graph.input[0], graph.output[0])]
    assert dims == [["batch", 2, "height", "width"], ["batch", 3, "height", "width"]]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(3, 2, 96, 160), (1, 2, 32, 64)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = model.eval()(x).numpy()
        (out,) = session.run(["output"], {"input": x.numpy()})
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))  # logits, not probabilities
    assert ob.weights_key(model, 2) != ob.weights_key(model, 1)
    with torch.no_grad():
        model.segmentation_head[0].bias += 1
    key = ob.weights_key(model, 2)
    assert key != ob.weights_key(build_model(ModelSpec(in_channels=2, classes=3, **TINY)), 2) and len(key) == 64


def test_backend_settings_and_errors(monkeypatch, fitted):
    cfg = PredictConfig(backend="onnx", tta="flips")
    assert PredictConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["backend"] == "onnx"
    assert PredictConfig().backend == "torch" and PredictConfig.from_dict({"backend": "auto"}).backend == "auto"
    with pytest.raises(ConfigError, match="backend must be one of torch, onnx, auto"):
        PredictConfig(backend="tensorrt")
    with pytest.raises(ConfigError, match="backend must be one of"):
        PredictConfig().replace(backend="ONNX")
    with pytest.raises(ConfigError, match="runs on the CPU"):
        ob.resolve_backend("onnx", "cuda")
    assert ob.resolve_backend("auto", "cuda") == "torch" and ob.resolve_backend("torch", "cpu") == "torch"
    assert ob.resolve_backend("auto", "cpu") == ("onnx" if ob.AUTO_ONNX_ON_CPU else "torch")
    _, _, pr = fitted
    assert pr.with_backend("auto").backend == ob.resolve_backend("auto", "cpu")
    # onnxruntime not installed: "onnx" says how to install it, "auto" quietly runs torch
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    monkeypatch.setattr(ob, "onnx_available", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install 'napari-seg-box\[onnx\]'"):
        ob.resolve_backend("onnx", "cpu")
    assert ob.resolve_backend("auto", "cpu") == "torch"


def test_cli_predict_backend_onnx(fitted, tmp_path, capsys, monkeypatch):
    import json

    import tifffile

    from napari_seg_box.cli import main

    project, version, torch_pr = fitted
    image = nuclei()[0][:300, :200]
    tifffile.imwrite(tmp_path / "crop.tif", image)
    labels, calls, run = {}, [], ob.OnnxNetwork.__call__
    monkeypatch.setattr(ob.OnnxNetwork, "__call__", lambda self, x: calls.append(x.shape) or run(self, x))
    for backend in ("torch", "onnx"):
        out = tmp_path / backend
        argv = ["predict", project.url, "--images", str(tmp_path / "crop.tif"), "--out", str(out), "--tile-size", "128", "--json"]
        assert main([*argv, "--backend", backend]) == 0
        assert json.loads(capsys.readouterr().out)["failed"] == 0
        labels[backend] = tifffile.imread(out / "crop_labels.tif")
        assert bool(calls) == (backend == "onnx")  # ONNX Runtime ran the tiles, and only when asked
    assert labels["onnx"].shape == (300, 200) and np.mean(labels["onnx"] == labels["torch"]) >= 0.999
    with pytest.raises(SystemExit):
        main(["predict", project.url, "--out", str(tmp_path / "x"), "--backend", "tensorflow"])
