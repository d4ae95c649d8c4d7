"""Simulated 3D clicks for SAM-Med3D, pure numpy.

The rules are :mod:`medsegflow.prompts.clicks`' (the 2D simulated user) in 3D:

- the **first click** is on the ground-truth object: ``"center"`` takes the object voxel
  farthest from its border (maximum of the distance transform, outside the array counting
  as border), ``"random"`` a uniformly drawn object voxel (SAM-Med3D's
  ``random_sample_next_click`` with an empty previous mask, ``utils/infer_utils.py@7cead583``);
- every **next click** goes into the largest 26-connected component of the error
  (false negatives ∪ false positives, each kind labelled separately; ties go to the false
  negative): positive (label 1) on a false negative, negative (0) on a false positive, at the
  component's distance-transform maximum (``"center"``, the CVPR25 interactive protocol's
  click and the ``ritm`` idea of SAM-Med3D's ``get_next_click3D_torch_ritm``,
  ``utils/click_method.py@1ebf2fe8``) or at a uniformly drawn voxel of it (``"random"``).
  SAM-Med3D's own ``random`` rule (``get_next_click3D_torch_2``) draws from the whole error,
  not its largest component.

On a plateau of equally deep voxels the one nearest to the plateau's mean position wins,
then the first in raster order. Clicks are int64 ``[i, j, k, label]`` in the frame of the
arrays given (the model frame or a crop of it, :mod:`medsegflow.sam3d.preprocess`); with
``"random"`` the generator is required and is the only source of randomness.

The 2D module's helpers check for 2D input (``_as_mask``, ``connected_components``,
``inner_distance``, ``largest_error_region``), so they are not called here.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medsegflow.prompts.clicks import CLICK_MODES

FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def _as_volume(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"{name} must be a 3D mask, got shape {mask.shape}")
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
    """26-connected components of a 3D mask, largest first (ties: first voxel in raster
    order first). Returns bool masks of the full shape (empty list if none)."""
    mask = _as_volume(mask, "mask")
    labelled, n = ndimage.label(mask, structure=FULL_CONNECTIVITY)
    if n == 0:
        return []
    sizes = np.bincount(labelled.ravel(), minlength=n + 1)[1:]
    return [labelled == (i + 1) for i in np.argsort(-sizes, kind="stable")]


def deepest_voxel(region: np.ndarray) -> tuple[int, int, int]:
    """The region's voxel farthest from its border (voxel units, outside the array is
    border); plateau ties as in the module docstring. The region must not be empty."""
    region = _as_volume(region, "region")
    if not region.any():
        raise ValueError("deepest_voxel: the region is empty")
    box = _bbox(region)
    padded = np.pad(region[box], 1, constant_values=False)
    depth = ndimage.distance_transform_edt(padded)[1:-1, 1:-1, 1:-1]
    deepest = np.argwhere(depth == depth.max())
    gap = ((deepest - deepest.mean(axis=0)) ** 2).sum(axis=1)
    best = deepest[np.argmin(gap)]
    return tuple(int(b + s.start) for b, s in zip(best, box, strict=True))


def _pick(region: np.ndarray, mode: str, rng: np.random.Generator | None) -> tuple[int, ...]:
    if mode == "center":
        return deepest_voxel(region)
    voxels = np.flatnonzero(region)
    return tuple(int(v) for v in np.unravel_index(voxels[rng.integers(voxels.size)], region.shape))


def first_click(
    gt: np.ndarray, *, mode: str = "center", rng: np.random.Generator | None = None
) -> np.ndarray:
    """The first (positive) click ``[i, j, k, 1]`` on the non-empty object ``gt``."""
    _check_mode(mode, rng)
    gt = _as_volume(gt, "gt")
    if not gt.any():
        raise ValueError(f"first_click: the {gt.shape} object mask is empty")
    return np.array([*_pick(gt, mode, rng), 1], dtype=np.int64)


def largest_error_region(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, int] | None:
    """``(region bool, label)`` of the largest error component (label 1 = false negative,
    0 = false positive; a tie goes to the false negative), or None when ``pred == gt``."""
    pred, gt = _as_volume(pred, "pred"), _as_volume(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} shapes differ")
    best: tuple[np.ndarray, int] | None = None
    for label, errors in ((1, gt & ~pred), (0, pred & ~gt)):
        if not errors.any():
            continue
        box = _bbox(errors)
        parts = components(errors[box])
        size = int(parts[0].sum())
        if best is None or size > int(best[0].sum()):
            region = np.zeros_like(errors)
            region[box] = parts[0]
            best = (region, label)
    return best


def next_click(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    mode: str = "center",
    rng: np.random.Generator | None = None,
) -> np.ndarray | None:
    """The next corrective click ``[i, j, k, label]`` int64, or None when ``pred == gt``."""
    _check_mode(mode, rng)
    found = largest_error_region(pred, gt)
    if found is None:
        return None
    region, label = found
    return np.array([*_pick(region, mode, rng), label], dtype=np.int64)
