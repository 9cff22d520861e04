"""The cells of the training notebook (:func:`~.notebook.export_notebook`), as nbformat 4.5 JSON.

Each cell is plain code a user can read and edit; the notebook is written without nbformat (it is a
small JSON document). Two environment variables serve automated runs: :data:`SKIP_INSTALL_ENV` skips
the ``%pip install``, :data:`EPOCHS_ENV` overrides the epochs. The parameters cell is tagged
``parameters`` (papermill injects its values after it).
"""

from __future__ import annotations

import shlex

SKIP_INSTALL_ENV = "NAPARI_SEG_BOX_NOTEBOOK_SKIP_INSTALL"
EPOCHS_ENV = "NAPARI_SEG_BOX_NOTEBOOK_EPOCHS"


def notebook_json(cells: list[tuple[str, str, dict]]) -> dict:
    """An nbformat 4.5 document (plain JSON: writing one needs no nbformat)."""

    def cell(i, kind, source, meta):
        lines = source.strip("\n").splitlines(keepends=True)
        out = {"cell_type": kind, "id": f"segbox-{i:02d}", "metadata": meta, "source": lines}
        if kind == "code":
            out.update(execution_count=None, outputs=[])
        return out

    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
            "accelerator": "GPU",  # Colab opens it on a GPU runtime
            "colab": {"provenance": [], "gpuType": "T4"},
        },
        "cells": [cell(i, kind, source, meta) for i, (kind, source, meta) in enumerate(cells)],
    }


def _settings_literal(settings: dict) -> str:
    lines = ["SETTINGS = {"]
    lines += [f"    {key!r}: {value!r}," for key, value in settings.items()]
    return "\n".join([*lines, "}"])


