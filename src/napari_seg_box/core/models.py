"""Building, saving and loading U-Nets (segmentation-models-pytorch), and choosing the device.

Models are saved as safetensors weights plus JSON metadata in the project store; loading never
unpickles. smp models are always rebuilt with ``encoder_weights=None``; pretrained encoder weights
come from a local file, or (asked for) ImageNet weights through segmentation-models-pytorch's own
download and cache (:func:`imagenet_weights_file`), loaded by the same code as a local file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ConfigError

# plain-word choices for the widgets (AIMIC-style: accurate vs light), smp encoder names
ENCODERS = {
    "resnet18": "light and fast: ResNet18",
    "resnet34": "accurate: ResNet34 (default)",
    "resnet50": "most accurate, slow: ResNet50",
    "efficientnet-b0": "efficient: EfficientNet-B0",
    "efficientnet-b1": "EfficientNet-B1",
    "efficientnet-b2": "EfficientNet-B2",
    "efficientnet-b3": "EfficientNet-B3",
    "mobilenet_v2": "lightest: MobileNet v2",
}


@dataclass(frozen=True)
class ModelSpec:
    """What is needed to rebuild a network (saved in every model version's metadata)."""

    encoder: str = "resnet34"
    in_channels: int = 1
    classes: int = 2
    encoder_depth: int = 5
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    architecture: str = "Unet"

    def to_dict(self) -> dict:
        return {
            "architecture": self.architecture,
            "encoder": self.encoder,
            "in_channels": self.in_channels,
            "classes": self.classes,
            "encoder_depth": self.encoder_depth,
            "decoder_channels": list(self.decoder_channels),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        return cls(
            encoder=d["encoder"],
            in_channels=int(d["in_channels"]),
            classes=int(d["classes"]),
            encoder_depth=int(d.get("encoder_depth", 5)),
            decoder_channels=tuple(d.get("decoder_channels", (256, 128, 64, 32, 16))),
            architecture=d.get("architecture", "Unet"),
        )


def imagenet_weights_file(encoder: str) -> str:
    """The path of ``encoder``'s ImageNet weights in the Hugging Face cache, downloaded (pinned to
    segmentation-models-pytorch's revision) when the machine is online and they are not there yet."""
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders.get(encoder, {}).get("pretrained_settings", {}).get("imagenet")
    if settings is None:
        raise ConfigError(f"segmentation-models-pytorch has no ImageNet weights for {encoder!r}: train it from scratch.")
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(settings["repo_id"], filename="model.safetensors", revision=settings["revision"])
    except Exception as err:  # noqa: BLE001 - offline, proxy, no cache: one sentence for all
        raise ConfigError(
            f"The ImageNet weights of {encoder} could not be downloaded ({type(err).__name__}) and are not in the cache: "
            "connect this machine to the internet once, or give a local weights file (encoder_weights_file, "
            "--encoder-weights), or train from scratch."
        ) from err


def build_model(spec: ModelSpec, *, encoder_weights_file: str | os.PathLike | None = None, pretrained: bool = False):
    """Build an smp U-Net from ``spec``; optionally load encoder weights from a local file, or
    (``pretrained``) the encoder's ImageNet weights (:func:`imagenet_weights_file`).

    ``encoder_weights_file`` is a safetensors (or, only when you trust it, a torch state-dict
    ``.pth`` loaded with ``weights_only=True``) file holding the encoder's state dict.
    """
    import segmentation_models_pytorch as smp

    if spec.encoder not in ENCODERS:
        raise ConfigError(f"Unknown encoder {spec.encoder!r}: choose one of {', '.join(ENCODERS)}.")
    if spec.architecture != "Unet":
        raise ConfigError(f"Unknown architecture {spec.architecture!r}: only 'Unet' is supported.")
    import torch

    model = smp.Unet(
        encoder_name=spec.encoder,
        encoder_weights=None,
        encoder_depth=spec.encoder_depth,
        decoder_channels=list(spec.decoder_channels),
        in_channels=spec.in_channels,
        classes=spec.classes,
    )
    # The EfficientNet encoders keep TensorFlow's batch-norm momentum (0.01): over the few hundred
    # steps of a microscopy training their running statistics lag far behind the weights, and the
    # network predicts badly in eval mode. PyTorch's 0.1 (as the other encoders) tracks them.
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.momentum is not None and m.momentum < 0.1:
            m.momentum = 0.1
    if pretrained and not encoder_weights_file:
        encoder_weights_file = imagenet_weights_file(spec.encoder)
    if encoder_weights_file:
        load_encoder_weights(model.encoder, read_state_dict(encoder_weights_file), spec.encoder, str(encoder_weights_file))
    return model


def load_encoder_weights(encoder, state: dict, name: str, source: str) -> int:
    """Load pretrained weights (a state dict of this encoder, with or without an ``encoder.``
    prefix, e.g. ImageNet weights of timm/torchvision) into ``encoder``; returns how many tensors
    were loaded. Tensors the encoder lacks (a classifier head, stages a shallower U-Net drops) are
    skipped; a first convolution made for 3 channels is adapted to the encoder's input channels,
    as segmentation-models-pytorch does. Fewer than half the encoder's tensors fitting is an error.
    """
    import torch

    own = encoder.state_dict()
    state = {k.removeprefix("encoder."): v for k, v in state.items()}
    fitting = {}
    for key, value in state.items():
        if key not in own or not hasattr(value, "shape"):
            continue
        target = own[key].shape
        if value.shape == target:
            fitting[key] = value
        elif value.ndim == 4 and value.shape[0] == target[0] and value.shape[2:] == target[2:]:  # the input convolution
            c = target[1]
            fitting[key] = (
                value.sum(1, keepdim=True) if c == 1 else value.repeat(1, -(-c // value.shape[1]), 1, 1)[:, :c] * (value.shape[1] / c)
            )
    if len(fitting) < len(own) / 2:
        raise ConfigError(
            f"The weights in {source} do not fit encoder {name!r} ({len(fitting)} of its {len(own)} tensors found): "
            "use weights saved for this encoder (a state dict of the encoder, safetensors or .pth)."
        )
    torch.nn.Module.load_state_dict(encoder, fitting, strict=False)  # smp's encoders override it and return nothing
    return len(fitting)


def read_state_dict(path: str | os.PathLike) -> dict:
    import torch

    path = str(path)
    if not os.path.exists(path):
        raise ConfigError(f"Weights file not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    except Exception as err:  # noqa: BLE001 - every failure means the same to the user
        raise ConfigError(
            f"{path} is not a file of plain weights (a state dict of tensors): napari-seg-box does not load pickled "
            "models, which can run code. Save the encoder's state_dict, preferably as .safetensors, and give that file."
        ) from err
    for key in ("state_dict", "model"):  # common checkpoint layouts around a state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"{path} holds a {type(state).__name__}, not a state dict of weights: save the encoder's state_dict.")
    return state


def weights_to_bytes(model) -> bytes:
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save(state)


def pick_device(preference: str = "auto"):
    """The torch device to use: ``auto`` = CUDA, then Apple MPS, then CPU."""
    import torch

    if preference not in ("auto", "cpu", "cuda", "mps") and not preference.startswith("cuda:"):
        raise ConfigError(f"Unknown device {preference!r}: use auto, cpu, cuda or mps.")
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("CUDA was asked for but no CUDA GPU is available: use device 'auto' or 'cpu'.")
    return torch.device(preference)


def memory_format(device):
    """The faster tensor layout for convolutions on ``device``: channels_last (NHWC) on CUDA (tensor
    cores) and on the CPU (oneDNN: about 20 % faster for a ResNet U-Net, training and inference),
    the default elsewhere (Apple MPS)."""
    import torch

    return torch.channels_last if torch.device(device).type in ("cuda", "cpu") else torch.contiguous_format


def inference_network(model, device=None):
    """A copy of ``model`` made for prediction: eval mode, batch norms folded into the convolutions
    before them, in the faster memory layout of ``device``. Same outputs to float rounding (the
    weights of ``model`` are untouched); about 5 % faster on the CPU than the model as trained.

    Folded: a Conv2d followed by a BatchNorm2d inside an ``nn.Sequential`` (smp decoder blocks,
    MobileNet/ResNet downsampling), and the ``convN``/``bnN`` pairs of torchvision ResNets (the smp
    ResNet encoders), whose forward applies ``bnN`` straight to ``convN``'s output.
    """
    import copy

    import torch
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

    net = copy.deepcopy(model).eval()

    def fusable(conv, bn):
        return (
            isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and bn.track_running_stats and conv.out_channels == bn.num_features
        )

    with torch.no_grad():
        for module in list(net.modules()):
            if isinstance(module, nn.Sequential):
                names = list(module._modules)
                for a, b in zip(names, names[1:]):
                    conv, bn = module._modules[a], module._modules[b]
                    if fusable(conv, bn):
                        module._modules[a] = fuse_conv_bn_eval(conv, bn)
                        module._modules[b] = nn.Identity()
            if isinstance(module, (ResNet, BasicBlock, Bottleneck)):
                for i in (1, 2, 3):
                    conv, bn = getattr(module, f"conv{i}", None), getattr(module, f"bn{i}", None)
                    if fusable(conv, bn):
                        setattr(module, f"conv{i}", fuse_conv_bn_eval(conv, bn))
                        setattr(module, f"bn{i}", nn.Identity())
    if device is not None:
        net.to(device, memory_format=memory_format(device))
    return net


def device_name(device) -> str:
    """Human-readable device, e.g. 'CUDA: NVIDIA H100' or 'CPU (2 threads)'."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"
