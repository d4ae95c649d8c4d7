"""Point prompts from a mask, pure numpy: positives inside the object, negatives in a ring.

Points are ``(N, 2)`` int64 arrays of ``[x, y]`` pixel indices of one slice (x = column,
y = row), the convention of SAM's ``point_coords`` (SAM adds half a pixel to reach the
pixel centre). Distances are in pixels of the slice, from
``scipy.ndimage.distance_transform_edt``; outside the image counts as outside every
object, so a pixel on the image edge is 1 px from the object border.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medsegflow.components import components_largest_first


def _as_mask(mask_yx: np.ndarray, name: str = "mask_yx") -> np.ndarray:
    mask_yx = np.asarray(mask_yx)
    if mask_yx.ndim != 2:
        raise ValueError(f"{name} must be an (H, W) mask, got shape {mask_yx.shape}")
    return mask_yx.astype(bool, copy=False)


def inner_distance(mask_yx: np.ndarray) -> np.ndarray:
    """Distance (pixels) of every object pixel to the nearest non-object pixel.

    Outside the image counts as non-object. Returns float64 ``(H, W)``; 0 outside the mask,
    >= 1 on it (1 on its border).
    """
    from scipy import ndimage  # lazily: most prediction jobs never call it

    mask_yx = _as_mask(mask_yx)
    padded = np.pad(mask_yx, 1, constant_values=False)
    return ndimage.distance_transform_edt(padded)[1:-1, 1:-1]


def outer_distance(mask_yx: np.ndarray) -> np.ndarray:
    """Distance (pixels) of every pixel to the nearest object pixel (0 on the object).

    Returns float64 ``(H, W)``; ``inf`` everywhere when the mask is empty.
    """
    from scipy import ndimage  # lazily: most prediction jobs never call it

    mask_yx = _as_mask(mask_yx)
    if not mask_yx.any():
        return np.full(mask_yx.shape, np.inf)
    return ndimage.distance_transform_edt(~mask_yx)


def connected_components(mask_yx: np.ndarray) -> list[np.ndarray]:
    """The 8-connected components of a 2D mask, largest first.

    Ties in size keep the order of the components' first pixel in raster order, so the
    k-th component is well defined. Returns bool ``(H, W)`` masks (empty list if none).
    """
    return components_largest_first(_as_mask(mask_yx))


def _draw(candidates_yx: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` pixels of a non-empty candidate mask as ``[x, y]`` int64, without replacement
    while there are enough candidates (with replacement beyond that)."""
    flat = np.flatnonzero(candidates_yx)
    picks = rng.choice(flat.size, size=n, replace=flat.size < n)
    ys, xs = np.unravel_index(flat[picks], candidates_yx.shape)
    return np.stack([xs, ys], axis=1).astype(np.int64)


def positive_points(
    mask_yx: np.ndarray, *, n: int, erosion_px: float, rng: np.random.Generator
) -> np.ndarray:
    """``n`` random points inside the object, at least ``erosion_px`` from its border.

    Candidates are the object's pixels whose :func:`inner_distance` exceeds
    ``erosion_px`` (the object eroded by that margin). When the erosion leaves nothing
    (a thin or small object), the candidates are the pixels at the object's
    distance-transform maximum, its most interior pixels.

    Args:
        mask_yx: ``(H, W)`` mask, non-zero = object; must not be empty.
        n: number of points, >= 0.
        erosion_px: margin in pixels, >= 0.
        rng: the generator (one ``choice`` call).

    Returns:
        int64 ``(n, 2)`` ``[x, y]`` pixel indices.
    """
    mask_yx = _as_mask(mask_yx)
    if n < 0 or erosion_px < 0:
        raise ValueError(f"n ({n}) and erosion_px ({erosion_px}) must be >= 0")
    if not mask_yx.any():
        raise ValueError(f"positive_points: the {mask_yx.shape} mask is empty")
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    depth = inner_distance(mask_yx)
    eroded = depth > erosion_px
    if not eroded.any():
        eroded = depth == depth.max()
    return _draw(eroded, n, rng)


def negative_points(
    mask_yx: np.ndarray,
    *,
    n: int,
    ring_px: Sequence[float],
    rng: np.random.Generator,
    allowed_yx: np.ndarray | None = None,
) -> np.ndarray:
    """Up to ``n`` random points outside the object, ``inner..outer`` px from it.

    Candidates are the pixels whose :func:`outer_distance` to the object lies in
    ``[inner, outer]`` (``ring_px``), that are not on the object and that are
    ``allowed_yx`` (default: everything off the object; pass the slice's background of
    the whole label when the object is one of its components). When the ring holds no
    candidate, every allowed pixel is a candidate; when none is allowed (the object fills
    the image), no point is returned.

    Returns:
        int64 ``(m, 2)`` ``[x, y]`` pixel indices, ``m = n`` or 0.
    """
    mask_yx = _as_mask(mask_yx)
    inner, outer = (float(v) for v in ring_px)
    if n < 0 or not 0 <= inner <= outer:
        raise ValueError(f"n ({n}) must be >= 0 and ring_px {list(ring_px)} 0 <= inner <= outer")
    allowed = ~mask_yx if allowed_yx is None else _as_mask(allowed_yx, "allowed_yx") & ~mask_yx
    if n == 0 or not allowed.any():
        return np.zeros((0, 2), dtype=np.int64)
    distance = outer_distance(mask_yx)
    ring = allowed & (distance >= inner) & (distance <= outer)
    return _draw(ring if ring.any() else allowed, n, rng)
