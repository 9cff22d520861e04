"""Batch prediction and segment-and-quantify spread over dask workers (issue 17, "Past one machine").

A tiny U-Net fitted on the real DSB2018 nuclei predicts the nuclei quadrants (and flipped copies)
on a ``distributed.LocalCluster``: labels, instances, rows and tables must equal those of one
process. Also: a worker killed mid-batch, a task that fails once or always, a scheduler that does
not answer, workers with other package versions, and the ``predict --scheduler`` command line.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from napari_seg_box.core.errors import ConfigError
from napari_seg_box.core.events import ItemDone, run_to_end
from napari_seg_box.core.scheduling import TaskFailure, run_tasks, version_mismatches
from napari_seg_box.workflows.predict import iter_predict_files, iter_predict_store_to_files, predict_files
from napari_seg_box.workflows.segment import segment_and_quantify

from ..conftest import free_port, nuclei, nuclei_quadrants
from ._models import nuclei_project_with_model

CFG = {"tile_size": 128, "device": "cpu"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A store with the four nuclei quadrants and a fitted model; six image files (quadrants and flips)."""
    import tifffile

    from napari_seg_box.core.infer import Predictor
    from napari_seg_box.core.store import Project

    root = tmp_path_factory.mktemp("scale_out")
    project = Project.create(root / "nuclei.zarr", classes=["background", "nucleus"])
    for name, image, inst in nuclei_quadrants():
        project.add_image(name, image, labels=(1 + (inst > 0)).astype(np.uint8), instances=inst, split="train")
    project.set_pixel_size(0.5)
    version = nuclei_project_with_model(project)
    files = root / "files"
    files.mkdir()
    quads = nuclei_quadrants()
    for name, image, _ in quads + [("f0", quads[0][1][::-1], None), ("f3", quads[3][1][:, ::-1], None)]:
        tifffile.imwrite(files / f"{name}.tif", np.ascontiguousarray(image))
    predictor = Predictor.from_project(project, version, device="cpu")
    return SimpleNamespace(
        project=project, version=version, files=sorted(str(p) for p in files.glob("*.tif")), predictor=predictor, root=root
    )


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as c:
        yield c


@pytest.fixture(scope="module")
def reference(setup):
    """What one process writes for the files and for the store's images."""
    out = setup.root / "reference"
    files = predict_files(setup.files, out / "files", setup.predictor, config=CFG)
    store = run_to_end(iter_predict_store_to_files(setup.project, out / "store", predictor=setup.predictor, config=CFG))
    return {"files": files, "store": store}


def drive(gen):
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return stop.value, [e for e in events if isinstance(e, ItemDone)]


def assert_same_outputs(rows, ref_rows):
    import tifffile

    assert [r["name"] for r in rows] == [r["name"] for r in ref_rows]
    for row, ref in zip(rows, ref_rows):
        assert row["error"] is None and row["n_objects"] == ref["n_objects"] > 0, row
        assert row["path"] == ref["path"]
        for kind in ("labels", "instances"):
            assert Path(row[kind]).name == Path(ref[kind]).name
            np.testing.assert_array_equal(tifffile.imread(row[kind]), tifffile.imread(ref[kind]))


