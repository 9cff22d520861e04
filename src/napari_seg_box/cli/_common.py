"""What every subcommand shares: the STORE argument, opening the store, JSON output, progress bars."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """The STORE argument and connection options every store command takes."""
    parser.add_argument("store", metavar="STORE", help="project store: a folder path, or a URL such as s3://bucket/project")
    parser.add_argument(
        "--endpoint-url",
        help="S3-compatible server (MinIO...) for s3:// stores; default: $AWS_ENDPOINT_URL. "
        "Credentials come from the usual AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY variables.",
    )


def storage_options(args: argparse.Namespace) -> dict:
    return {"endpoint_url": args.endpoint_url} if getattr(args, "endpoint_url", None) else {}


def open_project(args: argparse.Namespace):
    from ..core.store import Project

    return Project.open(args.store, storage_options=storage_options(args))


def print_json(obj: Any) -> None:
    from ..core.storage import json_default

    print(json.dumps(obj, indent=2, default=json_default))


def drive(gen, *, quiet: bool, desc: str):
    """Run a core generator with a tqdm bar (per-item for batches, per-tile otherwise)."""
    from tqdm import tqdm

    from ..core.events import ItemDone, Message, Progress

    bar = None
    try:
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                return stop.value
            if quiet:
                continue
            if isinstance(ev, Progress):
                if bar is None or bar.total != ev.total or (bar.desc != (ev.stage or desc)):
                    if bar is not None:
                        bar.close()
                    bar = tqdm(total=ev.total, desc=ev.stage or desc, file=sys.stderr, leave=False)
                bar.n = ev.done
                bar.refresh()
            elif isinstance(ev, ItemDone):
                status = f"error: {ev.error}" if ev.error else "done"
                (tqdm.write if bar is not None else print)(f"[{ev.index + 1}/{ev.total}] {ev.name}: {status}", file=sys.stderr)
            elif isinstance(ev, Message):
                (tqdm.write if bar is not None else print)(ev.text, file=sys.stderr)
    finally:
        if bar is not None:
            bar.close()
