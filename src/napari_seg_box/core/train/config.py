"""The training configuration: everything that defines a run, validated once, saved with every model version."""

from __future__ import annotations

from dataclasses import dataclass

from ..augment import PRESETS
from ..config import Config
from ..errors import ConfigError
from ..losses import LOSSES
from ..models import ENCODERS

SCHEDULES = ("onecycle", "cosine", "constant")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# the network sizes offered in plain words (the Train widget's choices): encoder depth -> decoder
NETWORK_SIZES = {"standard": 5, "small": 4, "tiny": 3}
MAX_CONTEXT = 4  # 2.5D input: at most 4 planes on each side (9 planes in all)
DECODERS = {5: (256, 128, 64, 32, 16), 4: (128, 64, 32, 16), 3: (32, 16, 8)}


@dataclass(frozen=True)
class TrainConfig(Config):
    """Everything that defines a training run. ``None`` means *choose automatically*.

    Parameters
    ----------
    epochs : number of epochs (the one setting a novice chooses).
    minutes : train for about this long instead (a time budget, epochs ignored): the epochs that fit
        are estimated from the first steps and the learning-rate schedule is sized to them.
    encoder : smp encoder, one of :data:`~napari_seg_box.core.models.ENCODERS`.
    encoder_depth, decoder_channels : U-Net size (smaller = faster); the decoder of each depth by
        default (:data:`DECODERS`; depth 5, 4, 3 = the sizes standard, small, tiny).
    encoder_weights_file : local safetensors/.pth file with pretrained encoder weights.
    pretrained : start the encoder from its ImageNet weights (downloaded once through
        segmentation-models-pytorch's Hugging Face cache; a clear error offline).
    finetune_from : a model version of the project to start from (transfer learning, or updating a
        model with corrections: :func:`~.finetune.finetune_config` makes the whole short run).
    recent_weight : annotations saved after the ``finetune_from`` version are sampled this many times
        more often per pixel than the others (1 = no emphasis; 3 in a fine-tuning run).
    patch_size : training patch side (multiple of 32).
    batch_size, learning_rate, steps_per_epoch : optimisation sizes.
    augmentation : ``none | light | standard | strong``; ``elastic`` adds elastic deformation.
    loss : ``dice_ce | ce | focal | edge_weighted``; ``edge_w0``/``edge_sigma`` shape the edge weights.
    boundary : also learn a *boundary* class, the outer ``boundary_width`` pixels of every object
        (projects with one object class; objects from the stored instances, else the connected
        regions of the object class). Post-processing then splits touching objects along the
        predicted boundaries (seeds = object interiors), which separates crowded, irregular objects
        better than the distance-transform watershed. Metrics and labels fold the boundary back into
        the object class: the model still segments the project's classes.
    distance : also learn a *distance* output (after the classes): each object's distance to its
        own border, divided by its largest, from the stored instances (else the connected regions
        of the object classes). Post-processing then seeds the watershed at the object centres it
        predicts (where it exceeds ``seed_level``) and floods it from there, which splits touching
        objects of any shape and size. ``None``: on when the annotated objects touch (at least 10 %
        of them next to another object), else off. Off by default: on the DSB2018 nuclei folds it
        did not beat the edge-weighted loss with the shape watershed at the CPU budget of the
        benchmarks (BENCHMARKS.md). Not with ``boundary``.
    context : 2.5D input for volumes: each plane is given with its ``context`` neighbouring planes
        on each side as extra channels (the network sees across sections; a 2D image repeats
        itself). 0 = plain 2D (the default); ``None``: 2.5D with the number of neighbours chosen
        from the voxel anisotropy of the annotated volumes (:func:`~.prepare.auto_context`; 0 when
        there are none). Refused for time-lapses (neighbouring frames are times, not space).
    schedule : ``onecycle | cosine | constant`` learning-rate schedule.
    weight_decay, grad_clip : AdamW weight decay, gradient-norm clipping (0 = off).
    patience : early stopping after this many epochs without a better validation IoU (validation loss for
        a distance model) (0 = off).
    foreground_fraction : share of patches centred on a non-background annotated pixel.
    validation_fraction : share of images (or of each image's annotated rows) kept for validation.
    device : ``auto | cpu | cuda | cuda:N | mps``.
    mixed_precision : ``auto | bf16 | fp16 | off`` (CUDA only; never autocast on CPU).
    compile : ``off`` or a ``torch.compile`` mode for the training step's network: ``default``,
        ``reduce-overhead`` (CUDA graphs: for small batches on a GPU), ``max-autotune``,
        ``max-autotune-no-cudagraphs``. The first steps pay the compilation (reported); if it fails,
        training goes on without it and says why.
    seed : the run is reproducible on CPU for a given seed.
    """

    epochs: int = 50
    minutes: float | None = None
    encoder: str = "resnet34"
    encoder_depth: int = 5
    decoder_channels: tuple[int, ...] | None = None
    encoder_weights_file: str | None = None
    pretrained: bool = False
    finetune_from: str | None = None
    recent_weight: float = 1.0
    patch_size: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    steps_per_epoch: int | None = None
    augmentation: str = "standard"
    elastic: bool = False
    loss: str = "dice_ce"
    edge_w0: float = 10.0
    edge_sigma: float = 5.0
    boundary: bool = False
    boundary_width: int = 2
    distance: bool | None = False
    context: int | None = 0
    schedule: str = "onecycle"
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    patience: int = 15
    foreground_fraction: float = 0.5
    validation_fraction: float = 0.2
    device: str = "auto"
    mixed_precision: str = "auto"
    compile: str = "off"
    seed: int = 0
    format_version: int = 1

    WHAT = "training settings"

    def __post_init__(self):
        self._check_format()
        if self.decoder_channels is not None:
            self._set("decoder_channels", tuple(int(c) for c in self.decoder_channels))
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"epochs must be a whole number >= 1, got {self.epochs!r}.")
        if self.minutes is not None and (
            isinstance(self.minutes, bool) or not isinstance(self.minutes, (int, float)) or not self.minutes > 0
        ):
            raise ConfigError(f"minutes (the time budget) must be a number > 0, got {self.minutes!r}.")
        if self.encoder not in ENCODERS:
            raise ConfigError(f"Unknown encoder {self.encoder!r}: choose one of {', '.join(ENCODERS)}.")
        if not 3 <= self.encoder_depth <= 5:
            raise ConfigError(f"encoder_depth must be 3, 4 or 5, got {self.encoder_depth}.")
        if self.decoder_channels is not None and len(self.decoder_channels) != self.encoder_depth:
            raise ConfigError(
                f"decoder_channels needs {self.encoder_depth} values (one per encoder stage), got {len(self.decoder_channels)}."
            )
        if self.patch_size is not None and (self.patch_size < 32 or self.patch_size % 32):
            raise ConfigError(
                f"patch_size must be a multiple of 32 (the U-Net halves it 5 times), got {self.patch_size}: try {max(32, round(self.patch_size / 32) * 32)}."
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning_rate must be between 0 and 1, got {self.learning_rate}.")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}.")
        if self.augmentation not in PRESETS:
            raise ConfigError(f"Unknown augmentation {self.augmentation!r}: choose one of {', '.join(PRESETS)}.")
        if self.loss not in LOSSES:
            raise ConfigError(f"Unknown loss {self.loss!r}: choose one of {', '.join(LOSSES)}.")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"Unknown schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}.")
        if self.mixed_precision not in ("auto", "bf16", "fp16", "off"):
            raise ConfigError(f"mixed_precision must be auto, bf16, fp16 or off, got {self.mixed_precision!r}.")
        if self.compile not in COMPILE_MODES:
            raise ConfigError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}.")
        if not 0 <= self.foreground_fraction <= 1 or not 0 < self.validation_fraction < 1:
            raise ConfigError("foreground_fraction must be in [0, 1] and validation_fraction in (0, 1).")
        if not isinstance(self.boundary_width, int) or not 1 <= self.boundary_width <= 10:
            raise ConfigError(f"boundary_width must be a whole number of pixels from 1 to 10, got {self.boundary_width!r}.")
        if self.distance not in (None, True, False):
            raise ConfigError(f"distance must be True, False or None (automatic), got {self.distance!r}.")
        if self.context is not None and (
            isinstance(self.context, bool) or not isinstance(self.context, int) or not 0 <= self.context <= MAX_CONTEXT
        ):
            raise ConfigError(
                f"context (neighbouring planes on each side) must be a whole number from 0 to {MAX_CONTEXT}, or None (automatic); got {self.context!r}."
            )
        if self.boundary and self.distance:
            raise ConfigError("Choose the boundary class or the distance output, not both: each splits touching objects its own way.")
        if isinstance(self.recent_weight, bool) or not isinstance(self.recent_weight, (int, float)) or not 1 <= self.recent_weight <= 100:
            raise ConfigError(f"recent_weight must be a number from 1 to 100, got {self.recent_weight!r}.")
        if self.patience < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ConfigError("patience, grad_clip and weight_decay must be >= 0.")

    @property
    def decoder(self) -> tuple[int, ...]:
        return self.decoder_channels or DECODERS[self.encoder_depth]
