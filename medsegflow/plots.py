"""Figures from result tables: metric summaries, ranks, conventions and cost.

Plots read the tables written by :mod:`medsegflow.tables` (the qualitative figures, which
read images, are :mod:`medsegflow.qualitative`). They never import model code. Figures
are drawn on a bare :class:`matplotlib.figure.Figure` (Agg canvas, no pyplot global
state) and saved atomically as PNG.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory

from medsegflow.io import atomic_path
from medsegflow.tables import SUMMARY_COLUMNS

log = logging.getLogger(__name__)

# Axis names of metrics whose column name is not readable as is.
METRIC_LABELS = {
    "dsc": "DSC",
    "iou": "IoU",
    "nsd": "NSD",
    "hd95_mm": "HD95 (mm)",
    "assd_mm": "ASSD (mm)",
}
LOWER_IS_BETTER = frozenset({"hd95_mm", "assd_mm"})
_ERRORBAR_STYLE = {"fmt": "o", "markersize": 5, "capsize": 3, "elinewidth": 1.2}
_N_TEXT_STYLE = {"fontsize": 7, "va": "center", "ha": "left"}


def save_png(fig: Figure, out_png: str | os.PathLike) -> None:
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=150)
    log.info("wrote %s", os.fspath(out_png))


# --------------------------------------------------------------------------- metric summary


def _class_offsets(n_classes: int) -> np.ndarray:
    """Vertical offsets that dodge ``n_classes`` markers inside one method's band."""
    band = 0.8
    return (np.arange(n_classes) - (n_classes - 1) / 2) * (band / max(n_classes, 1))


def _n_text(n: int, n_excluded: int) -> str:
    return f"n={n}" + (f" ({n_excluded} NaN excl.)" if n_excluded > 0 else "")


def _draw_metric_panel(ax, sub: pd.DataFrame, *, classes: list[str], colours: dict) -> None:
    """One dataset: methods on y (first at top), mean +- CI on x, one marker per class."""
    methods = list(dict.fromkeys(sub["method"]))
    offsets = dict(zip(classes, _class_offsets(len(classes)), strict=True))
    text_transform = blended_transform_factory(ax.transAxes, ax.transData)
    for row in sub.itertuples(index=False):
        y = methods.index(row.method) + offsets[row.label_name]
        colour = colours[row.label_name]
        if not math.isnan(row.mean):
            low = row.mean - row.ci_low if not math.isnan(row.ci_low) else 0.0
            high = row.ci_high - row.mean if not math.isnan(row.ci_high) else 0.0
            xerr = [[max(low, 0.0)], [max(high, 0.0)]]
            ax.errorbar(row.mean, y, xerr=xerr, color=colour, **_ERRORBAR_STYLE)
        text = _n_text(int(row.n), int(row.n_excluded))
        ax.text(1.02, y, text, transform=text_transform, color=colour, **_N_TEXT_STYLE)
    ax.set_yticks(range(len(methods)), methods)
    ax.set_ylim(len(methods) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)
    for boundary in np.arange(len(methods) - 1) + 0.5:
        ax.axhline(boundary, color="0.85", linewidth=0.6)


def plot_metric_by_method(
    summary: pd.DataFrame,
    *,
    metric: str,
    out_png: str | os.PathLike,
    confidence: float = 0.95,
) -> None:
    """Plot one metric's mean and bootstrap CI per method, one panel per dataset.

    ``summary`` is the table from :func:`medsegflow.tables.summarise` (columns
    :data:`~medsegflow.tables.SUMMARY_COLUMNS`). Methods are on the y axis, the mean with
    its ``confidence`` bootstrap CI on the x axis, one colour per class (``label_name``).
    Next to each marker, ``n`` is the number of cases used, with the number of NaN values
    excluded when there are any. Raises ValueError naming ``metric`` when the summary has
    no row for it, or naming missing columns.
    """
    missing = [c for c in SUMMARY_COLUMNS if c not in summary.columns]
    if missing:
        raise ValueError(f"summary table: missing required column(s) {missing}")
    sub = summary[summary["metric"] == metric]
    if sub.empty:
        available = list(dict.fromkeys(summary["metric"]))
        raise ValueError(f"metric {metric!r} is not in the summary table; available: {available}")
    datasets = list(dict.fromkeys(sub["dataset"]))
    classes = list(dict.fromkeys(sub["label_name"]))
    colours = dict(zip(classes, sns.color_palette("colorblind", len(classes)), strict=True))
    n_methods = max(sub.groupby("dataset")["method"].nunique())
    ncols = min(3, len(datasets))
    nrows = math.ceil(len(datasets) / ncols)
    panel_h = 0.6 + n_methods * max(0.45, 0.22 * len(classes))
    fig = Figure(figsize=(max(4.6 * ncols, 6.0) + 1.6, panel_h * nrows + 1.3), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    direction = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
    for ax, dataset in zip(axes, datasets, strict=False):
        _draw_metric_panel(ax, sub[sub["dataset"] == dataset], classes=classes, colours=colours)
        ax.set_title(dataset)
        ax.set_xlabel(f"{METRIC_LABELS.get(metric, metric)} ({direction})")
    for ax in axes[len(datasets) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], marker="o", linestyle="", color=colours[c], label=c) for c in classes]
    fig.legend(handles=handles, title="class", loc="outside right upper", fontsize=8)
    fig.suptitle(
        f"{METRIC_LABELS.get(metric, metric)}: mean with {confidence:.0%} bootstrap CI "
        "over cases\nn = cases used; NaN values are excluded, not averaged",
        fontsize=10,
    )
    save_png(fig, out_png)


