"""Segmentation metrics: the one implementation every MedSegFlow table is built from.

:func:`compute_metrics` scores a predicted label array against a reference (ground-truth)
label array of the same shape, 2D ``yx`` or 3D ``zyx``, with the voxel spacing in mm in the
same axis order. It returns one result per label with the metrics in :data:`METRIC_NAMES`
plus the flags ``gt_empty``, ``pred_empty`` and the counts ``gt_voxels``, ``pred_voxels``.

Overlap metrics come from voxel counts over the whole array (TP, FP, FN, TN):

- ``dsc`` = 2 TP / (2 TP + FP + FN); ``iou`` = TP / (TP + FP + FN);
- ``precision`` = TP / (TP + FP); ``recall`` = TP / (TP + FN);
- ``specificity`` = TN / (TN + FP) and ``accuracy`` = (TP + TN) / N count the background, so
  they depend on the field of view: cropping the image changes them. ``specificity`` is NaN
  when the reference fills the whole array (TN + FP = 0).

Surface metrics, in mm, follow the medpy / MONAI default convention, so the numbers match
``medpy.metric.binary`` 0.5.2 exactly:

- Axes of size 1 are dropped first: a 2D image stored as a ``(1, H, W)`` volume gets a 2D
  surface (eroding across the singleton axis would make every voxel a surface voxel).
- Surface (border) voxels = ``mask XOR binary_erosion(mask)`` with the face-connected
  (cross-shaped) structuring element and ``border_value=0``: a voxel on the image border
  is a surface voxel.
- d(pred -> gt) is, for every pred surface voxel, the Euclidean distance (spacing applied on
  every axis) to the nearest gt surface voxel, from ``scipy.ndimage.distance_transform_edt``;
  d(gt -> pred) likewise. Each distance transform is computed once, on the bounding box of
  gt ∪ pred, and all three surface metrics come from the same two distance sets.
- ``hd95_mm`` = 95th percentile (linear interpolation) of the pooled set
  d(pred -> gt) ∪ d(gt -> pred) (medpy ``hd95``).
- ``assd_mm`` = mean of the pooled set, i.e. every surface voxel of either mask weighs the same
  (medpy 0.5.2 ``assd``; this is not the mean of the two directed means).
- ``nsd`` at tolerance τ (``nsd_tolerance_mm``) = (#pred surface voxels with d <= τ +
  #gt surface voxels with d <= τ) / (#pred surface voxels + #gt surface voxels), the
  voxel-count surface Dice of MONAI ``compute_surface_dice``.

Empty-mask rule (every result also carries ``gt_empty`` and ``pred_empty``):

| case | dsc, iou | nsd | hd95_mm, assd_mm | precision | recall | specificity, accuracy |
|---|---|---|---|---|---|---|
| GT empty and pred empty | 1.0 | 1.0 | 0.0 | NaN (0/0, undefined) | NaN (0/0) | computed (1.0) |
| GT empty only (pred non-empty: false positive) | 0.0 | 0.0 | NaN (no reference surface) | 0.0 | NaN | computed |
| pred empty only (miss) | 0.0 | 0.0 | NaN (no predicted surface) | NaN | 0.0 | computed |

NaN means "undefined": it is never averaged silently. The tables stage excludes NaNs
explicitly and reports how many were excluded.

This module is pure: no I/O, no global state.
"""  # noqa: E501 (the empty-mask table rows are kept whole)

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

METRIC_NAMES: tuple[str, ...] = (
    "dsc",
    "iou",
    "nsd",
    "hd95_mm",
    "assd_mm",
    "precision",
    "recall",
    "specificity",
    "accuracy",
)

# Voxels added around the bounding box of gt ∪ pred, clipped at the image border. Results do
# not depend on it: every voxel outside the box is 0 in both masks, which is exactly what
# binary_erosion's border_value=0 assumes outside the crop, and every surface voxel (the only
# targets of the distance transform) lies inside the box.
_CROP_MARGIN = 1

_Result = dict[str, float | bool | int]


