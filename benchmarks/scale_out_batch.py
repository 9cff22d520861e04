"""Batch prediction of many images spread over dask workers: images/s of one process against a
``distributed.LocalCluster`` of 1 worker and of ``--workers`` workers, in one run, same labels.

The images are N crops (``--size`` square, each at another offset) of a mosaic of the real DSB2018
nuclei image (the package's sample, the pixels of ../shared/data/dsb2018-nuclei) in its 8 flips and
rotations, written as TIFF files. The model is a U-Net (``--encoder``) briefly fitted on the nuclei
image (``--fit-steps``; speed does not depend on the weights, a fitted model makes the labels worth
comparing), saved as a version of a temporary project store, from which each worker loads it once.

Runs, alternated in this order on the same files, each writing its own output folder:
  (i)   one process: ``predict_files(...)`` (``scheduler="sync"``), torch on all its threads;
  (ii)  a LocalCluster of 1 worker process with ``--workers`` threads;
  (iii) a LocalCluster of ``--workers`` worker processes of 1 thread each.
The clusters' start and a warm-up of 2 images per worker thread (imports, model load; 2 images for
run (i)) are timed apart and not counted. Every run's ``_labels.tif`` and ``_instances.tif`` must equal run (i)'s.

    python benchmarks/scale_out_batch.py --images 200 --size 512 --workers 2 --encoder resnet18 --tile 256
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

sys.path.insert(0, str(Path(__file__).resolve().parent))


def make_images(folder: Path, n: int, size: int) -> list[str]:
    """N (size, size) uint16 crops of the nuclei mosaic, each at its own offset, as TIFF files."""
    import tifffile
    from inference import nuclei_mosaic

    mosaic, _ = nuclei_mosaic(size + 512)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        y, x = (i * 37) % 512, (i * 91) % 512
        paths.append(str(folder / f"img{i:04d}.tif"))
        tifffile.imwrite(paths[-1], np.ascontiguousarray(mosaic[y : y + size, x : x + size]))
    return paths


def make_project(root: Path, encoder: str, fit_steps: int):
    """A temporary project store holding a U-Net briefly fitted on the nuclei image; (project, version, fit seconds)."""
    import torch
    from inference import fit_briefly

    from napari_seg_box.core.models import ModelSpec, build_model, weights_to_bytes
    from napari_seg_box.core.store import Project
    from napari_seg_box.core.versions import ModelVersion

    torch.manual_seed(0)
    spec = ModelSpec(encoder=encoder, in_channels=1, classes=2)
    t0 = time.perf_counter()
    model = build_model(spec)
    model = fit_briefly(model, fit_steps) if fit_steps else model.eval()
    fit_s = time.perf_counter() - t0
    project = Project.create(root / "bench.zarr", classes=["background", "nucleus"])
    version = project.save_model_version(weights_to_bytes(model), ModelVersion(spec, ("background", "nucleus"), patch_size=128)).version
    return project, version, fit_s


def compare(out: Path, ref: Path, names: list[str]) -> int:
    """How many images' labels or instances differ from the reference run's."""
    import tifffile

    differ = 0
    for name in names:
        for kind in ("labels", "instances"):
            if not np.array_equal(tifffile.imread(out / f"{name}_{kind}.tif"), tifffile.imread(ref / f"{name}_{kind}.tif")):
                differ += 1
                break
    return differ


def run_batch(args) -> dict:
    """Predict ``args.images`` images with one process and on LocalClusters (see the module); the figures."""
    import torch
    from distributed import LocalCluster

    from napari_seg_box.core.infer import Predictor
    from napari_seg_box.workflows.predict import predict_files

    load_at_start = os.getloadavg()[0]
    root = Path(args.workdir or tempfile.mkdtemp(prefix="segbox-scale-out-"))
    files = make_images(root / "images", args.images, args.size)
    names = [Path(p).stem for p in files]
    project, version, fit_s = make_project(root, args.encoder, args.fit_steps)
    config = {"tile_size": args.tile, "device": args.device}
    predictor = Predictor.from_project(project, version, device=args.device)
    results: dict[str, dict] = {}

    def timed(name: str, out: Path, **where) -> None:
        t0 = time.perf_counter()
        rows = predict_files(files, out, predictor, config=config, project=project, **where)
        seconds = time.perf_counter() - t0
        failed = [r for r in rows if r["error"]]
        if failed:
            raise SystemExit(f"{name}: {len(failed)} image(s) failed, e.g. {failed[0]['name']}: {failed[0]['error']}")
        results[name] = {"seconds": round(seconds, 3), "images_per_s": round(args.images / seconds, 3)}
        print(f"{name}: {args.images / seconds:.2f} images/s ({seconds:.1f} s)", file=sys.stderr)

    single = "(i) one process, sync"
    t0 = time.perf_counter()
    predict_files(files[:2], root / "warm" / "single", predictor, config=config)  # first calls: kernels, imports
    single_warm_s = time.perf_counter() - t0
    timed(single, root / "out" / "single")
    results[single]["warm_up_s"] = round(single_warm_s, 2)
    clusters = {
        f"(ii) LocalCluster, 1 worker x {args.workers} threads": (1, args.workers),
        f"(iii) LocalCluster, {args.workers} workers x 1 thread": (args.workers, 1),
    }
    for k, (name, (n, threads)) in enumerate(clusters.items()):
        t0 = time.perf_counter()
        with LocalCluster(n_workers=n, threads_per_worker=threads, processes=True, dashboard_address=":0") as cluster:
            started = time.perf_counter() - t0
            t0 = time.perf_counter()
            warm = files[: 2 * n * threads]  # every worker process imports torch and loads the model once
            predict_files(warm, root / "warm" / str(k), predictor, config=config, project=project, scheduler=cluster.scheduler_address)
            warm_s = time.perf_counter() - t0
            timed(name, root / "out" / str(k), scheduler=cluster.scheduler_address)
        results[name] |= {"cluster_start_s": round(started, 2), "warm_up_s": round(warm_s, 2)}
        results[name]["images_differing_from_one_process"] = compare(root / "out" / str(k), root / "out" / "single", names)
    base = results[single]["images_per_s"]
    for r in results.values():
        r["ratio_vs_one_process"] = round(r["images_per_s"] / base, 3)
    identical = all(r.get("images_differing_from_one_process", 0) == 0 for r in results.values())
    return {
        "benchmark": "batch prediction on dask workers",
        "images": f"{args.images} x {args.size}x{args.size} uint16 crops of the DSB2018 nuclei mosaic",
        "model": f"U-Net {args.encoder}, fitted {args.fit_steps} steps ({fit_s:.0f} s), tile {args.tile}, device {args.device}",
        "cpu_count": os.cpu_count(),
        "torch_threads_of_one_process": torch.get_num_threads(),
        "load_average_1min_at_start_and_end": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],  # other work on the machine
        "results": results,
        "labels_identical": identical,
        "workdir": str(root),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=200, help="images in the batch (default: %(default)s)")
    p.add_argument("--size", type=int, default=512, help="side of each image in pixels (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="worker processes of run (iii), threads of run (ii) (default: %(default)s)")
    p.add_argument("--encoder", default="resnet18", help="U-Net encoder (default: %(default)s)")
    p.add_argument("--tile", type=int, default=256, help="tile size (default: %(default)s)")
    p.add_argument("--fit-steps", type=int, default=30, help="Adam steps on the nuclei image before measuring (0: random weights)")
    p.add_argument("--device", default="cpu", help="cpu, or auto (each worker's GPU when it has one) (default: %(default)s)")
    p.add_argument("--workdir", help="where the images, store and outputs go (default: a new temporary folder)")
    summary = run_batch(p.parse_args(argv))
    print(json.dumps(summary, indent=2))
    return 0 if summary["labels_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
