"""The predict / evaluate / tune / quantify subcommands, run in-process through cli.main."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_seg_box.cli import main

from ._models import nuclei_project_with_model


@pytest.mark.parametrize("command", ["predict", "evaluate", "tune", "quantify"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: napari-seg-box {command}" in out and "--json" in out


def run_json(argv, capsys):
    code = main(argv)
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_predict_evaluate_tune_quantify_on_store(nuclei_project, tmp_path, capsys):
    import tifffile

    project = nuclei_project
    v = nuclei_project_with_model(project)
    url = project.url
    # tune on the validation quadrant, saved with the model version
    code, tuned = run_json(
        [
            "tune",
            url,
            "--thresholds",
            "0.4",
            "0.6",
            "--min-sizes",
            "10",
            "--seed-distances",
            "5",
            "--instances",
            "watershed",
            "--tile-size",
            "128",
            "--json",
        ],
        capsys,
    )
    assert code == 0 and tuned["combinations"] == 2 and tuned["score"] > 0.6 and tuned["best"]["instances"] == "watershed"
    project.refresh()
    assert project.model_version(v).tuning.config.threshold == tuned["best"]["threshold"]
    # evaluate on the held-out quadrant
    code, ev = run_json(["evaluate", url, "--tile-size", "128", "--json", "--csv", str(tmp_path / "csv"), "--baseline"], capsys)
    assert code == 0
    summary = ev["evaluation"]
    assert summary["model_version"] == v and summary["images"] == ["q3"]
    assert summary["objects"]["nucleus"]["f1@0.5"] > 0.6
    assert (tmp_path / "csv" / "per_image.csv").exists()
    base = ev["baseline"]  # the classical baseline, scored on the same held-out image
    assert base["n_images"] == 1 and base["objects"]["nucleus"]["n_true"] == summary["objects"]["nucleus"]["n_true"]
    assert base["objects"]["nucleus"]["f1@0.5"] > 0.5 and base["pixel"]["mean_iou"] != summary["pixel"]["mean_iou"]
    # human-readable output with the comparison table and the baseline
    assert main(["evaluate", url, "--tile-size", "128", "--compare", "--baseline"]) == 0
    out = capsys.readouterr().out
    assert "F1@0.5" in out and v in out and "Classical baseline" in out and "IoU per class: background" in out
    # predict files: one good, one unreadable -> exit code 1, row with the error, outputs written
    indir = tmp_path / "in"
    indir.mkdir()
    tifffile.imwrite(indir / "q3.tif", project.get_image("q3"))
    (indir / "bad.tif").write_bytes(b"nope")
    code, pred = run_json(["predict", url, "--images", str(indir), "--out", str(tmp_path / "pred"), "--tile-size", "128", "--json"], capsys)
    assert code == 1 and pred["failed"] == 1
    rows = {r["name"]: r for r in pred["images"]}
    assert rows["bad"]["error"] and rows["q3"]["n_objects"] > 20
    inst = tifffile.imread(tmp_path / "pred" / "q3_instances.tif")
    assert inst.shape == (256, 256) and inst.max() > 20
    # predict the store's test split
    code, pred = run_json(["predict", url, "--split", "test", "--out", str(tmp_path / "pred2"), "--tile-size", "128", "--json"], capsys)
    assert code == 0 and [r["name"] for r in pred["images"]] == ["q3"]
    # quantify the predictions (with their intensity images), then the store
    code, q = run_json(
        [
            "quantify",
            str(tmp_path / "pred" / "*_instances.tif"),
            "--images",
            str(indir / "q3.tif"),
            "--pixel-size",
            "0.5",
            "--out",
            str(tmp_path / "quant"),
            "--json",
        ],
        capsys,
    )
    assert code == 0 and q["images"] == 1 and q["objects"] == int(len(np.unique(inst)) - 1)
    assert (tmp_path / "quant" / "objects.parquet").exists() and (tmp_path / "quant" / "area_histogram.png").exists()
    code, q = run_json(["quantify", "--store", url, "--out", str(tmp_path / "quant2"), "--workers", "2", "--json"], capsys)
    assert code == 0 and q["images"] == 4


def test_large_zarr_and_errors(tmp_path, capsys):
    import zarr

    from napari_seg_box.core import Project

    from ._models import save_tiny_model

    project = Project.create(tmp_path / "p.zarr")
    assert main(["predict", str(project.url), "--images", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "no model version yet" in capsys.readouterr().err
    save_tiny_model(project)
    assert main(["predict", str(project.url), "--version", "v009", "--images", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "No model version 'v009'" in capsys.readouterr().err
    z = zarr.create_array(str(tmp_path / "img.zarr"), shape=(300, 400), chunks=(128, 128), dtype="uint16")
    z[...] = np.random.default_rng(0).integers(0, 1000, (300, 400))
    code, out = run_json(
        [
            "predict",
            str(project.url),
            "--images",
            str(tmp_path / "img.zarr"),
            "--large",
            "--out",
            str(tmp_path / "pred.zarr"),
            "--tile-size",
            "128",
            "--json",
        ],
        capsys,
    )
    assert code == 0 and out["shape"] == [300, 400]
    assert zarr.open_group(str(tmp_path / "pred.zarr"), mode="r")["labels"].shape == (300, 400)
    assert main(["quantify", "--out", str(tmp_path / "q")]) == 1
    assert "Give label images" in capsys.readouterr().err
