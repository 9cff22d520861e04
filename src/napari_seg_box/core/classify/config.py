"""The settings of a classifier's training run: validated once, saved with every model version."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from ..errors import ConfigError

# timm networks offered, in plain words (AIMIC's "accurate" and "light" choices first)
NETWORKS = {
    "resnet18": "balanced: ResNet18 (default)",
    "resnext50_32x4d": "accurate, slow: ResNeXt-50 32x4d",
    "mobilenetv2_100": "light and fast: MobileNet-V2",
    "resnet50": "accurate: ResNet50",
    "efficientnet_b0": "efficient: EfficientNet-B0",
}
AUGMENTATIONS = ("none", "light", "standard", "strong")
BALANCES = ("loss", "sampler", "none")


@dataclass(frozen=True)
class ClassifyConfig(Config):
    """Everything that defines a classifier's training run. ``None`` means *choose automatically*.

    Parameters
    ----------
    epochs : passes over the training images (the one setting a novice chooses).
    network : a timm network, one of :data:`NETWORKS`.
    pretrained : start from the network's ImageNet weights (downloaded once through timm's Hugging
        Face cache; a clear error offline). ``weights_file``: a local safetensors file instead.
    input_size : the side of the square the network sees. Automatic: images are scaled up so that
        the typical image is at least 64 px (small crops such as 40 px cells lose too much in the
        first strides of ImageNet networks otherwise), by one factor for all (sizes stay comparable),
        and padded to the largest side (95th percentile, a multiple of 32, at most 256).
    batch_size, learning_rate : optimisation sizes (automatic: 32 on a CPU, 128 on a GPU; AdamW at
        1e-3 from scratch, 3e-4 from pretrained weights, one-cycle schedule).
    augmentation : ``none | light`` (flips, 90-degree rotations) ``| standard`` (+ shifts of up to 8 %)
        ``| strong`` (+ 15 % shifts and 10 % intensity changes): single objects have no up or down, and
        their brightness is often the phenotype (DNA content), so only ``strong`` changes it.
    balance : ``loss`` (class weights inverse to their frequency, at most 10x), ``sampler`` (batches
        drawn class-balanced) or ``none``.
    label_smoothing : 0 (off) to 0.3.
    patience : early stopping after this many epochs without a better validation macro-F1 (0 = off).
    validation_fraction : share of each class's training images kept for validation when the
        project has no ``validation`` images (stratified, by the seed).
    device, mixed_precision, seed : as for segmentation (:class:`~..train.TrainConfig`).
    """

    epochs: int = 30
    network: str = "resnet18"
    pretrained: bool = False
    weights_file: str | None = None
    input_size: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    augmentation: str = "standard"
    balance: str = "loss"
    label_smoothing: float = 0.0
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    patience: int = 10
    validation_fraction: float = 0.15
    device: str = "auto"
    mixed_precision: str = "auto"
    seed: int = 0
    format_version: int = 1

    WHAT = "classifier training settings"

    def __post_init__(self):
        self._check_format()
        if not isinstance(self.epochs, int) or isinstance(self.epochs, bool) or self.epochs < 1:
            raise ConfigError(f"epochs must be a whole number >= 1, got {self.epochs!r}.")
        if self.network not in NETWORKS:
            raise ConfigError(f"Unknown network {self.network!r}: choose one of {', '.join(NETWORKS)}.")
        if self.input_size is not None and not 16 <= self.input_size <= 1024:
            raise ConfigError(f"input_size must be between 16 and 1024 pixels, got {self.input_size}.")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning_rate must be between 0 and 1, got {self.learning_rate}.")
        if self.augmentation not in AUGMENTATIONS:
            raise ConfigError(f"Unknown augmentation {self.augmentation!r}: choose one of {', '.join(AUGMENTATIONS)}.")
        if self.balance not in BALANCES:
            raise ConfigError(f"Unknown balance {self.balance!r}: choose one of {', '.join(BALANCES)}.")
        if not 0 <= self.label_smoothing <= 0.3:
            raise ConfigError(f"label_smoothing must be between 0 and 0.3, got {self.label_smoothing}.")
        if not 0 < self.validation_fraction < 1:
            raise ConfigError(f"validation_fraction must be between 0 and 1, got {self.validation_fraction}.")
        if self.mixed_precision not in ("auto", "bf16", "fp16", "off"):
            raise ConfigError(f"mixed_precision must be auto, bf16, fp16 or off, got {self.mixed_precision!r}.")
        if self.patience < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ConfigError("patience, grad_clip and weight_decay must be >= 0.")
