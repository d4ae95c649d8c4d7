"""Curve figures, one per dataset: prompt robustness (``results/tables/robustness.csv``)
and the interactive protocol (``results/tables/clicks.csv``).

:func:`plot_robustness` has four panels, one line per SAM model (:mod:`medsegflow.robustness`
defines the curves):
DSC against box jitter (solid) and box shift (dashed); DSC against positive points;
DSC against negative points (with one positive); IoU against clicks, with the NoC@85 and
NoC@90 targets as horizontal lines and each model's NoC in its legend label.
:func:`plot_clicks` draws DSC and NSD against the click number, one line per method
(:mod:`medsegflow.interactive`).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from medsegflow.interactive import ALL_CLASSES
from medsegflow.plots import save_png

_PANELS = (
    ("box", "box jitter / shift (px at 1024)", "DSC"),
    ("positive_points", "positive points (no negative)", "DSC"),
    ("negative_points", "negative points (+ 1 positive)", "DSC"),
    ("clicks", "clicks from nothing (centre of the largest error)", "IoU"),
)


def _noc_label(rows: pd.DataFrame) -> str:
    noc = rows[rows["curve"] == "noc"].set_index("x")["noc"]
    parts = [f"NoC@{round(100 * x)} {value:.1f}" for x, value in noc.items() if np.isfinite(value)]
    return f" ({', '.join(parts)})" if parts else ""


def plot_robustness(table: pd.DataFrame, *, dataset: str, out_png: str | os.PathLike) -> Figure:
    """Draw the curves of ``dataset`` (rows of ``robustness.csv``); returns the figure.

    Raises ValueError naming the dataset when the table has no row for it.
    """
    rows = table[table["dataset"] == dataset]
    if rows.empty:
        raise ValueError(f"robustness.csv: no rows for dataset {dataset!r}")
    models = list(dict.fromkeys(rows["model"]))
    colours = dict(zip(models, sns.color_palette("colorblind", len(models)), strict=True))
    fig = Figure(figsize=(15.5, 4.2), layout="constrained")
    axes = fig.subplots(1, len(_PANELS))
    for ax, (curve, xlabel, ylabel) in zip(axes, _PANELS, strict=True):
        for model in models:
            sub = rows[rows["model"] == model]
            colour = colours[model]
            if curve == "box":
                for name, style in (("box_jitter", "-"), ("box_shift", "--")):
                    line = sub[sub["curve"] == name].sort_values("x")
                    ax.plot(line["x"], line["dsc"], style, marker="o", color=colour, ms=4)
            elif curve == "clicks":
                line = sub[sub["curve"] == "clicks"].sort_values("x")
                label = f"{model}{_noc_label(sub)}"
                ax.plot(line["x"], line["iou"], marker="o", color=colour, ms=4, label=label)
            else:
                line = sub[sub["curve"] == curve].sort_values("x")
                ax.plot(line["x"], line["dsc"], marker="o", color=colour, ms=4, label=model)
        if curve == "clicks":
            for target in (0.85, 0.90):
                ax.axhline(target, color="0.6", lw=0.8, ls=":")
            ax.legend(fontsize=7, loc="lower right")
        ax.set(xlabel=xlabel, ylabel=ylabel, ylim=(0, 1))
        ax.grid(alpha=0.3)
    axes[0].plot([], [], "k-", label="jitter (each side, up to x)")
    axes[0].plot([], [], "k--", label="shift (whole box by x)")
    axes[0].legend(fontsize=7, loc="lower left")
    n_cases = int(rows["n_cases"].max())
    fig.suptitle(
        f"{dataset}: prompt robustness, {n_cases} cases, one line per model "
        "(per object, mean over cases)",
        fontsize=10,
    )
    save_png(fig, out_png)
    return fig


def plot_clicks(curves: pd.DataFrame, *, dataset: str, out_png: str | os.PathLike):
    """DSC and NSD against the click number, one line per method (the mean over classes
    when the dataset has several); returns the figure."""
    rows = curves[curves["dataset"] == dataset]
    if rows.empty:
        raise ValueError(f"clicks.csv: no rows for dataset {dataset!r}")
    if (rows["label_name"] == ALL_CLASSES).any():
        rows = rows[rows["label_name"] == ALL_CLASSES]
    methods = list(dict.fromkeys(rows["method"]))
    colours = dict(zip(methods, sns.color_palette("colorblind", len(methods)), strict=True))
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("dsc", "nsd"), strict=True):
        for method in methods:
            line = rows[rows["method"] == method].sort_values("click")
            ax.plot(line["click"], line[metric], marker="o", color=colours[method], label=method)
        ax.set(xlabel="click (0: the box, where a method starts from one)", ylabel=metric.upper())
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    n_cases = int(rows["n_cases"].max())
    fig.suptitle(
        f"{dataset}: interactive protocol (corrective clicks at the largest error's centre), "
        f"{n_cases} cases, mean over classes",
        fontsize=10,
    )
    save_png(fig, out_png)
    return fig
