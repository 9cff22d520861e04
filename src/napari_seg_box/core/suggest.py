"""Where to annotate next: the model's uncertainty per pixel, per tile and per image, and a ranking of
the unannotated images (or tiles of large ones) where a correction should teach it most.

- :func:`uncertainty`: the entropy of the predicted class probabilities, divided by its maximum
  (log K), in [0, 1];
- :func:`disagreement`: how much several predictions of the same pixels disagree (flipped copies of
  the image, or two model versions): their mutual information, divided by log K, in [0, 1];
- :func:`iter_suggest` ranks candidate regions by their mean uncertainty (the expected share of
  pixels to correct) with a diversity term: greedily, each next pick loses ``diversity`` times its
  largest cosine similarity to the annotated regions and to the regions already picked, so the top
  suggestions are neither five views of the same thing nor more of what is annotated. Similarity is
  that of the network encoder's pooled features, centred on their mean over all the regions: the
  raw features of one kind of image all point the same way (cosine ~0.99 between any two EM
  sections), so only their deviations from the mean tell neighbouring sections from distant ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .correct import class_probabilities
from .errors import DataError
from .events import Progress, check_cancel, run_to_end

MODES = ("entropy", "tta", "versions")
TILE = 512  # images larger than twice this along an axis are suggested tile by tile
_EPS = 1e-7


@dataclass(frozen=True)
class Suggestion:
    """A region to annotate next: image (plane ``z`` of a stack), box ``(y0, x0, y1, x1)``, its mean
    uncertainty and the score it was ranked by (uncertainty with the diversity term)."""

    image: str
    box: tuple[int, int, int, int]
    uncertainty: float
    score: float
    z: int | None = None

    def to_dict(self) -> dict:
        return {"image": self.image, "z": self.z, "box": list(self.box), "uncertainty": self.uncertainty, "score": self.score}


def _entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, _EPS, 1.0)
    return -(p * np.log(p)).sum(axis=0)


def uncertainty(probabilities: np.ndarray, *, boundary: bool = False, distance: bool = False) -> np.ndarray:
    """(Y, X) float32 in [0, 1]: the normalised entropy of the class probabilities of one prediction
    ((outputs, Y, X); a boundary output counts as its object, a distance output is not a class)."""
    probs = class_probabilities(probabilities, boundary=boundary, distance=distance).astype(np.float32, copy=False)
    k = probs.shape[0]
    if k < 2:
        raise DataError("Uncertainty needs the probabilities of at least two classes.")
    return np.clip(_entropy(probs) / np.log(k), 0.0, 1.0).astype(np.float32)


def disagreement(predictions: list[np.ndarray], *, boundary: bool = False, distance: bool = False) -> np.ndarray:
    """(Y, X) float32 in [0, 1]: how much several predictions of the same image disagree (the
    mutual information between the prediction and which one made it, divided by log K)."""
    if len(predictions) < 2:
        raise DataError("Disagreement needs at least two predictions of the same image.")
    probs = [class_probabilities(p, boundary=boundary, distance=distance).astype(np.float32) for p in predictions]
    mean = np.mean(probs, axis=0)
    info = _entropy(mean) - np.mean([_entropy(p) for p in probs], axis=0)
    return np.clip(info / np.log(mean.shape[0]), 0.0, 1.0).astype(np.float32)


def regions(shape: tuple[int, int], tile: int | None = None) -> list[tuple[int, int, int, int]]:
    """Boxes a plane of ``shape`` is suggested by: the whole plane, or a grid of tiles of side
    ``tile`` (default: :data:`TILE` when an axis is more than twice as long)."""
    h, w = shape
    if tile is None:
        if max(h, w) <= 2 * TILE:
            return [(0, 0, h, w)]
        tile = TILE
    if tile < 32:
        raise DataError(f"Tiles of {tile} px are too small to annotate: use 32 px or more.")
    return [(y, x, min(y + tile, h), min(x + tile, w)) for y in range(0, h, tile) for x in range(0, w, tile)]


def rank(
    scores: np.ndarray, features: np.ndarray, top: int, diversity: float = 0.5, known: np.ndarray | None = None
) -> list[tuple[int, float]]:
    """Greedy ranking: (index, score) of the ``top`` picks, each scoring its uncertainty (relative to
    the highest) minus ``diversity`` times its largest cosine similarity to the ``known`` (annotated)
    regions and to the picks before it. Features are centred on their mean over candidates and known
    regions before the cosine is taken."""
    scores = np.asarray(scores, np.float64)
    if not len(scores):
        return []
    rel = scores / max(float(scores.max()), _EPS)
    f = np.asarray(features, np.float64)
    known = np.zeros((0, f.shape[1])) if known is None or not len(known) else np.asarray(known, np.float64)
    centre = np.concatenate([f, known]).mean(axis=0)
    f, known = (_unit(a - centre) for a in (f, known))
    nearest = np.clip(f @ known.T, 0.0, 1.0).max(axis=1) if len(known) else np.zeros(len(scores))
    picked: list[tuple[int, float]] = []
    free = np.ones(len(scores), bool)
    for _ in range(min(top, len(scores))):
        total = np.where(free, rel - diversity * nearest, -np.inf)
        i = int(np.argmax(total))
        picked.append((i, float(total[i])))
        free[i] = False
        nearest = np.maximum(nearest, np.clip(f @ f[i], 0.0, 1.0))
    return picked


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), _EPS)


def candidates(project) -> list[str]:
    """Images that nobody annotated, outside the held-out ``test`` split."""
    return [r.name for r in project.images() if r.split != "test" and not any(r.label_counts or ())]


def annotated(project) -> list[str]:
    """Images with annotations the model learns from (outside the held-out ``test`` split)."""
    return [r.name for r in project.images() if r.split != "test" and any(r.label_counts or ())]


def iter_suggest(
    project,
    version: str | None = "latest",
    *,
    top: int = 5,
    tile: int | None = None,
    mode: str = "entropy",
    diversity: float = 0.5,
    images: list[str] | None = None,
    device: str = "auto",
    cancel=None,
) -> Iterator[Progress]:
    """Rank the unannotated images (or tiles of large ones) of ``project`` by where model ``version``
    is unsure (a generator: yields progress, returns a list of :class:`Suggestion`, best first).

    ``mode``: ``entropy`` (of one prediction), ``tta`` (disagreement between flipped copies, plus
    the entropy of their mean) or ``versions`` (disagreement between this version and the one before).
    """
    from .infer import Predictor

    if mode not in MODES:
        raise DataError(f"Unknown uncertainty mode {mode!r}: choose one of {', '.join(MODES)}.")
    if not 0 <= diversity <= 1:
        raise DataError(f"diversity must be in [0, 1], got {diversity}.")
    names = list(images) if images is not None else candidates(project)
    if not names:
        raise DataError(
            "Every image of the project is annotated (or held out for testing): there is nothing to suggest. "
            "Add new images to the project, then ask again."
        )
    predictors = [Predictor.from_project(project, version, device=device)]
    if mode == "versions":
        entries = [e.version for e in project.model_versions()]
        vid = predictors[0].version
        before = entries[: entries.index(vid)] if vid in entries else []
        if not before:
            raise DataError(f"Model version {vid} is the first one: 'versions' compares it with the one before. Use mode 'entropy'.")
        predictors.append(Predictor.from_project(project, before[-1], device=device))
    known, done = [], [n for n in annotated(project) if n not in names]  # what is annotated: suggestions should differ from it
    for i, name in enumerate(done):
        yield Progress(i, len(done), stage="suggest (annotated images)", message=name)
        for _, pixels in _planes(project, name, predictors[0].context, only=project.image_record(name).annotated_planes):
            check_cancel(cancel)
            known += [_features(predictors[0], pixels[y0:y1, x0:x1]) for y0, x0, y1, x1 in regions(pixels.shape[:2], tile)]
    found, feats = [], []
    for i, name in enumerate(names):
        yield Progress(i, len(names), stage="suggest", message=name)
        for z, pixels in _planes(project, name, predictors[0].context):
            check_cancel(cancel)
            u = _plane_uncertainty(pixels, predictors, mode, cancel=cancel)
            for box in regions(u.shape, tile):
                y0, x0, y1, x1 = box
                found.append(Suggestion(name, box, float(u[y0:y1, x0:x1].mean()), 0.0, z))
                feats.append(_features(predictors[0], pixels[y0:y1, x0:x1]))
    yield Progress(len(names), len(names), stage="suggest")
    picks = rank(np.array([s.uncertainty for s in found]), np.stack(feats), top, diversity, known=np.array(known))
    return [Suggestion(found[i].image, found[i].box, found[i].uncertainty, round(score, 4), found[i].z) for i, score in picks]


def suggest(project, version: str | None = "latest", **kwargs) -> list[Suggestion]:
    """:func:`iter_suggest` run to the end."""
    return run_to_end(iter_suggest(project, version, **kwargs))


def uncertainty_map(image: np.ndarray, model, *, mode: str = "entropy", **kwargs) -> np.ndarray:
    """(Y, X) uncertainty in [0, 1] of one 2D image under ``model`` (a :class:`~.infer.Predictor`;
    ``entropy`` or ``tta``)."""
    return _plane_uncertainty(image, [model], mode, **kwargs)


def _plane_uncertainty(pixels: np.ndarray, predictors: list, mode: str, **kwargs) -> np.ndarray:
    """The uncertainty of one plane: the entropy of the mean prediction of every predictor (and
    flipped copy, for ``tta``), or where they disagree, whichever is higher."""
    from .infer import iter_predict

    preds = []
    for p in predictors:
        for flip in _flips(mode):
            probs = run_to_end(iter_predict(_flip(pixels, flip), p, stack=False, **kwargs))
            preds.append(_flip(probs, flip, axes=(-2, -1)))
    facts = predictors[0].info.output_facts
    u = uncertainty(np.mean(preds, axis=0), **facts)
    return np.maximum(u, disagreement(preds, **facts)) if len(preds) > 1 else u


def _planes(project, name: str, context: int = 0, only=None) -> Iterator[tuple[int | None, np.ndarray]]:
    """(z, pixels) of each plane of image ``name`` (of a stack, only the planes in ``only`` when it is
    given; the others are not read): one plane (z None) for a 2D image; with a 2.5D model's
    ``context``, its neighbours as channels."""
    from .planes import check_context, with_context

    rec = project.image_record(name)
    check_context(rec, context)
    if not rec.is_stack:
        yield None, with_context(project.get_image(name), None, context)
        return
    array = project.image_array(name)
    for z in range(rec.spatial_shape[0]) if only is None else sorted(only):
        yield z, with_context(array, z, context)


def _flips(mode: str) -> list[tuple[int, ...]]:
    return [(), (0,), (1,), (0, 1)] if mode == "tta" else [()]


def _flip(a: np.ndarray, flip: tuple[int, ...], axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Flip the image axes ``flip`` (0 = rows, 1 = columns) of ``a``; its own inverse."""
    return np.ascontiguousarray(np.flip(a, axis=tuple(axes[f] for f in flip))) if flip else a


def _features(predictor, pixels: np.ndarray) -> np.ndarray:
    """The encoder's deepest features of a region, averaged over space: what the region looks like to the model."""
    import torch

    from .data import normalize, pad_to_multiple

    norm = normalize(pixels, percentiles=predictor.percentiles)
    norm, _ = pad_to_multiple(norm[:1024, :1024], 32)
    x = torch.from_numpy(np.ascontiguousarray(norm.transpose(2, 0, 1))[None]).to(predictor.device)
    with torch.no_grad():
        deepest = predictor.model.encoder(x)[-1]
    return deepest.float().mean(dim=(2, 3))[0].cpu().numpy()