def notebook_cells(name: str, settings: dict, package_spec: str, store_here: str, remote: bool, endpoint: str | None) -> list:
    md, code = "markdown", "code"
    archive = f"{name}-notebook-{{version}}.segbox-model.zip"
    where = (
        f"It trains on the project store `{store_here}` directly (S3): set its credentials in the cell below."
        if remote
        else f"It needs `{name}-data.zip` (the annotated train and validation images of the project, written beside this notebook)."
    )
    upload = (
        "Have the S3 credentials at hand (Colab: store them as secrets `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, key icon on the left)."
        if remote
        else f"Upload `{name}-data.zip` into the Files panel on the left (next to the notebook, in `/content`)."
    )
    title = f"""
# Train a U-Net for `{name}` on a GPU

This notebook trains a segmentation model (a U-Net of
[napari-seg-box](https://pypi.org/project/napari-seg-box/)) on the annotations of the project `{name}`
and writes the trained model as a `.segbox-model.zip`, to bring back into the project with
`napari-seg-box import-model`. {where}

**On Google Colab**
1. *File > Upload notebook* and choose this notebook.
2. {upload}
3. *Runtime > Change runtime type > GPU* (a T4 is plenty), then *Runtime > Run all*.
4. Download the `.segbox-model.zip` the last cell writes (Files panel, right-click > Download) and run the
   command it prints on your computer. If Colab asks to restart the session after the install, do so
   and run all again.

The settings are in the *Parameters* cell: change `epochs` (or anything else) before running.
"""
    install = f"""
# Install napari-seg-box (set SKIP_INSTALL = True where it is installed already)
import os

SKIP_INSTALL = os.environ.get("{SKIP_INSTALL_ENV}", "") not in ("", "0")
if not SKIP_INSTALL:
    %pip install -q {shlex.quote(package_spec)}
"""
    if remote:
        data = f"""
# The project store on S3. Credentials come from the environment or Colab's secrets: never type them into the notebook.
import getpass
import os

try:
    from google.colab import userdata  # Colab: the key icon on the left

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        try:
            os.environ.setdefault(key, userdata.get(key))
        except Exception:
            pass
except ImportError:
    pass
for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
    if not os.environ.get(key):
        os.environ[key] = getpass.getpass(f"{{key}}: ")
{f'os.environ.setdefault("AWS_ENDPOINT_URL", {endpoint!r})  # the S3-compatible server (MinIO...)' if endpoint else "# os.environ['AWS_ENDPOINT_URL'] = 'https://...'  # an S3-compatible server (MinIO...): its URL"}

from napari_seg_box.core import Project

STORE = {store_here!r}
NAME = {name!r}
project = Project.open(STORE)
print(f"{{STORE}}: {{len(project.images('train'))}} training, {{len(project.images('validation'))}} validation image(s), classes {{project.class_names}}")
"""
    else:
        data = f"""
# Unpack the project's training data (a copy of the store: annotated train and validation images)
import shutil
import zipfile
from pathlib import Path

from napari_seg_box.core import Project

NAME = {name!r}
DATA_ZIP = Path(f"{{NAME}}-data.zip")
STORE = Path(f"{{NAME}}.zarr")
if DATA_ZIP.exists() and (not STORE.exists() or DATA_ZIP.stat().st_mtime > STORE.stat().st_mtime):
    shutil.rmtree(STORE, ignore_errors=True)  # a newer upload replaces an older copy
    with zipfile.ZipFile(DATA_ZIP) as z:
        z.extractall(".")
elif not STORE.exists():
    raise FileNotFoundError(f"Upload {{DATA_ZIP}} next to this notebook first (Colab: the Files panel on the left).")
project = Project.open(STORE)
print(f"{{STORE}}: {{len(project.images('train'))}} training, {{len(project.images('validation'))}} validation image(s), classes {{project.class_names}}")
"""
    device = """
# The device training will use
import torch

if torch.cuda.is_available():
    print("GPU:", torch.cuda.get_device_name(0), f"({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)")
else:
    print("No GPU: training runs on the CPU, slowly. Colab: Runtime > Change runtime type > GPU, then run all cells again.")
"""
    params = f"""
# Parameters: the training settings (TrainConfig fields). None = chosen automatically (and reported).
# What each one means: help(napari_seg_box.core.train.TrainConfig), or `napari-seg-box train --help` (README, "Command line").
import os

{_settings_literal(settings)}
TUNE = True  # after training, tune the post-processing (threshold, watershed) on the validation part

if os.environ.get("{EPOCHS_ENV}"):  # automated runs (tests) override the epochs
    SETTINGS["epochs"] = int(os.environ["{EPOCHS_ENV}"])
"""
    train = """
# Train: one line per epoch; interrupt (stop button) to end early and keep the best epoch so far
import threading

from napari_seg_box.core.events import EpochEnd, Message, StepLoss
from napari_seg_box.core.train import TrainConfig
from napari_seg_box.workflows.train import iter_train_model

config = TrainConfig.from_dict(SETTINGS)  # checked here: a mistyped setting is named in the error
print(f"{config.epochs} epochs, {config.encoder} encoder, tuning {'on' if TUNE else 'off'}")
cancel = threading.Event()
run = iter_train_model(project, config, tune=TUNE, cancel=cancel)
version = None
while True:
    try:
        event = next(run)
    except StopIteration as stop:
        version = stop.value
        break
    except KeyboardInterrupt:
        if cancel.is_set():
            raise
        cancel.set()
        print("\\nStopping after this step (interrupt again to abort without saving)...", flush=True)
        continue
    if isinstance(event, StepLoss):
        print(f"\\r  epoch {event.epoch}: step {event.step}/{event.steps_per_epoch}, loss {event.loss:.4f}", end="", flush=True)
    elif isinstance(event, EpochEnd):
        print("\\r" + event.line(), flush=True)
    elif isinstance(event, Message):
        print(event.text, flush=True)
info = project.model_version(version)
print(f"\\nmodel version {info.describe()}, best epoch {info.training.best.get('epoch')}")
"""
    plot = """
# Training curves: loss (train, validation) and validation IoU per epoch
import matplotlib.pyplot as plt
from IPython.display import Image, display

history = info.training.history
epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
fig, (ax_loss, ax_iou) = plt.subplots(1, 2, figsize=(11, 4))
ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title="Loss")
ax_loss.legend()
if all("val_iou" in h for h in history):
    ax_iou.plot(epochs, [h.get("train_iou") for h in history], "o-", label="train")
    ax_iou.plot(epochs, [h["val_iou"] for h in history], "o-", label="validation")
    ax_iou.set(xlabel="epoch", ylabel="IoU", ylim=(0, 1), title="IoU (mean over classes)")
    ax_iou.legend()
fig.tight_layout()
fig.savefig("training_curves.png", dpi=100)
display(Image("training_curves.png"))  # shown whatever matplotlib backend the kernel runs with (MPLBACKEND=Agg included)
plt.close(fig)
"""
    if remote:
        after = 'print(f"Model version {version} is in {STORE} already (the store is shared): nothing to import. In another project:")'
        command = 'print("    napari-seg-box import-model OTHER_STORE " + archive.name)'
    else:
        after = 'print("Download it (Colab: Files panel, right-click > Download), then run on your computer, where the project is:")'
        command = f'print("    napari-seg-box import-model " + {shlex.quote(store_here)!r} + " " + archive.name)'
    export = f"""
# The trained model as a version archive, to bring back into the project
from pathlib import Path

from napari_seg_box.core.model_io import export_version_archive

archive = export_version_archive(project, version, Path(f"{archive}"))
print(f"Wrote {{archive.resolve()}}")
{after}
{command}
"""
    return [
        (md, title, {}),
        (code, install, {}),
        (code, data, {}),
        (code, device, {}),
        (code, params, {"tags": ["parameters"]}),
        (code, train, {}),
        (code, plot, {}),
        (code, export, {}),
    ]
