"""StarDist 2D baseline, trained from scratch on the CPU, on the splits of benchmarks/accuracy.py.

Not part of the package and not run by CI: it needs its own environment (TensorFlow + StarDist),
kept outside the project, for example

    python3 -m venv /work/stardist-venv
    /work/stardist-venv/bin/pip install stardist tensorflow-cpu tifffile imageio scikit-image scipy
    nice -n 10 /work/stardist-venv/bin/python benchmarks/stardist_baseline.py --datasets nuclei isbi --seeds 0 1 2

Splits (the same as ``nuclei_project`` / ``isbi_project`` in benchmarks/accuracy.py):

nuclei   DSB2018 image cut into quadrants q0=(0,0), q1=(0,256), q2=(256,0), q3=(256,256); fold f tests
         on q_f, validates on q_(f-1 mod 4), trains on the other two. Object counts pooled over the 4 folds.
isbi     ISBI 2012: train 0-19, validation 20-23, test 24-29; true cells = 4-connected components of label > 0.

Recipe (StarDist's 2D example notebook): per-image ``normalize(x, 1, 99.8)``, ``fill_label_holes`` on the
training/validation masks, Config2D(n_rays=32, grid=(2,2), n_channel_in=1), random flips/90-degree rotations
+ intensity change + Gaussian noise as augmentation, ``model.train`` with the validation split (best weights
by validation loss are kept), ``model.optimize_thresholds`` on the validation images, ``predict_instances``
on the test images.

Metric: StarDist's ``matching`` (the definition napari_seg_box.core.metrics mirrors): Hungarian one-to-one
matching on IoU, a pair counts when IoU >= threshold; TP/FP/FN summed over test images (and folds),
F1 = 2TP / (2TP + FP + FN).

Prints one JSON line per (data set, seed) on stdout, then a summary (mean and range over seeds). Keras
progress output goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SEGBOX_SHARED_DATA", ROOT.parent / "shared" / "data"))
THRESHOLDS = (0.5, 0.75)
QUADRANTS = [(0, 0), (0, 256), (256, 0), (256, 256)]


# ---------------------------------------------------------------------- data (as in accuracy.py)
def nuclei_fold(test: int):
    """(train, validation, test) lists of (image, instance mask) for one quadrant fold."""
    import tifffile

    image = tifffile.imread(DATA / "dsb2018-nuclei" / "image.tif")
    mask = tifffile.imread(DATA / "dsb2018-nuclei" / "mask.tif")
    out = {"train": [], "validation": [], "test": []}
    for i, (y, x) in enumerate(QUADRANTS):
        split = "test" if i == test else "validation" if i == (test - 1) % 4 else "train"
        out[split].append((image[y : y + 256, x : x + 256], mask[y : y + 256, x : x + 256].astype(np.int32)))
    return out["train"], out["validation"], out["test"]


def isbi_split():
    import imageio.v3 as iio
    from skimage import measure

    out = {"train": [], "validation": [], "test": []}
    for i in range(30):
        image = iio.imread(DATA / "isbi2012" / "images" / f"{i}.png")
        label = iio.imread(DATA / "isbi2012" / "labels" / f"{i}.png")
        cells = measure.label(label > 0, connectivity=1).astype(np.int32)
        split = "test" if i >= 24 else "validation" if i >= 20 else "train"
        out[split].append((image, cells))
    return out["train"], out["validation"], out["test"]


# ---------------------------------------------------------------------- StarDist recipe
def random_fliprot(img, mask):
    axes = tuple(range(mask.ndim))
    perm = tuple(np.random.permutation(axes))
    img = img.transpose(perm + tuple(range(mask.ndim, img.ndim)))
    mask = mask.transpose(perm)
    for ax in axes:
        if np.random.rand() > 0.5:
            img = np.flip(img, axis=ax)
            mask = np.flip(mask, axis=ax)
    return img, mask


def random_intensity_change(img):
    return img * np.random.uniform(0.6, 2) + np.random.uniform(-0.2, 0.2)


def augmenter(x, y):
    """The augmenter of StarDist's 2D training notebook."""
    x, y = random_fliprot(x, y)
    x = random_intensity_change(x)
    sig = 0.02 * np.random.uniform(0, 1)
    x = x + sig * np.random.normal(0, 1, x.shape)
    return x, y


