"""Qualitative figures that show what each method was given and what it did.

One figure per dataset (``results/figures/qualitative_{dataset}.png``): one row per method,
one column per chosen case of **that method**, from its worst to its best case by its own
DSC (per case, the mean over classes; by default worst, median and best). Each panel is
the case's slice with the largest reference area (3D) or the image (2D), with

- the reference's contours (solid) and the prediction's (dashed), each class in its
  :func:`class_colour`;
- the prompt the method was given on that slice, as read from its ``prompts.tsv`` (the
  first repeat; a 3D box on every slice of its z range): boxes as yellow rectangles,
  positive points as green ``+``, negative points as red ``x``;
- for interactive methods, the simulated clicks of the case on that slice
  (``clicks/{case}.npz``, :mod:`medsegflow.interactive`), numbered;

and the view zoomed onto the reference, the prediction and the prompt when they fill
little of the image. Figures are drawn on a bare :class:`matplotlib.figure.Figure` and
saved atomically (:func:`medsegflow.plots.save_png`).
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
from matplotlib.patches import Rectangle

from medsegflow.interactive import click_volumes_path, read_click_volumes
from medsegflow.io import read_volume
from medsegflow.manifests import parse_points, read_prompts
from medsegflow.plots import save_png
from medsegflow.tables import collect_metrics

log = logging.getLogger(__name__)

PROMPT_COLOUR = (1.0, 0.84, 0.0)  # yellow boxes
POSITIVE_COLOUR = (0.15, 0.85, 0.25)
NEGATIVE_COLOUR = (0.95, 0.15, 0.15)
_CLASS_ORDER = (1, 4, 6, 9, 5, 8, 7, 0, 2, 3)  # tab10 without green, red, blue, yellow first
_ZOOM_BELOW = 0.6  # zoom when the content spans less than this fraction of both axes
_MIN_VIEW_PX = 32
_MIN_FIGURE_WIDTH_IN = 7.8  # room for the title and the legend with a single column


def class_colour(label: int) -> tuple[float, float, float]:
    """Colour of class ``label`` (>= 1), the same in every figure.

    The tab10 palette, reordered so that the first five classes avoid the prompt colours
    (green, red, yellow) and blue; labels above 10 cycle.
    """
    palette = sns.color_palette("tab10", 10)
    return tuple(palette[_CLASS_ORDER[(int(label) - 1) % len(_CLASS_ORDER)]])


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class SlicePrompt:
    """What a method was given on one slice, in pixel coordinates of the slice.

    ``boxes``: float ``(N, 4)`` ``x_min, y_min, x_max, y_max``; ``points``: int ``(M, 3)``
    ``x, y, positive``; ``clicks``: int ``(K, 4)`` ``x, y, positive, click number``.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))
    clicks: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))

    def describe(self) -> str:
        """``"1 box, 2 points, 3 clicks"``: what the slice shows (empty: nothing)."""
        counts = (("box", "boxes", self.boxes), ("point", "points", self.points))
        counts += (("click", "clicks", self.clicks),)
        return ", ".join(
            f"{len(a)} {one if len(a) == 1 else many}" for one, many, a in counts if len(a)
        )


def prompts_on_slice(prompts: pd.DataFrame, case_id: str, z: int, *, source: str) -> SlicePrompt:
    """The boxes and points of ``prompts`` (a :func:`~medsegflow.manifests.read_prompts`
    table) that case ``case_id`` was given on slice ``z``: the first repeat's rows whose z
    range holds ``z`` (a 2D prompt's range is its slice, a 3D box's its extent)."""
    rows = prompts[
        (prompts["case_id"] == case_id)
        & (prompts["repeat"] == 0)
        & (prompts["z_min"] <= z)
        & (prompts["z_max"] >= z)
    ]
    coords = rows[["x_min", "y_min", "x_max", "y_max"]].to_numpy(np.float64)
    boxes = coords[np.isfinite(coords).all(axis=1)]
    points = [parse_points(text, source=source) for text in rows["points"]]
    points_xyl = np.concatenate(points) if points else np.zeros((0, 3), np.int64)
    return SlicePrompt(boxes=boxes, points=points_xyl)


def clicks_on_slice(clicks: pd.DataFrame, z: int) -> np.ndarray:
    """int ``(K, 4)`` ``x, y, positive, click`` of the clicks (an
    :data:`~medsegflow.interactive.CLICK_TABLE_COLUMNS` table) placed on slice ``z``."""
    on = clicks[clicks["z"] == z]
    return on[["x", "y", "positive", "click"]].to_numpy(np.int64).reshape(-1, 4)


# --------------------------------------------------------------------------- panels


