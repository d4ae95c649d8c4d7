"""Figures from result tables: metric summaries and a qualitative case grid.

Plots read the tables written by :mod:`medsegflow.tables` and, for the qualitative
grid only, the preprocessed image, cleaned label and predicted label volumes through
:func:`medsegflow.io.read_volume`. They never import model code. Figures are drawn on a
bare :class:`matplotlib.figure.Figure` (Agg canvas, no pyplot global state) and saved
atomically as PNG.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from medsegflow.io import atomic_path, read_volume
from medsegflow.tables import SUMMARY_COLUMNS, collect_metrics

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
# Error-map colours (RGB): correct foreground, false positive, false negative, wrong class.
ERROR_COLOURS: dict[str, tuple[float, float, float]] = {
    "TP (correct class)": (0.10, 0.75, 0.20),
    "FP (predicted on background)": (0.90, 0.10, 0.10),
    "FN (missed foreground)": (0.15, 0.45, 0.95),
    "wrong class": (1.00, 0.85, 0.00),
}
_OVERLAY_ALPHA = 0.55
_ERRORBAR_STYLE = {"fmt": "o", "markersize": 5, "capsize": 3, "elinewidth": 1.2}
_N_TEXT_STYLE = {"fontsize": 7, "va": "center", "ha": "left"}
_CLASS_ORDER = (1, 4, 6, 9, 5, 8, 7, 0, 2, 3)  # tab10: orange, purple, pink, cyan, brown, ...


def _save_png(fig: Figure, out_png: str | os.PathLike) -> None:
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
    _save_png(fig, out_png)


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
    _save_png(fig, out_png)


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
    _save_png(fig, out_png)


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
    _save_png(fig, out_png)


# --------------------------------------------------------------------------- qualitative grid


@dataclass(frozen=True)
class QualCase:
    """One row of the qualitative grid: a 2D slice with its ground truth and predictions.

    ``image_yx`` is a 2D float or uint8 array; ``gt_yx`` and each ``predictions[method]``
    are 2D integer label maps of the same ``(H, W)`` shape (0 = background). ``dscs`` maps
    method -> DSC shown in the panel title (NaN or absent shows ``n/a``). ``z`` is the
    slice index in the source volume.
    """

    dataset: str
    case_id: str
    z: int
    image_yx: np.ndarray
    gt_yx: np.ndarray
    predictions: Mapping[str, np.ndarray]
    dscs: Mapping[str, float] = field(default_factory=dict)


def _check_cases(cases: Sequence[QualCase]) -> list[str]:
    if not cases:
        raise ValueError("plot_qualitative: no cases given")
    methods = list(cases[0].predictions)
    for case in cases:
        name = f"{case.dataset}/{case.case_id}"
        if list(case.predictions) != methods:
            raise ValueError(
                f"case {name}: methods {list(case.predictions)} differ from the "
                f"first case's {methods}"
            )
        if case.image_yx.ndim != 2 or case.gt_yx.shape != case.image_yx.shape:
            raise ValueError(
                f"case {name}: image {case.image_yx.shape} and ground truth "
                f"{case.gt_yx.shape} must be 2D arrays of the same shape"
            )
        for method, pred in case.predictions.items():
            if pred.shape != case.gt_yx.shape:
                raise ValueError(
                    f"case {name}: prediction of {method!r} has shape {pred.shape}, "
                    f"ground truth {case.gt_yx.shape}"
                )
    return methods


def _normalise(image_yx: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] between the 0.5 and 99.5 percentiles (constant image -> zeros)."""
    image = np.asarray(image_yx, dtype=np.float64)
    low, high = np.percentile(image, [0.5, 99.5])
    if high <= low:
        return np.zeros_like(image)
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def class_colour(label: int) -> tuple[float, float, float]:
    """Colour of class ``label`` (>= 1), the same in every figure.

    The tab10 palette, reordered so that the first five classes avoid the error-map
    colours (green, red, blue, yellow); labels above 10 cycle.
    """
    palette = sns.color_palette("tab10", 10)
    return tuple(palette[_CLASS_ORDER[(int(label) - 1) % len(_CLASS_ORDER)]])


def _overlay(masks: Mapping[tuple[float, float, float], np.ndarray], shape: tuple) -> np.ndarray:
    """RGBA image with each boolean mask painted in its colour, transparent elsewhere."""
    rgba = np.zeros((*shape, 4))
    for colour, mask in masks.items():
        rgba[mask] = (*colour, _OVERLAY_ALPHA)
    return rgba


