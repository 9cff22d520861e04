"""One huge zarr image predicted block-wise: one process against the workers of a dask cluster.

A (size x size) uint16 zarr image (blobs on noise, :func:`inference.synthetic_image`, written band by
band) is predicted by the same U-Net (random weights: speed does not depend on them), saved in a
project store so that workers can load it by reference (:class:`~napari_seg_box.core.model_ref.ModelRef`):

1. in one process (``predict_large``, scheduler ``sync``: a reader and a writer thread around the
   network), in a child process whose peak resident memory is reported;
2. on a ``distributed.LocalCluster`` of ``--workers`` worker processes with one thread each (so both
   runs use the same number of cores), bands of whole output chunk rows, one task each.

It checks that labels (and probabilities) of both are identical, and reports megapixels/s of each,
the ratio, and the peak resident memory (``ru_maxrss``) of the single process, of the cluster's
client and of each worker. Cluster start-up and each worker's first model load are timed apart.

    python benchmarks/scale_out_blocks.py --size 16384 --tile 256 --workers 2 --encoder resnet18
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inference import build, synthetic_image  # noqa: E402  (the benchmarks folder's own helpers)


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_image(path: str, size: int) -> None:
    """A (size, size) uint16 zarr image, chunks 1024 x 1024, written band by band (as inference.py memory)."""
    import zarr

    arr = zarr.create_array(path, shape=(size, size), chunks=(1024, 1024), dtype="uint16")
    tile = synthetic_image(1024, 1024)
    for y in range(0, size, 1024):
        band = np.concatenate([np.roll(tile, (y // 1024) * 37 + x // 1024, axis=1) for x in range(0, size, 1024)], axis=1)
        arr[y : y + 1024] = band[: min(1024, size - y), :size]


def _config(args):
    from napari_seg_box.core.infer import PredictConfig

    return PredictConfig(tile_size=args.tile, overlap=args.overlap, batch_size=args.batch, device="cpu")


def _single(args) -> None:
    """Child process: one-process prediction; prints seconds and peak RSS as JSON."""
    import torch

    from napari_seg_box.core import Project
    from napari_seg_box.core.infer import Predictor
    from napari_seg_box.core.infer_large import predict_large

    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = Predictor.from_project(Project.open(args.project), args.version, device="cpu")
    rss_model = peak_rss_mb()
    t0 = time.perf_counter()
    predict_large(args.zarr, args.out, predictor, config=_config(args), chunk=args.chunk, write_probabilities=not args.no_probabilities)
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mb": peak_rss_mb(),
                "rss_after_model_load_mb": rss_model,
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


def _save(args) -> None:
    """Child process: save the benchmark's U-Net into the project store; prints the version id."""
    from napari_seg_box.core import Project
    from napari_seg_box.core.models import weights_to_bytes

    project = Project.create(args.project, classes=["background", "foreground"], exist_ok=True)
    model, meta = build(args.encoder, args.depth, tuple(args.decoder))
    print(project.save_model_version(weights_to_bytes(model), meta).version)


def _warm(ref) -> int:
    """On a worker: load the model once (as its first band would) and say its torch threads."""
    import torch

    ref.load()
    return torch.get_num_threads()


def _identical(a: str, b: str, name: str, rows: int = 1024) -> bool:
    import zarr

    x, y = zarr.open_array(os.path.join(a, name), mode="r"), zarr.open_array(os.path.join(b, name), mode="r")
    if x.shape != y.shape:
        return False
    axis = x.ndim - 2
    for r0 in range(0, x.shape[axis], rows):
        key = (slice(None),) * axis + (slice(r0, r0 + rows),)
        if not np.array_equal(x[key], y[key]):
            return False
    return True


