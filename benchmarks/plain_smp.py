"""The project's pipeline against the plain segmentation-models-pytorch loop a user would write, given the same CPU time.

    python benchmarks/plain_smp.py                     # the four nuclei folds of accuracy.py, seed 0
    python benchmarks/plain_smp.py --folds 3 --seeds 0 1 2

In each fold (quadrant f held out, f-1 validates, the others train: ``accuracy.nuclei_project``) the
project trains with the demo's settings (``demo_config``: everything else automatic, distance output
chosen automatically) and tunes its post-processing; then the loop from the smp README (U-Net
ResNet34 from scratch, Adam at 1e-3, Dice + BCE, random 128 px crops with
flips, images standardised, the validation quadrant added to training since it picks nothing) trains
for the same wall time on the same machine, and its objects are the connected components of
probability > 0.5. Both are scored by the same code on the held-out quadrants, pooled. Prints the
pooled table per seed and the mean and range over seeds.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from accuracy import markdown, nuclei_project, pooled_row


def plain_loop(project, seconds: float, seed: int):
    """The smp README's loop, for ``seconds``; returns the model (eval mode) and the standardisation."""
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    names = project.image_names("train") + project.image_names("validation")
    images = [project.get_image(n).astype(np.float32) for n in names]
    masks = [(project.get_labels(n) == 2).astype(np.float32) for n in names]
    images = [(im - im.mean()) / (im.std() + 1e-6) for im in images]
    model = smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    dice = smp.losses.DiceLoss(mode="binary")
    bce = torch.nn.BCEWithLogitsLoss()
    model.train()
    t0, steps = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        xs, ys = [], []
        for _ in range(8):
            i = rng.integers(len(images))
            y0, x0 = rng.integers(0, images[i].shape[0] - 128 + 1), rng.integers(0, images[i].shape[1] - 128 + 1)
            x, y = images[i][y0 : y0 + 128, x0 : x0 + 128], masks[i][y0 : y0 + 128, x0 : x0 + 128]
            if rng.random() < 0.5:
                x, y = x[:, ::-1], y[:, ::-1]
            if rng.random() < 0.5:
                x, y = x[::-1], y[::-1]
            xs.append(x.copy())
            ys.append(y.copy())
        x = torch.from_numpy(np.stack(xs)[:, None])
        y = torch.from_numpy(np.stack(ys)[:, None])
        logits = model(x)
        loss = dice(logits, y) + bce(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    return model.eval(), steps


def plain_evaluation(project, model):
    import torch
    from skimage.measure import label

    from napari_seg_box.core.evaluate import evaluate_pairs, truth_instances
    from napari_seg_box.core.store import iter_annotated_planes

    items = []
    for plane in iter_annotated_planes(project, ("test",)):
        im = plane.pixels.astype(np.float32)
        im = (im - im.mean()) / (im.std() + 1e-6)
        with torch.no_grad():
            prob = torch.sigmoid(model(torch.from_numpy(im[None, None].copy())))[0, 0].numpy()  # 256 px: a multiple of 32
        instances = label(prob > 0.5, connectivity=1).astype(np.int32)
        semantic = np.where(instances > 0, 2, 1).astype(np.uint8)
        items.append((plane.name, plane.labels, semantic, truth_instances(plane.labels, plane.instances, classes=[2]), {2: instances}))
    return evaluate_pairs(items, n_classes=2, class_names=project.class_names, object_classes=[2])


def main(argv=None) -> int:
    import torch

    from napari_seg_box.workflows.demo import demo_config
    from napari_seg_box.workflows.evaluate import evaluate_baseline, evaluate_project
    from napari_seg_box.workflows.train import train_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=None, help="the project's epochs (default: the demo's)")
    args = parser.parse_args(argv)
    tables = []
    for seed in args.seeds:
        ours, plain, base, secs = [], [], [], []
        with tempfile.TemporaryDirectory() as tmp:
            for f in args.folds:
                project = nuclei_project(tmp, f"s{seed}", test=f)
                t = time.perf_counter()
                version = train_model(project, demo_config(args.epochs).replace(seed=seed))
                seconds = time.perf_counter() - t
                ours.append(evaluate_project(project, version, save=False))
                model, steps = plain_loop(project, seconds, seed)
                plain.append(plain_evaluation(project, model))
                base.append(evaluate_baseline(project))
                secs.append(seconds)
                print(f"seed {seed} fold {f}: {seconds:.0f} s each; the plain loop made {steps} steps "
                      f"({torch.get_num_threads()} threads)", flush=True)  # fmt: skip
        rows = [
            pooled_row("napari-seg-box (demo settings, train + tune)", ours),
            pooled_row("plain smp loop, same time, connected components", plain),
            pooled_row("classical Otsu + watershed", base),
        ]
        print(f"seed {seed} ({np.mean(secs):.0f} s per fold):\n{markdown(rows)}\n", flush=True)
        tables.append(rows)
    if len(tables) > 1:
        for i in range(len(tables[0])):
            for key in ("IoU nucleus", "F1@0.5", "F1@0.75"):
                v = np.array([t[i][key] for t in tables])
                print(f"{tables[0][i]['method']}: {key} mean {v.mean():.3f} (range {v.min():.3f}-{v.max():.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