def set_seed(seed: int) -> None:
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)


def train_predict(train, val, test, args, seed: int, workdir: str, name: str) -> dict:
    """Train one StarDist model, tune its thresholds on ``val``, score it on ``test``."""
    from csbdeep.utils import normalize
    from stardist import fill_label_holes
    from stardist.matching import matching
    from stardist.models import Config2D, StarDist2D

    def prep(pairs, fill=True):
        X = [normalize(x.astype(np.float32), 1, 99.8, axis=(0, 1)) for x, _ in pairs]
        Y = [fill_label_holes(y) if fill else y for _, y in pairs]
        return X, Y

    X_trn, Y_trn = prep(train)
    X_val, Y_val = prep(val)
    X_tst, Y_tst = prep(test, fill=False)  # ground truth of the test images untouched

    set_seed(seed)
    conf = Config2D(
        n_rays=32, grid=(2, 2), n_channel_in=1, use_gpu=False,
        train_patch_size=(args.patch, args.patch), train_batch_size=args.batch,
        train_tensorboard=False,  # TensorBoard logging only; not installed
        # validation patches: as many random crops as cover the validation images' area (StarDist's default,
        # one crop per image, is a single 128 px crop of the one nuclei validation quadrant at --patch 128)
        train_n_val_patches=max(len(val), int(round(sum(y.size for y in Y_val) / args.patch**2))),
    )  # fmt: skip
    with contextlib.redirect_stdout(sys.stderr):  # StarDist's messages, keras progress bars
        model = StarDist2D(conf, name=name, basedir=workdir)
    t = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        model.train(
            X_trn, Y_trn, validation_data=(X_val, Y_val), augmenter=augmenter, epochs=args.epochs, steps_per_epoch=args.steps, seed=seed
        )
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        model.optimize_thresholds(X_val, Y_val)
    tune_s = time.perf_counter() - t
    t = time.perf_counter()
    preds = [model.predict_instances(x)[0] for x in X_tst]
    predict_s = time.perf_counter() - t

    counts = {thr: {"tp": 0, "fp": 0, "fn": 0} for thr in THRESHOLDS}
    for y_true, y_pred in zip(Y_tst, preds):
        for thr, st in zip(THRESHOLDS, matching(y_true, y_pred, thresh=list(THRESHOLDS), criterion="iou", report_matches=False)):
            for k in ("tp", "fp", "fn"):
                counts[thr][k] += int(getattr(st, k))
    n_true = int(sum(len(np.unique(y)) - (0 in y) for y in Y_tst))
    n_pred = int(sum(len(np.unique(p)) - (0 in p) for p in preds))
    return {
        "counts": counts, "n_true": n_true, "n_pred": n_pred, "train_s": train_s, "tune_s": tune_s, "predict_s": predict_s,
        "thresholds": {"prob": float(model.thresholds.prob), "nms": float(model.thresholds.nms)},
    }  # fmt: skip


def f1(c: dict) -> float:
    d = 2 * c["tp"] + c["fp"] + c["fn"]
    return 2 * c["tp"] / d if d else 1.0