def test_cluster_predicts_files_and_store_images_as_one_process(setup, cluster, reference, tmp_path):
    rows, done = drive(
        iter_predict_files(
            setup.files, tmp_path / "files", setup.predictor, config=CFG, project=setup.project, scheduler=cluster.scheduler_address
        )
    )
    assert_same_outputs(rows, reference["files"])
    assert all(Path(r["labels"]).parent == tmp_path / "files" for r in rows)
    assert sorted(e.name for e in done) == sorted(r["name"] for r in rows) and [e.index for e in done] == list(range(len(rows)))
    assert all(e.error is None and e.result["name"] == e.name for e in done)
    # threads of this process, each image a task, the model loaded once for them
    rows = predict_files(
        setup.files, tmp_path / "threads", setup.predictor, config=CFG, project=setup.project, scheduler="threads", workers=2
    )
    assert_same_outputs(rows, reference["files"])
    # the store's images, read by the workers from the store
    rows = run_to_end(
        iter_predict_store_to_files(
            setup.project, tmp_path / "store", predictor=setup.predictor, config=CFG, scheduler=cluster.scheduler_address
        )
    )
    assert_same_outputs(rows, reference["store"])
    # a bare predictor without its store cannot travel; nor can an export
    with pytest.raises(ConfigError, match="project="):
        predict_files(setup.files, tmp_path / "x", setup.predictor, config=CFG, scheduler=cluster.scheduler_address)
    with pytest.raises(ConfigError, match="Exports"):
        predict_files(setup.files, tmp_path / "x", setup.predictor, project=setup.project, export=print, scheduler="threads")


def test_an_image_failing_on_its_worker_twice_is_a_row_with_its_error(setup, cluster, reference, tmp_path, monkeypatch):
    """A task that raises is retried once, on any worker; failing again, its image is a row with the
    error and the batch goes on (the cluster's workers are threads of this process: the patch reaches them)."""
    from napari_seg_box.workflows import predict as module

    real, calls = module._predict_image, []

    def breaks_on_q2(name, *args, **kwargs):
        calls.append(name)
        if name == "q2":
            raise RuntimeError("GPU fell off the bus")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(module, "_predict_image", breaks_on_q2)
    rows, done = drive(
        iter_predict_files(setup.files, tmp_path, setup.predictor, config=CFG, project=setup.project, scheduler=cluster.scheduler_address)
    )
    assert calls.count("q2") == 2 and calls.count("q1") == 1
    failed = [r for r in rows if r["error"]]
    assert [r["name"] for r in failed] == ["q2"] and failed[0]["error"] == "RuntimeError: GPU fell off the bus"
    assert failed[0]["labels"] is None and not (tmp_path / "q2_labels.tif").exists()
    assert [e.error for e in done if e.name == "q2"] == ["RuntimeError: GPU fell off the bus"]
    assert_same_outputs([r for r in rows if not r["error"]], [r for r in reference["files"] if r["name"] != "q2"])


def _fails_once(marker, options):
    if not os.path.exists(marker):
        Path(marker).write_text("failed once")
        raise RuntimeError("flaky")
    return "ok"


def _always_fails(marker, options):
    with open(marker, "a") as f:
        f.write("x")
    raise ValueError("broken for good")


def test_a_task_is_retried_once_and_a_failed_one_is_reported_not_dropped(cluster, tmp_path):
    once = [str(tmp_path / f"once{i}") for i in range(3)]
    got = dict(run_tasks(_fails_once, once, None, scheduler=cluster.scheduler_address, workers=2))
    assert got == {0: "ok", 1: "ok", 2: "ok"} and all(os.path.exists(m) for m in once)
    always = [str(tmp_path / "always")]
    reported = []
    got = dict(
        run_tasks(
            _always_fails,
            always,
            None,
            scheduler=cluster.scheduler_address,
            workers=2,
            on_error=lambda t, f: reported.append((t, f)) or "row",
        )
    )
    assert got == {0: "row"} and reported == [(always[0], TaskFailure("ValueError", "broken for good"))]
    assert (tmp_path / "always").read_text() == "xx"  # ran twice: once and its retry
    with pytest.raises(ValueError, match="broken for good"):  # no on_error: raised, not dropped
        list(run_tasks(_always_fails, always, None, scheduler=cluster.scheduler_address, workers=2))
    # here (no retry): a failure is reported the same way, next to the tasks that worked
    got = dict(run_tasks(_fails_once, [str(tmp_path / "local")] + once, None, scheduler="threads", workers=2, on_error=lambda t, f: str(f)))
    assert got == {0: "RuntimeError: flaky", 1: "ok", 2: "ok", 3: "ok"}


