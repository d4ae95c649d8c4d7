"""Simulated clicks for interactive segmentation, in 2D and 3D, pure numpy.

The one simulated user of the project (2D SAM clicks, the robustness curves, SAM-Med3D and
the 3D clicks of 2D models) follows the CVPR 2025 interactive challenge's click rule
(``CVPR25_iter_eval.py``):

- the **first click** is on the reference object (:func:`first_click`);
- every **next click** goes into the largest component of the error ``pred != gt`` (false
  negatives and false positives together; full connectivity, 8 in 2D and 26 in 3D; equal
  sizes: the component first in raster order, :func:`medsegflow.components.label_by_size`);
  it is positive (label 1) where the reference is foreground, negative (0) elsewhere
  (:func:`next_click_index`, :func:`next_click` in 2D).

In ``"center"`` mode the click is the region's element farthest from its border: the maximum
of its Euclidean distance transform in voxel units (outside the region, and outside the
array, counting as border). Equally deep elements are listed in raster order and one is
drawn with ``numpy.random.RandomState(42).choice`` (the challenge's ``sample_coord``, which
reseeds with 42 before every draw), so the rule is deterministic (:func:`deepest_index`). In
``"random"`` mode the click is a uniformly drawn element of the region (SAM-Med3D's random
clicks); the generator is then required and is the only source of randomness.
"""

from __future__ import annotations

import numpy as np

from medsegflow.components import components_largest_first, largest_component

CLICK_MODES = ("center", "random")


def _as_mask(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise ValueError(f"{name} must be a 2D or 3D mask, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def _check_mode(mode: str, rng: np.random.Generator | None) -> None:
    if mode not in CLICK_MODES:
        raise ValueError(f"click mode {mode!r} is not one of {CLICK_MODES}")
    if mode == "random" and rng is None:
        raise ValueError("click mode 'random' needs a random generator")


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    where = np.argwhere(mask)
    return tuple(slice(int(a), int(b) + 1) for a, b in zip(where.min(0), where.max(0), strict=True))


def components(mask: np.ndarray) -> list[np.ndarray]:
    """Fully connected components of a 2D or 3D mask, largest first (ties: the order of
    their first element in raster order). Returns bool masks of the full shape."""
    return components_largest_first(_as_mask(mask, "mask"))


def deepest_index(region: np.ndarray) -> tuple[int, ...]:
    """Array index of the region's element farthest from its border, in voxel units (ties as
    in the module docstring: ``RandomState(42).choice`` over the deepest elements in raster
    order). The region must not be empty."""
    from scipy import ndimage  # lazily: most prediction jobs never call it

    region = _as_mask(region, "region")
    if not region.any():
        raise ValueError("deepest_index: the region is empty")
    box = _bbox(region)
    padded = np.pad(region[box], 1, constant_values=False)
    inner = tuple(slice(1, -1) for _ in range(region.ndim))
    depth = ndimage.distance_transform_edt(padded)[inner]
    deepest = np.argwhere(depth == depth.max())
    best = deepest[np.random.RandomState(42).choice(len(deepest))]
    return tuple(int(b + s.start) for b, s in zip(best, box, strict=True))


def _pick(region: np.ndarray, mode: str, rng: np.random.Generator | None) -> tuple[int, ...]:
    if mode == "center":
        return deepest_index(region)
    elements = np.flatnonzero(region)
    flat = elements[rng.integers(elements.size)]
    return tuple(int(v) for v in np.unravel_index(flat, region.shape))


def first_click(
    gt: np.ndarray, *, mode: str = "center", rng: np.random.Generator | None = None
) -> np.ndarray:
    """The first (positive) click ``[*index, 1]`` int64 on the non-empty object ``gt``."""
    _check_mode(mode, rng)
    gt = _as_mask(gt, "gt")
    if not gt.any():
        raise ValueError(f"first_click: the {gt.shape} object mask is empty")
    return np.array([*_pick(gt, mode, rng), 1], dtype=np.int64)


def largest_error_region(pred: np.ndarray, gt: np.ndarray) -> np.ndarray | None:
    """The largest component of the error ``pred != gt`` (bool, the full shape), or None when
    ``pred == gt``. ``pred`` and ``gt``: masks of one object, of the same 2D or 3D shape."""
    pred, gt = _as_mask(pred, "pred"), _as_mask(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} shapes differ")
    errors = pred != gt
    if not errors.any():
        return None
    box = _bbox(errors)
    region = np.zeros_like(errors)
    region[box] = largest_component(errors[box])
    return region


def next_click_index(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    mode: str = "center",
    rng: np.random.Generator | None = None,
) -> np.ndarray | None:
    """The next corrective click ``[*index, label]`` int64 (array order: ``[y, x, label]``
    in 2D, ``[i, j, k, label]`` in 3D), or None when ``pred == gt``."""
    _check_mode(mode, rng)
    region = largest_error_region(pred, gt)
    if region is None:
        return None
    index = _pick(region, mode, rng)
    return np.array([*index, int(_as_mask(gt, "gt")[index])], dtype=np.int64)


def next_click(
    pred_yx: np.ndarray,
    gt_yx: np.ndarray,
    *,
    mode: str = "center",
    rng: np.random.Generator | None = None,
) -> np.ndarray | None:
    """The next corrective click on a 2D slice as int64 ``[x, y, label]`` (x = column, the
    prompts' order), None if perfect (:func:`next_click_index`)."""
    if np.ndim(pred_yx) != 2 or np.ndim(gt_yx) != 2:
        raise ValueError(f"pred {np.shape(pred_yx)} and gt {np.shape(gt_yx)} shapes must be (H, W)")
    click = next_click_index(pred_yx, gt_yx, mode=mode, rng=rng)
    return None if click is None else click[[1, 0, 2]]
