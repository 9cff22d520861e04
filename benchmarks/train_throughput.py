"""Training throughput: napari-seg-box's training loop against a plain hand-written smp loop.

Same network (ResNet34 U-Net by default), same patch size and batch, same data (random 256x256
patches of the ISBI 2012 images, sampled and augmented by the same code), in the same run:

- ours: ``iter_train`` (background data thread; on CUDA: bf16/fp16 autocast and channels_last);
- plain: the loop a user would write from the smp README: sample a batch, forward, Dice+CE loss,
  backward, AdamW step, all in one thread, float32.

Reported: images/s of each (after warm-up; CUDA timings synchronised), the ratio ours / plain, and
the share of our step time spent waiting for data. Targets: CPU ratio >= 1.0 and data wait < 10 %;
CUDA ratio >= 1.5.

    python benchmarks/train_throughput.py                    # CPU: small step counts
    python benchmarks/train_throughput.py --steps 40 --batch 16 --device cuda
    python benchmarks/train_throughput.py --steps 40 --batch 16 --device cuda --compile reduce-overhead

``--compile MODE`` adds a third contender, ours with ``TrainConfig(compile=MODE)`` (torch.compile;
the first epoch compiles and is not timed), and reports its compile time as the run printed it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("SEGBOX_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def make_project(root: str, n_images: int):
    import imageio.v3 as iio

    from napari_seg_box.core import Project

    project = Project.create(f"{root}/isbi.zarr", classes=["membrane", "interior"])
    for i in range(n_images):
        image = iio.imread(DATA / "isbi2012" / "images" / f"{i}.png")
        mask = iio.imread(DATA / "isbi2012" / "labels" / f"{i}.png")
        project.add_image(f"isbi{i}", image, labels=np.where(mask > 0, 2, 1).astype(np.uint8), split="validation" if i == 0 else "train")
    return project


def run_ours(project, cfg) -> dict:
    from napari_seg_box.core.events import EpochEnd, Message
    from napari_seg_box.core.train import iter_train

    epochs, said = [], []
    gen = iter_train(project, cfg)
    for ev in gen:
        if isinstance(ev, EpochEnd):
            epochs.append(ev.metrics)
        elif isinstance(ev, Message) and ev.topic == "device":
            said.append(ev.text)
    timed = epochs[1:] or epochs  # epoch 1 includes warm-up (cudnn autotuning, allocator, compilation)
    return {
        "images_per_s": float(np.mean([m["images_per_s"] for m in timed])),
        "data_wait_share": float(np.mean([m["data_wait_share"] for m in timed])),
        "device_messages": said,
    }


def run_plain(project, cfg, steps: int) -> dict:
    import segmentation_models_pytorch as smp
    import torch

    from napari_seg_box.core.losses import make_loss
    from napari_seg_box.core.models import pick_device
    from napari_seg_box.core.train.prepare import _prepare_data
    from napari_seg_box.core.train.sampling import _Sampler

    device = pick_device(cfg.device)
    data = _prepare_data(project, cfg)
    sampler = _Sampler(data, cfg.patch_size, cfg)
    torch.manual_seed(0)
    model = smp.Unet(cfg.encoder, encoder_weights=None, in_channels=1, classes=2).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    loss_fn = make_loss("dice_ce")
    model.train()

    def step(i):
        x, y, _ = sampler.batch(7, i, cfg.batch_size)
        x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for i in range(3):  # warm-up
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(steps):
        step(100 + i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"images_per_s": steps * cfg.batch_size / (time.perf_counter() - t)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="resnet34")
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6, help="steps per epoch (ours: 2 epochs, the second timed)")
    ap.add_argument("--images", type=int, default=6, help="ISBI images in the project (the first one validates)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=1, help="alternate ours/plain this many times")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--compile", help="also time ours with this torch.compile mode (default, reduce-overhead, max-autotune, ...)")
    args = ap.parse_args(argv)

    import torch

    from napari_seg_box.core.models import device_name, pick_device
    from napari_seg_box.core.train import TrainConfig

    cfg = TrainConfig(
        epochs=2, encoder=args.encoder, patch_size=args.patch, batch_size=args.batch, learning_rate=1e-3,
        steps_per_epoch=args.steps, augmentation="light", device=args.device, patience=0,
    )  # fmt: skip
    device = pick_device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(tmp, args.images)
        for r in range(args.repeats):
            ours = run_ours(project, cfg)
            plain = run_plain(project, cfg, args.steps)
            rows.append({"ours": ours, "plain": plain, "ratio": ours["images_per_s"] / plain["images_per_s"]})
            print(
                f"repeat {r + 1}: ours {ours['images_per_s']:.2f} img/s (data wait {100 * ours['data_wait_share']:.1f}% of step time), "
                f"plain {plain['images_per_s']:.2f} img/s, ratio {rows[-1]['ratio']:.2f}",
                flush=True,
            )
            if args.compile:
                comp = rows[-1]["compiled"] = run_ours(project, cfg.replace(compile=args.compile))
                rows[-1]["compiled_ratio"] = comp["images_per_s"] / plain["images_per_s"]
                print(
                    f"  compiled ({args.compile}): {comp['images_per_s']:.2f} img/s, ratio {rows[-1]['compiled_ratio']:.2f}; {comp['device_messages']}"
                )
    result = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {device_name(device)}, torch {torch.__version__}",
        "encoder": args.encoder, "patch": args.patch, "batch": args.batch, "steps": args.steps,
        "ours_images_per_s": float(np.median([r["ours"]["images_per_s"] for r in rows])),
        "plain_images_per_s": float(np.median([r["plain"]["images_per_s"] for r in rows])),
        "ratio": float(np.median([r["ratio"] for r in rows])),
        "data_wait_share": float(np.median([r["ours"]["data_wait_share"] for r in rows])),
    }  # fmt: skip
    if args.compile:
        result["compile"] = args.compile
        result["compiled_images_per_s"] = float(np.median([r["compiled"]["images_per_s"] for r in rows]))
        result["compiled_ratio"] = float(np.median([r["compiled_ratio"] for r in rows]))
        result["compile_messages"] = rows[0]["compiled"]["device_messages"]
    target = 1.5 if device.type == "cuda" else 1.0
    print(json.dumps(result, indent=2))
    ok = result["ratio"] >= target and result["data_wait_share"] < 0.10
    print(f"targets: ratio >= {target} and data wait < 10%: {'MET' if ok else 'NOT MET'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