# --------------------------------------------------------------------------- ranking stability


def plot_ranking(
    rows: pd.DataFrame,
    *,
    dataset: str,
    metric: str = "dsc",
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    out_png: str | os.PathLike,
) -> None:
    """Bootstrap rank distributions of one dataset (challengeR's blob plot).

    One panel per class and one for the mean over classes; methods on x in the order of
    their rank on all cases, rank on y (1 at the top). A circle's area is the share of
    resamples giving the method that rank; the black bar is the ``confidence`` interval
    and the cross the rank on all cases (:func:`medsegflow.ranking.rank_group`).
    """
    from medsegflow.ranking import rank_group, ranking_groups

    sub = rows[rows["dataset"] == dataset]
    if sub.empty:
        raise ValueError(f"no metric rows for dataset {dataset!r}")
    groups = ranking_groups(sub)
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    n_methods = sub["method"].nunique()
    fig = Figure(
        figsize=(ncols * max(3.2, 0.55 * n_methods + 1.2), nrows * (0.35 * n_methods + 2.4)),
        layout="constrained",
    )
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, label_name in zip(axes, groups, strict=False):
        table, boot = rank_group(
            rows,
            dataset=dataset,
            label_name=label_name,
            metric=metric,
            n_boot=n_boot,
            seed=seed,
            confidence=confidence,
        )
        if table.empty:
            ax.set_title(f"{label_name}: no complete cases", fontsize=9)
            ax.set_axis_off()
            continue
        methods = list(table["method"])
        for x, method in enumerate(methods):
            values, counts = np.unique(boot[method].to_numpy(), return_counts=True)
            ax.scatter(
                np.full(values.shape, x),
                values,
                s=600 * counts / len(boot),
                color="0.55",
                alpha=0.7,
                linewidths=0,
            )
        ax.vlines(range(len(methods)), table["rank_ci_low"], table["rank_ci_high"], color="k")
        ax.scatter(range(len(methods)), table["rank"], marker="x", color="crimson", zorder=3)
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=8)
        ax.set_ylim(len(methods) + 0.5, 0.5)
        ax.set_yticks(range(1, len(methods) + 1))
        ax.set_ylabel("rank")
        tau = table["kendall_tau"].iloc[0]
        ax.set_title(f"{label_name} (n={int(table['n_cases'].iloc[0])}, tau={tau:.2f})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(groups) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"{dataset}: rank by mean {METRIC_LABELS.get(metric, metric)} over cases, "
        f"{n_boot} bootstrap resamples\ncircle area = share of resamples, bar = "
        f"{confidence:.0%} interval, x = rank on all cases, tau = median Kendall tau",
        fontsize=9,
    )
    save_png(fig, out_png)


# --------------------------------------------------------------------------- convention replay