def compute_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    nsd_tolerance_mm: float = 2.0,
    *,
    labels: Sequence[int] | None = None,
) -> dict[int, dict[str, float | bool | int]]:
    """Score ``pred`` against ``gt``, one result per label, by the module's conventions.

    Args:
        pred: predicted labels, bool or integer dtype, shape ``(Y, X)`` or ``(Z, Y, X)``.
        gt: reference labels, same shape as ``pred``, bool or integer dtype.
        spacing: voxel size in mm, one positive value per axis, in the arrays' axis order
            (``spacing_zyx`` for volumes).
        nsd_tolerance_mm: the NSD tolerance τ in mm (>= 0).
        labels: integer inputs only: the labels to score. Default: every nonzero value present
            in ``gt`` or ``pred``, sorted. A label absent from both still gets a result (the
            both-empty row of the table). When both arrays are bool the input is binary and
            the single result is keyed ``1``; a bool array paired with an integer array counts
            as label 1.

    Returns:
        ``{label: result}`` in label order; each result holds the floats named in
        :data:`METRIC_NAMES` (surface metrics in mm, NaN where undefined), ``gt_empty`` and
        ``pred_empty`` (bool) and ``gt_voxels``, ``pred_voxels`` (int).

    Raises:
        ValueError: shapes differ, the arrays are not 2D/3D, a dtype is not bool/integer,
            ``spacing`` has the wrong length or a non-positive value, τ is negative, or
            ``labels`` is invalid.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    spacing_mm = _validate_inputs(pred, gt, spacing, nsd_tolerance_mm)
    if pred.dtype == bool and gt.dtype == bool:
        if labels is not None and [int(v) for v in labels] != [1]:
            raise ValueError(
                f"compute_metrics: labels={list(labels)} given for bool (binary) "
                "inputs; binary inputs are scored as label 1 only"
            )
        return {1: _binary_metrics(pred, gt, spacing_mm, nsd_tolerance_mm)}
    wanted = _present_labels(pred, gt) if labels is None else _checked_labels(labels)
    results: dict[int, _Result] = {}
    for label in wanted:
        results[label] = _binary_metrics(pred == label, gt == label, spacing_mm, nsd_tolerance_mm)
    return results


def _validate_inputs(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], nsd_tolerance_mm: float
) -> tuple[float, ...]:
    """Check shapes, dtypes, spacing and τ; return the spacing as a float tuple (mm)."""
    if pred.shape != gt.shape:
        raise ValueError(f"compute_metrics: pred shape {pred.shape} != gt shape {gt.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(
            f"compute_metrics: expected 2D (Y, X) or 3D (Z, Y, X) arrays, got shape {pred.shape}"
        )
    if pred.size == 0:
        raise ValueError(f"compute_metrics: empty arrays of shape {pred.shape}")
    for name, array in (("pred", pred), ("gt", gt)):
        if array.dtype != bool and not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"compute_metrics: {name} dtype {array.dtype} is not bool or "
                "integer; label arrays must not be float"
            )
    spacing_mm = tuple(float(s) for s in np.ravel(np.asarray(spacing, dtype=float)))
    if len(spacing_mm) != pred.ndim:
        raise ValueError(
            f"compute_metrics: spacing {spacing_mm} has {len(spacing_mm)} values "
            f"but the arrays have shape {pred.shape} ({pred.ndim} axes)"
        )
    if not all(math.isfinite(s) and s > 0 for s in spacing_mm):
        raise ValueError(f"compute_metrics: spacing {spacing_mm} must be positive and finite (mm)")
    if not (math.isfinite(nsd_tolerance_mm) and nsd_tolerance_mm >= 0):
        raise ValueError(
            f"compute_metrics: nsd_tolerance_mm={nsd_tolerance_mm} must be a finite value >= 0 (mm)"
        )
    return spacing_mm


def _checked_labels(labels: Sequence[int]) -> list[int]:
    """Return ``labels`` as Python ints; reject non-integers and duplicates."""
    checked: list[int] = []
    for value in labels:
        if isinstance(value, bool) or not float(value).is_integer():
            raise ValueError(f"compute_metrics: label {value!r} is not an integer")
        checked.append(int(value))
    if len(set(checked)) != len(checked):
        raise ValueError(f"compute_metrics: labels {checked} contain duplicates")
    return checked


def _present_labels(pred: np.ndarray, gt: np.ndarray) -> list[int]:
    """Sorted nonzero values present in either array (bool counts as label 1)."""
    found: set[int] = set()
    for array in (pred, gt):
        if array.dtype == bool:
            values = [1] if array.any() else []
        else:
            low, high = int(array.min()), int(array.max())
            if low >= 0 and high <= 1:  # binary label map: no histogram needed
                values = [high]
            elif low >= 0 and high < 2**16 and np.can_cast(array.dtype, np.intp):
                values = np.flatnonzero(np.bincount(array.ravel(), minlength=high + 1))
            else:
                values = np.unique(array)
        found.update(int(v) for v in values if v != 0)
    return sorted(found)


def _binary_metrics(
    pred_mask: np.ndarray, gt_mask: np.ndarray, spacing_mm: tuple[float, ...], tau_mm: float
) -> _Result:
    """All metrics for one pair of bool masks of equal shape (any layout, zyx or yx)."""
    n_pred = int(np.count_nonzero(pred_mask))
    n_gt = int(np.count_nonzero(gt_mask))
    result: _Result = {}
    if n_pred == 0 and n_gt == 0:
        tp = 0
        result.update(dsc=1.0, iou=1.0, nsd=1.0, hd95_mm=0.0, assd_mm=0.0)
    elif n_pred == 0 or n_gt == 0:
        tp = 0
        result.update(dsc=0.0, iou=0.0, nsd=0.0, hd95_mm=math.nan, assd_mm=math.nan)
    else:
        pred_c, gt_c, spacing_c = _crop_pair(pred_mask, gt_mask, spacing_mm)
        tp = int(np.count_nonzero(pred_c & gt_c))
        result.update(dsc=2.0 * tp / (n_pred + n_gt), iou=tp / (n_pred + n_gt - tp))
        result.update(_surface_metrics(pred_c, gt_c, spacing_c, tau_mm))
    fp, fn = n_pred - tp, n_gt - tp
    tn = pred_mask.size - tp - fp - fn
    result.update(
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        specificity=_ratio(tn, tn + fp),
        accuracy=_ratio(tp + tn, pred_mask.size),
    )
    ordered: _Result = {name: float(result[name]) for name in METRIC_NAMES}
    ordered.update(gt_empty=n_gt == 0, pred_empty=n_pred == 0, gt_voxels=n_gt, pred_voxels=n_pred)
    return ordered


def _ratio(numerator: int, denominator: int) -> float:
    """``numerator / denominator``, NaN when the denominator is 0 (undefined)."""
    return numerator / denominator if denominator else math.nan


def _crop_pair(
    pred_mask: np.ndarray, gt_mask: np.ndarray, spacing_mm: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Drop size-1 axes, then crop both masks to the bounding box of their union.

    Returns views ``(pred, gt, spacing)`` with the kept axes in their original order; at least
    one axis is kept. The box has :data:`_CROP_MARGIN` extra voxels per side, clipped at the
    image border. Both masks must be non-empty.
    """
    keep = [axis for axis, size in enumerate(pred_mask.shape) if size > 1] or [0]
    shape = tuple(pred_mask.shape[axis] for axis in keep)
    pred_mask, gt_mask = pred_mask.reshape(shape), gt_mask.reshape(shape)
    spacing_kept = tuple(spacing_mm[axis] for axis in keep)
    box = []
    for axis, size in enumerate(shape):
        others = tuple(a for a in range(len(shape)) if a != axis)
        hits = np.flatnonzero(np.any(pred_mask, axis=others) | np.any(gt_mask, axis=others))
        start = max(int(hits[0]) - _CROP_MARGIN, 0)
        stop = min(int(hits[-1]) + 1 + _CROP_MARGIN, size)
        box.append(slice(start, stop))
    window = tuple(box)
    return pred_mask[window], gt_mask[window], spacing_kept


