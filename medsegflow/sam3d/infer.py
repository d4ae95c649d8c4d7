"""SAM-Med3D interactive inference: encode a crop once, then one decoder call per click.

These functions take a volume or a model grid (the conformance tests', the unit tests' and
the benchmark's entry points); each runs the one implementation the predictor runs: a
:class:`~medsegflow.sam3d.promptable.Sam3dSession` driven by the generic 3D protocol's
simulated user (:mod:`medsegflow.promptable.volume_protocol`). The session follows
uni-medical/SAM-Med3D ``utils/infer_utils.py@7cead583`` (``sam_model_infer``):

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
(:func:`medsegflow.sam3d.windows.window_final_box`, the session's ``finish``); the masks
after the earlier clicks stay the single crop's.

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
from medsegflow.promptable.interface import Interaction
from medsegflow.promptable.volume_protocol import (
    ClickOptions,
    case_objects,
    run_clicks,
    segment_volume,
)
from medsegflow.sam3d.preprocess import CropBox, ModelGrid, model_to_original, to_model_grid
from medsegflow.sam3d.promptable import ObjectRecord, Sam3dPromptable, Sam3dSession

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


def _result(masks: list[np.ndarray], record: ObjectRecord, grid: ModelGrid) -> InteractiveResult:
    points = np.asarray(record.points_ijk, dtype=np.float64)
    return InteractiveResult(
        masks=[np.asarray(m, dtype=np.uint8) for m in masks],
        clicks_ijk=np.rint(points).astype(np.int64),
        clicks_zyx=model_to_original(points[:, :3], grid),
        box=record.box,
        seconds=dict(record.seconds),
        windows=record.windows,
    )


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
    """Interactive run for one object (``object_ijk``: bool/0-1 mask in the model frame):
    the generic protocol's clicks (:func:`~medsegflow.promptable.volume_protocol.run_clicks`)
    through a :class:`~medsegflow.sam3d.promptable.Sam3dSession` pinned to the object.

    ``first_click_zyx``: a user's first positive click (original voxel indices) instead of
    a simulated one, otherwise drawn by ``first_mode`` (default ``mode``). ``mode``/``rng``:
    :mod:`medsegflow.prompts.clicks`. ``precision``: the crop's encoder and decoder
    (:mod:`medsegflow.precision`; the official script runs float32).
    """
    if n_clicks < 1:
        raise ValueError(f"n_clicks must be >= 1, got {n_clicks}")
    started = time.perf_counter()
    session = Sam3dSession(
        model,
        grid,
        device=device,
        precision=precision,
        crop_centre="gt_centre" if oracle_gt_centre else "first_click",
        object_ijk=np.asarray(object_ijk, dtype=bool),
    )
    first = []
    if first_click_zyx is not None:
        first = [Interaction(kind="points3d", point_zyx=tuple(np.asarray(first_click_zyx).ravel()))]
    run = run_clicks(
        session,
        None,
        first,
        options=ClickOptions(n_clicks - 1, mode=mode, first=first_mode or mode),
        rng=rng,
    )
    if run.skipped:
        raise ValueError("segment_object: the object is empty in the model frame")
    result = _result(run.masks, session.records[-1], grid)
    result.seconds["total"] = time.perf_counter() - started
    return result


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
    official ``validate_paired_img_gt``): the generic protocol
    (:func:`~medsegflow.promptable.volume_protocol.segment_volume`) with a
    :class:`~medsegflow.sam3d.promptable.Sam3dSession`, the predictor's path. Returns
    ``(painted, results)``: ``painted[k]`` is the uint8 zyx label volume after click
    ``k + 1``. The image is resampled once; values absent after resampling are skipped
    with a warning.

    ``window_overlap`` (None: off): an object whose 3D box (the bounding box of
    ``label == value`` in original voxel indices, as a 3D box prompt gives it) does not fit
    in one crop gets, after its clicks, its LAST mask from sliding crops over that box that
    overlap by at least this fraction, prompted with all of its clicks
    (:func:`medsegflow.sam3d.windows.window_final_box`; the result's ``windows`` and
    ``seconds["windows"]``). Its earlier masks stay the single crop's: they are what the
    simulated user saw when placing the next click (drawn from the errors inside the first
    crop). The last mask is the prediction that is written and scored, so the last point
    of the click curve is the final prediction; the step to it holds both the last click
    and the windows. Objects that fit are untouched (no extra model call), so they get
    exactly the results without windows. ``resample_grid``: the model frame's grid
    (:func:`~medsegflow.sam3d.preprocess.to_model_grid`).
    """
    grid = to_model_grid(image, resample_grid=resample_grid)
    session = Sam3dPromptable(
        model,
        device=device,
        precision=precision,
        crop_centre="gt_centre" if oracle_gt_centre else "first_click",
        window_overlap=window_overlap,
        resample_grid=resample_grid,
    ).session_on(grid)
    objects = case_objects(label.array_zyx, None, Sam3dPromptable.native_prompts, source="")
    if values is not None:
        objects = [o for o in objects if o.label in values]
    painted, _, runs = segment_volume(
        session,
        label.array_zyx,
        objects,
        options=ClickOptions(n_clicks - 1, mode=mode, first=first_mode or mode),
        rng=rng,
    )
    records = iter(session.records)
    results = {
        obj.label: _result(run.masks, next(records), grid)
        for obj, run in zip(objects, runs, strict=True)
        if not run.skipped
    }
    return list(painted.astype(np.uint8)), results
