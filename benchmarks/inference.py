"""Tiled prediction benchmarks: speed against MONAI's sliding_window_inference, peak memory on a
16k x 16k zarr image, and the torch backend against ONNX Runtime.

Speed: the same network (a U-Net with random weights: speed does not depend on the weights), the
same tile size, overlap, batch of tiles and Gaussian blending, both producing softmax
probabilities, alternated in one run. MONAI runs twice: with the model as trained (what a user
hands it; the target ratio), and with a channels_last copy of it, which isolates what the memory
layout gives from what the rest of our pipeline (batch norms folded, tiles batched across rows) gives. MONAI is needed for this part only (``pip install monai``);
it is not a dependency of napari-seg-box.

Memory: a (Y, X) uint16 zarr image (default 16384 x 16384) is written to disk band by band, then
predicted block by block into a zarr output in a child process whose peak resident memory
(``ru_maxrss``) is reported.

Streaming: the same image predicted in memory (a numpy array in, probabilities and labels held in
memory: ``predict``) and larger than memory (a zarr on disk in, a zarr group with labels and float16
probabilities written out: ``predict_large``, reading, decompression and writing included), each in
its own child process (peak resident memory reported), alternated, best of ``--repeats``. The ratio
is the streamed speed over the in-memory speed (issue 18's goal: >= 0.9x, peak < 2 GB).

Backends: the same predictor, image, tiles and blending, run by torch (as the product runs it:
batch norms folded, channels_last) and by ONNX Runtime (``backend="onnx"``: the model exported to
ONNX, CPU), alternated in one run on a mosaic of the real DSB2018 nuclei image (flipped and rotated
copies, ``--size`` square), with a U-Net briefly fitted on it (``--fit-steps``; speed does not depend
on the weights, agreement is measured on a fitted model's labels). Reports megapixels/s of each, the
ratio, the export time, and how far the probabilities and labels of the two agree. Needs
onnxruntime and onnx (``pip install napari-seg-box[onnx]``).

    python benchmarks/inference.py speed --size 1024 --tile 256 --overlap 0.25 --repeats 3
    python benchmarks/inference.py memory --size 16384 --tile 256
    python benchmarks/inference.py stream --size 8192 --repeats 2
    python benchmarks/inference.py backend --size 2048 --encoder resnet34 --repeats 3 --threads 0
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def build(encoder: str, depth: int, decoder: tuple[int, ...], classes: int = 2):
    import torch

    from napari_seg_box.core.models import ModelSpec, build_model
    from napari_seg_box.core.versions import ModelVersion

    torch.manual_seed(0)
    spec = ModelSpec(encoder=encoder, encoder_depth=depth, decoder_channels=decoder, in_channels=1, classes=classes)
    model = build_model(spec).eval()
    return model, ModelVersion(spec, ("background", "foreground"), version="bench")


def synthetic_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Blobs on a noisy background, uint16."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    img = rng.normal(200, 20, (h, w)).astype(np.float32)
    for _ in range(max(1, h * w // 4000)):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 15)
        y0, y1, x0, x1 = int(max(0, cy - r)), int(min(h, cy + r + 1)), int(max(0, cx - r)), int(min(w, cx + r + 1))
        sub = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 <= r * r
        img[y0:y1, x0:x1][sub] += 800
    return np.clip(img, 0, 65535).astype(np.uint16)


def cmd_speed(args) -> dict:
    import torch
    from monai.inferers import sliding_window_inference

    from napari_seg_box.core.data import normalize
    from napari_seg_box.core.infer import PredictConfig, Predictor, predict

    torch.set_num_threads(args.threads or torch.get_num_threads())
    model, meta = build(args.encoder, args.depth, tuple(args.decoder))
    device = torch.device(args.device)
    model.to(device)
    predictor = Predictor(model, meta, device)
    image = synthetic_image(args.size, args.size)
    cfg = PredictConfig(tile_size=args.tile, overlap=args.overlap, batch_size=args.batch, blending="gaussian", device=args.device)

    def ours():
        return predict(image, predictor, config=cfg)

    import copy

    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def monai(net=model):
        # the same normalisation, then MONAI's sliding window with a Gaussian importance map
        x = torch.from_numpy(normalize(image).transpose(2, 0, 1)[None].copy()).to(device)
        with torch.inference_mode():
            out = sliding_window_inference(
                x,
                (args.tile, args.tile),
                args.batch,
                lambda t: torch.softmax(net(t), dim=1),
                overlap=args.overlap,
                mode="gaussian",
                sigma_scale=0.125,
            )
        return out[0].cpu().numpy()

    a, b = ours(), monai()  # warm-up, and agreement of the two
    monai(model_cl)
    diff = float(np.abs(a - b).mean())
    runners = {"napari-seg-box": ours, "monai": monai, "monai, channels_last model": lambda: monai(model_cl)}
    times = {k: [] for k in runners}
    for _ in range(args.repeats):
        for name, fn in runners.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    mpx = args.size * args.size / 1e6
    best = {k: min(v) for k, v in times.items()}
    res = {
        "benchmark": "tiled prediction speed",
        "image": f"{args.size}x{args.size} uint16",
        "model": f"U-Net {args.encoder} depth {args.depth} decoder {args.decoder}",
        "tile": args.tile,
        "overlap": args.overlap,
        "batch": args.batch,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "seconds_best": best,
        "mpx_per_s": {k: mpx / v for k, v in best.items()},
        "ratio_ours_over_monai": best["monai"] / best["napari-seg-box"],
        "ratio_ours_over_monai_channels_last": best["monai, channels_last model"] / best["napari-seg-box"],
        "mean_abs_difference_of_probabilities": diff,
        "machine": platform.processor() or platform.machine(),
    }
    return res


def nuclei_mosaic(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A (size, size) mosaic of the DSB2018 nuclei image (512 x 512, the package's sample) in its 8
    flips and rotations, and its foreground mask."""
    from napari_seg_box.core.samples import load_nuclei

    image, inst = load_nuclei()
    views = [(np.rot90(a, k), np.rot90(b, k)) for k in range(4) for a, b in ((image, inst), (image[:, ::-1], inst[:, ::-1]))]
    n = -(-size // 512)
    rows = [[views[(i * 3 + j) % 8] for j in range(n)] for i in range(n)]
    img = np.block([[v[0] for v in row] for row in rows])[:size, :size]
    mask = np.block([[v[1] for v in row] for row in rows])[:size, :size] > 0
    return np.ascontiguousarray(img), mask


def fit_briefly(model, steps: int, *, patch: int = 128, batch: int = 8, seed: int = 0):
    """A few Adam steps of cross-entropy on patches of the nuclei image (train mode), then eval."""
    import torch

    from napari_seg_box.core.data import normalize
    from napari_seg_box.core.samples import load_nuclei

    image, inst = load_nuclei()
    x_all, y_all = normalize(image)[..., 0], (inst > 0).astype(np.int64)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        ys, xs = rng.integers(0, 512 - patch + 1, batch), rng.integers(0, 512 - patch + 1, batch)
        x = torch.from_numpy(np.stack([x_all[a : a + patch, b : b + patch] for a, b in zip(ys, xs)])[:, None].copy())
        y = torch.from_numpy(np.stack([y_all[a : a + patch, b : b + patch] for a, b in zip(ys, xs)]))
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # batch-norm statistics of the data (a few steps leave the running averages far from them)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches below
    with torch.no_grad():
        for i in range(0, 512 - patch + 1, patch // 2):
            model(
                torch.from_numpy(
                    np.stack([x_all[i : i + patch, j : j + patch] for j in range(0, 512 - patch + 1, patch // 2)])[:, None].copy()
                )
            )
    for m in bns:
        m.momentum = 0.1
    return model.eval()


def cmd_backend(args) -> dict:
    """torch against ONNX Runtime, the same predictor, image, tiles and blending (see the module)."""
    import torch

    from napari_seg_box.core import onnx_backend
    from napari_seg_box.core.infer import PredictConfig, Predictor, predict

    torch.set_num_threads(args.threads or torch.get_num_threads())
    model, info = build(args.encoder, args.depth, tuple(args.decoder))
    t0 = time.perf_counter()
    model = fit_briefly(model, args.fit_steps) if args.fit_steps else model
    fit_s = time.perf_counter() - t0
    image, truth = nuclei_mosaic(args.size)
    cfg = PredictConfig(tile_size=args.tile, overlap=args.overlap, batch_size=args.batch, tta=args.tta, device="cpu")
    torch_pr = Predictor(model, info, torch.device("cpu"))
    dynamo = {"auto": None, "torchscript": False, "dynamo": True}[args.exporter]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="segbox-onnx-") as cache:  # a fresh export, timed
        if dynamo is None:  # as the product does it
            previous, os.environ[onnx_backend.CACHE_ENV] = os.environ.get(onnx_backend.CACHE_ENV), cache
            onnx_pr = torch_pr.with_backend("onnx")
            os.environ.pop(onnx_backend.CACHE_ENV) if previous is None else os.environ.update({onnx_backend.CACHE_ENV: previous})
        else:
            onnx_pr = copy.copy(torch_pr)
            onnx_pr.backend, onnx_pr.network = "onnx", onnx_backend.OnnxNetwork(model, 1, dynamo=dynamo, cache_dir=cache)
    load_s = time.perf_counter() - t0
    export_s = onnx_pr.network.export_seconds
    runners = {"torch": lambda: predict(image, torch_pr, config=cfg), "onnxruntime": lambda: predict(image, onnx_pr, config=cfg)}
    probs = {k: fn() for k, fn in runners.items()}  # warm-up, and the agreement of the two
    batch = torch.from_numpy(normalize_batch(image, args.tile, args.batch))
    forward = {
        "torch": lambda: torch_pr.network(batch.contiguous(memory_format=torch.channels_last)),
        "onnxruntime": lambda: onnx_pr.network(batch),
    }
    times = {k: [] for k in runners}
    fwd_times = {k: [] for k in runners}
    for _ in range(args.repeats):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            with torch.inference_mode():
                for _ in range(5):  # one batch of tiles through the network alone
                    t0 = time.perf_counter()
                    forward[name]()
                    fwd_times[name].append(time.perf_counter() - t0)
    mpx = args.size * args.size / 1e6
    best = {k: min(v) for k, v in times.items()}
    a, b = probs["torch"], probs["onnxruntime"]
    la, lb = a.argmax(0), b.argmax(0)
    iou = {k: float(((p.argmax(0) == 1) & truth).sum() / max(1, ((p.argmax(0) == 1) | truth).sum())) for k, p in probs.items()}
    return {
        "benchmark": "torch vs ONNX Runtime, tiled prediction on the CPU",
        "image": f"{args.size}x{args.size} uint16 mosaic of the DSB2018 nuclei image",
        "model": f"U-Net {args.encoder} depth {args.depth} decoder {args.decoder}, fitted {args.fit_steps} steps ({fit_s:.0f} s)",
        "tile": args.tile,
        "overlap": args.overlap,
        "batch": args.batch,
        "tta": args.tta,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "exporter": args.exporter,
        "export_seconds": export_s,
        "onnx_load_seconds": load_s,
        "seconds_best": best,
        "seconds_median": {k: float(np.median(v)) for k, v in times.items()},
        "mpx_per_s": {k: mpx / v for k, v in best.items()},
        "ratio_onnx_over_torch_speed": best["torch"] / best["onnxruntime"],
        "forward_batch_seconds_best": {k: min(v) for k, v in fwd_times.items()},
        "ratio_forward_only": min(fwd_times["torch"]) / min(fwd_times["onnxruntime"]),
        "labels_agree_percent": 100.0 * float(np.mean(la == lb)),
        "max_abs_difference_of_probabilities": float(np.abs(a - b).max()),
        "mean_abs_difference_of_probabilities": float(np.abs(a - b).mean()),
        "foreground_iou_vs_ground_truth_of_the_training_image": iou,  # the model is fitted (not its accuracy)
        "auto_backend_here": onnx_backend.resolve_backend("auto", "cpu"),
        "versions": {"torch": torch.__version__, "onnxruntime": _version("onnxruntime"), "onnx": _version("onnx")},
        "machine": platform.processor() or platform.machine(),
    }


def normalize_batch(image: np.ndarray, tile: int, batch: int) -> np.ndarray:
    """``batch`` normalised (1, tile, tile) tiles from the top row of ``image``: (batch, 1, tile, tile) float32."""
    from napari_seg_box.core.data import normalize

    norm = normalize(image[:tile])[..., 0]
    return np.stack([norm[:, (i * tile) % max(1, norm.shape[1] - tile + 1) :][:, :tile] for i in range(batch)])[:, None].copy()


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _cpu_predictor(args):
    """The benchmark's network as a CPU predictor, and the prediction settings (in a child process)."""
    import torch

    from napari_seg_box.core.infer import PredictConfig, Predictor

    torch.set_num_threads(args.threads or torch.get_num_threads())
    model, meta = build(args.encoder, args.depth, tuple(args.decoder))
    cfg = PredictConfig(tile_size=args.tile, overlap=args.overlap, batch_size=args.batch, device="cpu")
    return Predictor(model, meta, torch.device("cpu")), cfg


def _memory_child(args) -> None:
    """Run in a child process: predict the zarr image block by block, print peak RSS."""
    from napari_seg_box.core.infer_large import predict_large

    predictor, cfg = _cpu_predictor(args)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    predict_large(args.zarr, args.out, predictor, config=cfg, write_probabilities=not args.no_probabilities)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": peak, "rss_after_model_load_mb": rss_before, "seconds": seconds}))


def _stream_child(args) -> None:
    """Run in a child process: predict the zarr image in memory (``--mode memory``: read first, not
    timed) or streamed zarr to zarr (``--mode zarr``); print seconds and peak RSS."""
    import zarr

    from napari_seg_box.core.infer import predict
    from napari_seg_box.core.infer_large import predict_large

    predictor, cfg = _cpu_predictor(args)
    image = zarr.open_array(args.zarr, mode="r")[:] if args.mode == "memory" else None
    t0 = time.perf_counter()
    if image is not None:
        labels = (predict(image, predictor, config=cfg).argmax(0) + 1).astype(np.uint8)
    else:
        labels = predict_large(args.zarr, args.out, predictor, config=cfg)["labels"]
    seconds = time.perf_counter() - t0
    checksum = int(sum(int(np.asarray(labels[y : y + 1024]).sum(dtype=np.int64)) for y in range(0, labels.shape[0], 1024)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "labels_checksum": checksum}))


def _child(args, name: str, *extra: str) -> dict:
    cmd = [sys.executable, __file__, name, "--tile", str(args.tile), "--overlap", str(args.overlap), "--batch", str(args.batch)]
    cmd += ["--encoder", args.encoder, "--depth", str(args.depth), "--decoder", *map(str, args.decoder), *extra]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    child = subprocess.run(cmd, capture_output=True, text=True)
    if child.returncode != 0:
        raise SystemExit(child.stderr)
    return json.loads(child.stdout.strip().splitlines()[-1])


def cmd_stream(args) -> dict:
    import shutil

    workdir = args.workdir or tempfile.mkdtemp(prefix="segbox-bench-")
    path = write_big_zarr(os.path.join(workdir, "big.zarr"), args.size)
    out = os.path.join(workdir, "pred.zarr")
    runs: dict[str, list[dict]] = {"memory": [], "zarr": []}
    for r in range(args.repeats):
        for mode in ("memory", "zarr") if r % 2 == 0 else ("zarr", "memory"):
            shutil.rmtree(out, ignore_errors=True)
            runs[mode].append(_child(args, "_stream_child", "--zarr", path, "--out", out, "--mode", mode))
            print(f"repeat {r + 1} {mode}: {runs[mode][-1]}", file=sys.stderr, flush=True)
    shutil.rmtree(out, ignore_errors=True)
    mpx = args.size * args.size / 1e6
    best = {mode: min(rs, key=lambda x: x["seconds"]) for mode, rs in runs.items()}
    return {
        "benchmark": "streamed (zarr to zarr) vs in-memory prediction",
        "image": f"{args.size}x{args.size} uint16 zarr, 1024 chunks",
        "model": f"U-Net {args.encoder} depth {args.depth} decoder {args.decoder}",
        "tile": args.tile,
        "overlap": args.overlap,
        "batch": args.batch,
        "threads": args.threads or os.cpu_count(),
        "runs": runs,
        "memory_mpx_per_s": mpx / best["memory"]["seconds"],
        "zarr_mpx_per_s": mpx / best["zarr"]["seconds"],
        "ratio_streamed_over_memory": best["memory"]["seconds"] / best["zarr"]["seconds"],
        "labels_identical": len({x["labels_checksum"] for rs in runs.values() for x in rs}) == 1,
        "peak_rss_mb": {mode: max(x["peak_rss_mb"] for x in rs) for mode, rs in runs.items()},
        "target_ratio": 0.9,
    }


def write_big_zarr(path: str, size: int) -> str:
    """A (size, size) uint16 zarr of rolled copies of one synthetic 1024 tile (written once, reused)."""
    import zarr

    if not os.path.exists(path):
        t0 = time.perf_counter()
        arr = zarr.create_array(path, shape=(size, size), chunks=(1024, 1024), dtype="uint16")
        tile = synthetic_image(1024, 1024)
        for y in range(0, size, 1024):
            band = np.concatenate([np.roll(tile, (y // 1024) * 37 + x // 1024, axis=1) for x in range(0, size, 1024)], axis=1)
            arr[y : y + 1024] = band[:, :size]
        print(f"wrote {path} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return path


def cmd_memory(args) -> dict:
    workdir = args.workdir or tempfile.mkdtemp(prefix="segbox-bench-")
    path = write_big_zarr(os.path.join(workdir, "big.zarr"), args.size)
    out = os.path.join(workdir, "pred.zarr")
    if os.path.exists(out):
        import shutil

        shutil.rmtree(out)
    stats = _child(args, "_memory_child", "--zarr", path, "--out", out, *(["--no-probabilities"] if args.no_probabilities else []))
    mpx = args.size * args.size / 1e6
    size_gb = args.size * args.size * 2 / 1e9
    res = {
        "benchmark": "block-wise prediction memory",
        "image": f"{args.size}x{args.size} uint16 zarr ({size_gb:.2f} GB uncompressed)",
        "model": f"U-Net {args.encoder} depth {args.depth} decoder {args.decoder}",
        "tile": args.tile,
        "overlap": args.overlap,
        "probabilities_written": not args.no_probabilities,
        **stats,
        "mpx_per_s": mpx / stats["seconds"],
        "target_peak_rss_mb": 2048,
        "passed": stats["peak_rss_mb"] < 2048,
    }
    if not args.keep:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("speed", "memory", "stream", "backend", "_memory_child", "_stream_child"):
        s = sub.add_parser(name)
        s.add_argument("--tile", type=int, default=256)
        s.add_argument("--overlap", type=float, default=0.25)
        s.add_argument("--batch", type=int, default=4)
        s.add_argument("--encoder", default="resnet34")
        s.add_argument("--depth", type=int, default=5)
        s.add_argument("--decoder", type=int, nargs="+", default=[256, 128, 64, 32, 16])
        s.add_argument("--threads", type=int, default=0)
        if name == "speed":
            s.add_argument("--size", type=int, default=1024)
            s.add_argument("--repeats", type=int, default=3)
            s.add_argument("--device", default="cpu")
        elif name == "backend":
            s.add_argument("--size", type=int, default=2048)
            s.add_argument("--repeats", type=int, default=3)
            s.add_argument("--tta", default="none", choices=["none", "flips", "d4"])
            s.add_argument("--fit-steps", type=int, default=30, help="Adam steps on the nuclei image before measuring (0: random weights)")
            s.add_argument("--exporter", default="auto", choices=["auto", "torchscript", "dynamo"])
        elif name in ("memory", "stream"):
            s.add_argument("--size", type=int, default=16384 if name == "memory" else 8192)
            s.add_argument("--workdir")
            if name == "stream":
                s.add_argument("--repeats", type=int, default=2)
            s.add_argument("--keep", action="store_true")
            s.add_argument("--no-probabilities", action="store_true")
        else:
            s.add_argument("--zarr", required=True)
            s.add_argument("--out", required=True)
            s.add_argument("--no-probabilities", action="store_true")
            if name == "_stream_child":
                s.add_argument("--mode", choices=["memory", "zarr"], default="zarr")
    args = p.parse_args(argv)
    if args.cmd.startswith("_"):
        {"_memory_child": _memory_child, "_stream_child": _stream_child}[args.cmd](args)
        return 0
    res = {"speed": cmd_speed, "memory": cmd_memory, "stream": cmd_stream, "backend": cmd_backend}[args.cmd](args)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