def run_blocks(args) -> dict:
    from distributed import Client, LocalCluster

    from napari_seg_box.core import Project
    from napari_seg_box.core.events import Message, run_to_end
    from napari_seg_box.core.infer_large import iter_predict_large
    from napari_seg_box.core.model_ref import ModelRef

    workdir = args.workdir or tempfile.mkdtemp(prefix="segbox-blocks-")
    image = os.path.join(workdir, f"image{args.size}.zarr")
    if not os.path.exists(image):
        t0 = time.perf_counter()
        write_image(image, args.size)
        print(f"wrote {image} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    project_path = os.path.join(workdir, "project.zarr")
    # the model is built and saved by a child: this process (the cluster's client) never loads torch
    cmd = [sys.executable, __file__, "_save", "--project", project_path, "--encoder", args.encoder, "--depth", str(args.depth), "--decoder"]
    saved = subprocess.run(cmd + [str(d) for d in args.decoder], capture_output=True, text=True)
    if saved.returncode != 0:
        raise SystemExit(saved.stderr)
    version = saved.stdout.strip().splitlines()[-1]
    project = Project.open(project_path)
    outs = {k: os.path.join(workdir, f"pred_{k}.zarr") for k in ("single", "cluster")}
    for path in outs.values():
        if os.path.exists(path):
            import shutil

            shutil.rmtree(path)
    mpx = args.size * args.size / 1e6

    # 1. one process (a child, for its own peak memory)
    cmd = [sys.executable, __file__, "_single", "--zarr", image, "--out", outs["single"], "--project", project_path, "--version", version]
    cmd += ["--tile", str(args.tile), "--overlap", str(args.overlap), "--batch", str(args.batch), "--chunk", str(args.chunk)]
    cmd += ["--threads", str(args.threads)] + (["--no-probabilities"] if args.no_probabilities else [])
    child = subprocess.run(cmd, capture_output=True, text=True)
    if child.returncode != 0:
        raise SystemExit(child.stderr)
    single = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"one process: {single['seconds']:.1f} s", file=sys.stderr)

    # 2. the workers of a local cluster, one thread each
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    ref = ModelRef.of(project.model_version(version), project, device="cpu", backend="torch")
    worker_threads = client.run(_warm, ref)
    start_s = time.perf_counter() - t0
    try:
        events = []
        t0 = time.perf_counter()
        gen = iter_predict_large(
            image,
            outs["cluster"],
            ref,
            config=_config(args),
            chunk=args.chunk,
            band=args.band,
            write_probabilities=not args.no_probabilities,
            scheduler=cluster.scheduler_address,
            workers=args.workers,
        )
        run_to_end(gen, events.append)
        cluster_s = time.perf_counter() - t0
        client_rss = peak_rss_mb()
        worker_rss = client.run(peak_rss_mb)
    finally:
        client.close()
        cluster.close()
    bands = [e.text for e in events if isinstance(e, Message) and "band(s)" in e.text]
    same = {
        name: _identical(outs["single"], outs["cluster"], name)
        for name in ["labels"] + ([] if args.no_probabilities else ["probabilities"])
    }
    res = {
        "benchmark": "one image block-wise: one process against the workers of a dask LocalCluster",
        "image": f"{args.size}x{args.size} uint16 zarr, chunks 1024x1024",
        "model": f"U-Net {args.encoder} depth {args.depth} decoder {args.decoder} (random weights)",
        "tile": args.tile,
        "overlap": args.overlap,
        "batch": args.batch,
        "output_chunk": args.chunk,
        "band_rows": args.band or "default",
        "probabilities_written": not args.no_probabilities,
        "single": {**single, "mpx_per_s": mpx / single["seconds"]},
        "cluster": {
            "workers": args.workers,
            "threads_per_worker": 1,
            "torch_threads_per_worker": sorted(set(worker_threads.values())),
            "seconds": cluster_s,
            "mpx_per_s": mpx / cluster_s,
            "start_and_model_load_seconds": start_s,
            "client_peak_rss_mb": client_rss,  # no torch here: percentiles, task planning, the comparison after
            "client_imported_torch": "torch" in sys.modules,
            "worker_peak_rss_mb": sorted(worker_rss.values()),
            "bands": bands[-1] if bands else None,
        },
        "ratio_cluster_over_single_speed": single["seconds"] / cluster_s,
        "identical": same,
        "passed": all(same.values()),
        "cpus": os.cpu_count(),
    }
    if not args.keep:
        import shutil

        for path in outs.values():
            shutil.rmtree(path, ignore_errors=True)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", nargs="?", default="run", choices=["run", "_single", "_save"])
    p.add_argument("--size", type=int, default=16384)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--decoder", type=int, nargs="+", default=[256, 128, 64, 32, 16])
    p.add_argument("--chunk", type=int, default=1024, help="output chunk side")
    p.add_argument("--band", type=int, default=None, help="output rows per task (default: automatic)")
    p.add_argument("--threads", type=int, default=0, help="torch threads of the one process (0: torch's default)")
    p.add_argument("--workdir")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--no-probabilities", action="store_true")
    p.add_argument("--zarr")
    p.add_argument("--out")
    p.add_argument("--project")
    p.add_argument("--version")
    args = p.parse_args(argv)
    if args.mode in ("_single", "_save"):
        {"_single": _single, "_save": _save}[args.mode](args)
        return 0
    print(json.dumps(run_blocks(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