def run_dataset(dataset: str, seed: int, args, workdir: str) -> dict:
    if dataset == "nuclei":
        parts = [(f"fold{f}", *nuclei_fold(f)) for f in args.folds]
    else:
        parts = [("isbi", *isbi_split())]
    pooled = {thr: {"tp": 0, "fp": 0, "fn": 0} for thr in THRESHOLDS}
    n_true = n_pred = 0
    per_part = []
    for label, train, val, test in parts:
        r = train_predict(train, val, test, args, seed, workdir, f"{dataset}-{label}-seed{seed}")
        for thr in THRESHOLDS:
            for k in ("tp", "fp", "fn"):
                pooled[thr][k] += r["counts"][thr][k]
        n_true += r["n_true"]
        n_pred += r["n_pred"]
        per_part.append({"part": label, "f1@0.5": f1(r["counts"][0.5]), "f1@0.75": f1(r["counts"][0.75]), "n_pred": r["n_pred"],
                         "n_true": r["n_true"], "train_s": round(r["train_s"], 1), "tune_s": round(r["tune_s"], 1),
                         "predict_s": round(r["predict_s"], 1), "thresholds": r["thresholds"]})  # fmt: skip
        print(f"# {dataset} seed {seed} {label}: " + json.dumps(per_part[-1]), flush=True)
    return {
        "dataset": dataset,
        "seed": seed,
        "f1@0.5": f1(pooled[0.5]),
        "f1@0.75": f1(pooled[0.75]),
        "tp@0.5": pooled[0.5]["tp"], "fp@0.5": pooled[0.5]["fp"], "fn@0.5": pooled[0.5]["fn"],
        "tp@0.75": pooled[0.75]["tp"], "fp@0.75": pooled[0.75]["fp"], "fn@0.75": pooled[0.75]["fn"],
        "count (pred/true)": f"{n_pred}/{n_true}",
        "train_s": [p["train_s"] for p in per_part],
        "epochs": args.epochs, "steps": args.steps, "patch": args.patch, "batch": args.batch,
    }  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", choices=("nuclei", "isbi"), default=["nuclei", "isbi"])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=50, help="steps per epoch")
    ap.add_argument("--isbi-epochs", type=int, default=None, help="epochs for isbi (default: --epochs)")
    ap.add_argument("--isbi-steps", type=int, default=None, help="steps per epoch for isbi (default: --steps)")
    ap.add_argument("--patch", type=int, default=256, help="training patch size (StarDist default 256)")
    ap.add_argument("--isbi-patch", type=int, default=None, help="training patch size for isbi (default: --patch)")
    ap.add_argument("--batch", type=int, default=4, help="training batch size (StarDist default 4)")
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3], help="nuclei held-out quadrants (default: all four)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--seeds", type=int, nargs="+", default=None)
    args = ap.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else [0 if args.seed is None else args.seed]

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import csbdeep
    import stardist
    import tensorflow as tf

    print(
        f"# stardist {stardist.__version__}, csbdeep {csbdeep.__version__}, tensorflow {tf.__version__}, "
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, GPUs visible: {len(tf.config.list_physical_devices('GPU'))}",
        flush=True,
    )
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for dataset in args.datasets:
            for seed in seeds:
                a = argparse.Namespace(**vars(args))
                if dataset == "isbi":
                    a.epochs = args.isbi_epochs or args.epochs
                    a.steps = args.isbi_steps or args.steps
                    a.patch = args.isbi_patch or args.patch
                r = run_dataset(dataset, seed, a, workdir)
                results.append(r)
                print(json.dumps(r), flush=True)

    print(f"\n# summary over seeds {seeds} ({time.perf_counter() - t0:.0f} s in all)")
    for dataset in args.datasets:
        rs = [r for r in results if r["dataset"] == dataset]
        line = {"dataset": dataset, "seeds": [r["seed"] for r in rs]}
        for k in ("f1@0.5", "f1@0.75"):
            v = np.array([r[k] for r in rs])
            line[k] = {"mean": round(float(v.mean()), 3), "min": round(float(v.min()), 3), "max": round(float(v.max()), 3)}
        line["count (pred/true)"] = [r["count (pred/true)"] for r in rs]
        ts = np.concatenate([r["train_s"] for r in rs])
        line["train_s per model"] = {
            "median": round(float(np.median(ts)), 1),
            "min": round(float(ts.min()), 1),
            "max": round(float(ts.max()), 1),
        }
        print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
