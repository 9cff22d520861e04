"""Tiled prediction: shapes of any size, stacks, seams, TTA, events/cancel, bad input, bounded memory."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

from napari_seg_box.core import ConfigError, DataError, Project, StoreError
from napari_seg_box.core.errors import CancelledError
from napari_seg_box.core.events import Progress
from napari_seg_box.core.infer import PredictConfig, Predictor, iter_predict, predict
from napari_seg_box.core.infer_large import predict_large
from napari_seg_box.core.tiling import importance_map, tile_starts
from napari_seg_box.workflows.predict import predict_files, predict_project

from ..conftest import nuclei
from ._models import nuclei_project_with_model, save_tiny_model


@pytest.fixture
def tiny(tmp_path):
    project = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus"])
    version = save_tiny_model(project)
    return project, version, Predictor.from_project(project, version, device="cpu")


@pytest.fixture
def fitted(nuclei_project):
    v = nuclei_project_with_model(nuclei_project)
    return nuclei_project, v, Predictor.from_project(nuclei_project, v, device="cpu")


@pytest.mark.parametrize("encoder", ["resnet18", "resnet50", "mobilenet_v2", "efficientnet-b0"])
def test_inference_network_folds_batch_norms_same_outputs(encoder):
    """The network that predicts has its batch norms folded into the convolutions (and the faster
    layout) and gives the model's outputs; the model itself is untouched."""
    import torch

    from napari_seg_box.core.models import ModelSpec, build_model, inference_network

    torch.manual_seed(0)
    model = build_model(ModelSpec(encoder=encoder, encoder_depth=3, decoder_channels=(32, 16, 8))).eval()
    with torch.no_grad():  # batch statistics as after training (not the identity of a new network)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net = inference_network(model, torch.device("cpu"))
    x = torch.randn(2, 1, 64, 96)
    with torch.inference_mode():
        ref, out = model(x), net(x)
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()))
    n_bn = lambda m: sum(isinstance(k, torch.nn.BatchNorm2d) for k in m.modules())
    if encoder.startswith(("resnet", "mobilenet")):
        assert n_bn(net) == 0, f"{n_bn(net)} of {n_bn(model)} batch norms left"
    else:  # EfficientNet's blocks call their batch norms by other names: only the decoder's are folded
        assert n_bn(net) < n_bn(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert n_bn(model) > 0 and next(model.parameters()).is_contiguous()


def test_tiles_batched_across_rows_give_the_same_probabilities(tiny):
    _, _, pr = tiny
    image = nuclei()[0][:300, :420]
    one = predict(image, pr, tile_size=128, batch_size=1)
    many = predict(image, pr, tile_size=128, batch_size=7)  # batches span two and three tile rows
    np.testing.assert_allclose(many, one, atol=1e-5)


def test_tiling_geometry_and_gaussian():
    assert tile_starts(256, 256, 0.25) == [0]
    starts = tile_starts(1000, 256, 0.25)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert max(np.diff(starts)) <= 192  # at least 25 % overlap everywhere
    assert len(tile_starts(1000, 256, 0.5)) > len(starts)
    g = importance_map((64, 64))
    assert g.max() == pytest.approx(1.0) and g.min() > 0 and g[32, 32] > g[0, 0]
    assert (importance_map((64, 64), blending="constant") == 1).all()
    with pytest.raises(ConfigError, match="multiple of 32"):
        PredictConfig(tile_size=100)
    with pytest.raises(ConfigError, match="overlap"):
        PredictConfig(overlap=0.95)
    with pytest.raises(ConfigError, match="batch_size"):
        PredictConfig(batch_size=0)
    assert PredictConfig.from_dict(PredictConfig.quality().to_dict()).overlap == 0.5
    assert PredictConfig.from_dict({"tile_size": 128, "batch_size": None}).batch_size is None
    with pytest.raises(ConfigError, match="Unknown prediction settings: unknown"):  # one rule for every config
        PredictConfig.from_dict({"tile_size": 128, "unknown": 1})


def test_any_size_and_small_images(tiny):
    _, _, pr = tiny
    rng = np.random.default_rng(0)
    for shape in [(300, 450), (40, 50), (8, 8), (33, 257)]:
        img = rng.integers(0, 4000, shape).astype(np.uint16)
        probs = predict(img, pr, tile_size=128)
        assert probs.shape == (2, *shape) and probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


def test_stack_slice_by_slice(tiny):
    _, _, pr = tiny
    rng = np.random.default_rng(1)
    stack = rng.integers(0, 255, (3, 70, 90)).astype(np.uint8)
    probs = predict(stack, pr, tile_size=64)
    assert probs.shape == (3, 2, 70, 90)
    np.testing.assert_allclose(probs[1], predict(stack[1], pr, tile_size=64), atol=1e-6)


def test_tiled_prediction_has_no_seams(fitted):
    _, _, pr = fitted
    image, _ = nuclei()
    whole = predict(image, pr, tile_size=512)  # one tile: the whole image
    tiled = predict(image, pr, tile_size=128)  # 5 x 5 tiles, Gaussian blending
    m = 16
    diff = np.abs(whole[1] - tiled[1])[m:-m, m:-m]
    assert diff.mean() < 0.005
    assert np.percentile(diff, 99.5) < 0.05
    agree = (whole.argmax(0) == tiled.argmax(0))[m:-m, m:-m].mean()
    assert agree > 0.995
    # blending matters: plain averaging of the tiles is further from the whole-image prediction
    const = predict(image, pr, tile_size=128, blending="constant")
    assert np.abs(whole[1] - const[1])[m:-m, m:-m].mean() > diff.mean()


def test_tta_is_flip_equivariant(tiny):
    _, _, pr = tiny
    img = np.random.default_rng(2).integers(0, 255, (64, 64)).astype(np.uint8)
    a = predict(img, pr, tile_size=64, tta="d4")
    b = predict(img[:, ::-1], pr, tile_size=64, tta="d4")
    c = predict(np.rot90(img), pr, tile_size=64, tta="d4")
    np.testing.assert_allclose(a, b[:, :, ::-1], atol=1e-4)
    np.testing.assert_allclose(a, np.rot90(c, -1, axes=(1, 2)), atol=1e-4)
    plain = predict(img, pr, tile_size=64)
    assert np.abs(plain - a).max() > 1e-4  # TTA did average something


def test_progress_events_and_cancel(tiny):
    _, _, pr = tiny
    img = np.zeros((200, 200), np.uint16)
    gen = iter_predict(img, pr, tile_size=64, overlap=0.25, batch_size=2)
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    prog = [e for e in events if isinstance(e, Progress)]
    n = len(tile_starts(200, 64, 0.25)) ** 2
    assert prog[-1].done == prog[-1].total == n and result.shape == (2, 200, 200)
    cancel = threading.Event()
    gen = iter_predict(img, pr, tile_size=64, batch_size=1, cancel=cancel)
    next(gen)
    cancel.set()
    with pytest.raises(CancelledError):
        for _ in gen:
            pass


def test_bad_input(tiny, tmp_path):
    project, version, pr = tiny
    rgb = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(DataError, match="expects 1-channel images but this image has 3"):
        predict(rgb, pr)
    with pytest.raises(DataError, match="empty"):
        predict(np.zeros((0, 10), np.uint8), pr)
    with pytest.raises(StoreError, match="No model version 'v042'"):
        predict(np.zeros((64, 64)), project, version="v042")
    empty = Project.create(tmp_path / "empty.zarr")
    with pytest.raises(StoreError, match="no model version yet"):
        predict(np.zeros((64, 64)), empty)
    # a 3-channel model refuses grayscale images
    v3 = save_tiny_model(project, in_channels=3)
    with pytest.raises(DataError, match="expects 3-channel"):
        predict(np.zeros((64, 64)), project, version=v3)
    assert predict(rgb, project, version=v3).shape == (2, 64, 64)


def _zarr_image(path, H, W, seed):
    import zarr

    rng = np.random.default_rng(seed)
    src = zarr.create_array(str(path), shape=(H, W), chunks=(256, 256), dtype="uint16")
    for y in range(0, H, 256):
        src[y : y + 256] = rng.integers(0, 4000, (min(256, H - y), W)).astype(np.uint16)
    return src


def _peak(fn):
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_large_zarr_bounded_memory(tiny, tmp_path):
    _, _, pr = tiny
    cfg = PredictConfig(tile_size=128, overlap=0.25, device="cpu")
    W = 512
    small = _zarr_image(tmp_path / "small.zarr", 1024, W, 3)
    _zarr_image(tmp_path / "tall.zarr", 3072, W, 4)
    group, peak_small = _peak(lambda: predict_large(str(tmp_path / "small.zarr"), str(tmp_path / "o1.zarr"), pr, config=cfg, chunk=256))
    _, peak_tall = _peak(lambda: predict_large(str(tmp_path / "tall.zarr"), str(tmp_path / "o2.zarr"), pr, config=cfg, chunk=256))
    in_memory_tall = 3072 * W * 4 * 3  # normalised float32 image + 2 float32 probability planes
    # memory does not grow with the image: 3x the pixels, (almost) the same peak, far below in-memory
    assert peak_tall < in_memory_tall / 2, f"peak {peak_tall / 1e6:.1f} MB"
    assert peak_tall - peak_small < 0.1 * in_memory_tall, (peak_small, peak_tall)
    # and the result equals in-memory prediction
    labels = np.asarray(group["labels"][...])
    probs = np.asarray(group["probabilities"][...]).astype(np.float32)
    ref = predict(np.asarray(small[...]), pr, config=cfg)
    np.testing.assert_allclose(probs, ref, atol=2e-3)  # float16 output
    assert (labels == ref.argmax(0) + 1).mean() > 0.999
    # a dask array works the same, and an existing output is never overwritten
    import dask.array as da

    g2 = predict_large(da.from_zarr(small), str(tmp_path / "o3.zarr"), pr, config=cfg, write_probabilities=False)
    assert (np.asarray(g2["labels"][...]) == labels).all()
    with pytest.raises(DataError, match="exists already"):
        predict_large(str(tmp_path / "small.zarr"), str(tmp_path / "o1.zarr"), pr, config=cfg)


def test_predict_project_and_files(fitted, tmp_path):
    import tifffile

    project, v, pr = fitted
    out = predict_project(project, v, split="test", tile_size=128)
    assert list(out) == ["q3"] and out["q3"].shape == (2, 256, 256)
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", project.get_image("q3"))
    (folder / "broken.tif").write_bytes(b"not a tiff")
    tifffile.imwrite(folder / "rgb.tif", np.zeros((64, 64, 3), np.uint8))
    rows = predict_files(str(folder), tmp_path / "out", pr, tile_size=128)
    by = {r["name"]: r for r in rows}
    assert by["a"]["error"] is None and by["a"]["n_objects"] > 20
    assert "Cannot read" in by["broken"]["error"]
    assert "expects 1-channel" in by["rgb"]["error"]
    labels = tifffile.imread(by["a"]["labels"])
    assert labels.shape == (256, 256) and set(np.unique(labels)) <= {1, 2}
