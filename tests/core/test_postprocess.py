"""Post-processing: threshold, erosion, opening, holes, sizes, border, watershed splits; outlines and
ImageJ ROIs; tuning on validation images saved with the model version."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seg_box.core import ConfigError, DataError, Project
from napari_seg_box.core.postprocess import (
    PostprocessConfig,
    export_imagej_rois,
    outlines,
    postprocess,
    semantic_labels,
)
from napari_seg_box.workflows.tune import most_robust_best, tune_postprocess

from ._models import nuclei_project_with_model


def probs_from_mask(mask: np.ndarray, p: float = 0.9) -> np.ndarray:
    fg = np.where(mask, p, 1 - p).astype(np.float32)
    return np.stack([1 - fg, fg])


def disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_watershed_splits_touching_disks_components_do_not():
    mask = disk((80, 100), 40, 35, 15) | disk((80, 100), 40, 62, 15)  # overlapping disks
    probs = probs_from_mask(mask)
    comp = postprocess(probs, instances="components", min_size=0)
    ws = postprocess(probs, instances="watershed", seed_distance=5, min_size=0)
    assert comp.n_objects == 1
    assert ws.n_objects == 2
    assert (ws.instances > 0).sum() == mask.sum()  # splitting loses no pixel
    assert set(ws.instance_classes.values()) == {2}
    assert (ws.semantic == np.where(mask, 2, 1)).all()


def test_erosion_separates_bridged_objects_and_grows_back():
    mask = np.zeros((40, 60), bool)
    mask[10:30, 5:25] = True
    mask[10:30, 35:55] = True
    mask[19:21, 25:35] = True  # a 2-pixel bridge
    probs = probs_from_mask(mask)
    assert postprocess(probs, instances="components", min_size=0).n_objects == 1
    r = postprocess(probs, instances="components", erosion=2, min_size=0)
    assert r.n_objects == 2
    # grown back inside the original mask: the squares are whole again
    assert (r.instances[10:30, 5:25] > 0).all() and (r.instances[10:30, 35:55] > 0).all()
    assert not ((r.instances > 0) & ~mask).any()
    shrunk = postprocess(probs, instances="components", erosion=2, expand_back=False, min_size=0)
    assert (shrunk.instances > 0).sum() < (r.instances > 0).sum()


def test_threshold_holes_min_size_border_opening():
    fg = np.full((60, 60), 0.05, np.float32)
    fg[10:30, 10:30] = 0.45  # a faint object
    fg[18:22, 18:22] = 0.05  # with a hole
    fg[40:43, 40:43] = 0.9  # a tiny object (9 px)
    fg[0:10, 50:60] = 0.9  # touching the border
    probs = np.stack([1 - fg, fg])
    before = probs.copy()
    hi = postprocess(probs, threshold=0.5, instances="components", min_size=0)
    lo = postprocess(probs, threshold=0.4, instances="components", min_size=0)
    assert hi.n_objects == 2 and lo.n_objects == 3
    assert (lo.instances[18:22, 18:22] > 0).all()  # hole filled
    assert not (postprocess(probs, threshold=0.4, fill_holes=False, instances="components", min_size=0).instances[18:22, 18:22] > 0).any()
    assert postprocess(probs, threshold=0.4, instances="components", min_size=10).n_objects == 2
    nb = postprocess(probs, threshold=0.4, instances="components", min_size=0, remove_border=True)
    assert nb.n_objects == 2 and not (nb.instances[0:10, 50:60] > 0).any()
    assert (nb.semantic[0:10, 50:60] == 1).all()  # removed objects are background in the semantic image
    op = postprocess(probs, threshold=0.4, instances="components", min_size=0, opening=2)
    assert op.n_objects == 2  # the 3x3 object does not survive an opening of radius 2
    np.testing.assert_array_equal(probs, before)  # pure: input untouched
    sem = postprocess(probs, threshold=0.4, instances="none", min_size=10)
    assert sem.n_objects == 0 and (sem.semantic[40:43, 40:43] == 1).all() and (sem.semantic[10:30, 10:30] == 2).all()


def test_multiclass_semantic_and_config_validation():
    p = np.zeros((3, 10, 10), np.float32)
    p[0] = 1.0
    p[:, :, 5:] = [[[0.2]], [[0.3]], [[0.5]]]
    r = postprocess(p, instances="components", min_size=0)
    assert (r.semantic[:, 5:] == 3).all() and (r.semantic[:, :5] == 1).all()
    assert set(r.instance_classes.values()) == {3}
    assert (semantic_labels(p)[:, 5:] == 3).all()
    with pytest.raises(ConfigError):
        PostprocessConfig(threshold=1.5)
    with pytest.raises(ConfigError):
        PostprocessConfig(instances="magic")
    with pytest.raises(DataError):
        postprocess(np.zeros((10, 10)))
    cfg = PostprocessConfig(threshold=0.4, erosion=1, object_classes=(2,))
    assert PostprocessConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="Unknown post-processing settings: treshold"):
        PostprocessConfig.from_dict({"treshold": 0.4})  # a typo is named, not dropped
    with pytest.raises(AttributeError):
        cfg.threshold = 0.9  # frozen once validated
    assert cfg.replace(threshold=0.6).threshold == 0.6 and cfg.threshold == 0.4
    with pytest.raises(ConfigError, match="threshold"):
        cfg.replace(threshold=2.0)


def test_outlines_and_imagej_rois(tmp_path):
    import roifile

    labels = np.zeros((50, 50), np.int32)
    labels[5:15, 10:30] = 3
    labels[30:45, 30:40] = 7
    polys, ids = outlines(labels)
    assert ids == [3, 7]
    p = polys[0]
    assert p.shape[1] == 2
    assert 4 <= p[:, 0].min() <= 5 and 14 <= p[:, 0].max() <= 15 and 9 <= p[:, 1].min() <= 10 and 29 <= p[:, 1].max() <= 30
    n = export_imagej_rois(labels, tmp_path / "rois.zip")
    assert n == 2
    rois = roifile.roiread(tmp_path / "rois.zip")
    assert len(rois) == 2 and rois[1].name == "object-0007"
    coords = rois[0].coordinates()  # (x, y)
    assert 9 <= coords[:, 0].min() <= 10 and 4 <= coords[:, 1].min() <= 5
    with pytest.raises(DataError, match="No objects"):
        export_imagej_rois(np.zeros((10, 10), np.int32), tmp_path / "none.zip")


def test_tune_postprocess_saves_into_model_version(nuclei_project):
    project = nuclei_project
    v = nuclei_project_with_model(project)
    best, table = tune_postprocess(
        project, v, grid={"threshold": (0.3, 0.5, 0.7), "min_size": (0, 30), "seed_distance": (3, 8)}, predict_config={"tile_size": 128}
    )
    # watershed with either seed distance, or connected components (where seed distance plays no part)
    assert len(table) == 3 * 2 * (2 + 1)
    assert set(table["instances"]) == {"watershed", "components"}
    assert table["score"].max() > 0.6  # object F1 @ 0.5 on the validation quadrant q2
    assert best.threshold in (0.3, 0.5, 0.7) and best.seed_distance in (3, 8)
    tuning = project.model_version(v).tuning
    assert tuning.config == best and tuning.images == ("q2",) and tuning.metric == "object_f1@0.5"
    assert Project.open(project.url).model_version(v).postprocess == best  # what predict/evaluate/quantify use
    assert [e.tuned for e in project.model_versions()] == [True]
    # the scores differ across the grid: the search is real
    assert table["score"].max() > table["score"].min()


def test_boundary_mask_hand_case():
    from napari_seg_box.core.train import boundary_mask

    inst = np.zeros((20, 30), np.int32)
    inst[5:15, 5:15] = 1
    inst[5:15, 15:25] = 2  # touching the first along a column
    assert boundary_mask(inst, 1).sum() == 2 * 36  # each 10x10 square keeps its own 1-px ring
    ring2 = boundary_mask(inst, 2)
    assert ring2.sum() == 2 * (100 - 36)  # 6x6 interiors remain
    assert not ring2[7:13, 7:13].any() and ring2[5:15, 14].all() and ring2[5:15, 15].all()
    assert not (ring2 & (inst == 0)).any()


def boundary_probs(inst: np.ndarray, width: int = 2) -> np.ndarray:
    """(3, Y, X) probabilities of a boundary model that saw ``inst`` perfectly."""
    from napari_seg_box.core.train import boundary_mask

    ring = boundary_mask(inst, width)
    probs = np.empty((3, *inst.shape), np.float32)
    probs[:] = np.array([0.9, 0.05, 0.05], np.float32)[:, None, None]  # background
    probs[:, (inst > 0) & ~ring] = np.array([0.05, 0.9, 0.05], np.float32)[:, None]  # interior
    probs[:, ring] = np.array([0.05, 0.15, 0.8], np.float32)[:, None]  # boundary
    return probs


def test_boundary_model_splits_touching_objects_along_boundaries():
    from napari_seg_box.core.postprocess import fold_boundary

    inst = np.zeros((60, 100), np.int32)
    inst[20:40, 10:50] = 1
    inst[20:40, 50:90] = 2  # two touching bars: one 20x80 object to the eye
    probs = boundary_probs(inst)
    folded = fold_boundary(probs)
    np.testing.assert_allclose(folded.sum(0), 1.0, atol=1e-6)
    assert (semantic_labels(folded) == np.where(inst > 0, 2, 1)).all()

    cfg = PostprocessConfig()
    res = postprocess(probs, cfg, boundary=True, min_size=0)
    assert res.n_objects == 2
    assert (res.semantic == np.where(inst > 0, 2, 1)).all()  # the boundary is part of the object
    for i in (1, 2):
        j = np.bincount(res.instances[inst == i]).argmax()
        iou = ((res.instances == j) & (inst == i)).sum() / ((res.instances == j) | (inst == i)).sum()
        assert iou > 0.95, (i, iou)
    # without the boundary the same foreground is one object (components) or split by distance
    assert postprocess(folded, instances="components", min_size=0).n_objects == 1
    assert postprocess(probs, cfg, boundary=True, instances="components", min_size=0).n_objects == 1
    with pytest.raises(DataError, match="boundary"):
        postprocess(probs[:2], cfg, boundary=True)


def test_boundary_split_keeps_objects_without_interior():
    from napari_seg_box.core.postprocess import split_at_seeds

    mask = np.zeros((20, 20), bool)
    mask[2:5, 2:5] = True  # small: all boundary, no interior seed
    mask[8:18, 8:18] = True
    interior = np.zeros_like(mask)
    interior[10:16, 10:16] = True
    lab = split_at_seeds(mask, interior, np.zeros(mask.shape, np.float32))
    assert len(np.unique(lab[mask])) == 2 and (lab[~mask] == 0).all() and (lab[mask] > 0).all()


def test_tuning_ties_go_to_the_middle_of_the_plateau():
    import pandas as pd

    grid = {"threshold": (0.3, 0.4, 0.5, 0.6, 0.7), "seed_distance": (3, 5, 8, 12)}
    good = {(0.3, 5), (0.4, 8), (0.5, 8), (0.6, 8), (0.5, 12)}  # equal best scores; (0.5, 8) is surrounded by them
    rows = [
        {"threshold": t, "seed_distance": d, "score": 0.9 if (t, d) in good else 0.5}
        for t in grid["threshold"]
        for d in grid["seed_distance"]
    ]
    table = pd.DataFrame(rows)
    best = table.loc[most_robust_best(table, list(grid), grid)]
    assert (best["threshold"], best["seed_distance"]) == (0.5, 8)
    assert table["score"].idxmax() != best.name  # plain argmax would take the first tie, (0.3, 5), at the plateau's edge
    table.loc[table.index[-1], "score"] = 0.95  # a single best wins outright, wherever it lies
    assert most_robust_best(table, list(grid), grid) == table.index[-1]


def test_objects_in_words():
    assert PostprocessConfig(seed_distance=8).objects_in_words() == "watershed, seed distance 8 px"
    assert PostprocessConfig().objects_in_words(boundary=True) == "boundary-seeded watershed"
    assert PostprocessConfig(instances="components").objects_in_words() == "connected components"
