"""CLI subcommand ``suggest``: where to annotate next, ranked by the model's uncertainty."""

from __future__ import annotations

import argparse

from ._common import add_store_options, drive, open_project, print_json


def register(sub) -> None:
    from ..core.suggest import MODES

    p = sub.add_parser(
        "suggest",
        help="rank the unannotated images (or tiles of large ones) where a correction teaches the model most",
        description="Predict the store's unannotated images (test images excluded) with a model version and rank them, or "
        "tiles of large images, by the model's mean uncertainty (normalised entropy, 0 = sure, 1 = no idea) with a "
        "diversity term so the first suggestions are not alike. Annotate or correct the first ones, then fine-tune: "
        "`train STORE --finetune-from latest`.",
    )
    add_store_options(p)
    p.add_argument("--version", help="model version (default: latest; 'best' = best validation IoU)")
    p.add_argument("--top", type=int, default=5, help="how many suggestions (default: %(default)s)")
    p.add_argument("--tile", type=int, help="rank tiles of this side in pixels (default: whole images, tiles of 512 for larger ones)")
    p.add_argument(
        "--mode", choices=list(MODES), default="entropy",
        help="entropy of one prediction; tta: also the disagreement of flipped copies; versions: with the version before (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--diversity", type=float, default=0.5, help="0 = by uncertainty alone, 1 = strongly avoid alike regions (default: %(default)s)"
    )
    p.add_argument("--images", nargs="+", help="rank only these images of the store")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the suggestions as JSON (no progress bar)")
    p.set_defaults(func=cmd_suggest)


def cmd_suggest(args: argparse.Namespace) -> int:
    from ..core.suggest import iter_suggest

    project = open_project(args)
    picks = drive(
        iter_suggest(
            project, args.version, top=args.top, tile=args.tile, mode=args.mode, diversity=args.diversity,
            images=args.images, device=args.device,
        ),
        quiet=args.json, desc="suggest",
    )  # fmt: skip
    if args.json:
        print_json([s.to_dict() for s in picks])
        return 0
    print("rank  uncertainty  score   image (region y0:y1, x0:x1)")
    for i, s in enumerate(picks, 1):
        y0, x0, y1, x1 = s.box
        where = s.image if s.z is None else f"{s.image}[z={s.z}]"
        print(f"{i:>4}  {s.uncertainty:>11.3f}  {s.score:>5.2f}   {where} ({y0}:{y1}, {x0}:{x1})")
    print("Annotate or correct these first, then update the model: napari-seg-box train STORE --finetune-from latest")
    return 0
