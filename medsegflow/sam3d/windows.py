"""Sliding SAM-Med3D crops over an object larger than one crop (MedSegFlow's rule).

SAM-Med3D itself segments one cube (128 voxels of 1.5 mm, 192 mm) per object
(``utils/infer_utils.py@7cead583``); an object reaching beyond it is cut off. Here the
object's extent comes from its prompt, a 3D box or the set of clicks (original voxel
indices, mapped to the model frame); :func:`~medsegflow.sam3d.preprocess.window_boxes`
covers it with overlapping cubes (at least ``min_overlap`` of a cube between neighbours).

Each cube is encoded on its own (its own z-normalisation) and decoded once, with a zero
mask prompt and as points the clicks that fall inside it; a cube without a click gets one
positive click at the centre of the box's part inside it when a box was given, and is
skipped otherwise. The cubes' probabilities (sigmoid of the upsampled logits) are averaged
per voxel over the cubes that ran and cover it, and ``mean > 0.5`` is the mask, mapped
onto the original grid from the block the cubes span (padding included, so the original
grid's outermost voxels keep their prediction, as with one crop). The cost is one
encoder call per cube (``WindowResult.seconds``).

In the interactive predictor (``windows: {enabled: true}`` of a ``sam3d`` method,
:func:`window_final`): after an object's clicks, an object whose 3D box does not fit in
one crop gets its final mask from :func:`segment_windows` over that box with all of its
clicks. The box is the reference object's bounding box in original voxel indices
(:func:`reference_box_zyx`, the box3d prompt's tight box), the box a user's 3D box prompt
gives; it only places and seeds the cubes, nothing is centred on the reference's centre.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from medsegflow.io import Volume
from medsegflow.prompts.propagation import box_3d_from_mask
from medsegflow.sam3d.preprocess import (
    CropBox,
    ModelGrid,
    block_to_original,
    box_to_model,
    original_to_model,
    paste,
    prepare_crop,
    to_model_grid,
    window_boxes,
)
from medsegflow.sam3d.session import CropSession


@dataclass
class WindowResult:
    """``mask``: uint8 ``original_shape_zyx``; ``boxes``: the cubes planned; ``n_run``:
    those decoded; ``seconds``: wall time of the whole call."""

    mask: np.ndarray
    boxes: list[CropBox]
    n_run: int
    seconds: float


def _window_prompt(
    box: CropBox, points_ijk: np.ndarray, labels: np.ndarray, extent: tuple | None
) -> tuple[np.ndarray, np.ndarray] | None:
    inside = box.contains(points_ijk) if len(points_ijk) else np.zeros(0, bool)
    if inside.any():
        return box.to_crop(points_ijk[inside]), labels[inside]
    if extent is None:
        return None
    lo = np.maximum(extent[0], box.start)
    hi = np.minimum(extent[1], np.asarray(box.stop) - 1)
    return box.to_crop(((lo + hi) / 2.0)[None]), np.ones(1, dtype=np.int64)


def segment_windows(
    model: Any,
    image: Volume | None,
    *,
    box_zyx: np.ndarray | None = None,
    clicks_zyx: np.ndarray | None = None,
    click_labels: np.ndarray | None = None,
    min_overlap: float = 0.25,
    grid: ModelGrid | None = None,
    device: str | None = None,
    precision: str = "fp32",
) -> WindowResult:
    """Segment one object from a box ``[[z0, y0, x0], [z1, y1, x1]]`` (inclusive original
    voxel indices) and/or clicks ``(N, 3)`` zyx with labels ``(N,)`` (default all
    positive), with as many cubes as its extent needs. ``grid``: the image already in the
    model frame (:func:`~medsegflow.sam3d.preprocess.to_model_grid`); ``image`` may then
    be None."""
    started = time.perf_counter()
    if box_zyx is None and clicks_zyx is None:
        raise ValueError("segment_windows needs a box or clicks")
    if grid is None:
        if image is None:
            raise ValueError("segment_windows needs the image or its model grid")
        grid = to_model_grid(image)
    points = np.zeros((0, 3))
    labels = np.zeros(0, dtype=np.int64)
    if clicks_zyx is not None:
        points = original_to_model(clicks_zyx, grid)
        labels = (
            np.ones(len(points), np.int64) if click_labels is None else np.asarray(click_labels)
        )
    extent = box_to_model(box_zyx, grid) if box_zyx is not None else None
    if extent is None:
        positives = points[labels == 1]
        if not len(positives):
            raise ValueError("segment_windows: no box and no positive click")
        lo_hi = (positives.min(axis=0), positives.max(axis=0))
    else:
        lo_hi = extent
    size = int(model.image_encoder.img_size)
    boxes = window_boxes(*lo_hi, size, min_overlap=min_overlap)
    start = np.min([b.start for b in boxes], axis=0)
    span = tuple(int(v) for v in np.max([b.stop for b in boxes], axis=0) - start)
    total = np.zeros(span, np.float32)
    count = np.zeros(span, np.float32)
    n_run = 0
    for box in boxes:
        prompt = _window_prompt(box, points, labels, extent)
        if prompt is None:
            continue
        session = CropSession(model, prepare_crop(grid, box), device=device, precision=precision)
        _, prob = session.decode(*prompt, session.empty_logits())
        local = CropBox(tuple(int(v) for v in np.asarray(box.start) - start), box.size)
        total += paste(prob.astype(np.float32), local, span)
        count += paste(np.ones_like(prob, np.float32), local, span)
        n_run += 1
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    mask = block_to_original((mean > 0.5).astype(np.uint8), tuple(int(v) for v in start), grid)
    return WindowResult(mask, boxes, n_run, time.perf_counter() - started)


def reference_box_zyx(object_zyx: np.ndarray) -> np.ndarray:
    """The 3D box prompt of an object mask ``(Z, Y, X)``: ``[[z0, y0, x0], [z1, y1, x1]]``,
    inclusive original voxel indices (:func:`~medsegflow.prompts.propagation.box_3d_from_mask`,
    the tight box of the box3d prompts, in this module's layout)."""
    box_xyxy, (z0, z1) = box_3d_from_mask(object_zyx)
    x0, y0, x1, y1 = box_xyxy
    return np.array([[z0, y0, x0], [z1, y1, x1]], dtype=np.float64)


def window_final(
    model: Any,
    grid: ModelGrid,
    object_zyx: np.ndarray,
    clicks_zyx: np.ndarray,
    click_labels: np.ndarray,
    *,
    min_overlap: float = 0.25,
    device: str | None = None,
    precision: str = "fp32",
) -> WindowResult | None:
    """The windowed final mask of one object after its interactive clicks, or None when
    its box fits in one crop (the single-crop run is then kept as it is).

    ``object_zyx``: the reference object on the original grid, whose
    :func:`reference_box_zyx` is the extent; it fits when
    :func:`~medsegflow.sam3d.preprocess.window_boxes` plans one cube for it (its model-frame
    extent is at most ``model.image_encoder.img_size`` voxels on every axis).
    ``clicks_zyx`` ``(N, 3)`` / ``click_labels`` ``(N,)``: all of the object's clicks
    (original voxel indices), the prompt of the cubes they fall in; :func:`segment_windows`
    does the rest (:func:`window_final_box`)."""
    return window_final_box(
        model,
        grid,
        reference_box_zyx(object_zyx),
        clicks_zyx,
        click_labels,
        min_overlap=min_overlap,
        device=device,
        precision=precision,
    )


def window_final_box(
    model: Any,
    grid: ModelGrid,
    box_zyx: np.ndarray,
    clicks_zyx: np.ndarray,
    click_labels: np.ndarray,
    *,
    min_overlap: float = 0.25,
    device: str | None = None,
    precision: str = "fp32",
) -> WindowResult | None:
    """:func:`window_final` from the object's 3D box ``[[z0, y0, x0], [z1, y1, x1]]``
    (inclusive original voxel indices; the session's ``finish`` gets it as a ``box3d``
    interaction): None when one cube covers it."""
    size = int(model.image_encoder.img_size)
    if len(window_boxes(*box_to_model(box_zyx, grid), size, min_overlap=min_overlap)) == 1:
        return None
    return segment_windows(
        model,
        None,
        box_zyx=box_zyx,
        clicks_zyx=clicks_zyx,
        click_labels=click_labels,
        min_overlap=min_overlap,
        grid=grid,
        device=device,
        precision=precision,
    )
