"""Importing classified images: an ``ImageFolder`` layout (``root/<class>/*.tif|png|jpg``) or a CSV
table (``file,class``). New classes are added to the project; images keep their channels and bit depth.

Everything is checked before anything is stored: a class folder without images, a class name that
differs from another only in case, an image whose channel count differs from the others are errors
that change nothing. An image that cannot be read is reported and skipped; the rest are imported.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from ..events import Message, Progress, run_to_end
from ..io import read_image
from .data import as_yxc

EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
CHUNK = 500  # images per manifest update


@dataclass
class ImportReport:
    """What an import did: images added per class, and the files skipped with the reason."""

    added: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.added.values())

    def text(self) -> str:
        per = ", ".join(f"{c} {n}" for c, n in self.added.items())
        out = f"Imported {self.total} image(s): {per}."
        if self.skipped:
            out += f" Skipped {len(self.skipped)} file(s) that could not be read: " + "; ".join(
                f"{f} ({why})" for f, why in self.skipped[:5]
            )
            out += " …" if len(self.skipped) > 5 else ""
        return out


def class_folder_files(root: str | os.PathLike) -> list[tuple[str, str]]:
    """``(file, class)`` pairs of an ImageFolder layout, classes in name order."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder: give a folder with one subfolder of images per class.")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root} has no subfolder: put the images of each class in a folder named after the class.")
    pairs = []
    for folder in folders:
        files = sorted(str(f) for f in folder.iterdir() if f.suffix.lower() in EXTENSIONS)
        if not files:
            raise DataError(
                f"The class folder {folder.name!r} holds no image ({', '.join(EXTENSIONS)}): add its images or remove the folder "
                "(nothing was imported)."
            )
        pairs += [(f, folder.name) for f in files]
    return pairs


def class_table_files(table: str | os.PathLike) -> list[tuple[str, str]]:
    """``(file, class)`` pairs of a CSV with columns ``file`` and ``class`` (files relative to the CSV's folder)."""
    base = Path(table).parent
    with open(table, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"file", "class"} <= set(reader.fieldnames):
            raise DataError(f"{table} needs the columns 'file' and 'class' (found: {', '.join(reader.fieldnames or [])}).")
        pairs = [(str(base / row["file"]), row["class"].strip()) for row in reader if row["file"]]
    if not pairs:
        raise DataError(f"{table} lists no image.")
    empty = [f for f, c in pairs if not c]
    if empty:
        raise DataError(f"{table}: {empty[0]} has no class (and {len(empty) - 1} more): give every listed file a class.")
    return pairs


def iter_import_classified(
    project, pairs: list[tuple[str, str]], *, split: str | None = None, prefix: str = "", overwrite: bool = False
) -> Iterator:
    """Import ``(file, class)`` pairs into a classification project; yields events, returns an :class:`ImportReport`."""
    if project.task != "classification":
        raise DataError(
            f"This is a {project.task} project: import classified images into a classification project (init --task classification)."
        )
    known = {c.casefold(): c for c in project.class_names}
    for c in dict.fromkeys(c for _, c in pairs):
        if c.casefold() in known and known[c.casefold()] != c:
            raise DataError(
                f"The class {c!r} differs from the project's class {known[c.casefold()]!r} only in case: rename the folder "
                "(or the CSV's class) to match it exactly (nothing was imported)."
            )
        known.setdefault(c.casefold(), c)
    report = ImportReport()
    images: list[tuple[str, object, dict]] = []
    channels: dict[int, str] = {}
    for i, (path, cls) in enumerate(pairs):
        if i % 100 == 0:
            yield Progress(i, len(pairs), stage="reading")
        try:
            image = as_yxc(read_image(path), name=path)
        except Exception as err:  # noqa: BLE001 - reported and skipped: the rest are imported
            report.skipped.append((path, str(err).splitlines()[0][:120]))
            continue
        channels.setdefault(image.shape[-1], path)
        if len(channels) > 1:
            (n1, f1), (n2, f2) = list(channels.items())[:2]
            raise DataError(
                f"{f2} has {n2} channel(s) but {f1} has {n1}: one classifier takes one kind of image. Convert or remove the odd "
                "image(s) (nothing was imported)."
            )
        name = prefix + os.path.splitext(os.path.basename(path))[0]
        images.append((name, image, {"image_class": cls, "split": split, "source": path, "channel_axis": 2, "stack": False}))
    if not images:
        raise DataError(f"None of the {len(pairs)} file(s) could be read: {report.skipped[0][0]}: {report.skipped[0][1]}")
    names = [n for n, _, _ in images]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"Two files would both be named {dup!r}: give them different file names, or import them with --prefix.")
    new = [c for c in dict.fromkeys(c for _, c in pairs) if c not in project.class_names]
    if new:
        project.set_classes(project.class_names + new)
        yield Message(f"New class(es): {', '.join(new)}.")
    for start in range(0, len(images), CHUNK):
        project.add_images(images[start : start + CHUNK], overwrite=overwrite)
        yield Progress(start + len(images[start : start + CHUNK]), len(images), stage="storing")
    for _, _, opts in images:
        report.added[opts["image_class"]] = report.added.get(opts["image_class"], 0) + 1
    return report


def import_class_folders(project, root: str | os.PathLike, **options) -> ImportReport:
    """Import an ImageFolder layout (``root/<class>/*``); options as :func:`iter_import_classified`."""
    return run_to_end(iter_import_classified(project, class_folder_files(root), **options))


def import_class_table(project, table: str | os.PathLike, **options) -> ImportReport:
    """Import the files of a CSV table (``file,class``); options as :func:`iter_import_classified`."""
    return run_to_end(iter_import_classified(project, class_table_files(table), **options))
