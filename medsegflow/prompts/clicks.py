"""Simulated clicks for interactive segmentation, in 2D and 3D, pure numpy.

The one simulated user of the project (2D SAM clicks, the robustness curves, SAM-Med3D and
the 3D clicks of 2D models):

- the **first click** is on the reference object (:func:`first_click`);
- every **next click** goes into the largest error component (fully connected: 8 in 2D,
  26 in 3D; false negatives and false positives are separate components; a tie in size
  goes to the false negative): positive (label 1) on a false negative, negative (0) on a
  false positive (:func:`next_click_index`, :func:`next_click` in 2D).

In ``"center"`` mode the click is the region's element farthest from its border (maximum
of its distance transform, outside the array counting as border; on a plateau of equally
deep elements the one nearest to the plateau's mean position, then the first in raster
order), the usual simulated user of interactive-segmentation benchmarks and the CVPR 2025
interactive protocol's click (the ``ritm`` idea of SAM-Med3D's
``get_next_click3D_torch_ritm``, ``utils/click_method.py@1ebf2fe8``); in ``"random"`` mode
a uniformly drawn element of it (SAM-Med3D's ``random_sample_next_click`` for the first
click, ``utils/infer_utils.py@7cead583``; its own ``get_next_click3D_torch_2`` draws from
the whole error, not its largest component). With ``"random"`` the generator is required
and is the only source of randomness.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

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


def full_connectivity(ndim: int) -> np.ndarray:
    """The structuring element of full connectivity: 8 neighbours in 2D, 26 in 3D."""
    return np.ones((3,) * ndim, dtype=bool)


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    where = np.argwhere(mask)
    return tuple(slice(int(a), int(b) + 1) for a, b in zip(where.min(0), where.max(0), strict=True))


def components(mask: np.ndarray) -> list[np.ndarray]:
    """Fully connected components of a 2D or 3D mask, largest first (ties: the order of
    their first element in raster order). Returns bool masks of the full shape."""
    mask = _as_mask(mask, "mask")
    labelled, n = ndimage.label(mask, structure=full_connectivity(mask.ndim))
    if n == 0:
        return []
    sizes = np.bincount(labelled.ravel(), minlength=n + 1)[1:]
    return [labelled == (i + 1) for i in np.argsort(-sizes, kind="stable")]


def deepest_index(region: np.ndarray) -> tuple[int, ...]:
    """Array index of the region's element farthest from its border (plateau ties as in
    the module docstring). The region must not be empty."""
    region = _as_mask(region, "region")
    if not region.any():
        raise ValueError("deepest_index: the region is empty")
    box = _bbox(region)
    padded = np.pad(region[box], 1, constant_values=False)
    inner = tuple(slice(1, -1) for _ in range(region.ndim))
    depth = ndimage.distance_transform_edt(padded)[inner]
    deepest = np.argwhere(depth == depth.max())
    gap = ((deepest - deepest.mean(axis=0)) ** 2).sum(axis=1)
    best = deepest[np.argmin(gap)]
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


def largest_error_region(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, int] | None:
    """``(region bool, label)`` of the largest error component (label 1 = false negative,
    0 = false positive; a tie goes to the false negative), or None when ``pred == gt``.
    ``pred`` and ``gt``: masks of one object, of the same 2D or 3D shape."""
    pred, gt = _as_mask(pred, "pred"), _as_mask(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} shapes differ")
    best: tuple[np.ndarray, int] | None = None
    for label, errors in ((1, gt & ~pred), (0, pred & ~gt)):
        if not errors.any():
            continue
        box = _bbox(errors)
        largest = components(errors[box])[0]
        if best is None or int(largest.sum()) > int(best[0].sum()):
            region = np.zeros_like(errors)
            region[box] = largest
            best = (region, label)
    return best


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
    found = largest_error_region(pred, gt)
    if found is None:
        return None
    region, label = found
    return np.array([*_pick(region, mode, rng), label], dtype=np.int64)


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