@dataclass(frozen=True)
class QualPanel:
    """One panel: ``method``'s prediction of one case on slice ``z``.

    ``image_yx`` is a 2D array; ``gt_yx`` and ``pred_yx`` are integer label maps of its
    shape (0 = background); ``dsc``: the case's DSC (mean over classes, NaN: none);
    ``rank``: the column's name (``worst``, ``median``, ``best``, ...).
    """

    method: str
    case_id: str
    z: int
    rank: str
    image_yx: np.ndarray
    gt_yx: np.ndarray
    pred_yx: np.ndarray
    dsc: float
    prompt: SlicePrompt = field(default_factory=SlicePrompt)
    n_slices: int = 1


def _check_panel(panel: QualPanel) -> None:
    name = f"{panel.method}/{panel.case_id}"
    if panel.image_yx.ndim != 2:
        raise ValueError(f"panel {name}: image must be 2D, got shape {panel.image_yx.shape}")
    for what, array in (("reference", panel.gt_yx), ("prediction", panel.pred_yx)):
        if array.shape != panel.image_yx.shape:
            raise ValueError(
                f"panel {name}: {what} has shape {array.shape}, image {panel.image_yx.shape}"
            )


def _normalise(image_yx: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] between the 0.5 and 99.5 percentiles (constant image -> zeros)."""
    image = np.asarray(image_yx, dtype=np.float64)
    low, high = np.percentile(image, [0.5, 99.5])
    if high <= low:
        return np.zeros_like(image)
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def view_window(panel: QualPanel) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` inclusive pixel bounds shown: the whole slice, or, when the
    reference, the prediction and the prompt together span less than 60% of both axes,
    their bounding box with a margin of a quarter of its size (at least 32 px a side)."""
    height, width = panel.gt_yx.shape
    ys, xs = [], []
    for mask in (panel.gt_yx > 0, panel.pred_yx > 0):
        yy, xx = np.nonzero(mask)
        ys += [yy.min(), yy.max()] if len(yy) else []
        xs += [xx.min(), xx.max()] if len(xx) else []
    prompt = panel.prompt
    for box in prompt.boxes:
        xs += [box[0], box[2]]
        ys += [box[1], box[3]]
    for points in (prompt.points, prompt.clicks):
        xs += list(points[:, 0])
        ys += list(points[:, 1])
    full = (0, height - 1, 0, width - 1)
    if not ys:
        return full
    y0, y1, x0, x1 = min(ys), max(ys), min(xs), max(xs)
    if (y1 - y0) >= _ZOOM_BELOW * height or (x1 - x0) >= _ZOOM_BELOW * width:
        return full
    side = max(_MIN_VIEW_PX, 1.5 * max(y1 - y0, x1 - x0))
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    half = side / 2.0
    y0, y1 = int(max(0, math.floor(cy - half))), int(min(height - 1, math.ceil(cy + half)))
    x0, x1 = int(max(0, math.floor(cx - half))), int(min(width - 1, math.ceil(cx + half)))
    return y0, y1, x0, x1


def _draw_contours(ax, label_yx: np.ndarray, *, linestyle: str, width: float) -> None:
    for value in (int(v) for v in np.unique(label_yx) if v > 0):
        mask = (label_yx == value).astype(np.float32)
        ax.contour(
            mask,
            levels=[0.5],
            colors=[class_colour(value)],
            linewidths=width,
            linestyles=linestyle,
        )


def _draw_prompt(ax, prompt: SlicePrompt) -> None:
    for x0, y0, x1, y1 in prompt.boxes:
        ax.add_patch(
            Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=PROMPT_COLOUR, lw=1.2)
        )
    for x, y, positive in prompt.points:
        marker, colour = ("+", POSITIVE_COLOUR) if positive else ("x", NEGATIVE_COLOUR)
        ax.plot(x, y, marker=marker, color=colour, markersize=8, mew=2.2, ls="none")
    for x, y, positive, number in prompt.clicks:
        marker, colour = ("+", POSITIVE_COLOUR) if positive else ("x", NEGATIVE_COLOUR)
        ax.plot(x, y, marker=marker, color=colour, markersize=8, mew=2.2, ls="none")
        ax.annotate(
            str(number),
            (x, y),
            xytext=(3, 3),
            textcoords="offset points",
            color=colour,
            fontsize=7,
            fontweight="bold",
        )