def _error_masks(gt_yx: np.ndarray, pred_yx: np.ndarray) -> dict:
    names = list(ERROR_COLOURS)
    gt_fg, pred_fg = gt_yx > 0, pred_yx > 0
    masks = [
        gt_fg & pred_fg & (gt_yx == pred_yx),
        pred_fg & ~gt_fg,
        gt_fg & ~pred_fg,
        gt_fg & pred_fg & (gt_yx != pred_yx),
    ]
    return {ERROR_COLOURS[name]: mask for name, mask in zip(names, masks, strict=True)}


def _dsc_text(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def _draw_case_row(axes, case: QualCase, methods: list[str]) -> None:
    image = _normalise(case.image_yx)
    labels = [int(v) for v in np.unique(case.gt_yx) if v > 0]
    for ax in axes:
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_ylabel(f"{case.dataset}\n{case.case_id}, z={case.z}", fontsize=8)
    gt_masks = {class_colour(v): case.gt_yx == v for v in labels}
    axes[1].imshow(_overlay(gt_masks, case.gt_yx.shape), interpolation="nearest")
    for ax, method in zip(axes[2:], methods, strict=True):
        errors = _error_masks(case.gt_yx, case.predictions[method])
        ax.imshow(_overlay(errors, case.gt_yx.shape), interpolation="nearest")
        ax.set_title(f"{method}\nDSC {_dsc_text(case.dscs.get(method))}", fontsize=8)


def _legend_handles(cases: Sequence[QualCase], label_names: Mapping[int, str]) -> tuple:
    labels = sorted({int(v) for case in cases for v in np.unique(case.gt_yx) if v > 0})
    classes = [Patch(color=class_colour(v), label=f"{v}: {label_names.get(v, v)}") for v in labels]
    errors = [Patch(color=colour, label=name) for name, colour in ERROR_COLOURS.items()]
    return classes, errors


def plot_qualitative(
    *,
    cases: Sequence[QualCase],
    out_png: str | os.PathLike,
    title: str = "",
    label_names: Mapping[int, str] | None = None,
) -> None:
    """Draw a grid with one row per case: image | ground truth | one error map per method.

    The ground-truth column paints each class in its :func:`class_colour`; each method's
    column paints, on top of the image, correct foreground green, false positives red,
    false negatives blue and foreground given the wrong class yellow, with the method's
    DSC in the title. ``label_names`` maps label value -> class name for the legend.
    Raises ValueError when cases have different methods or mismatched shapes.
    """
    methods = _check_cases(cases)
    ncols = 2 + len(methods)
    fig = Figure(figsize=(2.3 * ncols, 2.3 * len(cases) + 1.4), layout="constrained")
    grid = fig.subplots(len(cases), ncols, squeeze=False)
    for axes, case in zip(grid, cases, strict=True):
        _draw_case_row(axes, case, methods)
    grid[0, 0].set_title("image", fontsize=8)
    grid[0, 1].set_title("ground truth", fontsize=8)
    classes, errors = _legend_handles(cases, label_names or {})
    fig.legend(
        handles=classes + errors,
        loc="outside lower center",
        fontsize=8,
        ncols=min(4 if ncols > 3 else 2, len(classes) + len(errors)),
        frameon=False,
    )
    if title:
        fig.suptitle(title, fontsize=10)
    _save_png(fig, out_png)


# --------------------------------------------------------------------------- case selection


def choose_qualitative_cases(
    rows: pd.DataFrame, *, n_cases: int, method: str | None = None
) -> list[str]:
    """Pick ``n_cases`` case ids spread over the DSC range, worst first.

    ``rows`` are per-case metric rows of one dataset (``method, case_id, dsc``). Each case
    is ranked by its mean DSC over classes and methods (only ``method``'s rows when
    given), NaN values skipped; cases with no finite DSC are not eligible. Ties break by
    ``case_id``. The picks sit at evenly spaced ranks from the worst to the best case, so
    an odd ``n_cases`` includes the median case. Fewer cases are returned when fewer are
    eligible. Deterministic.
    """
    if n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {n_cases}")
    use = rows if method is None else rows[rows["method"] == method]
    if use.empty:
        raise ValueError(f"no metric rows to choose cases from (method={method!r})")
    per_case = use.groupby("case_id")["dsc"].mean().dropna()
    if per_case.empty:
        raise ValueError(f"no case has a finite DSC (method={method!r})")
    ranked = per_case.rename("dsc").reset_index().sort_values(["dsc", "case_id"], kind="stable")
    count = min(n_cases, len(ranked))
    positions = np.unique(np.floor(np.linspace(0, len(ranked) - 1, count) + 0.5).astype(int))
    return [str(c) for c in ranked["case_id"].iloc[positions]]


def choose_qualitative_slice(label_zyx: np.ndarray) -> int:
    """Index z of the slice of a ``(Z, H, W)`` label volume with the most foreground.

    Ties go to the lowest z; an all-background volume gives the middle slice.
    """
    label_zyx = np.asarray(label_zyx)
    if label_zyx.ndim != 3:
        raise ValueError(f"expected a (Z, H, W) label volume, got shape {label_zyx.shape}")
    counts = (label_zyx > 0).sum(axis=(1, 2))
    if counts.max() == 0:
        return label_zyx.shape[0] // 2
    return int(np.argmax(counts))


def _read_checked(path: Path, shape: tuple[int, ...] | None, reference: Path | None) -> np.ndarray:
    array = read_volume(path).array_zyx
    if shape is not None and array.shape != shape:
        raise ValueError(f"{path}: shape {array.shape} differs from {reference} shape {shape}")
    return array


def _load_case(
    case_id: str,
    *,
    dataset: str,
    rows: pd.DataFrame,
    preprocessed_dir: Path,
    predictions_dirs: Mapping[str, str | os.PathLike],
) -> QualCase:
    label_path = preprocessed_dir / "labels" / f"{case_id}.nii.gz"
    gt = _read_checked(label_path, None, None)
    image = _read_checked(preprocessed_dir / "images" / f"{case_id}.nii.gz", gt.shape, label_path)
    z = choose_qualitative_slice(gt)
    predictions = {
        method: _read_checked(Path(folder) / f"{case_id}.nii.gz", gt.shape, label_path)[z]
        for method, folder in predictions_dirs.items()
    }
    dscs = rows[rows["case_id"] == case_id].groupby("method")["dsc"].mean().to_dict()
    return QualCase(
        dataset=dataset,
        case_id=case_id,
        z=z,
        image_yx=image[z],
        gt_yx=gt[z],
        predictions=predictions,
        dscs=dscs,
    )


def render_qualitative_figure(
    *,
    dataset: str,
    metrics_csvs: Sequence[str | os.PathLike],
    preprocessed_dir: str | os.PathLike,
    predictions_dirs: Mapping[str, str | os.PathLike],
    n_cases: int,
    out_png: str | os.PathLike,
    rank_by: str | None = None,
) -> None:
    """Render the qualitative grid of one dataset from files on disk.

    Reads the per-method metric CSVs (``results/metrics/{dataset}/{method}.csv``), picks
    ``n_cases`` cases with :func:`choose_qualitative_cases` (ranked by ``rank_by``'s DSC,
    or the mean over the methods in ``predictions_dirs``), and for each case reads
    ``{preprocessed_dir}/images/{case}.nii.gz``, ``{preprocessed_dir}/labels/{case}.nii.gz``
    and ``{predictions_dirs[method]}/{case}.nii.gz`` (all ``(Z, H, W)``, same shape),
    shows the slice with the most ground-truth foreground and each method's case DSC
    (mean over classes). Columns follow the order of ``predictions_dirs``.
    Raises ValueError naming the file or dataset when inputs are missing or disagree.
    """
    if not predictions_dirs:
        raise ValueError(f"dataset {dataset!r}: no prediction folders given")
    rows = collect_metrics(metrics_csvs)
    rows = rows[(rows["dataset"] == dataset) & rows["method"].isin(list(predictions_dirs))]
    if rows.empty:
        raise ValueError(
            f"no metric rows for dataset {dataset!r} and methods "
            f"{list(predictions_dirs)} in {[os.fspath(p) for p in metrics_csvs]}"
        )
    case_ids = choose_qualitative_cases(rows, n_cases=n_cases, method=rank_by)
    log.info("dataset %s: qualitative cases %s", dataset, case_ids)
    folders = {"preprocessed_dir": Path(preprocessed_dir), "predictions_dirs": predictions_dirs}
    cases = [_load_case(c, dataset=dataset, rows=rows, **folders) for c in case_ids]
    label_names = dict(zip(rows["label"].astype(int), rows["label_name"], strict=True))
    ranking = f"{rank_by}'s DSC" if rank_by else "mean DSC over methods"
    title = (
        f"{dataset}: cases from worst to best {ranking}\nslice with the most "
        "ground-truth foreground; DSC per case (3D, mean over classes)"
    )
    plot_qualitative(cases=cases, out_png=out_png, title=title, label_names=label_names)
