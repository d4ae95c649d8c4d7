"""Simulated corrective clicks for interactive refinement, pure numpy.

After a prediction, the next click goes into the largest error region (8-connected, by
pixel count): a false-negative region (object missed) gets a positive click, a
false-positive region (background taken) a negative one. In ``"center"`` mode the click is
the region's pixel farthest from the region's border (maximum of its distance transform,
outside the image counting as border; on a plateau of equally deep pixels the one
nearest to the plateau's mean, then the first in raster order), the usual simulated
user of interactive-segmentation benchmarks; in ``"random"`` mode it is a uniformly drawn
pixel of the region.
"""

from __future__ import annotations

import numpy as np

from medsegflow.prompts.points import connected_components, inner_distance

CLICK_MODES = ("center", "random")


def largest_error_region(pred_yx: np.ndarray, gt_yx: np.ndarray) -> tuple[np.ndarray, int] | None:
    """The largest 8-connected error region and its click label, or None without error.

    Args:
        pred_yx: ``(H, W)`` predicted mask, non-zero = object.
        gt_yx: ``(H, W)`` reference mask of the same object.

    Returns:
        ``(region_yx bool (H, W), label)`` with label 1 for a false-negative region and 0
        for a false-positive one (a tie in size goes to the false negative).
    """
    pred_yx, gt_yx = np.asarray(pred_yx, dtype=bool), np.asarray(gt_yx, dtype=bool)
    if pred_yx.shape != gt_yx.shape or pred_yx.ndim != 2:
        raise ValueError(f"pred {pred_yx.shape} and gt {gt_yx.shape} must be equal (H, W) shapes")
    best: tuple[np.ndarray, int] | None = None
    for label, errors in ((1, gt_yx & ~pred_yx), (0, pred_yx & ~gt_yx)):
        regions = connected_components(errors)
        if regions and (best is None or regions[0].sum() > best[0].sum()):
            best = (regions[0], label)
    return best


def _deepest_pixel(region_yx: np.ndarray) -> int:
    """Flat index of the region's pixel farthest from its border; among equally deep
    pixels (a plateau, e.g. the centre line of a rectangle) the one nearest to their mean
    position, then the first in raster order."""
    depth = inner_distance(region_yx)
    deepest = np.flatnonzero(depth == depth.max())
    ys, xs = np.unravel_index(deepest, region_yx.shape)
    gap = (ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2
    return int(deepest[np.argmin(gap)])


def next_click(
    pred_yx: np.ndarray,
    gt_yx: np.ndarray,
    *,
    mode: str = "center",
    rng: np.random.Generator | None = None,
) -> np.ndarray | None:
    """The next corrective click as int64 ``[x, y, label]`` (x = column), None if perfect.

    ``mode`` is ``"center"`` (distance-transform centre of the largest error region) or
    ``"random"`` (a pixel of that region drawn with ``rng``, required then).
    """
    if mode not in CLICK_MODES:
        raise ValueError(f"click mode {mode!r} is not one of {CLICK_MODES}")
    found = largest_error_region(pred_yx, gt_yx)
    if found is None:
        return None
    region_yx, label = found
    if mode == "center":
        flat = _deepest_pixel(region_yx)
    else:
        if rng is None:
            raise ValueError("click mode 'random' needs a random generator")
        pixels = np.flatnonzero(region_yx)
        flat = int(pixels[rng.integers(pixels.size)])
    y, x = np.unravel_index(flat, region_yx.shape)
    return np.array([x, y, label], dtype=np.int64)