def _surface_metrics(
    pred_mask: np.ndarray, gt_mask: np.ndarray, spacing_mm: tuple[float, ...], tau_mm: float
) -> dict[str, float]:
    """``nsd``, ``hd95_mm`` and ``assd_mm`` for two non-empty bool masks of equal shape."""
    pred_border = _border(pred_mask)
    gt_border = _border(gt_mask)
    pred_to_gt = _directed_distances(pred_border, gt_border, spacing_mm)
    gt_to_pred = _directed_distances(gt_border, pred_border, spacing_mm)
    pooled = np.concatenate([pred_to_gt, gt_to_pred])
    within = np.count_nonzero(pred_to_gt <= tau_mm) + np.count_nonzero(gt_to_pred <= tau_mm)
    return {
        "nsd": within / pooled.size,
        "hd95_mm": float(np.percentile(pooled, 95)),
        "assd_mm": float(pooled.mean()),
    }


def _border(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a bool mask: ``mask XOR erosion`` (face connectivity, border 0)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask ^ ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _directed_distances(
    from_border: np.ndarray, to_border: np.ndarray, spacing_mm: tuple[float, ...]
) -> np.ndarray:
    """Distance (mm) from every ``from_border`` voxel to the nearest ``to_border`` voxel.

    Returns a float64 vector in C order of the ``from_border`` voxels. Only the feature
    transform is taken from scipy; the distances are then evaluated at the surface voxels
    alone, with the same arithmetic as ``distance_transform_edt`` (so the values are
    bit-identical to indexing its full distance map).
    """
    nearest = ndimage.distance_transform_edt(
        ~to_border, sampling=spacing_mm, return_distances=False, return_indices=True
    )
    where = np.nonzero(from_border)
    offsets = nearest[(slice(None), *where)] - np.stack(where).astype(nearest.dtype)
    offsets_mm = offsets.astype(np.float64)
    offsets_mm *= np.asarray(spacing_mm, dtype=np.float64)[:, None]
    np.multiply(offsets_mm, offsets_mm, out=offsets_mm)
    return np.sqrt(np.add.reduce(offsets_mm, axis=0))
