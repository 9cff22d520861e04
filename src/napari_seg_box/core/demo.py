"""The demo: the whole loop on the bundled real sample data, from a fresh machine, with no options."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .store import Project

NUCLEI_SPLITS = {"q0": "train", "q1": "train", "q2": "validation", "q3": "test"}


def build_demo_project(url: str | os.PathLike) -> Project:
    """A project from the bundled DSB2018 nuclei image cut into quadrants: two for training, one
    for validation, one held out as test (with instance ground truth for object metrics)."""
    from .._sample_data import load_nuclei

    project = Project.create(url, classes=["background", "nucleus"], colors=["#555555", "#ffcc00"], exist_ok=True)
    if project.image_names():
        return project
    image, mask = load_nuclei()
    for i, (y, x) in enumerate([(0, 0), (0, 256), (256, 0), (256, 256)]):
        name = f"q{i}"
        inst = mask[y : y + 256, x : x + 256]
        project.add_image(
            name,
            image[y : y + 256, x : x + 256],
            labels=(1 + (inst > 0)).astype(np.uint8),
            instances=inst,
            split=NUCLEI_SPLITS[name],
            source=f"sample_data/nuclei_image.tif[{y}:{y + 256}, {x}:{x + 256}]",
        )
    return project


def run_demo(out: str | os.PathLike = "demo_output", *, log=print) -> dict:
    """Run the demo into ``out``; returns the headline figures."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log(f"[demo] building the project store {out / 'project.zarr'} from the bundled DSB2018 nuclei image")
    project = build_demo_project(out / "project.zarr")
    summary = project.summary()
    log(
        f"[demo] {len(summary['images'])} images (train {summary['splits']['train']}, validation "
        f"{summary['splits']['validation']}, test {summary['splits']['test']}); annotated pixels per class: "
        + ", ".join(f"{k} {v:,d}" for k, v in summary["annotated_pixels_per_class"].items())
    )
    log("[demo] training, evaluation and quantification are not part of this build yet: the demo stops here.")
    log(f"[demo] done in {time.time() - t0:.1f} s; project store: {out / 'project.zarr'}")
    return {"project": str(out / "project.zarr"), "images": len(summary["images"])}
