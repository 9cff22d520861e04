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
