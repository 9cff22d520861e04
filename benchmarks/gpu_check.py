"""GPU checks for the lent CUDA machine (the CI machines have no GPU, so these are not in the test suite).

1. Training on CUDA uses mixed precision and channels_last and learns (validation IoU on the DSB2018
   nuclei quadrants above a threshold).
2. CUDA out-of-memory halves the batch and training continues.
3. Prediction on the GPU matches prediction on the CPU.

    python benchmarks/gpu_check.py [train] [oom] [predict]   # default: all; exit code 0 = passed
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def say(*args):
    print(*args, flush=True)


def main(parts=("train", "oom", "predict")) -> int:
    import torch

    from napari_seg_box.core import Project
    from napari_seg_box.core.events import Message, run_to_end
    from napari_seg_box.core.infer import Predictor, predict
    from napari_seg_box.core.train import TrainConfig, iter_train
    from tests.conftest import nuclei_quadrants

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        project = Project.create(f"{tmp}/p.zarr", classes=["background", "nucleus"])
        for (name, image, inst), split in zip(nuclei_quadrants(), ["train", "train", "validation", "test"]):
            project.add_image(name, image, labels=(1 + (inst > 0)).astype(np.uint8), instances=inst, split=split)

        version = run_to_end(iter_train(project, TrainConfig(epochs=10, encoder="resnet34", augmentation="light")))
        t = project.model_version(version).training
        say("1.", t.device, "| chosen", t.chosen, "| best", t.best, f"| {t.duration_s:.0f} s")
        if "float16" not in t.device or "channels_last" not in t.device:
            failures.append(f"mixed precision / channels_last not used: {t.device}")
        if t.best["val_iou"] < 0.8:
            failures.append(f"validation IoU {t.best['val_iou']:.3f} < 0.8")

        if "oom" in parts:
            messages = []

            def on_event(e):
                if isinstance(e, Message):
                    messages.append(e.text)
                    say("   ", e.text)

            cfg = TrainConfig(
                epochs=1, encoder="resnet34", patch_size=512, batch_size=512, steps_per_epoch=2, learning_rate=1e-3, augmentation="light"
            )
            v2 = run_to_end(iter_train(project, cfg), on_event)
            halved = [m for m in messages if "halved" in m]
            final = project.model_version(v2).training.chosen["batch_size"]
            say("2.", len(halved), "halvings | final batch", final)
            if not halved or final >= 512:
                failures.append("out-of-memory did not halve the batch")

        image = project.get_image("q3")
        gpu = predict(image, Predictor.from_project(project, version, device="cuda"))
        cpu = predict(image, Predictor.from_project(project, version, device="cpu"))
        diff = float(np.abs(gpu - cpu).max())
        agree = float((gpu.argmax(0) == cpu.argmax(0)).mean())
        say(f"3. GPU vs CPU probabilities: max |diff| {diff:.2e}, same label on {100 * agree:.3f}% of pixels")
        if agree < 0.999:
            failures.append(f"GPU and CPU predictions differ on {100 * (1 - agree):.2f}% of pixels")
    say("FAILED: " + "; ".join(failures) if failures else "all GPU checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(tuple(sys.argv[1:]) or ("train", "oom", "predict")))
