"""Prompt-robustness curves of one 2D promptable model on one dataset.

Every object of every test slice (each label's pixels on the slice, as the GT box prompts
take them) is decoded from the model's cached features
(:meth:`~medsegflow.promptable.interface.PromptableModel.decode`), so the encoder runs
once per image for the whole curve. The curves (``curve``, ``x``):

- ``box_jitter``: MedSAM's outward jitter of each box side by 0..x px at the 1024 scale
  (:func:`medsegflow.prompts.boxes.jitter_box`), x in ``box_px``;
- ``box_shift``: the tight box moved by x px at the 1024 scale in a random direction
  (same size; clipped to the image);
- ``positive_points``: x positive points in the object (no negative), SAM's multimask
  output for a single point;
- ``negative_points``: one positive and x negative points in a ring around the object
  (:func:`medsegflow.prompts.sampling.sample_prompt`, the ``points`` prompt's rules);
- ``clicks``: x clicks of the interactive protocol from nothing: each at the centre of the
  largest error region (:func:`medsegflow.prompts.clicks.next_click`; the first is the
  object's centre), previous low-resolution logits fed back as the mask prompt.

Scores are per object (the decoder's own task): DSC and IoU of the object's mask on its
slice, averaged per case and then over cases. NoC@85 / NoC@90 (the interactive
segmentation standard) are the number of clicks an object needs to reach IoU 0.85 / 0.90,
``max_clicks`` when it never does, averaged over objects. Draws are seeded per case,
curve and x (:func:`medsegflow.seeding.case_rng`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medsegflow.promptable.interface import Prompt2D, PromptableModel
from medsegflow.prompts.boxes import SAM_LONG_SIDE, box_from_mask, jitter_box, slice_objects
from medsegflow.prompts.clicks import next_click
from medsegflow.prompts.sampling import PromptSpec, sample_prompt
from medsegflow.seeding import case_rng

log = logging.getLogger(__name__)

CURVES = ("box_jitter", "box_shift", "positive_points", "negative_points", "clicks")
CURVE_COLUMNS = ("case_id", "curve", "x", "n_objects", "dsc", "iou", "noc")
"""Per case; ``noc`` rows (curve ``noc``, x the IoU target) hold the mean clicks to reach
it over the case's objects, NaN ``dsc``/``iou``; other rows have NaN ``noc``."""
TABLE_COLUMNS = ("dataset", "model", "curve", "x", "dsc", "iou", "noc", "n_cases", "n_objects")
NOC_TARGETS = (0.85, 0.90)


@dataclass(frozen=True)
class RobustnessGrid:
    """The x values of each curve (config ``robustness:``; schema defaults)."""

    box_px: tuple[float, ...] = (0, 5, 10, 20, 40, 80)
    positive_points: tuple[int, ...] = (1, 2, 3, 5)
    negative_points: tuple[int, ...] = (0, 1, 2, 3)
    max_clicks: int = 20
    ring_px: tuple[float, float] = (3.0, 15.0)
    erosion_px: float = 2.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RobustnessGrid:
        return cls(
            box_px=tuple(float(v) for v in config.get("box_px", cls.box_px)),
            positive_points=tuple(
                int(v) for v in config.get("positive_points", cls.positive_points)
            ),
            negative_points=tuple(
                int(v) for v in config.get("negative_points", cls.negative_points)
            ),
            max_clicks=int(config.get("max_clicks", cls.max_clicks)),
        )


def shift_box(
    box_xyxy: np.ndarray, *, image_shape_yx: tuple[int, int], shift_1024: float, rng
) -> np.ndarray:
    """The box moved by ``shift_1024`` px at the 1024 scale in a uniform random direction,
    clipped to the image (its size kept unless it reaches the border)."""
    height, width = image_shape_yx
    length = shift_1024 * max(height, width) / SAM_LONG_SIDE
    angle = rng.uniform(0.0, 2.0 * math.pi)
    dx, dy = length * math.cos(angle), length * math.sin(angle)
    out = np.asarray(box_xyxy, dtype=np.float64) + np.array([dx, dy, dx, dy])
    out[[0, 2]] = np.clip(out[[0, 2]], 0.0, width - 1)
    out[[1, 3]] = np.clip(out[[1, 3]], 0.0, height - 1)
    return out