def test_a_worker_killed_mid_batch_has_its_images_predicted_elsewhere(setup, tmp_path):
    """Two worker processes; one is killed (SIGKILL) once the first image is done: dask runs its
    images on the other (and on its restarted replacement); every output is there and whole."""
    import tifffile
    from distributed import Client, LocalCluster

    image, _ = nuclei()
    files = []
    for k in range(8):  # the whole image, in its 8 flips and rotations
        files.append(tmp_path / "in" / f"n{k}.tif")
        files[-1].parent.mkdir(exist_ok=True)
        tifffile.imwrite(files[-1], np.ascontiguousarray(np.rot90(image[:, ::-1] if k >= 4 else image, k % 4)))
    files = [str(f) for f in files]
    ref = predict_files(files, tmp_path / "ref", setup.predictor, config=CFG)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, Client(cluster) as client:
        gen = iter_predict_files(
            files, tmp_path / "out", setup.predictor, config=CFG, project=setup.project, scheduler=cluster.scheduler_address
        )
        done, killed = 0, None
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                rows = stop.value
                break
            if isinstance(ev, ItemDone):
                done += 1
                if killed is None:
                    busy = [addr for addr, keys in client.processing().items() if keys]
                    assert busy, "no worker was busy when the first image came back"
                    pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                    os.kill(pid, signal.SIGKILL)
                    killed = (done, pid)
        assert killed[0] == 1 < len(files)
        assert killed[1] not in client.run(os.getpid).values()  # that process is gone
    assert_same_outputs(rows, ref)


def test_an_unanswering_scheduler_is_a_clear_error():
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError) as err:
        list(run_tasks(_fails_once, ["x"], None, scheduler=address, workers=1))
    assert f"No dask scheduler answered at {address}" in str(err.value)
    assert "`dask scheduler` running" in str(err.value) and "port open" in str(err.value)
    assert "dask worker" in err.value.for_face("cli")


def test_workers_with_other_package_versions_are_refused_by_name(cluster, tmp_path, monkeypatch):
    from importlib.metadata import version

    from distributed import Client

    real = Client.get_versions

    def one_worker_has_an_old_torch(self, check=False, packages=None):
        versions = real(self, check=check, packages=packages)
        first = sorted(versions["workers"])[0]
        versions["workers"][first]["packages"]["torch"] = "2.0.1"
        return versions

    monkeypatch.setattr(Client, "get_versions", one_worker_has_an_old_torch)
    with pytest.raises(ConfigError) as err:
        list(run_tasks(_fails_once, [str(tmp_path / "m")], None, scheduler=cluster.scheduler_address, workers=2))
    msg = str(err.value)
    assert f"torch {version('torch')} here, 2.0.1 on 1 of 2 worker(s)" in msg and "Install the same versions" in msg
    assert not (tmp_path / "m").exists()  # nothing ran
    # what counts: python by major.minor; a package missing on a worker only for napari-seg-box
    here = {"python": "3.11.9.final.0", "napari-seg-box": "0.1.0", "numpy": "2.4.6", "torch": "2.14.1"}
    workers = {
        "tcp://a:1": {"packages": {"python": "3.11.4.final.0", "napari-seg-box": "0.1.0", "numpy": "2.4.6"}},
        "tcp://b:1": {"packages": {"python": "3.12.1.final.0", "numpy": "2.4.6", "torch": "2.14.1"}},
    }
    found = version_mismatches({"client": {"packages": here}, "workers": workers, "scheduler": {"packages": {"python": "3.11.2"}}})
    assert found == [
        "python 3.11 here, 3.12 on 1 of 2 worker(s) (tcp://b:1)",
        "napari-seg-box 0.1.0 here, not installed on 1 of 2 worker(s) (tcp://b:1)",
    ]


