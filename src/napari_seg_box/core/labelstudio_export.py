"""A model version's predictions as Label Studio pre-annotations (tasks with ``predictions``).

Each image becomes one task ``{"data": {"image": <url>}, "predictions": [...]}`` whose prediction
holds one ``brushlabels`` region per predicted class (run-length brush masks, :mod:`.labelstudio_rle`),
next to it the labeling configuration (``<out>.label_config.xml``: an ``Image`` and ``BrushLabels``
with the project's classes and colours) and, on request, the images as 8-bit PNG files that a
browser shows. Annotators correct the regions in Label Studio; :func:`.labelstudio.import_labelstudio`
brings the corrected annotations back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from .config import as_config
from .errors import ConfigError, DataError
from .events import ItemDone, check_cancel, run_to_end
from .labelstudio_rle import encode_rle


def labeling_config_path(out_json: str | os.PathLike) -> Path:
    """Where :func:`export_labelstudio_predictions` writes the labeling configuration for ``out_json``."""
    out = Path(out_json)
    return out.with_name(f"{out.stem}.label_config.xml")


def labeling_config(classes: Sequence, *, from_name: str = "label", to_name: str = "image") -> str:
    """The Label Studio labeling configuration (XML) for brush annotation of ``classes``
    (:class:`~.manifest.ClassInfo` items, or names); paste it into Settings > Labeling Interface."""
    rows = []
    for c in classes:
        name, color = (c, None) if isinstance(c, str) else (c.name, c.color)
        rows.append(f"    <Label value={quoteattr(name)}" + (f" background={quoteattr(color)}" if color else "") + "/>")
    return "\n".join(
        [
            "<View>",
            f'  <Image name={quoteattr(to_name)} value="$image" zoom="true"/>',
            f"  <BrushLabels name={quoteattr(from_name)} toName={quoteattr(to_name)}>",
            *rows,
            "  </BrushLabels>",
            "</View>",
            "",
        ]
    )


def iter_export_labelstudio_predictions(
    project,
    out_json: str | os.PathLike,
    *,
    version: str | None = None,
    names: Sequence[str] | None = None,
    image_url: str = "{name}.png",
    from_name: str = "label",
    to_name: str = "image",
    write_images: bool = False,
    background: bool = False,
    config=None,
    postprocess=None,
    predictor=None,
    cancel=None,
) -> Iterator[Any]:
    """Predict images of ``project`` and write them as Label Studio tasks with pre-annotations (a generator).

    Parameters
    ----------
    out_json : the tasks file to write (import it in Label Studio: Import > JSON).
    version : model version (default: newest; ``"best"``); or pass a loaded ``predictor``.
    names : images to export (default: all images that are planes; Label Studio labels 2D images).
    image_url : each task's ``data.image``, with ``{name}`` replaced by the image name: where Label
        Studio finds the image, e.g. ``"/data/local-files/?d=images/{name}.png"`` (local storage) or
        ``"s3://bucket/images/{name}.png"`` (cloud storage).
    from_name, to_name : names of the ``BrushLabels`` and ``Image`` tags of the labeling configuration.
    write_images : also write each image as ``<name>.png`` (8-bit, contrast-stretched for display:
        the annotation is in pixels, so the stretch changes nothing) next to ``out_json``.
    background : also give the first class (label 1, background by convention) a region; by default
        it has none, and the corrected annotation is re-imported with ``unpainted_background=True``.
    config : :class:`~.infer.PredictConfig` (tiles, test-time augmentation, device).
    postprocess : :class:`~.postprocess.PostprocessConfig` making the labels (threshold, filling,
        minimum size); default: the one tuned for the model version.

    Yields :class:`~.events.Progress` (tiles) and one :class:`~.events.ItemDone` per image. Returns
    the path of the tasks file; the labeling configuration is at :func:`labeling_config_path`.
    Each prediction's ``score`` is the mean, over the image, of the highest class probability.
    """
    from .infer import PredictConfig, Predictor, iter_predict

    if "{name}" not in image_url:
        raise ConfigError(f"The image URL template {image_url!r} has no {{name}}: every task would show the same image.")
    try:
        image_url.format(name="x")
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(f"The image URL template {image_url!r} holds a placeholder other than {{name}} ({err}).") from None
    config = as_config(PredictConfig, config)
    names = _plane_names(project, names)
    predictor = predictor or Predictor.from_project(project, version, device=config.device)
    out = Path(out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    label = f"napari-seg-box {predictor.version}" if predictor.version else "napari-seg-box"
    tasks = []
    for i, name in enumerate(names):
        check_cancel(cancel)
        image = project.get_image(name)
        probs = yield from iter_predict(image, predictor, config=config, stack=False, cancel=cancel)
        semantic = predictor.postprocess(probs, postprocess).semantic
        class_probs = probs[: predictor.classes]
        height, width = semantic.shape
        results = []
        for value in range(1 if background else 2, predictor.classes + 1):
            mask = semantic == value
            if not mask.any():
                continue
            item = {
                "id": f"class{value}",
                "type": "brushlabels",
                "from_name": from_name,
                "to_name": to_name,
                "original_width": int(width),
                "original_height": int(height),
                "image_rotation": 0,
                "score": round(float(class_probs[value - 1][mask].mean()), 4),
                "value": {"format": "rle", "rle": encode_rle(mask), "brushlabels": [predictor.class_names[value - 1]]},
            }
            results.append(item)
        score = round(float(class_probs.max(axis=0).mean()), 4)
        tasks.append(
            {"data": {"image": image_url.format(name=name)}, "predictions": [{"model_version": label, "score": score, "result": results}]}
        )
        if write_images:
            _write_png(out.with_name(f"{name}.png"), image)
        yield ItemDone(i, len(names), name, result={"regions": len(results), "score": score})
    _write_text(out, json.dumps(tasks))
    known = {c.name for c in project.classes}
    classes = list(project.classes) + [n for n in predictor.class_names if n not in known]
    _write_text(labeling_config_path(out), labeling_config(classes, from_name=from_name, to_name=to_name))
    return out


def export_labelstudio_predictions(project, out_json: str | os.PathLike, **kwargs) -> Path:
    """Blocking :func:`iter_export_labelstudio_predictions`; returns the path of the tasks file."""
    return run_to_end(iter_export_labelstudio_predictions(project, out_json, **kwargs))


def _plane_names(project, names: Sequence[str] | None) -> list[str]:
    if names is None:
        return [r.name for r in project.images() if not r.is_stack]
    names = list(names)
    stacks = [n for n in names if project.image_record(n).is_stack]
    if stacks:
        raise DataError(
            f"{', '.join(stacks[:5])} {'is a stack' if len(stacks) == 1 else 'are stacks'}: Label Studio's brush labels 2D images. "
            "Export plane images only."
        )
    return names


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_png(path: Path, image: np.ndarray) -> None:
    """An 8-bit PNG a browser shows: 8-bit gray / RGB / RGBA as they are, others stretched (0.5-99.5 %)."""
    import imageio.v3 as iio

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if not (image.dtype == np.uint8 and (image.ndim == 2 or image.shape[2] in (3, 4))):
        data = image.astype(np.float32)
        lo, hi = np.nanpercentile(data, [0.5, 99.5], axis=(0, 1))
        image = (np.clip((data - lo) / np.maximum(hi - lo, 1e-6), 0, 1) * 255).round().astype(np.uint8)
        if image.ndim == 3 and image.shape[2] not in (3, 4):  # 2 channels, or more than 4: the first three as RGB
            image = np.concatenate([image, np.zeros_like(image[..., :1])], axis=2)[..., :3]
    iio.imwrite(path, image)