def plot_convention_ranks(
    table: pd.DataFrame, *, out_png: str | os.PathLike, metrics: Sequence[str] = ("dsc", "nsd")
) -> None:
    """Each method's rank under each convention, by overall DSC and by overall NSD.

    ``table`` is ``conventions.csv`` (:func:`medsegflow.stages.replay.conventions_table`).
    One panel per dataset and metric: conventions on x (MedSegFlow's own first), rank on y
    (1 at the top), one line per method, labelled with its rank under MedSegFlow's own
    scoring (tied methods share a label). A convention that defines no value for a method
    (Med-SA without soft outputs; NSD in SAMed) leaves a gap; ranks are among the methods
    it scores.
    """
    from medsegflow.ranking import ALL_CLASSES

    overall = table[table["label_name"] == ALL_CLASSES]
    if overall.empty:
        raise ValueError("conventions table: no overall ('all classes') rows")
    datasets = list(dict.fromkeys(overall["dataset"]))
    conventions = list(dict.fromkeys(overall["convention"]))
    n_methods = overall.groupby("dataset")["method"].nunique().max()
    width = 1.1 * len(conventions) + 4.0
    fig = Figure(
        figsize=(width * len(metrics), len(datasets) * (0.3 * n_methods + 1.9)),
        layout="constrained",
    )
    axes = fig.subplots(len(datasets), len(metrics), squeeze=False)
    for row, dataset in enumerate(datasets):
        sub = overall[overall["dataset"] == dataset]
        for col, metric in enumerate(metrics):
            ax = axes[row, col]
            wide = sub.pivot_table(index="method", columns="convention", values=metric)
            wide = wide.reindex(columns=conventions)
            ranks = wide.rank(ascending=metric in LOWER_IS_BETTER, method="min")
            own = ranks[conventions[0]].dropna().sort_values(kind="stable")
            colours = sns.color_palette("husl", max(len(own), 1))
            for colour, method in zip(colours, own.index, strict=True):
                values = ranks.loc[method].to_numpy()
                defined = np.flatnonzero(~np.isnan(values))  # lines skip undefined columns
                ax.plot(defined, values[defined], "-o", color=colour, ms=4)
            names = own.groupby(own).apply(lambda group: " / ".join(group.index))
            ax.set_yticks(names.index.to_numpy(), list(names), fontsize=7)
            ax.set_xticks(range(len(conventions)), conventions, rotation=30, ha="right")
            ax.set_xlim(-0.3, len(conventions) - 0.7)
            ax.set_ylim(len(ranks) + 0.5, 0.5)
            label = METRIC_LABELS.get(metric, metric)
            ax.set_title(f"{dataset}: rank by {label} (all classes)", fontsize=9)
            ax.grid(axis="x", alpha=0.3)
    fig.suptitle(
        "The same predictions ranked under each paper's scoring convention "
        "(left axis: the method, at its MedSegFlow rank)",
        fontsize=10,
    )
    save_png(fig, out_png)


# --------------------------------------------------------------------------- cost


def plot_cost_pareto(
    cost: pd.DataFrame, summary: pd.DataFrame, *, out_png: str | os.PathLike, metric: str = "dsc"
) -> None:
    """Mean ``metric`` over classes against seconds per case (log scale), one panel per
    dataset; the Pareto front (no method both faster and better) is joined by a line and
    its methods are named (:func:`medsegflow.cost.pareto_front`)."""
    from medsegflow.cost import pareto_front

    scores = (
        summary[summary["metric"] == metric]
        .groupby(["dataset", "method"], sort=False)["mean"]
        .mean()
        .rename("score")
        .reset_index()
    )
    table = cost.merge(scores, on=["dataset", "method"], how="inner")
    table = table[np.isfinite(table["s_per_case"]) & (table["s_per_case"] > 0)]
    if table.empty:
        raise ValueError("cost table: no method with both seconds per case and a score")
    datasets = list(dict.fromkeys(table["dataset"]))
    ncols = min(2, len(datasets))
    nrows = math.ceil(len(datasets) / ncols)
    fig = Figure(figsize=(6.2 * ncols, 4.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    families = list(dict.fromkeys(table["family"]))
    colours = dict(zip(families, sns.color_palette("colorblind", len(families)), strict=True))
    for ax, dataset in zip(axes, datasets, strict=False):
        sub = table[table["dataset"] == dataset].reset_index(drop=True)
        front = pareto_front(sub["s_per_case"].to_numpy(), sub["score"].to_numpy())
        for family in families:
            fam = sub[sub["family"] == family]
            ax.scatter(fam["s_per_case"], fam["score"], color=colours[family], label=family, s=22)
        best = sub[front].sort_values("s_per_case")
        ax.plot(best["s_per_case"], best["score"], "k--", lw=1, zorder=0)
        for row in best.itertuples(index=False):
            ax.annotate(
                row.method,
                (row.s_per_case, row.score),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        ax.set_xlabel("seconds per case (encoder + decoder + text stages), log scale")
        ax.set_ylabel(f"mean {METRIC_LABELS.get(metric, metric)} over classes")
        ax.set_title(dataset, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[len(datasets) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], marker="o", ls="", color=colours[f], label=f) for f in families]
    fig.legend(handles=handles, title="family", loc="outside right upper", fontsize=8)
    fig.suptitle("Accuracy against cost; dashed: the Pareto front (named)", fontsize=10)
    save_png(fig, out_png)
