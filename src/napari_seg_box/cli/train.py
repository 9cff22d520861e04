"""CLI subcommand ``train``: a progress bar per epoch, one line of figures per epoch, Ctrl-C stops cleanly."""

from __future__ import annotations

import argparse
import json
import sys
import threading

from ._common import add_store_options, open_project, print_json


def register(sub) -> None:
    from ..core.augment import PRESETS
    from ..core.classify.config import BALANCES, NETWORKS
    from ..core.losses import LOSSES
    from ..core.models import ENCODERS
    from ..core.train import SCHEDULES
    from ..core.train.config import COMPILE_MODES, MAX_CONTEXT

    p = sub.add_parser(
        "train",
        help="train a U-Net (or, in a classification project, a classifier) on the store's annotations",
        description="Train a U-Net on the annotated train/validation images of the store (test images are never used); "
        "in a classification project, an image classifier on the images' classes (best epoch: validation macro-F1). "
        "Only --epochs matters for a first model; every setting left out is chosen automatically and reported. "
        "The best epoch (validation IoU) becomes a new model version. Ctrl-C stops after the current step and keeps "
        "the best epoch so far; --resume continues a stopped or crashed run.",
    )
    add_store_options(p)
    p.add_argument("--epochs", type=int, help="number of epochs (default: 50)")
    p.add_argument("--minutes", type=float, help="train for about this many minutes instead of a number of epochs")
    p.add_argument("--encoder", choices=list(ENCODERS), help="network encoder (default: resnet34)")
    p.add_argument("--encoder-depth", type=int, choices=[3, 4, 5], help="encoder stages (default: 5)")
    p.add_argument("--decoder-channels", type=int, nargs="+", help="decoder widths, one per encoder stage")
    p.add_argument(
        "--encoder-weights", dest="encoder_weights_file", help="local file with pretrained encoder weights (.safetensors or .pth)"
    )
    p.add_argument(
        "--pretrained",
        action="store_true",
        default=None,
        help="start the encoder from ImageNet weights (downloaded once into the Hugging Face cache; needs internet the first time)",
    )
    p.add_argument(
        "--finetune-from",
        metavar="VERSION",
        help="update this model version (an id, latest or best) with the annotations and corrections made since: "
        "its architecture and settings, a short schedule (10 epochs, a tenth of its learning rate), its validation part, new annotations sampled 3x more often",
    )
    p.add_argument("--patch-size", type=int, help="patch side, a multiple of 32 (default: from the objects' size)")
    p.add_argument("--batch-size", type=int, help="patches per step (default: from free GPU memory; CPU 4-8)")
    p.add_argument("--lr", dest="learning_rate", type=float, help="peak learning rate (default: from a learning-rate range test)")
    p.add_argument("--steps-per-epoch", type=int, help="steps per epoch (default: about one pass over the annotated pixels)")
    p.add_argument("--augment", dest="augmentation", choices=list(PRESETS), help="augmentation preset (default: standard)")
    p.add_argument("--elastic", action="store_true", default=None, help="add elastic deformation to the augmentation")
    p.add_argument("--loss", choices=list(LOSSES), help="loss (default: dice_ce; edge_weighted separates touching objects)")
    p.add_argument(
        "--boundary",
        action="store_true",
        default=None,
        help="also learn the objects' boundaries (one object class): splits crowded, touching objects",
    )
    p.add_argument("--boundary-width", type=int, help="boundary width in pixels (default: 2)")
    p.add_argument(
        "--distance",
        choices=["auto", "on", "off"],
        help="also learn each object's distance to its border and grow objects from the predicted centres "
        "(auto: on when 10%% or more of the painted objects touch another; default off)",
    )
    p.add_argument(
        "--context",
        choices=["auto", *map(str, range(MAX_CONTEXT + 1))],
        help="2.5D input for volumes: the network sees this many neighbouring sections on each side as channels "
        "(auto: from the voxel anisotropy; default 0 = plain 2D; refused for time-lapses)",
    )
    p.add_argument("--schedule", choices=list(SCHEDULES), help="learning-rate schedule (default: onecycle)")
    p.add_argument("--patience", type=int, help="early stopping patience in epochs, 0 = off (default: 15)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--mixed-precision", choices=["auto", "bf16", "fp16", "off"], help="CUDA only (default: auto)")
    p.add_argument(
        "--compile",
        choices=list(COMPILE_MODES),
        help="torch.compile the network for training (reduce-overhead: CUDA graphs, for small batches on a GPU; "
        "the first step compiles; falls back to plain PyTorch with a message if compilation fails; default: off)",
    )
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    c = p.add_argument_group("classification projects", "a class per image: a timm network instead of a U-Net")
    c.add_argument(
        "--network", choices=list(NETWORKS), help="classifier network (default: resnet18; resnext50_32x4d accurate, mobilenetv2_100 light)"
    )
    c.add_argument("--input-size", type=int, help="side of the network's input in pixels (default: from the images' size)")
    c.add_argument("--balance", choices=list(BALANCES), help="class imbalance: weighted loss, balanced batches or none (default: loss)")
    c.add_argument("--label-smoothing", type=float, help="0 (default) to 0.3")
    p.add_argument(
        "--config",
        help="JSON file with training settings (TrainConfig or ClassifyConfig fields); command-line options given explicitly win",
    )
    p.add_argument("--resume", action="store_true", help="continue the newest unfinished run of the store")
    p.add_argument(
        "--no-tune", action="store_true", help="do not tune the post-processing on the validation part after training (tune does it later)"
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end (no progress bars)")
    p.set_defaults(func=cmd_train)


_FIELDS = [
    "epochs", "minutes", "encoder", "encoder_depth", "decoder_channels", "encoder_weights_file", "pretrained", "finetune_from", "patch_size",
    "batch_size", "learning_rate", "steps_per_epoch", "augmentation", "elastic", "loss", "boundary", "boundary_width", "distance", "context",
    "schedule", "patience", "device", "mixed_precision", "compile", "seed",
]  # fmt: skip


_CLASSIFY_FIELDS = [
    "epochs", "network", "pretrained", "input_size", "batch_size", "learning_rate", "augmentation", "balance", "label_smoothing", "patience",
    "device", "mixed_precision", "seed",
]  # fmt: skip


def _config(args, project=None):
    from ..core.classify import ClassifyConfig
    from ..core.errors import ConfigError
    from ..core.train import TrainConfig, finetune_config

    task = project.task if project is not None else "segmentation"
    fields, cls = (_CLASSIFY_FIELDS, ClassifyConfig) if task == "classification" else (_FIELDS, TrainConfig)
    other = [n for n in set(_FIELDS + _CLASSIFY_FIELDS) - set(fields) if getattr(args, n, None) is not None]
    if other:
        what = "a U-Net (segmentation)" if task == "classification" else "a classifier"
        raise ConfigError(
            f"This is a {task} project: --{other[0].replace('_', '-')} is a setting of {what}. "
            "Leave it out (napari-seg-box train --help lists the options of each task)."
        )
    settings: dict = {}
    if args.config:
        try:
            with open(args.config) as fh:
                settings = json.load(fh)
        except (OSError, ValueError) as err:
            raise ConfigError(f"Cannot read the training settings file {args.config}: {err}") from err
    for name in fields:
        value = getattr(args, name)
        if value is not None:
            settings[name] = _choice(name, value)
    if task == "segmentation" and isinstance(settings, dict) and settings.get("finetune_from"):
        return finetune_config(project, settings.pop("finetune_from"), **settings)
    return cls.from_dict(settings)


def _choice(name: str, value):
    """A CLI choice as its TrainConfig value (auto = None)."""
    if name == "distance":
        return {"auto": None, "on": True, "off": False}[value]
    if name == "context":
        return None if value == "auto" else int(value)
    return value


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..core.events import EpochEnd, Message, StepLoss
    from ..core.train.distributed import launched_rank
    from ..workflows.train import iter_train_model

    project = open_project(args)
    cfg = _config(args, project)
    cancel = threading.Event()
    # resuming keeps the run's settings; only a larger --epochs extends it
    gen = iter_train_model(
        project, cfg if (not args.resume or args.epochs) else None, tune=not args.no_tune, cancel=cancel, resume=args.resume
    )
    bar = None
    quiet = args.json or launched_rank() != 0  # under torchrun, rank 0 speaks for the run
    out = (lambda s: None) if quiet else (lambda s: (tqdm.write if bar is not None else print)(s, file=sys.stderr))
    version = None
    try:
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                version = stop.value
                break
            except KeyboardInterrupt:
                if cancel.is_set():
                    raise
                cancel.set()
                out("Stopping after this step (Ctrl-C again to abort without saving)...")
                continue
            if isinstance(ev, StepLoss) and not quiet:
                if bar is None or bar.total != ev.steps_per_epoch or ev.step == 1:
                    if bar is not None:
                        bar.close()
                    bar = tqdm(total=ev.steps_per_epoch, desc=f"epoch {ev.epoch}", file=sys.stderr, leave=False)
                bar.n = ev.step
                bar.set_postfix(loss=f"{ev.loss:.4f}", lr=f"{ev.lr:.2g}", refresh=True)
            elif isinstance(ev, EpochEnd):
                if bar is not None:
                    bar.close()
                    bar = None
                out(ev.line())
            elif isinstance(ev, Message):
                out(ev.text)
    finally:
        if bar is not None:
            bar.close()
    if launched_rank() != 0:
        return 0
    info = project.model_version(version)
    t = info.training
    if args.json:
        keys = ("status", "epochs_run", "chosen", "device", "duration_s", "history")
        tuned = info.tuning.config.to_dict() if info.tuning is not None else None
        print_json({"version": version, "best_metrics": t.best, **{k: getattr(t, k) for k in keys}, "postprocess": tuned, "start": t.start})
    else:
        b = t.best
        score = f"macro-F1 {b['val_f1']:.3f}" if "val_f1" in b else f"IoU {b['val_iou']:.3f}"
        was = f"; {t.start['version']} on the same images: IoU {t.start['val_iou']:.3f}" if t.start else ""
        print(
            f"model version {version}: {t.status}, best epoch {b['epoch']}, validation {score}, accuracy {b['val_acc']:.3f}{was} ({t.duration_s:.0f} s)"
        )
    return 0
