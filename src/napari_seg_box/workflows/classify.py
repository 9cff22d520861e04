"""Batch classification: image files, or the images of a project, through a classification model
into one table (CSV or Parquet) with the predicted class and every class's probability per image.
Chunks of images run on a scheduler as quantification does (threads, processes, a dask cluster)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..core.classify.model import cached_classifier
from ..core.errors import DataError
from ..core.events import ItemDone, Progress, check_cancel, run_to_end
from ..core.io import expand_paths, read_image
from ..core.scheduling import run_tasks

CHUNK = 256  # images read and classified together (one task of the scheduler)


def iter_classify(
    project, inputs: str | Sequence[str] | None = None, *, version: str | None = None, unlabelled: bool = False, out: str | None = None,
    batch_size: int = 64, device: str = "auto", scheduler: str = "sync", workers: int = 1, cancel: threading.Event | None = None,
) -> Iterator[Any]:  # fmt: skip
    """Classify ``inputs`` (files, folders, globs) or, without them, the project's images (only those
    without a class with ``unlabelled``); yields progress, returns the table, written to ``out``
    (``.csv`` or ``.parquet``) when given. A file that cannot be read is a row with its ``error``.
    ``scheduler``: ``sync`` (here), ``threads``, ``processes`` or a dask scheduler address; each
    worker loads the model once."""
    import pandas as pd

    options = {
        "store": project.url,
        "store_options": tuple(sorted(project.storage_options.items())),
        "device": device,
        "batch_size": batch_size,
    }
    options["version"] = project.resolve_version(version)
    cached_classifier(options["store"], options["version"], options["store_options"], device)  # a wrong model fails here, once
    if inputs:
        items = [(os.path.splitext(os.path.basename(p))[0], p) for p in expand_paths(inputs)]
        if not items:
            raise DataError(f"No image found in {inputs}.")
    else:
        items = [(r.name, None) for r in project.images() if not unlabelled or r.image_class is None]
        if not items:
            raise DataError(
                "Every image of the project has a class already: nothing is unlabelled." if unlabelled else "The project has no image."
            )
    chunks = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
    tables, done = [], 0
    yield Progress(0, len(items), stage="classifying")
    work = run_tasks(_classify_chunk, chunks, options, scheduler=scheduler, workers=workers, cancel=cancel, on_error=_chunk_failed)
    for _, (table, errors) in work:
        check_cancel(cancel)
        tables.append(table)
        for e in errors:
            yield ItemDone(done, len(items), e["name"], error=e["error"])
        done += len(table)
        yield Progress(done, len(items), stage="classifying")
    order = {name: i for i, (name, _) in enumerate(items)}
    table = pd.concat(tables, ignore_index=True)
    table = table.iloc[np.argsort([order[n] for n in table["name"]], kind="stable")].reset_index(drop=True)
    table.insert(1, "model_version", options["version"])
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        table.to_parquet(out, index=False) if out.lower().endswith(".parquet") else table.to_csv(out, index=False)
    return table


def classify_images(project, inputs=None, **options):
    """Blocking :func:`iter_classify`: the table of classes and probabilities."""
    return run_to_end(iter_classify(project, inputs, **options))


def _chunk_failed(chunk, failure) -> tuple[Any, list[dict]]:
    """A chunk whose task failed on its worker (after its retry): each of its images is a row with the error."""
    import pandas as pd

    errors = [{"name": name, "error": str(failure)} for name, _ in chunk]
    return pd.DataFrame(errors), errors


def _classify_chunk(chunk, options) -> tuple[Any, list[dict]]:
    """One task: read and classify a chunk of ``(name, path or None = the store's image)``; a file
    that cannot be read is a row with its error, the others are classified."""
    import pandas as pd

    clf = cached_classifier(options["store"], options["version"], options["store_options"], options["device"])
    project = None
    names, images, errors = [], [], []
    for name, path in chunk:
        try:
            if path is None:
                if project is None:
                    from ..core.store import Project

                    project = Project.open(options["store"], storage_options=dict(options["store_options"]))
                image = project.get_image(name)
            else:
                image = read_image(path)
            images.append(clf.prepare(image, name=path or name))
            names.append(name)
        except Exception as err:  # noqa: BLE001 - one bad file is a row with its error, the rest are classified
            errors.append({"name": name, "error": str(err).splitlines()[0]})
    parts = [clf.classify(np.stack(images), names=names, batch_size=options["batch_size"])] if images else []
    return pd.concat(parts + ([pd.DataFrame(errors)] if errors else []), ignore_index=True), errors
