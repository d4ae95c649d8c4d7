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
per voxel over the cubes that ran and cover it, and ``mean > 0.5`` is the mask, resampled
onto the original grid. The cost is one encoder call per cube (``WindowResult.seconds``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from medsegflow.io import Volume
from medsegflow.sam3d.infer import CropSession
from medsegflow.sam3d.preprocess import (
    CropBox,
    ModelGrid,
    box_to_model,
    original_to_model,
    paste,
    prepare_crop,
    to_model_grid,
    to_original,
    window_boxes,
)


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
    image: Volume,
    *,
    box_zyx: np.ndarray | None = None,
    clicks_zyx: np.ndarray | None = None,
    click_labels: np.ndarray | None = None,
    min_overlap: float = 0.25,
    grid: ModelGrid | None = None,
    device: str | None = None,
) -> WindowResult:
    """Segment one object from a box ``[[z0, y0, x0], [z1, y1, x1]]`` (inclusive original
    voxel indices) and/or clicks ``(N, 3)`` zyx with labels ``(N,)`` (default all
    positive), with as many cubes as its extent needs. ``grid``: the image already in the
    model frame (:func:`~medsegflow.sam3d.preprocess.to_model_grid`)."""
    started = time.perf_counter()
    if box_zyx is None and clicks_zyx is None:
        raise ValueError("segment_windows needs a box or clicks")
    grid = grid if grid is not None else to_model_grid(image)
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
    total = np.zeros(grid.shape, np.float32)
    count = np.zeros(grid.shape, np.float32)
    n_run = 0
    for box in boxes:
        prompt = _window_prompt(box, points, labels, extent)
        if prompt is None:
            continue
        session = CropSession(model, prepare_crop(grid, box), device=device)
        _, prob = session.decode(*prompt, session.empty_logits())
        total += paste(prob.astype(np.float32), box, grid.shape)
        count += paste(np.ones_like(prob, np.float32), box, grid.shape)
        n_run += 1
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    mask = to_original((mean > 0.5).astype(np.uint8), grid)
    return WindowResult(mask, boxes, n_run, time.perf_counter() - started)
