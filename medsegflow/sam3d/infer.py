"""SAM-Med3D interactive inference: encode a crop once, then one decoder call per click.

Follows uni-medical/SAM-Med3D ``utils/infer_utils.py@7cead583`` (``sam_model_infer``):

- the crop (:mod:`medsegflow.sam3d.preprocess`) is encoded once (``model.image_encoder``);
- click k's prompt is **all clicks so far** (``points_coords = torch.cat([...])``) and the
  previous low-resolution logits as the mask prompt (zeros of ``size // 4`` per axis before
  the first click), decoded with ``multimask_output=False``;
- the low-resolution logits are upsampled trilinearly (``align_corners=False``) to the crop,
  ``sigmoid > 0.5`` is the mask, mapped from the crop onto the original grid with nearest
  neighbours (:func:`~medsegflow.sam3d.preprocess.block_to_original`, the official
  ``data_postprocess``: the original grid's outermost voxels keep their prediction).

Clicks are simulated by :mod:`medsegflow.prompts.clicks` from the object's mask **inside the
crop** (as the official script, which samples from the cropped label): an error outside the
crop cannot be clicked. When the prediction already equals the cropped reference, no click
is added and the previous prediction is repeated, so there is always one mask per click.
The crop is centred on the first click (or ``first_click_zyx``), never on the reference's
centre unless ``oracle_gt_centre`` (the official script's oracle) is asked for.

Objects larger than one crop (MedSegFlow's rule, off by default): with ``window_overlap``,
:func:`segment_labels` replaces the final mask of an object whose 3D box does not fit in
one crop by sliding crops over that box with all of its clicks
(:func:`medsegflow.sam3d.windows.window_final`); the masks after the earlier clicks stay
the single crop's.

Devices: CUDA when available, otherwise the CPU; float32 unless ``precision`` says
otherwise (:mod:`medsegflow.precision`; the official script runs float32). torch is
imported inside the functions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from medsegflow.io import Volume
from medsegflow.prompts import clicks as click_rules
from medsegflow.sam3d.preprocess import (
    CropBox,
    ModelGrid,
    block_to_original,
    crop_box,
    extract,
    gt_centre,
    model_to_original,
    original_to_model,
    prepare_crop,
    to_model_grid,
)
from medsegflow.sam3d.session import CropSession

if TYPE_CHECKING:
    from medsegflow.sam3d.windows import WindowResult

log = logging.getLogger(__name__)


@dataclass
class InteractiveResult:
    """One object's interactive run.

    ``masks``: uint8 ``original_shape_zyx`` predictions, one per click. ``clicks_ijk``:
    int64 ``(N, 4)`` ``[i, j, k, label]`` in the model frame; ``clicks_zyx``: float64
    ``(N, 3)`` the same clicks as original voxel indices. ``box``: the crop.
    ``seconds``: ``encode`` (the crop's encoder call), ``total`` (the whole object, windows
    included) and, when windows ran, ``windows``. ``windows``: the sliding crops that made
    the last mask (:func:`segment_labels`); None when the single crop made every mask.
    """

    masks: list[np.ndarray]
    clicks_ijk: np.ndarray
    clicks_zyx: np.ndarray
    box: CropBox
    seconds: dict[str, float] = field(default_factory=dict)
    windows: WindowResult | None = None


def segment_object(
    model: Any,
    grid: ModelGrid,
    object_ijk: np.ndarray,
    *,
    n_clicks: int = 5,
    mode: str = "center",
    rng: np.random.Generator | None = None,
    first_click_zyx: np.ndarray | None = None,
    first_mode: str | None = None,
    oracle_gt_centre: bool = False,
    device: str | None = None,
    precision: str = "fp32",
) -> InteractiveResult:
    """Interactive run for one object (``object_ijk``: bool/0-1 mask in the model frame).

    ``first_click_zyx``: a user's first positive click (original voxel indices) instead of
    a simulated one, otherwise drawn by ``first_mode`` (default ``mode``). ``mode``/``rng``:
    :mod:`medsegflow.prompts.clicks`. ``precision``: the crop's encoder and decoder
    (:mod:`medsegflow.precision`; the official script runs float32).
    """
    if n_clicks < 1:
        raise ValueError(f"n_clicks must be >= 1, got {n_clicks}")
    object_ijk = np.asarray(object_ijk, dtype=bool)
    started = time.perf_counter()
    if first_click_zyx is not None:
        centre = np.floor(original_to_model(first_click_zyx, grid)[0] + 0.5).astype(np.int64)
        first = np.array([*centre, 1], dtype=np.int64)
    else:
        first = click_rules.first_click(object_ijk, mode=first_mode or mode, rng=rng)
    size = int(model.image_encoder.img_size)
    box = crop_box(gt_centre(object_ijk) if oracle_gt_centre else first[:3], size)
    gt_crop = extract(object_ijk, box, fill=False)
    session = CropSession(model, prepare_crop(grid, box), device=device, precision=precision)
    encoded = time.perf_counter()
    points = [np.r_[box.to_crop(first[None, :3])[0], first[3]]]
    low_res, masks, pred_crop = session.empty_logits(), [], None
    for _ in range(n_clicks):
        if pred_crop is not None:
            click = click_rules.next_click_index(pred_crop, gt_crop, mode=mode, rng=rng)
            if click is None:
                masks.append(masks[-1].copy())
                continue
            points.append(click.astype(np.float64))
        array = np.asarray(points)
        low_res, prob = session.decode(array[:, :3], array[:, 3], low_res)
        pred_crop = prob > 0.5
        masks.append(block_to_original(pred_crop.astype(np.uint8), box.start, grid))
    clicks_ijk = np.asarray(points)
    clicks_ijk[:, :3] += np.asarray(box.start)
    return InteractiveResult(
        masks=masks,
        clicks_ijk=np.rint(clicks_ijk).astype(np.int64),
        clicks_zyx=model_to_original(clicks_ijk[:, :3], grid),
        box=box,
        seconds={
            "encode": encoded - started,
            "total": time.perf_counter() - started,
        },
    )


def interactive_segment(
    model: Any,
    image: Volume,
    object_mask: Volume,
    *,
    n_clicks: int = 5,
    mode: str = "center",
    rng: np.random.Generator | None = None,
    resample_grid: str = "torchio",
    **options: Any,
) -> InteractiveResult:
    """:func:`segment_object` from volumes: ``object_mask`` (non-zero = the object) on the
    image's grid; ``resample_grid``: :func:`~medsegflow.sam3d.preprocess.to_model_grid`.
    ``options`` go to :func:`segment_object`."""
    binary = Volume((np.asarray(object_mask.array_zyx) > 0).astype(np.uint8), image.geometry)
    grid = to_model_grid(image, label=binary, resample_grid=resample_grid)
    return segment_object(
        model, grid, grid.label_ijk > 0, n_clicks=n_clicks, mode=mode, rng=rng, **options
    )


def segment_labels(
    model: Any,
    image: Volume,
    label: Volume,
    *,
    n_clicks: int = 5,
    mode: str = "center",
    rng: np.random.Generator | None = None,
    values: list[int] | None = None,
    device: str | None = None,
    first_mode: str | None = None,
    oracle_gt_centre: bool = False,
    window_overlap: float | None = None,
    resample_grid: str = "torchio",
    precision: str = "fp32",
) -> tuple[list[np.ndarray], dict[int, InteractiveResult]]:
    """One interactive run per label value (default: every non-zero value of ``label``),
    painted into label volumes in ascending value order (a later value overwrites, as the
    official ``validate_paired_img_gt``). Returns ``(painted, results)``: ``painted[k]``
    is the uint8 zyx label volume after click ``k + 1``. The image and the label are
    resampled once; values absent after resampling are skipped with a warning.

    ``window_overlap`` (None: off): an object whose 3D box (the bounding box of
    ``label == value`` in original voxel indices, as a 3D box prompt gives it) does not fit
    in one crop gets, after its clicks, its LAST mask from sliding crops over that box that
    overlap by at least this fraction, prompted with all of its clicks
    (:func:`medsegflow.sam3d.windows.window_final`; the result's ``windows`` and
    ``seconds["windows"]``). Its earlier masks stay the single crop's: they are what the
    simulated user saw when placing the next click (drawn from the errors inside the first
    crop). The last mask is the prediction that is written and scored, so the last point
    of the click curve is the final prediction; the step to it holds both the last click
    and the windows. Objects that fit are untouched (no extra model call), so they get
    exactly the results without windows. ``resample_grid``: the model frame's grid
    (:func:`~medsegflow.sam3d.preprocess.to_model_grid`).
    """
    grid = to_model_grid(image, label=label, resample_grid=resample_grid)
    wanted = (
        sorted(int(v) for v in np.unique(label.array_zyx) if v != 0) if values is None else values
    )
    painted = [np.zeros(grid.original_shape_zyx, dtype=np.uint8) for _ in range(n_clicks)]
    results: dict[int, InteractiveResult] = {}
    for value in wanted:
        object_ijk = grid.label_ijk == value
        if not object_ijk.any():
            log.warning("label %d vanishes at the model spacing: skipped", value)
            continue
        result = segment_object(
            model,
            grid,
            object_ijk,
            n_clicks=n_clicks,
            mode=mode,
            rng=rng,
            device=device,
            first_mode=first_mode,
            oracle_gt_centre=oracle_gt_centre,
            precision=precision,
        )
        if window_overlap is not None:
            _window_last_mask(
                model,
                grid,
                label.array_zyx == value,
                result,
                value,
                window_overlap,
                device,
                precision,
            )
        for k, mask in enumerate(result.masks):
            painted[k][mask > 0] = value
        results[value] = result
    return painted, results


def _window_last_mask(
    model: Any,
    grid: ModelGrid,
    object_zyx: np.ndarray,
    result: InteractiveResult,
    value: int,
    min_overlap: float,
    device: str | None,
    precision: str = "fp32",
) -> None:
    """Replace ``result``'s last mask by the windowed one when the object needs windows."""
    from medsegflow.sam3d.windows import window_final

    windowed = window_final(
        model,
        grid,
        object_zyx,
        result.clicks_zyx,
        result.clicks_ijk[:, 3],
        min_overlap=min_overlap,
        device=device,
        precision=precision,
    )
    if windowed is None:
        return
    result.masks[-1] = windowed.mask
    result.windows = windowed
    result.seconds["windows"] = windowed.seconds
    result.seconds["total"] += windowed.seconds
    log.info(
        "label %d is larger than one %d^3 crop: %d windows planned, %d run, %.2f s",
        value,
        int(model.image_encoder.img_size),
        len(windowed.boxes),
        windowed.n_run,
        windowed.seconds,
    )
