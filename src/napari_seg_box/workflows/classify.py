"""Batch classification: image files, or the images of a project, through a classification model
into one table (CSV or Parquet) with the predicted class and every class's probability per image."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from ..core.classify import Classifier
from ..core.errors import DataError
from ..core.events import ItemDone, Progress, check_cancel, run_to_end
from ..core.io import expand_paths, read_image

CHUNK = 256  # images read and classified together


def iter_classify(
    project, inputs: str | Sequence[str] | None = None, *, version: str | None = None, unlabelled: bool = False, out: str | None = None,
    batch_size: int = 64, device: str = "auto", cancel: threading.Event | None = None,
) -> Iterator[Any]:  # fmt: skip
    """Classify ``inputs`` (files, folders, globs) or, without them, the project's images (only those
    without a class with ``unlabelled``); yields progress, returns the table, written to ``out``
    (``.csv`` or ``.parquet``) when given. A file that cannot be read is a row with its ``error``."""
    import pandas as pd

    clf = Classifier.from_project(project, version, device=device)
    if inputs:
        items = [(os.path.splitext(os.path.basename(p))[0], p) for p in expand_paths(inputs)]
        if not items:
            raise DataError(f"No image found in {inputs}.")
        load = read_image
    else:
        items = [(r.name, r.name) for r in project.images() if not unlabelled or r.image_class is None]
        if not items:
            raise DataError(
                "Every image of the project has a class already: nothing is unlabelled." if unlabelled else "The project has no image."
            )
        load = project.get_image
    tables, errors = [], []
    for start in range(0, len(items), CHUNK):
        check_cancel(cancel)
        names, images = [], []
        for name, source in items[start : start + CHUNK]:
            try:
                images.append(clf.prepare(load(source), name=str(source)))
                names.append(name)
            except Exception as err:  # noqa: BLE001 - one bad file is a row with its error, the rest are classified
                errors.append({"name": name, "error": str(err).splitlines()[0]})
                yield ItemDone(start, len(items), name, error=errors[-1]["error"])
        if images:
            import numpy as np

            tables.append(clf.classify(np.stack(images), names=names, batch_size=batch_size))
        yield Progress(min(start + CHUNK, len(items)), len(items), stage="classifying")
    table = pd.concat(tables + ([pd.DataFrame(errors)] if errors else []), ignore_index=True)
    table.insert(1, "model_version", clf.info.version)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        table.to_parquet(out, index=False) if out.lower().endswith(".parquet") else table.to_csv(out, index=False)
    return table


def classify_images(project, inputs=None, **options):
    """Blocking :func:`iter_classify`: the table of classes and probabilities."""
    return run_to_end(iter_classify(project, inputs, **options))
