"""Fast CPU prediction through ONNX Runtime: a U-Net exported to ONNX, run as a predictor's network.

:func:`export_onnx` writes a network as ONNX (input ``"input"`` (N, C, Y, X) float32, output
``"output"`` (N, K, Y, X) logits, the torch module's own output; batch, height and width dynamic,
height and width multiples of 32). :class:`OnnxNetwork` runs such a graph in an
``onnxruntime.InferenceSession`` and is called like the torch network (torch tensor in, torch
logits out), so a :class:`~.infer.Predictor` swaps it in as its ``network`` and tiling, test-time
augmentation, blending and post-processing stay the same code.

Backends: ``"torch"`` (the default), ``"onnx"`` (ONNX Runtime on the CPU) and ``"auto"`` (ONNX
Runtime where the predictor runs on the CPU and onnxruntime is installed, torch otherwise:
``benchmarks/inference.py backend`` measured ONNX Runtime faster on the CPU, see
:data:`AUTO_ONNX_ON_CPU`). onnxruntime and onnx are optional (``pip install napari-seg-box[onnx]``).

An exported graph is cached on disk, keyed by the SHA-256 of the weights (and the architecture,
opset and torch version), so a model version is exported once per machine, not once per run:
``$NAPARI_SEG_BOX_ONNX_CACHE`` or ``~/.cache/napari-seg-box/onnx`` (the newest :data:`CACHE_KEEP`
graphs are kept). torch, onnx and onnxruntime are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import io
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from .errors import ConfigError

BACKENDS = ("torch", "onnx", "auto")
INSTALL_HINT = "pip install 'napari-seg-box[onnx]'"
DEFAULT_OPSET = 17
#: "auto" picks ONNX Runtime on the CPU (faster there in benchmarks/inference.py); torch on GPUs
AUTO_ONNX_ON_CPU = True
CACHE_ENV = "NAPARI_SEG_BOX_ONNX_CACHE"
CACHE_KEEP = 8  # exported graphs kept in the disk cache (the newest used)
_FORMAT = 1  # bump when the export changes: old cached graphs are then not reused


# ---------------------------------------------------------------------- choosing the backend
def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`BACKENDS`, else a :class:`ConfigError`."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)} (got {backend!r}): 'onnx' runs ONNX Runtime on the CPU.")
    return backend


def onnx_available() -> bool:
    """Whether onnxruntime and onnx are installed (without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def require_onnxruntime():
    """Import and return ``onnxruntime``, or raise a :class:`ConfigError` that says how to install it."""
    try:
        import onnx  # noqa: F401  (the export checks its graph with it)
        import onnxruntime
    except ImportError as err:
        raise ConfigError(
            f"The ONNX backend needs onnxruntime and onnx, which are not installed ({err}): {INSTALL_HINT}, or use backend 'torch'."
        ) from err
    return onnxruntime


def _device_type(device) -> str:
    return "cpu" if device is None else getattr(device, "type", str(device).split(":")[0])


def resolve_backend(backend: str, device=None) -> str:
    """The backend that runs, ``"torch"`` or ``"onnx"``, for ``backend`` on ``device`` (a torch
    device or its name; None: the CPU). ``"onnx"`` off the CPU, or without onnxruntime, is a
    :class:`ConfigError`; ``"auto"`` is ONNX Runtime on the CPU when it is installed, else torch."""
    check_backend(backend)
    kind = _device_type(device)
    if backend == "auto":
        return "onnx" if kind == "cpu" and AUTO_ONNX_ON_CPU and onnx_available() else "torch"
    if backend == "onnx":
        if kind != "cpu":
            raise ConfigError(
                f"The ONNX backend runs on the CPU but this model runs on {kind}: use device 'cpu', or backend 'torch' or 'auto' on a GPU."
            )
        require_onnxruntime()
    return backend


def build_network(model, device, backend: str, in_channels: int, **onnx_options):
    """The callable a predictor runs for ``backend`` (resolved: ``"torch"`` or ``"onnx"``): the
    :func:`~.models.inference_network` of ``model``, or an :class:`OnnxNetwork` of it."""
    if backend == "onnx":
        return OnnxNetwork(model, in_channels, **onnx_options)
    from .models import inference_network

    return inference_network(model, device)


# ---------------------------------------------------------------------- export
def export_onnx(
    model, in_channels: int, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET, dynamic: bool = True, dynamo: bool | None = None
) -> Path:
    """Export ``model`` (a segmentation network, e.g. an smp U-Net) to an ONNX file; returns ``path``.

    Parameters
    ----------
    model : torch module taking (N, in_channels, Y, X) float32; exported in eval mode from a CPU copy
        (``model`` itself is untouched).
    in_channels : the input channels.
    path : the ``.onnx`` file written (one file, weights inside).
    opset : ONNX operator set (17: ONNX Runtime >= 1.13, and most other runtimes).
    dynamic : batch, height and width are dynamic axes (height and width multiples of 32 for a
        U-Net of depth 5); False fixes the input at (1, in_channels, 64, 96).
    dynamo : the exporter: True the torch.export-based one, False the TorchScript one; None (default)
        TorchScript (the same graph, exported several times faster, about as fast to run), falling
        back to torch.export where this torch no longer has it.

    The graph has input ``"input"`` (N, C, Y, X) float32 and output ``"output"`` (N, K, Y, X), the
    raw logits, as the torch module returns them (apply softmax/sigmoid yourself). It is checked with
    ``onnx.checker``.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = copy.deepcopy(model).cpu().float().eval()
    example = (torch.zeros(1 + dynamic, int(in_channels), 64, 96),)  # batch 2 / non-square: nothing specialised to 1 or Y == X
    names = dict(input_names=["input"], output_names=["output"], opset_version=int(opset))
    axes = {0: "batch", 2: "height", 3: "width"}
    quiet = contextlib.redirect_stdout(io.StringIO())

    def torchscript():
        dyn = {"input": axes, "output": axes} if dynamic else None
        torch.onnx.export(net, example, str(path), dynamo=False, dynamic_axes=dyn, do_constant_folding=True, **names)

    def torch_export():
        shapes = (axes,) if dynamic else None
        torch.onnx.export(net, example, str(path), dynamo=True, external_data=False, dynamic_shapes=shapes, verbose=False, **names)

    with warnings.catch_warnings(), quiet, torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation and tracer notes of the exporters
        if dynamo is None:
            try:
                torchscript()
            except Exception:  # this torch has no TorchScript exporter any more (or it failed): the other one
                torch_export()
        else:
            (torch_export if dynamo else torchscript)()
    check_onnx(path)
    return path


def check_onnx(path: str | os.PathLike) -> None:
    """``onnx.checker`` on the file at ``path``, and its input / output names; a :class:`ConfigError` if wrong."""
    import onnx

    onnx.checker.check_model(str(path))
    graph = onnx.load(str(path), load_external_data=False).graph
    got = ([i.name for i in graph.input], [o.name for o in graph.output])
    if got[0][:1] != ["input"] or got[1] != ["output"]:
        raise ConfigError(f"{path}: the ONNX graph has inputs {got[0]} and outputs {got[1]}, expected 'input' and 'output'.")


def weights_key(model, in_channels: int, *, opset: int = DEFAULT_OPSET, dynamo: bool | None = None) -> str:
    """SHA-256 of ``model``'s weights (names, dtypes, shapes, bytes), its architecture (``repr``), the
    input channels, the opset, the exporter and the torch version: the name of its cached graph."""
    import torch

    h = hashlib.sha256(f"{_FORMAT}|{torch.__version__}|{in_channels}|{opset}|{dynamo}|{type(model).__qualname__}|{model!r}".encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$NAPARI_SEG_BOX_ONNX_CACHE``, else ``$XDG_CACHE_HOME/napari-seg-box/onnx`` (``~/.cache/...``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "napari-seg-box" / "onnx"


def cached_export(
    model, in_channels: int, *, cache_dir=None, opset: int = DEFAULT_OPSET, dynamo: bool | None = None, refresh: bool = False
) -> tuple[bytes, str, bool]:
    """The ONNX graph of ``model`` as bytes: ``(graph, key, exported)``; ``exported`` is False when it
    came from the disk cache (``cache_dir``: None the default place, False none; ``refresh``: export
    again and replace the cached graph)."""
    key = weights_key(model, in_channels, opset=opset, dynamo=dynamo)
    folder = None if cache_dir is False else Path(cache_dir) if cache_dir is not None else default_cache_dir()
    file = folder / f"{key}.onnx" if folder is not None else None
    if file is not None and file.is_file() and not refresh:
        with contextlib.suppress(OSError):
            data = file.read_bytes()
            os.utime(file)  # newest used: kept longest
            return data, key, False
    with tempfile.TemporaryDirectory(prefix="segbox-onnx-") as tmp:
        data = export_onnx(model, in_channels, Path(tmp) / "model.onnx", opset=opset, dynamo=dynamo).read_bytes()
    if file is not None:
        with contextlib.suppress(OSError):  # a read-only or full cache only costs the next export
            folder.mkdir(parents=True, exist_ok=True)
            part = file.with_name(f"{file.name}.{os.getpid()}.part")
            part.write_bytes(data)
            os.replace(part, file)
            _prune(folder)
    return data, key, True


def _prune(folder: Path) -> None:
    files = sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[CACHE_KEEP:]:
        with contextlib.suppress(OSError):
            old.unlink()


# ---------------------------------------------------------------------- the network
class OnnxNetwork:
    """``model`` exported to ONNX and run by ONNX Runtime on the CPU, called like the torch network.

    Parameters
    ----------
    model : the torch module (a U-Net); exported once (or read from the disk cache, see the module).
    in_channels : its input channels.
    threads : ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()``).
    cache_dir : folder of the exported graphs (None: :func:`default_cache_dir`; False: no disk cache).
    opset, dynamo : as :func:`export_onnx`.

    Calling it with a (N, C, Y, X) float32 torch tensor (any memory layout, on the CPU) returns the
    (N, K, Y, X) logits as a torch tensor. ``export_seconds`` is the time the graph took to export
    (or to read from the cache, ``exported`` False), ``key`` its cache key.
    """

    def __init__(
        self, model, in_channels: int, *, threads: int | None = None, cache_dir=None, opset: int = DEFAULT_OPSET, dynamo: bool | None = None
    ):
        ort = require_onnxruntime()
        import torch

        t0 = time.perf_counter()
        graph, self.key, self.exported = cached_export(model, in_channels, cache_dir=cache_dir, opset=opset, dynamo=dynamo)
        self.export_seconds = time.perf_counter() - t0
        self.in_channels = int(in_channels)
        self.threads = int(threads or torch.get_num_threads())
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception:  # a damaged cached graph: export again
            if self.exported:
                raise
            graph, self.key, self.exported = cached_export(
                model, in_channels, cache_dir=cache_dir, opset=opset, dynamo=dynamo, refresh=True
            )
            self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def __call__(self, x: Any):
        import torch

        if x.device.type != "cpu":
            raise ConfigError(f"The ONNX backend runs on the CPU; this tensor is on {x.device}: predict with device 'cpu'.")
        array = x.detach().to(torch.float32).contiguous().numpy()
        (logits,) = self.session.run(["output"], {"input": array})
        return torch.from_numpy(logits)

    def __repr__(self) -> str:
        return f"OnnxNetwork(in_channels={self.in_channels}, threads={self.threads}, key={self.key[:12]})"