def test_segment_and_quantify_on_a_cluster_gives_the_tables_of_one_process(setup, cluster):
    args = {"predictor": setup.predictor, "predict_config": CFG}
    one, labels = segment_and_quantify(setup.project, **args)
    many, labels_many = segment_and_quantify(setup.project, scheduler=cluster.scheduler_address, workers=2, **args)
    assert len(one.objects) > 100 and "area_um2" in one.objects
    pd.testing.assert_frame_equal(one.objects, many.objects)
    pd.testing.assert_frame_equal(one.images, many.images)
    assert one.errors == many.errors == [] and sorted(labels) == sorted(labels_many) == ["q0", "q1", "q2", "q3"]
    for name in labels:
        np.testing.assert_array_equal(labels[name], labels_many[name])
    # files, with an unreadable one: its row carries the error in both
    (setup.root / "broken.tif").write_bytes(b"not a TIFF")
    files = setup.files[:2] + [str(setup.root / "broken.tif")]
    one, _ = segment_and_quantify(setup.project, files=files, **args)
    many, _ = segment_and_quantify(setup.project, files=files, scheduler=cluster.scheduler_address, **args)
    pd.testing.assert_frame_equal(one.objects, many.objects)
    pd.testing.assert_frame_equal(one.images, many.images)
    assert one.errors == many.errors and [e["image"] for e in many.errors] == ["broken"]


def test_cli_predict_on_a_dask_scheduler(setup, cluster, reference, tmp_path, capsys):
    from napari_seg_box.cli import main

    argv = ["predict", setup.project.url, "--images", *setup.files, "--tile-size", "128", "--device", "cpu"]
    code = main([*argv, "--out", str(tmp_path / "out"), "--scheduler", cluster.scheduler_address, "--workers", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["failed"] == 0 and out["model_version"] == setup.version
    assert_same_outputs(out["images"], reference["files"])
    code = main([*argv, "--out", str(tmp_path / "geo"), "--scheduler", cluster.scheduler_address, "--geojson"])
    err = capsys.readouterr().err
    assert code == 1 and "Exports" in err and "Leave out --geojson" in err
    # one large zarr image, bands of rows on the cluster's workers: the labels of one process
    import zarr

    from napari_seg_box.core.infer_large import predict_large

    big = np.tile(setup.project.get_image("q0"), (3, 2))
    zarr.create_array(str(tmp_path / "big.zarr"), shape=big.shape, dtype=big.dtype, chunks=(256, 256))[...] = big
    code = main([*argv[:2], "--images", str(tmp_path / "big.zarr"), "--large", "--tile-size", "128", "--device", "cpu",
                 "--out", str(tmp_path / "big_out.zarr"), "--scheduler", cluster.scheduler_address, "--json"])  # fmt: skip
    assert code == 0 and json.loads(capsys.readouterr().out)["shape"] == [768, 512]
    alone = predict_large(str(tmp_path / "big.zarr"), str(tmp_path / "alone.zarr"), setup.predictor, config=CFG)
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "big_out.zarr"))["labels"][...], alone["labels"][...])
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "each worker loads the model once and uses its own gpu" in " ".join(capsys.readouterr().out.split()).lower()


def test_the_readme_cluster_recipe_runs_as_written(setup, tmp_path, monkeypatch):
    """README "On a cluster": the Python recipe on a LocalCluster of 2 worker processes."""
    import re

    import tifffile

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("The same from Python, on a cluster of this machine", 1)[1]
    recipe = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "my_project.zarr").symlink_to(setup.project.url)
    (tmp_path / "new_images").symlink_to(Path(setup.files[0]).parent)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(recipe, "README cluster recipe", "exec"), namespace)
    rows, tables = namespace["rows"], namespace["tables"]
    assert [r["error"] for r in rows] == [None] * len(setup.files)
    alone = predict_files(setup.files, tmp_path / "alone", setup.project)  # the recipe's settings, in this process
    for row, ref in zip(rows, alone):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / row["instances"]), tifffile.imread(ref["instances"]))
    assert len(tables.objects) == sum(r["n_objects"] for r in rows) > 0