def _scores(masks_pyx: np.ndarray, targets_pyx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    inter = (masks_pyx & targets_pyx).sum(axis=(1, 2)).astype(np.float64)
    pred, gt = masks_pyx.sum(axis=(1, 2)), targets_pyx.sum(axis=(1, 2))
    dsc = 2 * inter / np.maximum(pred + gt, 1)
    iou = inter / np.maximum(pred + gt - inter, 1)
    return dsc, iou


@dataclass
class _Slice:
    features: dict[str, np.ndarray]
    targets: np.ndarray  # bool (P, H, W)
    sizes: tuple[tuple[int, int], tuple[int, int]]


def _decode(
    model: PromptableModel,
    sl: _Slice,
    prompts: list[Prompt2D],
    *,
    multimask: bool,
    mask_inputs=None,
):
    original, input_size = sl.sizes
    return model.decode(
        sl.features,
        prompts,
        original_size=original,
        input_size=input_size,
        multimask=multimask,
        mask_inputs=mask_inputs,
    )


def _prompt_curves(model, slices: list[_Slice], grid: RobustnessGrid, rng_of) -> list[dict]:
    """(curve, x, dsc, iou) rows of every object for the box and point curves."""
    rows = []
    variants: list[tuple[str, float]] = [("box_jitter", x) for x in grid.box_px]
    variants += [("box_shift", x) for x in grid.box_px]
    variants += [("positive_points", x) for x in grid.positive_points]
    variants += [("negative_points", x) for x in grid.negative_points]
    for curve, x in variants:
        rng = rng_of(curve, x)
        spec = PromptSpec(
            type="points",
            jitter=0.0,
            n_positive=int(x) if curve == "positive_points" else 1,
            n_negative=int(x) if curve == "negative_points" else 0,
            erosion_px=grid.erosion_px,
            ring_px=grid.ring_px,
            components="union",
            repeats=1,
        )
        dscs, ious = [], []
        for sl in slices:
            prompts = []
            for target in sl.targets:
                if curve == "box_jitter":
                    box = jitter_box(
                        box_from_mask(target),
                        image_shape_yx=target.shape,
                        max_shift_1024=x,
                        rng=rng,
                    )
                    prompts.append(Prompt2D(box, np.zeros((0, 3))))
                elif curve == "box_shift":
                    box = shift_box(
                        box_from_mask(target), image_shape_yx=target.shape, shift_1024=x, rng=rng
                    )
                    prompts.append(Prompt2D(box, np.zeros((0, 3))))
                else:
                    _, points = sample_prompt(target, spec=spec, rng=rng)
                    prompts.append(Prompt2D(None, points.astype(np.float64)))
            single_point = (
                curve != "box_jitter"
                and curve != "box_shift"
                and (spec.n_positive + spec.n_negative == 1)
            )
            decoded = _decode(model, sl, prompts, multimask=single_point)
            dsc, iou = _scores(decoded.masks_pyx, sl.targets)
            dscs.append(dsc)
            ious.append(iou)
        rows.append(
            {
                "curve": curve,
                "x": float(x),
                "dsc": np.concatenate(dscs),
                "iou": np.concatenate(ious),
            }
        )
    return rows


def _click_curve(model, slices: list[_Slice], grid: RobustnessGrid) -> list[dict]:
    """Per click count 1..max_clicks, the (dsc, iou) of every object."""
    per_click = [([], []) for _ in range(grid.max_clicks)]
    for sl in slices:
        n = len(sl.targets)
        points = [np.zeros((0, 3)) for _ in range(n)]
        masks = np.zeros_like(sl.targets)
        low_res = None
        for k in range(grid.max_clicks):
            for i in range(n):
                click = next_click(masks[i], sl.targets[i], mode="center")
                if click is not None:
                    points[i] = np.concatenate([points[i], click[None].astype(np.float64)])
            prompts = [Prompt2D(None, p) for p in points]
            decoded = _decode(model, sl, prompts, multimask=k == 0, mask_inputs=low_res)
            masks, low_res = decoded.masks_pyx, decoded.low_res_pchw
            dsc, iou = _scores(masks, sl.targets)
            per_click[k][0].append(dsc)
            per_click[k][1].append(iou)
    return [
        {"curve": "clicks", "x": float(k + 1), "dsc": np.concatenate(d), "iou": np.concatenate(i)}
        for k, (d, i) in enumerate(per_click)
        if d
    ]


def case_slices(cached, label_zyx: np.ndarray, label_values: Sequence[int]) -> list[_Slice]:
    """The embedded slices of one case with their objects (one per label present)."""
    by_z: dict[int, list[np.ndarray]] = {}
    for z, _, mask_yx in slice_objects(label_zyx, label_values=label_values):
        if z in set(int(v) for v in cached.z):
            by_z.setdefault(int(z), []).append(mask_yx.astype(bool))
    return [
        _Slice(
            cached.features(z),
            np.stack(masks),
            (cached.original_size, cached.input_size),
        )
        for z, masks in sorted(by_z.items())
    ]


def case_curves(
    model,
    cached,
    label_zyx: np.ndarray,
    *,
    case_id: str,
    label_values: Sequence[int],
    grid: RobustnessGrid,
    seed: int,
    name: str,
) -> tuple[pd.DataFrame, np.ndarray]:
    """``(rows of CURVE_COLUMNS for one case, (objects, max_clicks) IoU after each click)``."""
    slices = case_slices(cached, label_zyx, label_values)
    if not slices:
        return pd.DataFrame(columns=list(CURVE_COLUMNS)), np.zeros((0, grid.max_clicks))
    # (an empty case has no object: it adds no row)

    def rng_of(curve: str, x: float) -> np.random.Generator:
        return case_rng(seed, case_id, "robustness", name, curve, f"{x:g}")

    results = _prompt_curves(model, slices, grid, rng_of) + _click_curve(model, slices, grid)
    rows = [
        {
            "case_id": case_id,
            "curve": r["curve"],
            "x": r["x"],
            "n_objects": len(r["dsc"]),
            "dsc": float(r["dsc"].mean()),
            "iou": float(r["iou"].mean()),
            "noc": math.nan,
        }
        for r in results
    ]
    clicks = np.stack([r["iou"] for r in results if r["curve"] == "clicks"], axis=1)
    for target in NOC_TARGETS:
        needed = clicks_to_reach(clicks, target, grid.max_clicks)
        rows.append(
            {
                "case_id": case_id,
                "curve": "noc",
                "x": target,
                "n_objects": len(needed),
                "dsc": math.nan,
                "iou": math.nan,
                "noc": float(needed.mean()),
            }
        )
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS)), clicks


def summarise_curves(per_case: pd.DataFrame, *, dataset: str, model: str) -> pd.DataFrame:
    """:data:`TABLE_COLUMNS`: the mean over cases of each (curve, x)."""
    grouped = per_case.groupby(["curve", "x"], sort=False)
    table = grouped.agg(
        dsc=("dsc", "mean"),
        iou=("iou", "mean"),
        noc=("noc", "mean"),
        n_cases=("case_id", "nunique"),
        n_objects=("n_objects", "sum"),
    ).reset_index()
    table.insert(0, "model", model)
    table.insert(0, "dataset", dataset)
    return table.reindex(columns=list(TABLE_COLUMNS))


def clicks_to_reach(iou_after_click: np.ndarray, target: float, max_clicks: int) -> np.ndarray:
    """Per object, the first click count (1-based) with IoU >= ``target``; ``max_clicks``
    when none reaches it (the NoC convention)."""
    iou = np.asarray(iou_after_click, dtype=np.float64)
    reached = iou >= target
    first = np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, max_clicks)
    return first.astype(np.int64)
