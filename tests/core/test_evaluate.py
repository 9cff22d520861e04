"""Evaluation metrics: exact numbers on hand-made cases (StarDist definitions), empty-image rules,
error maps, and a real evaluation of a fitted model on the held-out nuclei quadrant."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_seg_box.core import DataError, StoreError
from napari_seg_box.core.evaluate import evaluate_pairs, list_evaluations
from napari_seg_box.core.metrics import (
    AVERAGE_THRESHOLDS,
    error_maps,
    match_instances,
    object_metrics,
    pixel_confusion,
    pixel_metrics,
    pool_object_stats,
)
from napari_seg_box.workflows.evaluate import compare_models, evaluate_project

from ._models import nuclei_project_with_model


def square(shape, y, x, h, w, value=1, out=None):
    a = np.zeros(shape, np.int32) if out is None else out
    a[y : y + h, x : x + w] = value
    return a


def test_shifted_square_matches_stardist_docstring():
    # StarDist's matching() docstring: a 10x10 square rolled by 5 rows -> IoU 1/3: fp=1, tp=0, fn=1
    t = square((100, 100), 10, 10, 10, 10)
    p = np.roll(t, 5, axis=0)
    s = match_instances(t, p, thresholds=(0.5,))[0.5]
    assert (s["tp"], s["fp"], s["fn"]) == (0, 1, 1)
    assert s["precision"] == s["recall"] == s["f1"] == s["accuracy"] == s["panoptic_quality"] == 0.0
    assert math.isnan(s["mean_matched_iou"])


def test_overlapping_squares_known_iou():
    t = square((50, 50), 10, 10, 10, 10, value=7)  # non-consecutive id
    p = square((50, 50), 12, 10, 10, 10, value=3)  # intersection 80, union 120 -> IoU 2/3
    stats = match_instances(t, p, thresholds=(0.5, 0.6, 0.7, 0.75))
    s = stats[0.5]
    assert (s["tp"], s["fp"], s["fn"]) == (1, 0, 0)
    assert s["mean_matched_iou"] == pytest.approx(2 / 3)
    assert s["panoptic_quality"] == pytest.approx(2 / 3)
    assert s["f1"] == 1.0 and s["accuracy"] == 1.0
    assert stats[0.6]["tp"] == 1
    assert stats[0.7]["tp"] == 0 and stats[0.75]["f1"] == 0.0
    m = object_metrics(t, p)
    # IoU 2/3 passes thresholds 0.5, 0.55, 0.6, 0.65 of the ten in 0.5:0.95
    assert m["f1@avg"] == pytest.approx(4 / 10)
    assert m["accuracy@avg"] == pytest.approx(4 / 10)
    assert m["panoptic_quality@avg"] == pytest.approx(4 / 10 * 2 / 3)
    assert len(AVERAGE_THRESHOLDS) == 10


def test_three_objects_two_matched_one_fp_one_fn():
    t = np.zeros((60, 60), np.int32)
    p = np.zeros((60, 60), np.int32)
    square(None, 0, 0, 10, 10, 1, out=t)
    square(None, 20, 20, 10, 10, 2, out=t)
    square(None, 40, 40, 10, 10, 3, out=t)  # missed
    square(None, 0, 0, 10, 10, 5, out=p)  # perfect
    square(None, 20, 20, 10, 8, 6, out=p)  # IoU 0.8
    square(None, 0, 40, 5, 5, 9, out=p)  # false positive
    s = match_instances(t, p, thresholds=(0.5,))[0.5]
    assert (s["tp"], s["fp"], s["fn"], s["n_true"], s["n_pred"]) == (2, 1, 1, 3, 3)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    assert s["accuracy"] == pytest.approx(2 / 4)
    assert s["mean_matched_iou"] == pytest.approx(0.9)
    assert s["panoptic_quality"] == pytest.approx(1.8 / (2 + 0.5 + 0.5))
    assert s["count_error"] == 0
    s9 = match_instances(t, p, thresholds=(0.9,))[0.9]
    assert (s9["tp"], s9["fp"], s9["fn"]) == (1, 2, 2)


def test_hungarian_is_one_to_one():
    # one true object split into two halves: each IoU exactly 0.5 (>= threshold), only one can match
    t = square((30, 30), 0, 0, 10, 10)
    p = square((30, 30), 0, 0, 10, 5, 1)
    square(None, 0, 5, 10, 5, 2, out=p)
    s = match_instances(t, p, thresholds=(0.5,))[0.5]
    assert (s["tp"], s["fp"], s["fn"]) == (1, 1, 0)
    assert s["count_error"] == 1


def test_empty_image_rules():
    z = np.zeros((20, 20), np.int32)
    s = match_instances(z, z, thresholds=(0.5,))[0.5]
    assert (s["tp"], s["fp"], s["fn"]) == (0, 0, 0)
    assert s["precision"] == s["recall"] == s["f1"] == s["accuracy"] == s["panoptic_quality"] == 1.0
    assert math.isnan(s["mean_matched_iou"]) and s["count_error"] == 0
    # all false positives
    p = square((20, 20), 1, 1, 3, 3, 1)
    square(None, 10, 10, 3, 3, 2, out=p)
    s = match_instances(z, p, thresholds=(0.5,))[0.5]
    assert (s["tp"], s["fp"], s["fn"]) == (0, 2, 0)
    assert s["precision"] == s["f1"] == s["accuracy"] == 0.0 and s["count_error"] == 2
    # all false negatives
    s = match_instances(p, z, thresholds=(0.5,))[0.5]
    assert (s["tp"], s["fp"], s["fn"]) == (0, 0, 2) and s["recall"] == 0.0 and s["count_error"] == -2


def test_pooling_sums_counts_like_stardist_dataset():
    a = match_instances(square((20, 20), 0, 0, 5, 5), square((20, 20), 0, 0, 5, 5), thresholds=(0.5,))[0.5]
    b = match_instances(square((20, 20), 0, 0, 5, 5), np.zeros((20, 20), np.int32), thresholds=(0.5,))[0.5]
    pooled = pool_object_stats([a, b])
    assert (pooled["tp"], pooled["fp"], pooled["fn"]) == (1, 0, 1)
    assert pooled["f1"] == pytest.approx(2 / 3)
    assert pooled["mean_matched_iou"] == pytest.approx(1.0)


def test_pixel_metrics_exact_and_unlabelled_ignored():
    truth = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0]])
    pred = np.array([[1, 2, 2, 2], [1, 1, 1, 2], [2, 2, 2, 2]])  # last row unlabelled in truth: ignored
    conf = pixel_confusion(truth, pred, 2)
    assert conf.tolist() == [[3, 1], [1, 3]]
    m = pixel_metrics(truth, pred, 2, class_names=["bg", "fg"])
    assert m["per_class"]["fg"]["iou"] == pytest.approx(3 / 5)
    assert m["per_class"]["fg"]["dice"] == pytest.approx(6 / 8)
    assert m["per_class"]["fg"]["precision"] == pytest.approx(3 / 4)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["mean_iou"] == pytest.approx(3 / 5)


def test_pixel_metrics_absent_class_is_nan_and_left_out():
    truth = np.ones((4, 4), np.int32)  # all background ground truth
    m = pixel_metrics(truth, truth, 3)
    assert m["per_class"]["class 1"]["iou"] == 1.0
    assert math.isnan(m["per_class"]["class 2"]["iou"]) and math.isnan(m["per_class"]["class 3"]["iou"])
    assert m["mean_iou"] == 1.0
    pred = truth.copy()
    pred[0, 0] = 2
    m = pixel_metrics(truth, pred, 3)
    assert m["per_class"]["class 2"]["iou"] == 0.0 and m["per_class"]["class 2"]["precision"] == 0.0
    assert m["mean_iou"] == pytest.approx((15 / 16 + 0.0) / 2)


def test_label_ids_beyond_classes_raise():
    truth = np.full((4, 4), 3)
    with pytest.raises(DataError, match="only 2 classes"):
        pixel_metrics(truth, np.ones((4, 4), int), 2)
    with pytest.raises(DataError, match="different shapes"):
        pixel_confusion(np.ones((4, 4), int), np.ones((4, 5), int), 2)


def test_error_maps_label_images():
    t = np.zeros((40, 40), np.int32)
    p = np.zeros((40, 40), np.int32)
    square(None, 0, 0, 10, 10, 4, out=t)
    square(None, 20, 20, 10, 10, 8, out=t)
    square(None, 0, 0, 10, 10, 2, out=p)
    square(None, 30, 0, 5, 5, 3, out=p)
    maps = error_maps(t, p)
    assert set(np.unique(maps["tp"])) == {0, 2}
    assert set(np.unique(maps["fp"])) == {0, 3}
    assert set(np.unique(maps["fn"])) == {0, 8}
    assert (
        (maps["summary"][0:10, 0:10] == 1).all() and (maps["summary"][30:35, 0:5] == 2).all() and (maps["summary"][20:30, 20:30] == 3).all()
    )


def test_evaluate_pairs_tables_and_all_background_image():
    t1 = np.ones((30, 30), np.uint8)
    t1[5:15, 5:15] = 2
    t2 = np.ones((30, 30), np.uint8)  # all-background ground truth, empty prediction
    ev = evaluate_pairs([("a", t1, t1, None, None), ("b", t2, t2, None, None)], n_classes=2, class_names=["bg", "fg"])
    assert list(ev.per_image["image"]) == ["a", "b"]
    assert ev.per_image.loc[1, "f1@0.5"] == 1.0  # both empty: rule = perfect
    assert ev.summary["objects"]["fg"]["f1@0.5"] == 1.0
    assert ev.summary["pixel"]["mean_iou"] == 1.0
    assert ev.confusion.to_numpy().sum() == 1800
    with pytest.raises(DataError, match="Nothing to evaluate"):
        evaluate_pairs([], n_classes=2)


def test_evaluate_project_real_nuclei(nuclei_project, tmp_path):
    project = nuclei_project
    with pytest.raises(StoreError, match="no model version"):
        evaluate_project(project)
    v = nuclei_project_with_model(project)
    with pytest.raises(StoreError, match="No model version 'v999'"):
        evaluate_project(project, "v999")
    ev = evaluate_project(project, v, predict_config={"tile_size": 128})
    assert ev.summary["images"] == ["q3"]
    # a tiny U-Net fitted for 80 steps on two quadrants finds most nuclei of the held-out quadrant
    assert ev.summary["objects"]["nucleus"]["f1@0.5"] > 0.6
    assert ev.summary["pixel"]["per_class"]["nucleus"]["iou"] > 0.6
    assert ev.summary["objects"]["nucleus"]["n_true"] == len(np.unique(project.get_instances("q3"))) - 1
    base = f"results/evaluations/{ev.id}"
    for f in ("summary.json", "per_image.csv", "per_class.csv", "objects.csv", "confusion.csv"):
        assert project.exists(f"{base}/{f}"), f
    saved = project.read_json(f"{base}/summary.json")
    assert saved["model_version"] == v and saved["objects"]["nucleus"]["f1@0.5"] == pytest.approx(
        ev.summary["objects"]["nucleus"]["f1@0.5"]
    )
    assert list_evaluations(project)[-1]["id"] == ev.id
    ev.to_csv(tmp_path / "csv")
    assert all((tmp_path / "csv" / p).exists() for p in ["per_image.csv", "objects.csv"])
    table = compare_models(project, evaluate_missing=False)
    assert list(table["version"]) == [v] and table.loc[0, "f1@0.5"] == pytest.approx(ev.summary["objects"]["nucleus"]["f1@0.5"])