def _dsc_text(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def draw_panel(ax, panel: QualPanel) -> None:
    """Draw one panel on ``ax``: image, contours, prompt, zoomed view, title."""
    _check_panel(panel)
    ax.imshow(_normalise(panel.image_yx), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    _draw_contours(ax, panel.gt_yx, linestyle="solid", width=1.6)
    _draw_contours(ax, panel.pred_yx, linestyle="dashed", width=1.3)
    _draw_prompt(ax, panel.prompt)
    y0, y1, x0, x1 = view_window(panel)
    ax.set_xlim(x0 - 0.5, x1 + 0.5)
    ax.set_ylim(y1 + 0.5, y0 - 0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    where = f", z={panel.z}" if panel.n_slices > 1 else ""
    prompt = panel.prompt.describe()
    ax.set_title(
        f"{panel.rank}: {panel.case_id}{where}\nDSC {_dsc_text(panel.dsc)}"
        + (f"; {prompt}" if prompt else ""),
        fontsize=7,
    )


def _legend_handles(labels: Sequence[int], label_names: Mapping[int, str]) -> list:
    handles = [
        Line2D([], [], color=class_colour(v), lw=2, label=f"{v}: {label_names.get(v, v)}")
        for v in labels
    ]
    grey = (0.4, 0.4, 0.4)
    handles += [
        Line2D([], [], color=grey, lw=1.6, ls="solid", label="reference"),
        Line2D([], [], color=grey, lw=1.3, ls="dashed", label="prediction"),
        Line2D([], [], color=PROMPT_COLOUR, lw=1.2, label="box prompt"),
        Line2D([], [], color=POSITIVE_COLOUR, marker="+", mew=2, ls="none", label="positive"),
        Line2D([], [], color=NEGATIVE_COLOUR, marker="x", mew=2, ls="none", label="negative"),
    ]
    return handles


def plot_qualitative(
    *,
    rows: Mapping[str, Sequence[QualPanel]],
    out_png: str | os.PathLike,
    title: str = "",
    label_names: Mapping[int, str] | None = None,
) -> None:
    """Draw one row of panels per method (``rows``: method -> its panels, worst first).

    Raises ValueError when no method has a panel or a panel's arrays disagree in shape.
    """
    rows = {method: list(panels) for method, panels in rows.items() if panels}
    if not rows:
        raise ValueError("plot_qualitative: no panels given")
    for panels in rows.values():
        for panel in panels:
            _check_panel(panel)
    ncols = max(len(p) for p in rows.values())
    width = max(2.4 * ncols + 0.6, _MIN_FIGURE_WIDTH_IN)
    fig = Figure(figsize=(width, 2.55 * len(rows) + 1.2), layout="constrained")
    grid = fig.subplots(len(rows), ncols, squeeze=False)
    labels: set[int] = set()
    for axes, (method, panels) in zip(grid, rows.items(), strict=True):
        for ax, panel in zip(axes, panels, strict=False):
            draw_panel(ax, panel)
            labels |= {int(v) for v in np.unique(panel.gt_yx) if v > 0}
        for ax in axes[len(panels) :]:
            ax.set_axis_off()
        axes[0].set_ylabel(method, fontsize=8)
    handles = _legend_handles(sorted(labels), label_names or {})
    fig.legend(
        handles=handles,
        loc="outside lower center",
        fontsize=7,
        ncols=min(6, len(handles)),
        frameon=False,
    )
    if title:
        fig.suptitle(title, fontsize=9)
    save_png(fig, out_png)


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


def rank_names(n: int) -> list[str]:
    """Column names of ``n`` picks from worst to best: ``worst, median, best`` for 3."""
    if n == 1:
        return ["worst"]
    names = [f"{round(100 * k / (n - 1))}th pct" for k in range(n)]
    names[0], names[-1] = "worst", "best"
    if n % 2 == 1:
        names[n // 2] = "median"
    return names


def choose_qualitative_slice(label_zyx: np.ndarray) -> int:
    """Index z of the slice of a ``(Z, H, W)`` label volume with the largest reference area.

    Ties go to the lowest z; an all-background volume gives the middle slice.
    """
    label_zyx = np.asarray(label_zyx)
    if label_zyx.ndim != 3:
        raise ValueError(f"expected a (Z, H, W) label volume, got shape {label_zyx.shape}")
    counts = (label_zyx > 0).sum(axis=(1, 2))
    if counts.max() == 0:
        return label_zyx.shape[0] // 2
    return int(np.argmax(counts))


# --------------------------------------------------------------------------- from files


def _read_checked(path: Path, shape: tuple[int, ...] | None, reference: Path | None) -> np.ndarray:
    array = read_volume(path, colour="rgb").array_zyx  # a colour image is shown in colour
    if shape is not None and array.shape[:3] != shape:
        raise ValueError(f"{path}: shape {array.shape} differs from {reference} shape {shape}")
    return array


class _CaseReader:
    """Each case's image, reference and chosen slice, read once for all methods."""

    def __init__(self, preprocessed_dir: Path) -> None:
        self.root = preprocessed_dir
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}

    def label_path(self, case_id: str) -> Path:
        return self.root / "labels" / f"{case_id}.nii.gz"

    def __call__(self, case_id: str) -> tuple[np.ndarray, np.ndarray, int]:
        if case_id not in self._cache:
            label_path = self.label_path(case_id)
            gt = _read_checked(label_path, None, None)
            image_path = self.root / "images" / f"{case_id}.nii.gz"
            image = _read_checked(image_path, gt.shape, label_path)
            self._cache[case_id] = (image, gt, choose_qualitative_slice(gt))
        return self._cache[case_id]


def _method_panels(
    method: str,
    *,
    rows: pd.DataFrame,
    n_cases: int,
    cases: _CaseReader,
    prediction_dir: Path,
    prompts: pd.DataFrame | None,
    prompts_source: str,
    interactive: bool,
) -> list[QualPanel]:
    mine = rows[rows["method"] == method]
    if not mine["dsc"].notna().any():
        log.warning("%s: no case with a finite DSC, left out of the figure", method)
        return []
    case_ids = choose_qualitative_cases(mine, n_cases=n_cases)
    dscs = mine.groupby("case_id")["dsc"].mean()
    ranks = ["only case"] if dscs.notna().sum() == 1 else rank_names(len(case_ids))
    panels = []
    for case_id, rank in zip(case_ids, ranks, strict=True):
        image, gt, z = cases(case_id)
        pred = _read_checked(
            prediction_dir / f"{case_id}.nii.gz", gt.shape, cases.label_path(case_id)
        )
        prompt = SlicePrompt()
        if prompts is not None:
            prompt = prompts_on_slice(prompts, case_id, z, source=prompts_source)
        if interactive:
            _, clicks, _ = read_click_volumes(click_volumes_path(prediction_dir, case_id), gt.shape)
            prompt = SlicePrompt(prompt.boxes, prompt.points, clicks_on_slice(clicks, z))
        panels.append(
            QualPanel(
                method=method,
                case_id=case_id,
                z=z,
                rank=rank,
                image_yx=image[z],
                gt_yx=gt[z],
                pred_yx=pred[z],
                dsc=float(dscs[case_id]),
                prompt=prompt,
                n_slices=gt.shape[0],
            )
        )
    log.info("%s: cases %s", method, ", ".join(f"{p.rank} {p.case_id}" for p in panels))
    return panels


def render_qualitative_figure(
    *,
    dataset: str,
    metrics_csvs: Sequence[str | os.PathLike],
    preprocessed_dir: str | os.PathLike,
    predictions_dirs: Mapping[str, str | os.PathLike],
    n_cases: int,
    out_png: str | os.PathLike,
    prompt_files: Mapping[str, str | os.PathLike] | None = None,
    interactive: Sequence[str] = (),
) -> dict[str, list[QualPanel]]:
    """Render the qualitative figure of one dataset from files on disk; return its panels
    (method -> panels, worst first).

    Reads the per-method metric CSVs (``results/metrics/{dataset}/{method}.csv``); for each
    method of ``predictions_dirs`` (rows in that order) picks ``n_cases`` of its cases with
    :func:`choose_qualitative_cases` by its own DSC, and reads
    ``{preprocessed_dir}/images|labels/{case}.nii.gz``, ``{predictions_dirs[method]}/
    {case}.nii.gz``, the method's prompts (``prompt_files[method]``, a ``prompts.tsv``) and,
    for the methods in ``interactive``, its ``clicks/{case}.npz``. Raises ValueError or
    :class:`~medsegflow.errors.InputError` naming the file or dataset when inputs are
    missing or disagree.
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
    prompt_files = dict(prompt_files or {})
    tables = {os.fspath(p): read_prompts(p) for p in dict.fromkeys(prompt_files.values())}
    cases = _CaseReader(Path(preprocessed_dir))
    panel_rows = {}
    for method, folder in predictions_dirs.items():
        source = prompt_files.get(method)
        panel_rows[method] = _method_panels(
            method,
            rows=rows,
            n_cases=n_cases,
            cases=cases,
            prediction_dir=Path(folder),
            prompts=tables[os.fspath(source)] if source is not None else None,
            prompts_source=os.fspath(source) if source is not None else "",
            interactive=method in interactive,
        )
    label_names = dict(zip(rows["label"].astype(int), rows["label_name"], strict=True))
    title = (
        f"{dataset}: each method's worst to best case by its own DSC (mean over classes)\n"
        "slice with the largest reference area; solid: reference, dashed: prediction, "
        "with the prompt the method was given"
    )
    plot_qualitative(rows=panel_rows, out_png=out_png, title=title, label_names=label_names)
    return panel_rows
