"""Image classification on real cells (mlcp-cellcycle: G1, S, G2, prophase): import, training that
learns, evaluation, batch classification, bad input, and phenotyping the objects of a segmentation."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile

from napari_seg_box.core import DataError, Project, StoreError
from napari_seg_box.core.classify import (
    ClassifyConfig,
    compare_classifiers,
    evaluate_classifier,
    import_class_folders,
    import_class_table,
    iter_train_classifier,
    split_stratified,
    train_classifier,
)
from napari_seg_box.core.classify.metrics import classification_metrics, confusion
from napari_seg_box.core.events import EpochEnd, Message

from ..conftest import DATA, nuclei_quadrants

PHASES = ("G1", "S_phase", "G2", "Prophase")
QUICK = dict(network="resnet18", input_size=48, batch_size=32)


def class_folders(tmp_path, per_class: int = 75, phases=PHASES):
    """An ImageFolder layout of real mlcp cells (copies: tests may add bad files to it)."""
    root = tmp_path / "cells"
    for phase in phases:
        (root / phase).mkdir(parents=True)
        for f in sorted((DATA / "mlcp-cellcycle" / phase).glob("*.tif"))[:per_class]:
            shutil.copy(f, root / phase / f.name)
    return root


@pytest.fixture(scope="module")
def cells_project(tmp_path_factory):
    """300 real cells of four phases, split 70/15/15 per class with seed 0, and a classifier trained on them."""
    tmp = tmp_path_factory.mktemp("cells")
    project = Project.create(tmp / "cells.zarr", task="classification")
    report = import_class_folders(project, class_folders(tmp))
    assert report.added == dict.fromkeys(PHASES, 75)
    split_stratified(project, (0.7, 0.15, 0.15), seed=0)
    events = []
    version = train_classifier(project, ClassifyConfig(epochs=8, **QUICK), on_event=events.append)
    return project, version, events


def test_import_keeps_channels_bit_depth_and_counts_classes(cells_project):
    project, _, _ = cells_project
    rec = project.image_record("G1_0000")
    assert (rec.shape, rec.dtype, rec.channels, rec.image_class) == ((40, 40, 3), "uint16", 3, "G1")
    np.testing.assert_array_equal(project.get_image("G1_0000"), tifffile.imread(DATA / "mlcp-cellcycle" / "G1" / "G1_0000.tif"))
    counts = project.class_counts()
    assert {c: sum(v.values()) for c, v in counts.items()} == dict.fromkeys(PHASES, 75)
    assert all(v == {"train": 53, "validation": 11, "test": 11} for v in counts.values())
    assert project.summary()["images_per_class"] == counts


def test_training_learns_cell_cycle_phases(cells_project):
    """Held-out macro-F1 far above chance (0.25) after 8 short epochs; curves and version complete."""
    project, version, events = cells_project
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert [e.epoch for e in epochs] == list(range(1, 9))
    assert {"train_loss", "train_acc", "train_f1", "val_loss", "val_acc", "val_f1", "val_balanced_acc"} <= set(epochs[-1].metrics)
    assert epochs[-1].metrics["train_loss"] < epochs[0].metrics["train_loss"]
    settings = next(e.text for e in events if isinstance(e, Message) and e.topic == "settings")
    assert "classes weighted in the loss" in settings and "input 48 px" in settings
    info = project.model_version(version)
    assert info.task == "classification" and info.class_names == ("G1", "G2", "Prophase", "S_phase")
    assert info.normalization.kind == "dataset" and len(info.normalization.low) == 3
    assert info.best["val_f1"] == max(e.metrics["val_f1"] for e in epochs)
    ev = evaluate_classifier(project, version)
    assert ev.metrics["macro_f1"] > 0.6, ev.text()
    assert ev.confusion.sum() == 44 and ev.per_class["support"].sum() == 44
    assert ev.timing["ms_per_sample_batch1"] > 0 and ev.timing["ms_per_sample_batched"] > 0
    assert ev.parameters > 1_000_000


def test_training_is_reproducible_with_a_seed(tmp_path):
    project = Project.create(tmp_path / "p.zarr", task="classification")
    import_class_folders(project, class_folders(tmp_path, 30, ("G1", "G2")))
    cfg = ClassifyConfig(epochs=2, **QUICK, seed=3)
    runs = []
    for _ in range(2):
        version = train_classifier(project, cfg)
        runs.append([(h["train_loss"], h["val_loss"]) for h in project.model_version(version).training.history])
    assert runs[0] == runs[1]
    assert project.read_bytes(f"models/{project.model_versions()[0].version}/weights.safetensors") == project.read_bytes(
        f"models/{project.model_versions()[1].version}/weights.safetensors"
    )


def test_evaluation_writes_tables_plots_and_compares_versions(cells_project, tmp_path):
    project, version, _ = cells_project
    ev = evaluate_classifier(project, version)
    paths = ev.save(tmp_path / "eval")
    assert {p.rsplit("/", 1)[-1] for p in paths} == {
        "summary.json",
        "per_class.csv",
        "confusion.csv",
        "predictions.csv",
        "confusion.png",
        "mistakes.png",
    }
    import pandas as pd

    preds = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    assert len(preds) == 44 and {"name", "true", "class", "confidence"} <= set(preds.columns)
    assert np.allclose(preds[[f"p_{c}" for c in project.class_names]].sum(1), 1, atol=1e-4)
    assert list(ev.mistakes["confidence"]) == sorted(ev.mistakes["confidence"], reverse=True)
    assert (ev.mistakes["true"] != ev.mistakes["class"]).all()
    table = compare_classifiers(project, [version])
    assert list(table["version"]) == [version] and table["macro_f1"].iloc[0] == pytest.approx(ev.metrics["macro_f1"])
    # test-time augmentation: the mean of the 8 flips and rotations, which a rotated image shares
    from napari_seg_box.core.classify import Classifier

    clf = Classifier.from_project(project, version)
    cell = project.get_image("G2_0005")
    p8, p8_turned = clf.predict_proba([cell, np.rot90(cell)], tta=True)
    np.testing.assert_allclose(p8, p8_turned, atol=1e-4)
    assert not np.allclose(*clf.predict_proba([cell, np.rot90(cell)]), atol=1e-5)
    assert evaluate_classifier(project, version, tta=True, timing=False).confusion.sum() == 44


def test_metrics_follow_the_usual_definitions():
    conf = confusion([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 1, 0], 3)
    m = classification_metrics(conf)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    f1 = [2 * (2 / 3) * (2 / 3) / (4 / 3), 2 * (2 / 3) * 1 / (5 / 3), 0.0]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert list(m["support"]) == [3, 2, 1]


def test_batch_classification_of_files_and_of_unlabelled_images(cells_project, tmp_path):
    from napari_seg_box.workflows.classify import classify_images

    project, version, _ = cells_project
    folder = DATA / "mlcp-cellcycle" / "G1"
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"not a tiff")
    shutil.copy(next(folder.glob("*.tif")), tmp_path / "good.tif")
    table = classify_images(project, [str(tmp_path / "*.tif")], version=version, out=str(tmp_path / "out.parquet"))
    assert list(table["name"]) == ["broken", "good"] and table["error"].notna().tolist() == [True, False]
    import pandas as pd

    assert len(pd.read_parquet(tmp_path / "out.parquet")) == 2
    # the project's own images, in chunks on two threads: the same classes as one after the other
    alone = classify_images(project, version=version)
    threaded = classify_images(project, version=version, scheduler="threads", workers=2)
    assert len(alone) == 300 and list(threaded["name"]) == list(alone["name"]) == project.image_names()
    assert (threaded["class"] == alone["class"]).all()
    with pytest.raises(DataError, match="nothing is unlabelled"):
        classify_images(project, version=version, unlabelled=True)


def test_bad_class_folders_store_nothing(tmp_path):
    project = Project.create(tmp_path / "p.zarr", task="classification")
    root = class_folders(tmp_path, 3, ("G1", "G2"))
    (root / "Empty").mkdir()
    with pytest.raises(DataError, match="'Empty' holds no image"):
        import_class_folders(project, root)
    (root / "Empty").rmdir()
    rgb = np.zeros((40, 40, 4), np.uint16)
    tifffile.imwrite(root / "G2" / "odd.tif", rgb)
    with pytest.raises(DataError, match="odd.tif has 4 channel"):
        import_class_folders(project, root)
    (root / "G2" / "odd.tif").unlink()
    (root / "G2" / "zz_broken.tif").write_bytes(b"garbage")
    report = import_class_folders(project, root)
    assert report.added == {"G1": 3, "G2": 3} and report.skipped[0][0].endswith("zz_broken.tif")
    assert "Skipped 1 file" in report.text()
    (root / "G2" / "zz_broken.tif").unlink()
    (root / "g1").mkdir()
    shutil.copy(next((root / "G1").glob("*.tif")), root / "g1" / "other.tif")
    with pytest.raises(DataError, match="only in case"):
        import_class_folders(project, root, prefix="again ")
    assert len(project.image_names()) == 6 and project.class_names == ["G1", "G2"]


def test_csv_import_and_its_errors(tmp_path):
    root = class_folders(tmp_path, 2, ("G1", "G2"))
    table = tmp_path / "cells" / "classes.csv"
    table.write_text("file,class\nG1/G1_0000.tif,G1\nG2/G2_0001.tif,G2\n")
    project = Project.create(tmp_path / "p.zarr", task="classification")
    assert import_class_table(project, table).added == {"G1": 1, "G2": 1}
    (root / "bad.csv").write_text("path,label\nx.tif,G1\n")
    with pytest.raises(DataError, match="columns 'file' and 'class'"):
        import_class_table(project, root / "bad.csv")


def test_wrong_task_and_one_class_are_refused_clearly(cells_project, tmp_path, nuclei_project):
    from napari_seg_box.core import Predictor
    from napari_seg_box.core.classify import Classifier
    from napari_seg_box.core.train import iter_train

    project, version, _ = cells_project
    with pytest.raises(StoreError, match="is a classification model, not a segmentation model"):
        Predictor.from_project(project, version)
    with pytest.raises(DataError, match="classification project: a U-Net segments"):
        next(iter_train(project))
    with pytest.raises(DataError, match="segmentation project: it has no image classes"):
        next(iter_train_classifier(nuclei_project))
    with pytest.raises(DataError, match="classified images into a classification project"):
        import_class_folders(nuclei_project, class_folders(tmp_path, 2, ("G1", "G2")))
    clf = Classifier.from_project(project, version)
    with pytest.raises(DataError, match="has 1 channel\\(s\\) but model version .* 3-channel"):
        clf.predict_proba([np.zeros((40, 40), np.uint16)])
    one = Project.create(tmp_path / "one.zarr", task="classification")
    import_class_folders(one, class_folders(tmp_path / "x", 5, ("G1",)))
    with pytest.raises(DataError, match="at least two classes"):
        train_classifier(one, ClassifyConfig(epochs=1, **QUICK))


def test_phenotyping_the_objects_of_a_segmentation(tmp_path):
    """Nuclei of the DSB sample (segmented: the instance labels), their crops classified as large or
    small by a classifier trained on crops of three quadrants; the fourth quadrant is phenotyped and
    counted per phenotype through quantify."""
    from napari_seg_box.core.classify.phenotype import CropSettings, PhenotypeModel, object_crops
    from napari_seg_box.core.quantify_batch import quantify_batch

    quads = nuclei_quadrants()
    areas = np.concatenate([np.bincount(inst.ravel())[1:] for _, _, inst in quads])
    cut = np.median(areas[areas > 0])
    crop = CropSettings(size=48, mask=True)
    project = Project.create(tmp_path / "pheno.zarr", classes=["small", "large"], task="classification")
    items = []
    for name, image, inst in quads[:3]:
        ids, crops = object_crops(image, inst, crop)
        assert all(c.shape == (48, 48, 2) for c in crops)
        sizes = np.bincount(inst.ravel())
        for i, c in zip(ids, crops):
            items.append((f"{name}-{i}", c, {"image_class": "large" if sizes[i] > cut else "small", "channel_axis": 2, "stack": False}))
    project.add_images(items)
    version = train_classifier(project, ClassifyConfig(epochs=8, network="resnet18", batch_size=16, augmentation="light"))
    name, image, inst = quads[3]
    tifffile.imwrite(tmp_path / "q3.tif", image)
    tifffile.imwrite(tmp_path / "q3_instances.tif", inst.astype(np.uint16))
    q = quantify_batch(
        str(tmp_path / "q3_instances.tif"), images=str(tmp_path / "q3.tif"), phenotype=PhenotypeModel(str(project.url), version, crop=crop)
    )
    objects = q.objects
    assert len(objects) == len(np.unique(inst)) - 1 and objects["phenotype"].isin(["small", "large"]).all()
    truth = np.where(objects["area_px"] > cut, "large", "small")
    assert (objects["phenotype"] == truth).mean() > 0.75
    row = q.images.iloc[0]
    assert row["n_small"] + row["n_large"] == len(objects)
    assert row["coverage_small_percent"] + row["coverage_large_percent"] == pytest.approx(row["coverage_percent"])

    # the same through segment-and-quantify (a U-Net's objects), as the Quantify panel runs it
    from napari_seg_box.workflows.segment import segment_and_quantify

    from ._models import save_tiny_model

    seg = Project.create(tmp_path / "seg.zarr", classes=["background", "nucleus"])
    seg.add_image(name, image)
    q, _ = segment_and_quantify(seg, save_tiny_model(seg), phenotype=PhenotypeModel(str(project.url), crop=crop))
    per_image = q.images[q.images["class_name"] == "nucleus"]
    assert len(q.objects) > 0
    assert q.objects["phenotype"].notna().all() and (per_image["n_small"] + per_image["n_large"] == per_image["n_objects"]).all()


def test_stop_keeps_the_best_epoch_and_resume_finishes(tmp_path):
    import threading

    project = Project.create(tmp_path / "p.zarr", task="classification")
    import_class_folders(project, class_folders(tmp_path, 20, ("G1", "G2")))
    cancel = threading.Event()
    gen = iter_train_classifier(project, ClassifyConfig(epochs=3, **QUICK), cancel=cancel)
    for event in gen:
        if isinstance(event, EpochEnd):
            cancel.set()  # stop during epoch 2
    stopped = project.model_versions()[-1]
    assert stopped.status == "stopped" and stopped.epochs_run == 1
    version = train_classifier(project, resume=True)
    info = project.model_version(version)
    assert info.training.status == "completed" and [h["epoch"] for h in info.training.history] == [1, 2, 3]
    assert project.list_dir("training") == []


def test_command_line_classification_loop(tmp_path, capsys):
    """init --task classification, import --class-folders, split --stratified, info, train, evaluate
    (tables, plots, baseline), classify, and quantify --phenotype refusing a segmentation store."""
    import json

    from napari_seg_box.cli import main

    store = str(tmp_path / "cells.zarr")
    root = class_folders(tmp_path, 25, ("G1", "G2"))
    assert main(["init", store, "--task", "classification"]) == 0
    assert main(["import", store, "--class-folders", str(root)]) == 0
    assert "Imported 50 image(s): G1 25, G2 25." in capsys.readouterr().out
    assert main(["split", store, "--stratified", "60/20/20"]) == 0
    assert main(["info", store]) == 0
    out = capsys.readouterr().out
    assert "Task: classification" in out and "G1                        15       5       5" in out
    assert main(["train", store, "--epochs", "2", "--network", "resnet18", "--input-size", "48", "--json"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["status"] == "completed" and "val_f1" in trained["best_metrics"]
    assert main(["train", store, "--encoder", "resnet34"]) == 1
    assert "--encoder is a setting of a U-Net" in capsys.readouterr().err
    assert main(["evaluate", store, "--csv", str(tmp_path / "ev"), "--baseline", "--compare"]) == 0
    out = capsys.readouterr().out
    assert "on 10 test image(s): accuracy" in out and "Classical baseline (random forest" in out and "resnet18" in out
    assert (tmp_path / "ev" / "confusion.png").stat().st_size > 1000
    assert main(["classify", store, str(root / "G2"), "--out", str(tmp_path / "g2.csv")]) == 0
    import pandas as pd

    table = pd.read_csv(tmp_path / "g2.csv")
    assert len(table) == 25 and set(table.columns) >= {"name", "model_version", "class", "confidence", "p_G1", "p_G2"}
    seg = str(tmp_path / "seg.zarr")
    assert main(["init", seg]) == 0
    capsys.readouterr()
    assert main(["quantify", str(root / "G2"), "--out", str(tmp_path / "q"), "--phenotype", seg]) == 1
    assert "has no model version yet" in capsys.readouterr().err


def test_object_crops_exported_from_a_segmentation_project_import_as_classes(nuclei_project, tmp_path, capsys):
    from napari_seg_box.cli import main
    from napari_seg_box.core.classify import Classifier

    from ._models import save_tiny_model

    expected = sum(len(np.unique(inst)) - 1 for _, _, inst in nuclei_quadrants())
    assert main(["export", str(nuclei_project.url), "--out", str(tmp_path / "crops"), "--crops", "--crop-mask"]) == 0
    assert f"Wrote {expected} object crop(s)" in capsys.readouterr().out
    crop = tifffile.imread(next((tmp_path / "crops" / "nucleus").glob("*.tif")))
    assert crop.ndim == 3 and crop.shape[-1] == 2 and crop[..., 1].max() > 0  # the image and the object's mask
    cells = Project.create(tmp_path / "crops.zarr", task="classification")
    assert import_class_folders(cells, tmp_path / "crops").added == {"nucleus": expected}
    with pytest.raises(StoreError, match="is a segmentation model, not a classification model"):
        Classifier.from_project(nuclei_project, save_tiny_model(nuclei_project))


def test_the_best_epoch_is_the_higher_f1_then_the_lower_loss():
    from napari_seg_box.core.classify.train import _is_better

    best = {"val_f1": 0.8, "val_loss": 0.5}
    assert _is_better({"val_f1": 0.81, "val_loss": 0.9}, best)
    assert _is_better({"val_f1": 0.8, "val_loss": 0.4}, best)  # a tie on F1: the lower loss wins
    assert not _is_better({"val_f1": 0.8, "val_loss": 0.6}, best)
    assert not _is_better({"val_f1": 0.79, "val_loss": 0.1}, best)
    assert _is_better({"val_f1": 0.0, "val_loss": 9.0}, {})
