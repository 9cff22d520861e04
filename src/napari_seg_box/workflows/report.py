"""Self-contained HTML reports (figures embedded as PNG data URIs, tables as HTML): no torch import."""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

_CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #f0a500; padding-bottom: .2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: .4em .8em .8em 0; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; height: auto; }
figcaption { font-size: 12px; color: #555; max-width: 520px; }
.kv td { text-align: left; }
.headline { font-size: 1.15em; background: #fff8e6; border-left: 4px solid #f0a500; padding: .6em 1em; }
.note { color: #666; font-size: 13px; }
"""


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def array_png(rgb: np.ndarray) -> bytes:
    """An (Y, X) or (Y, X, 3) uint8 array as PNG bytes."""
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", np.asarray(rgb), extension=".png")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Display version of an image: percentile-stretched to uint8 (Y, X)."""
    from ..core.data import normalize

    img = normalize(image).mean(axis=-1)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray, *, alpha: float = 0.45, outline: bool = True, seed: int = 3) -> np.ndarray:
    """RGB overlay of instance or class labels on an image (each id its own colour).

    Returns (Y, X, 3) uint8.
    """
    from skimage.segmentation import find_boundaries

    gray = to_uint8(image).astype(np.float32)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    labels = np.asarray(labels)
    if labels.max(initial=0) > 0:
        rng = np.random.default_rng(seed)
        palette = rng.uniform(60, 255, size=(int(labels.max()) + 1, 3)).astype(np.float32)
        palette[0] = 0
        mask = labels > 0
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * palette[labels[mask]]
        if outline:
            rgb[find_boundaries(labels, mode="inner")] = (255, 255, 0)
    return rgb.clip(0, 255).astype(np.uint8)


# the kinds of object errors (their values in an error map) in the Okabe-Ito palette: told apart with
# every common colour-vision deficiency
ERROR_KINDS = {1: ("found (TP)", "#0072B2"), 2: ("false alarm (FP)", "#E69F00"), 3: ("missed (FN)", "#CC79A7")}
ERROR_KEY = ", ".join(f"{word} {name}" for word, name in zip((w for w, _ in ERROR_KINDS.values()), ("blue", "orange", "purple")))


def error_overlay(image: np.ndarray, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """RGB overlay of object errors in the colours of :data:`ERROR_KINDS` (found, false alarm, missed)."""
    gray = to_uint8(image).astype(np.float32)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    for mask, (_, color) in zip((tp, fp, fn), ERROR_KINDS.values()):
        m = np.asarray(mask) > 0
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)], np.float32)
    return rgb.clip(0, 255).astype(np.uint8)


class Report:
    """Build an HTML page piece by piece, then :meth:`save` it as one self-contained file."""

    def __init__(self, title: str):
        self.title = title
        self._parts: list[str] = [f"<h1>{html.escape(title)}</h1>"]

    def heading(self, text: str) -> None:
        self._parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str, *, cls: str | None = None) -> None:
        attr = f' class="{cls}"' if cls else ""
        self._parts.append(f"<p{attr}>{html.escape(text)}</p>")

    def headline(self, text: str) -> None:
        self.paragraph(text, cls="headline")

    def figure(self, fig_or_png: Any, caption: str = "", *, width: int | None = None) -> None:
        """Embed a matplotlib figure, PNG bytes, or an RGB/gray uint8 array."""
        if isinstance(fig_or_png, (bytes, bytearray)):
            data = bytes(fig_or_png)
        elif isinstance(fig_or_png, np.ndarray):
            data = array_png(fig_or_png)
        else:
            data = figure_png(fig_or_png)
        w = f' width="{width}"' if width else ""
        self._parts.append(
            f'<figure><img src="{png_data_uri(data)}"{w} alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def table(self, df, caption: str = "", *, float_format: str = "{:.3f}", index: bool = False) -> None:
        """Embed a pandas DataFrame."""
        if caption:
            self._parts.append(f"<p><b>{html.escape(caption)}</b></p>")
        self._parts.append(df.to_html(index=index, float_format=float_format.format, border=0, na_rep="–"))

    def key_values(self, items: Mapping[str, Any], caption: str = "") -> None:
        if caption:
            self._parts.append(f"<p><b>{html.escape(caption)}</b></p>")
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in items.items())
        self._parts.append(f'<table class="kv">{rows}</table>')

    def to_html(self) -> str:
        body = "\n".join(self._parts)
        return (
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>'
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>"
        )

    def save(self, path: str | os.PathLike) -> str:
        path = os.fspath(path)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.to_html())
        return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)
