"""Plots and readable column names for quantification tables (matplotlib Agg; no torch)."""

from __future__ import annotations

import os
import re


def column_label(name: str) -> str:
    """A table column's name for people: ``area_um2`` -> ``area (µm²)``, ``coverage_percent`` ->
    ``coverage (%)``, ``n_objects`` -> ``n objects``."""
    if name.endswith("_percent"):
        name = name[: -len("_percent")] + " (%)"
    elif m := re.fullmatch(r"(.+)_([A-Za-zµ]+)2", name):
        name = f"{m[1]} ({'µm' if m[2] == 'um' else m[2]}²)"
    return name.replace("_", " ")


# ---------------------------------------------------------------------- plots
def plot_quantification(q, folder) -> list[str]:
    """PNG plots (matplotlib Agg): area histogram per class, objects and coverage per image."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    os.makedirs(folder, exist_ok=True)
    paths = []
    objs = q.objects
    area_cols = [c for c in objs.columns if c.startswith("area_") and c != "area_px"]
    if len(objs) and area_cols:
        col = area_cols[0]
        fig = Figure(figsize=(6, 4), dpi=100)
        ax = fig.add_subplot()
        for cname, grp in objs.groupby("class_name"):
            ax.hist(grp[col].to_numpy(dtype=float), bins=40, alpha=0.6, label=str(cname))
        ax.set_xlabel(column_label(col))
        ax.set_ylabel("objects")
        ax.set_title("Object area per class")
        ax.legend()
        p = os.path.join(str(folder), "area_histogram.png")
        fig.savefig(p)
        paths.append(p)
    imgs = q.images[q.images["error"].isna()] if "error" in q.images else q.images
    imgs = imgs[imgs["class_name"].astype(str) != ""]
    if len(imgs):
        for value, ylabel, fname in (
            ("n_objects", "objects", "counts_per_image.png"),
            ("coverage_percent", "coverage (% of area)", "coverage_per_image.png"),
        ):
            table = imgs.pivot_table(index="image", columns="class_name", values=value, aggfunc="sum", sort=False).fillna(0)
            fig = Figure(figsize=(max(6, 0.25 * len(table) + 2), 4), dpi=100)
            ax = fig.add_subplot()
            table.plot.bar(ax=ax)
            ax.set_ylabel(ylabel)
            ax.set_xlabel("image")
            fig.tight_layout()
            p = os.path.join(str(folder), fname)
            fig.savefig(p)
            paths.append(p)
    return paths


def frame_table(quantification):
    """One row per (movie, frame, class) of a :func:`~.volume_measure.measure_timelapse` result (the
    rows of other images of a batch are left out): ``count``,
    ``coverage_percent`` and the mean object size (``mean_area_<unit>2``); a class absent from a
    frame counts 0 there (coverage 0, mean size NaN).

    Returns
    -------
    pandas DataFrame with ``movie``, ``frame`` (``time_<unit>``), ``class``, ``class_name``, ``count``,
    ``coverage_percent``, ``mean_area_*``, sorted by movie, frame and class.
    """
    import numpy as np

    from .errors import DataError

    imgs = quantification.images
    if "frame" not in imgs:
        raise DataError("This table has no frame column: make it with measure_timelapse.")
    imgs = imgs[imgs["frame"].notna()]
    if "error" in imgs:
        imgs = imgs[imgs["error"].isna()]
    time_cols = [c for c in imgs.columns if c.startswith("time_")]
    size_cols = [c for c in imgs.columns if c.startswith("mean_")]
    frames = imgs[["movie", "frame", *time_cols]].drop_duplicates(["movie", "frame"]).sort_values(["movie", "frame"])
    present = imgs[imgs["class"].notna()]
    classes = present[["class", "class_name"]].drop_duplicates("class").sort_values("class")
    grid = frames.merge(classes, how="cross")
    values = present[["movie", "frame", "class", "n_objects", "coverage_percent", *size_cols]]
    table = grid.merge(values, on=["movie", "frame", "class"], how="left").rename(columns={"n_objects": "count"})
    table["frame"] = table["frame"].astype(np.int64)
    table["count"] = table["count"].fillna(0).astype(np.int64)
    table["coverage_percent"] = table["coverage_percent"].fillna(0.0)
    if len(classes):
        table["class"] = table["class"].astype(np.int64)
    return table.sort_values(["movie", "frame", "class"]).reset_index(drop=True)


def plot_over_time(table, path) -> str:
    """Write a PNG (matplotlib Agg) of object count and coverage over time, one line per class (per
    movie and class when there are several), from a :func:`frame_table`; returns the path written."""
    import matplotlib

    from .errors import DataError

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if "frame" not in table or "count" not in table:
        raise DataError("plot_over_time takes the table of frame_table (columns frame, class_name, count, coverage_percent).")
    path = str(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    time_cols = [c for c in table.columns if c.startswith("time_")]
    x = time_cols[0] if time_cols else "frame"
    fig = Figure(figsize=(7, 6), dpi=100)
    axes = fig.subplots(2, 1, sharex=True)
    several = "movie" in table and table["movie"].nunique() > 1
    for key, grp in table.groupby(["movie", "class_name"] if several else "class_name", sort=False):
        grp = grp.sort_values(x)
        label = " · ".join(map(str, key)) if several else str(key)
        axes[0].plot(grp[x], grp["count"], marker="o", label=label)
        axes[1].plot(grp[x], grp["coverage_percent"], marker="o", label=label)
    axes[0].set_ylabel("objects")
    axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].set_ylabel("coverage (% of area)")
    axes[1].set_xlabel("time (" + x[len("time_") :] + ")" if time_cols else "frame")
    axes[0].set_title("Objects over time")
    if len(table):
        axes[0].legend()
    fig.tight_layout()
    fig.savefig(path)
    return path
