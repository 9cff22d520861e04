"""Losses (edge weights on hand-made cases, ignore label) and augmentation (paired, dtype-safe, seeded)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_seg_box.core import ConfigError
from napari_seg_box.core.augment import Augmenter, preview_augmentations
from napari_seg_box.core.losses import IGNORE, edge_weight_map, make_loss

from ..conftest import nuclei


def two_squares(gap: int = 2) -> np.ndarray:
    inst = np.zeros((20, 30), np.int32)
    inst[5:15, 2:10] = 7  # ids need not be consecutive
    inst[5:15, 10 + gap : 18 + gap] = 3
    return inst


def test_edge_weights_hand_made():
    w0, sigma = 10.0, 5.0
    w = edge_weight_map(two_squares(2), w0=w0, sigma=sigma)
    # column 10 of the gap: 1 px from the left square, 2 px from the right one
    assert w[8, 10] == pytest.approx(1 + w0 * np.exp(-((1 + 2) ** 2) / (2 * sigma**2)), rel=1e-5)
    assert w[8, 11] == pytest.approx(w[8, 10])  # symmetric gap
    assert (w[two_squares(2) > 0] == 1).all()  # inside objects: class weight only
    # a wider gap weighs less, and a single object has no border term
    assert edge_weight_map(two_squares(6), w0=w0, sigma=sigma)[8, 12] < w[8, 10]
    single = np.zeros((20, 20), np.int32)
    single[5:10, 5:10] = 1
    assert (edge_weight_map(single) == 1).all()


def test_edge_weights_match_brute_force_on_real_nuclei():
    _, inst = nuclei()
    inst = inst[:128, :128]
    w = edge_weight_map(inst, w0=10, sigma=5)
    ids = [i for i in np.unique(inst) if i]
    dist = np.sort(np.stack([ndi.distance_transform_edt(inst != i) for i in ids]), axis=0)
    brute = 1 + 10 * np.exp(-((dist[0] + dist[1]) ** 2) / 50)
    brute[inst > 0] = 1
    np.testing.assert_allclose(w, brute, atol=5e-3)


def test_class_weights_balance_frequencies():
    inst = two_squares()
    classes = (inst > 0).astype(np.int64)
    classes[0, :] = IGNORE
    w = edge_weight_map(inst, classes, w0=0)
    n_bg, n_fg = (classes == 0).sum(), (classes == 1).sum()
    assert w[inst > 0][0] == pytest.approx(min(np.sqrt(n_bg / n_fg), 10))
    assert w[classes == 0][0] == 1


def test_losses_ignore_unlabelled_pixels_and_agree():
    import torch

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 16, 16, generator=g)
    target = torch.randint(0, 3, (2, 16, 16), generator=g)
    target[:, :4] = IGNORE
    for name in ("dice_ce", "ce", "focal", "edge_weighted"):
        fn = make_loss(name)
        changed = logits.clone()
        changed[:, :, :4] = 100 * torch.randn(2, 3, 4, 16, generator=g)  # only unlabelled pixels change
        assert torch.isclose(fn(logits, target, torch.ones(2, 16, 16)), fn(changed, target, torch.ones(2, 16, 16))), name
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE)
    assert torch.isclose(make_loss("ce")(logits, target), ce)
    assert torch.isclose(make_loss("focal", focal_gamma=0.0)(logits, target), ce)  # gamma 0 = cross-entropy
    assert torch.isclose(make_loss("edge_weighted")(logits, target, torch.ones(2, 16, 16)), make_loss("dice_ce")(logits, target))
    perfect = torch.nn.functional.one_hot(target.clamp_min(0), 3).permute(0, 3, 1, 2).float() * 50
    assert make_loss("dice_ce")(perfect, target) < 1e-3
    with pytest.raises(ConfigError, match="Unknown loss"):
        make_loss("hinge")


@pytest.mark.parametrize("preset", ["none", "light", "standard", "strong"])
def test_augmentation_paired_and_dtype_safe(preset):
    image, inst = nuclei()  # uint16
    image, inst = image[:96, :96], inst[:96, :96]
    labels = (1 + (inst > 0)).astype(np.uint8)
    out = preview_augmentations(image, labels, preset=preset, n=3, seed=1)
    again = preview_augmentations(image, labels, preset=preset, n=3, seed=1)
    for (img, lab), (img2, _) in zip(out, again):
        assert img.dtype == np.float32 and img.shape == (96, 96, 1) and np.isfinite(img).all()
        assert lab.dtype == np.uint8 and set(np.unique(lab)) <= {1, 2}
        np.testing.assert_array_equal(img, img2)  # same seed, same result
    if preset == "none":
        assert all(np.array_equal(lab, labels) for _, lab in out)
    else:
        assert any(not np.array_equal(lab, labels) for _, lab in out)


def test_geometric_transforms_move_image_mask_and_weights_together():
    rng = np.random.default_rng(0)
    target = np.zeros((64, 64), np.int16)
    target[10:30, 5:50] = 1
    target[40:60, 20:30] = IGNORE
    image = (target == 1).astype(np.float32)[..., None]
    weight = (target == 1).astype(np.float32) * 3 + 1
    aug = Augmenter("light")
    for _ in range(8):  # flips and 90-degree rotations are exact
        img, tgt, w = aug(image, target, weight, rng)
        np.testing.assert_array_equal(img[..., 0] > 0.5, tgt == 1)
        np.testing.assert_array_equal(w == 4, tgt == 1)
        assert (tgt == IGNORE).sum() == (target == IGNORE).sum()
    img, tgt, _ = Augmenter("strong", elastic=True)(image, target, None, rng)
    assert set(np.unique(tgt)) <= {0, 1, IGNORE} and np.isfinite(img).all()
    with pytest.raises(ConfigError, match="Unknown augmentation preset"):
        Augmenter("extreme")
