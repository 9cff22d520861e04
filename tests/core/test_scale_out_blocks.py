"""One image larger than memory predicted band by band by several workers (threads, a dask.distributed
cluster): bands of whole output chunk rows, the same labels and probabilities, bit for bit, as one
process; 2.5D volumes too; retries, failures named by rows, outputs workers cannot reach refused.
Real data: the DSB2018 nuclei image mirrored into a 2048 x 1536 mosaic, ISBI 2012 sections."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_seg_box.core import ConfigError, Project
from napari_seg_box.core.errors import CancelledError, SegBoxError
from napari_seg_box.core.events import Message, Progress, run_to_end
from napari_seg_box.core.infer import PredictConfig, Predictor, predict
from napari_seg_box.core.infer_blocks import plan_bands
from napari_seg_box.core.infer_large import iter_predict_large, predict_large
from napari_seg_box.core.model_ref import ModelRef
from tests.conftest import isbi, nuclei

from ._models import TINY, fitted_nuclei_model, save_tiny_model

CFG = PredictConfig(tile_size=128, overlap=0.25, batch_size=4, device="cpu")  # 4 tiles a batch: batches span tile rows
H, W, CHUNK = 2048, 1536, 256


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    """A 2048 x 1536 uint16 zarr image (chunks 256 x 512) of mirrored copies of the nuclei image,
    a project holding a tiny U-Net fitted on it, and the single-process prediction."""
    import zarr

    root = tmp_path_factory.mktemp("blocks")
    image = nuclei()[0]
    row = np.concatenate([image, image[:, ::-1], image], axis=1)
    big = np.concatenate([row, row[::-1], row, row[::-1]], axis=0)
    assert big.shape == (H, W)
    src = zarr.create_array(str(root / "big.zarr"), shape=big.shape, chunks=(256, 512), dtype=big.dtype)
    src[...] = big
    project = Project.create(root / "p.zarr", classes=["background", "nucleus"])
    version = save_tiny_model(project, model=fitted_nuclei_model())
    predictor = Predictor.from_project(project, version, device="cpu")
    single = predict_large(str(root / "big.zarr"), str(root / "single.zarr"), predictor, config=CFG, chunk=CHUNK)
    return root, project, version, predictor, single


def _same(group, ref):
    """Labels and probabilities identical (bit for bit) to the single-process output ``ref``."""
    labels, probs = group["labels"][...], group["probabilities"][...]
    assert np.array_equal(labels, ref["labels"][...])
    assert np.array_equal(probs, ref["probabilities"][...])
    return labels


def test_threads_and_a_dask_cluster_give_the_single_process_result(mosaic):
    from distributed import LocalCluster

    root, project, version, predictor, single = mosaic
    labels = single["labels"][...]
    assert 0.05 < (labels == 2).mean() < 0.6  # a fitted model: nuclei and background, not one class
    gen = iter_predict_large(
        str(root / "big.zarr"), str(root / "threads.zarr"), predictor, config=CFG, chunk=CHUNK, band=CHUNK, scheduler="threads", workers=2
    )
    events = []
    group = run_to_end(gen, events.append)
    _same(group, single)
    bands = [e for e in events if isinstance(e, Progress) and e.stage == "predict (bands)"]
    assert bands[-1].done == bands[-1].total == H // CHUNK
    assert any(isinstance(e, Message) and "peak memory" in e.text for e in events)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        # workers get a ModelRef: the project store's URL and the version, loaded once per worker process
        ref = ModelRef.of(predictor, project, device="cpu")
        group = predict_large(
            str(root / "big.zarr"),
            str(root / "cluster.zarr"),
            ref,
            config=CFG,
            chunk=CHUNK,
            band=2 * CHUNK,
            scheduler=cluster.scheduler_address,
        )
    _same(group, single)


def test_bands_are_whole_chunk_rows_and_never_share_a_chunk(mosaic, monkeypatch):
    from napari_seg_box.core import infer_large

    root, _, _, predictor, single = mosaic
    seen = []
    real = infer_large.band_task
    monkeypatch.setattr(infer_large, "band_task", lambda task, job: seen.append(task) or real(task, job))
    group = predict_large(
        str(root / "big.zarr"),
        str(root / "odd.zarr"),
        predictor,
        config=CFG,
        chunk=CHUNK,
        band=300,
        write_probabilities=False,
        scheduler="threads",
        workers=2,
    )
    assert np.array_equal(group["labels"][...], single["labels"][...])
    assert sorted(seen) == [(None, r0, min(H, r0 + 512)) for r0 in range(0, H, 512)]  # 300 rows -> 2 whole chunk rows
    owners = {}
    for _, r0, r1 in seen:
        assert r0 % CHUNK == 0 and (r1 % CHUNK == 0 or r1 == H)
        for c in range(r0 // CHUNK, -(-r1 // CHUNK)):
            assert c not in owners, f"chunk row {c} written by {owners[c]} and {(r0, r1)}"
            owners[c] = (r0, r1)
    assert sorted(owners) == list(range(H // CHUNK))
    assert plan_bands(1000, 256, 300) == [(0, 512), (512, 1000)]
    assert plan_bands(1000, 256, 1) == [(0, 256), (256, 512), (512, 768), (768, 1000)]


def test_a_25d_volume_in_bands_equals_one_process(tmp_path):
    """Each band of each plane reads the same rows of the plane's neighbours, normalised with their own
    percentiles (computed once by the caller): a 2.5D model gives the single-process volume."""
    import torch
    import zarr

    from napari_seg_box.core.models import ModelSpec, build_model, weights_to_bytes
    from napari_seg_box.core.versions import ModelVersion

    project = Project.create(tmp_path / "p.zarr", classes=["membrane", "interior"])
    torch.manual_seed(1)
    spec = ModelSpec(in_channels=3, classes=2, **TINY)
    info = ModelVersion(spec, ("membrane", "interior"), context=1, patch_size=64)
    version = project.save_model_version(weights_to_bytes(build_model(spec).eval()), info).version
    predictor = Predictor.from_project(project, version, device="cpu")
    assert predictor.context == 1
    volume = np.stack([isbi(i)[0][:384, :320] for i in range(4)])
    volume[2] //= 2  # planes of different brightness: each needs its own percentiles
    src = zarr.create_array(str(tmp_path / "vol.zarr"), shape=volume.shape, chunks=(1, 128, 128), dtype=volume.dtype)
    src[...] = volume
    kw = dict(config=CFG, chunk=128)
    single = predict_large(str(tmp_path / "vol.zarr"), str(tmp_path / "one.zarr"), predictor, **kw)
    assert single["labels"].shape == (4, 384, 320) and single["probabilities"].shape == (4, 2, 384, 320)
    many = predict_large(str(tmp_path / "vol.zarr"), str(tmp_path / "many.zarr"), predictor, band=128, scheduler="threads", workers=2, **kw)
    labels = _same(many, single)
    assert len(np.unique(labels)) == 2
    memory = predict(volume, predictor, stack=True, config=CFG)  # in memory: each plane normalised whole
    np.testing.assert_allclose(many["probabilities"][...].astype(np.float32), memory, atol=2e-3)  # float16 output
    assert (labels == memory.argmax(1) + 1).mean() > 0.999
    # and the planes differ from a 2D reading of each alone: the neighbours are seen
    flat = predict_large(src[1], str(tmp_path / "flat.zarr"), predictor, **kw)
    assert not np.array_equal(flat["probabilities"][...], single["probabilities"][1])


def test_a_failed_band_is_tried_again_then_named_by_its_rows(mosaic, monkeypatch, tmp_path):
    import zarr

    from napari_seg_box.core import infer_blocks

    _, _, _, predictor, _ = mosaic
    src = zarr.create_array(str(tmp_path / "q.zarr"), shape=(512, 512), chunks=(128, 128), dtype="uint16")
    src[...] = nuclei()[0]
    kw = dict(config=CFG, chunk=128, band=128)
    single = predict_large(src, str(tmp_path / "single.zarr"), predictor, **kw)
    real = infer_blocks.iter_band
    calls, always = {}, []

    def flaky(array, z, *args, rows=None, **kwargs):
        calls[rows] = calls.get(rows, 0) + 1
        if rows == (256, 384) and (calls[rows] == 1 or always):
            raise OSError("storage hiccup")
        return real(array, z, *args, rows=rows, **kwargs)

    monkeypatch.setattr(infer_blocks, "iter_band", flaky)
    events = []
    group = run_to_end(
        iter_predict_large(src, str(tmp_path / "retried.zarr"), predictor, scheduler="threads", workers=2, **kw), events.append
    )
    _same(group, single)
    assert calls == {(0, 128): 1, (128, 256): 1, (256, 384): 2, (384, 512): 1}
    assert any(isinstance(e, Message) and e.level == "warning" and "rows 256-383" in e.text for e in events)
    always.append(True)
    with pytest.raises(SegBoxError, match=r"rows 256-383 after 3 tries \(OSError: storage hiccup\).*incomplete"):
        predict_large(src, str(tmp_path / "failed.zarr"), predictor, scheduler="threads", workers=2, **kw)
    assert calls[(256, 384)] == 2 + 3
    # cancelled between bands
    before, cancel = sum(calls.values()), threading.Event()
    gen = iter_predict_large(src, str(tmp_path / "cancelled.zarr"), predictor, scheduler="threads", workers=1, cancel=cancel, **kw)
    with pytest.raises(CancelledError):
        for event in gen:
            if isinstance(event, Progress) and event.stage == "predict (bands)":
                cancel.set()
    assert sum(calls.values()) - before < 4  # not every band of the cancelled run ran


def test_what_worker_processes_cannot_reach_is_refused(mosaic, tmp_path):
    import zarr

    root, project, version, predictor, _ = mosaic
    src = str(root / "big.zarr")
    memory = zarr.open_group(store=zarr.storage.MemoryStore(), mode="w")
    with pytest.raises(ConfigError, match="output is held in this process's memory.*cannot write into it.*path or URL"):
        predict_large(src, memory, project, version=version, config=CFG, scheduler="processes", workers=2)
    with pytest.raises(ConfigError, match="output is held in this process's memory"):
        predict_large(src, "memory://segbox-out.zarr", project, version=version, config=CFG, scheduler="processes", workers=2)
    with pytest.raises(ConfigError, match="input is held in this process's memory"):
        predict_large(
            np.zeros((512, 512), np.uint16), str(tmp_path / "a.zarr"), project, version=version, config=CFG, scheduler="processes"
        )
    with pytest.raises(ConfigError, match="cannot receive a model loaded in this process.*project="):
        predict_large(src, str(tmp_path / "b.zarr"), predictor, config=CFG, scheduler="processes")
    assert "labels" not in memory  # refused before anything was written
    # threads share this process's memory: an in-memory image and output are fine there
    group = predict_large(nuclei()[0], memory, predictor, config=CFG, scheduler="threads", workers=2, write_probabilities=False)
    assert group["labels"].shape == (512, 512) and (group["labels"][...] == 2).any()
