"""Batch quantification speed: images/s of ``quantify_batch`` against a plain loop of
``skimage.measure.regionprops_table``, and its scaling with 1 and 2 dask workers.

The data are N copies (rolled, so not identical) of the real DSB2018 nuclei mask and image
(512 x 512, 125 nuclei) written as TIFF files. Both sides read the mask and the intensity image
from disk and measure the same properties (area, perimeter, equivalent diameter, eccentricity,
solidity, axis lengths, orientation, centroid, mean/max intensity) into one table.

    python benchmarks/quantify_speed.py --images 48
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SEGBOX_SHARED_DATA", REPO.parent / "shared" / "data"))
PROPS = [
    "label",
    "area",
    "perimeter",
    "equivalent_diameter_area",
    "eccentricity",
    "solidity",
    "axis_major_length",
    "axis_minor_length",
    "orientation",
    "centroid",
    "intensity_mean",
    "intensity_max",
]


def make_data(folder: Path, n: int) -> tuple[Path, Path]:
    import tifffile

    image = tifffile.imread(DATA / "dsb2018-nuclei" / "image.tif")
    mask = tifffile.imread(DATA / "dsb2018-nuclei" / "mask.tif")
    masks, images = folder / "masks", folder / "images"
    masks.mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        shift = (i * 37) % 512
        tifffile.imwrite(masks / f"img{i:04d}.tif", np.roll(mask, shift, axis=1))
        tifffile.imwrite(images / f"img{i:04d}.tif", np.roll(image, shift, axis=1))
    return masks, images


def plain_loop(masks: Path, images: Path):
    import pandas as pd
    import tifffile
    from skimage.measure import regionprops_table

    frames = []
    for m in sorted(masks.glob("*.tif")):
        lab = tifffile.imread(m)
        img = tifffile.imread(images / m.name)
        df = pd.DataFrame(regionprops_table(lab, img, properties=PROPS))
        df["image"] = m.stem
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workdir")
    args = p.parse_args(argv)

    from napari_seg_box.core.quantify_batch import quantify_batch

    folder = Path(args.workdir or tempfile.mkdtemp(prefix="segbox-quant-"))
    masks, images = make_data(folder, args.images)
    runs = {
        "plain regionprops_table loop": lambda: plain_loop(masks, images),
        "quantify_batch sync": lambda: quantify_batch(str(masks), images=str(images), scheduler="sync"),
        "quantify_batch threads, 1 worker": lambda: quantify_batch(str(masks), images=str(images), scheduler="threads", workers=1),
        "quantify_batch threads, 2 workers": lambda: quantify_batch(str(masks), images=str(images), scheduler="threads", workers=2),
        "quantify_batch processes, 1 worker": lambda: quantify_batch(str(masks), images=str(images), scheduler="processes", workers=1),
        "quantify_batch processes, 2 workers": lambda: quantify_batch(str(masks), images=str(images), scheduler="processes", workers=2),
    }
    results = {}
    counts = {}
    for name, fn in runs.items():
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        counts[name] = len(out) if not hasattr(out, "objects") else len(out.objects)
        results[name] = {"seconds": best, "images_per_s": args.images / best}
        print(f"{name}: {args.images / best:.1f} images/s", file=sys.stderr)
    from distributed import LocalCluster

    for n in (1, 2):
        name = f"quantify_batch dask.distributed, {n} worker process(es), cluster start excluded"
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            best = float("inf")
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                out = quantify_batch(str(masks), images=str(images), scheduler=cluster.scheduler_address)
                best = min(best, time.perf_counter() - t0)
        counts[name] = len(out.objects)
        results[name] = {"seconds": best, "images_per_s": args.images / best}
        print(f"{name}: {args.images / best:.1f} images/s", file=sys.stderr)
    base = results["plain regionprops_table loop"]["images_per_s"]
    for r in results.values():
        r["ratio_vs_plain_loop"] = r["images_per_s"] / base
    print(
        json.dumps(
            {
                "benchmark": "batch quantification",
                "images": f"{args.images} x 512x512 (DSB2018 nuclei, 125 objects each)",
                "objects_measured": counts,
                "cpu_count": os.cpu_count(),
                "results": results,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
