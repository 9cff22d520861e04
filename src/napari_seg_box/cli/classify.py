"""CLI for classification projects: ``classify`` (batch), and the classification side of ``evaluate``."""

from __future__ import annotations

import argparse

from ._common import add_store_options, drive, open_project, print_json


def register(sub) -> None:
    p = sub.add_parser(
        "classify",
        help="classify images in batch with a classification model",
        description="Classify image files (or the store's own images) with a classification model version of the store: "
        "one row per image with the predicted class, its confidence and every class's probability, as CSV or Parquet.",
    )
    add_store_options(p)
    p.add_argument("inputs", nargs="*", help="image files, folders or glob patterns (default: the store's images)")
    p.add_argument("--unlabelled", action="store_true", help="without inputs: only the store's images that have no class yet")
    p.add_argument("--version", help="model version (default: latest; 'best' = best validation score)")
    p.add_argument("--out", required=True, help="output table: .csv or .parquet")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    p.add_argument(
        "--scheduler", default="sync",
        help="sync, threads, processes, or a dask scheduler address such as tcp://head-node:8786 (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--workers", type=int, default=1, help="parallel chunks of 256 images for local schedulers (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print a JSON summary (no progress bars)")
    p.set_defaults(func=cmd_classify)


def cmd_classify(args: argparse.Namespace) -> int:
    from ..workflows.classify import iter_classify

    project = open_project(args)
    table = drive(
        iter_classify(
            project, args.inputs or None, version=args.version, unlabelled=args.unlabelled, out=args.out,
            batch_size=args.batch_size, device=args.device, scheduler=args.scheduler, workers=args.workers,
        ),
        quiet=args.json, desc="classify",
    )  # fmt: skip
    counts = table["class"].value_counts().to_dict() if "class" in table else {}
    failed = int(table["error"].notna().sum()) if "error" in table else 0
    if args.json:
        print_json({"images": len(table), "per_class": counts, "failed": failed, "out": args.out})
        return 0
    print(f"Classified {len(table) - failed} image(s) into {args.out}: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    if failed:
        print(f"{failed} image(s) could not be classified (see the error column).")
    return 0


def evaluate_classification(args: argparse.Namespace, project) -> int:
    """``evaluate`` of a classification project: scores, plots, timing; ``--compare`` and ``--baseline`` tables."""
    from ..core.classify import compare_classifiers, evaluate_classifier

    tta = args.tta not in (None, "none")  # any test-time augmentation: the 8 flips and rotations of each image
    ev = evaluate_classifier(project, args.version, split=args.split, device=args.device or "auto", tta=tta)
    project.write_json(f"results/evaluations/{ev.version}-{args.split}.json", {**ev.summary(), "tta": tta})
    written = ev.save(args.csv) if args.csv else []
    table = compare_classifiers(project, split=args.split, device=args.device or "auto", tta=tta) if args.compare else None
    base = None
    if args.baseline:
        from ..core.classify.baseline import evaluate_baseline_classifier

        base = evaluate_baseline_classifier(project, split=args.split)
    if args.json:
        out = {"evaluation": ev.summary(), "per_class": ev.per_class.to_dict("records"), "confusion": ev.confusion.tolist()}
        if table is not None:
            out["comparison"] = table.to_dict("records")
        if base is not None:
            out["baseline"] = base
        print_json(out)
        return 0
    print(ev.text())
    print(
        f"  saved in the store under results/evaluations/{ev.version}-{args.split}.json"
        + (f"; tables and plots in {args.csv}" if written else "")
    )
    if base is not None:
        print(
            f"Classical baseline ({base['method']}) on the same images: accuracy {base['accuracy']:.3f}, "
            f"balanced accuracy {base['balanced_accuracy']:.3f}, macro-F1 {base['macro_f1']:.3f}"
        )
    if table is not None:
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0
