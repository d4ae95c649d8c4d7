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

Surface metrics, in mm. Axes of size 1 are dropped first (a 2D image stored as a
``(1, H, W)`` volume is scored in 2D), keeping at least two axes; everything is computed on
the bounding box of gt ∪ pred.

- ``hd95_mm`` and ``assd_mm`` equal ``medpy.metric.binary`` 0.5.2 ``hd95`` / ``assd`` with
  ``voxelspacing``: surface voxels = ``mask XOR binary_erosion(mask)`` (face-connected
  structuring element, outside the image = background); d(pred -> gt) is, for every pred
  surface voxel, the Euclidean distance (spacing applied per axis) to the nearest gt surface
  voxel, and d(gt -> pred) likewise. ``hd95_mm`` = 95th percentile (linear interpolation) of
  the pooled set d(pred -> gt) ∪ d(gt -> pred); ``assd_mm`` = its mean (every surface voxel
  of either mask weighs the same).
- ``nsd`` at tolerance τ (``nsd_tolerance_mm``) is DeepMind ``surface-distance``'s surface
  Dice (``compute_surface_dice_at_tolerance``), the NSD of MedSAM and the CVPR 2024/2025
  challenges: surface elements (surfels) live on the voxel-corner grid
  (:func:`neighbour_codes`, one code per 2x2(x2) neighbourhood); each gets DeepMind's marching
  cubes area (3D) or marching squares contour length (2D) for the spacing; NSD =
  (Σ area_gt[d(gt -> pred) <= τ] + Σ area_pred[d(pred -> gt) <= τ]) / (Σ area_gt + Σ area_pred)
  with Euclidean corner-to-corner distances in mm (:func:`surfel_surface_dice`).
  ``nsd_variant="voxel"`` (:data:`NSD_VOXEL`) instead counts the surface voxels above, each
  weighing 1 (MONAI ``compute_surface_dice``).

Distances are the exact values ``scipy.ndimage.distance_transform_edt(~border, sampling=)``
gives at the surface points (same arithmetic), found by trying grid offsets in order of
length around each surface point (a k-d tree takes the few points with no match nearby), so
no distance map of the whole box is built.

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

import functools
import math
from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

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

METRIC_DEFINITIONS: dict[str, str] = {
    "dsc": "Dice 2TP/(2TP+FP+FN) over the voxels; both masks empty: 1",
    "iou": "Jaccard TP/(TP+FP+FN); both masks empty: 1",
    "nsd": (
        "normalised surface Dice at metrics.nsd_tolerance_mm: DeepMind surface-distance "
        "surfel areas on the voxel-corner grid, physical spacing (2D images in 2D)"
    ),
    "hd95_mm": "95th percentile of the pooled surface-voxel distances, medpy 0.5.2 hd95",
    "assd_mm": "mean of the pooled surface-voxel distances, medpy 0.5.2 assd",
    "precision": "TP/(TP+FP)",
    "recall": "TP/(TP+FN)",
    "specificity": "TN/(TN+FP) over the field of view",
    "accuracy": "(TP+TN)/N over the field of view",
}
"""One line per metric of :data:`METRIC_NAMES`: what it is (``summary.csv`` ``definition``)."""

NSD_SURFEL = "surfel"
"""``nsd_variant`` of the main table: DeepMind's surface Dice, surfels weighted by area."""
NSD_VOXEL = "voxel"
"""``nsd_variant`` alternative: every surface voxel weighs the same (MONAI's count)."""
NSD_VARIANTS: tuple[str, ...] = (NSD_SURFEL, NSD_VOXEL)

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
    nsd_variant: str = NSD_SURFEL,
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
        nsd_variant: :data:`NSD_SURFEL` (default, DeepMind's surfel-area surface Dice) or
            :data:`NSD_VOXEL` (surface voxels counted, MONAI ``compute_surface_dice``).

    Returns:
        ``{label: result}`` in label order; each result holds the floats named in
        :data:`METRIC_NAMES` (surface metrics in mm, NaN where undefined), ``gt_empty`` and
        ``pred_empty`` (bool) and ``gt_voxels``, ``pred_voxels`` (int).

    Raises:
        ValueError: shapes differ, the arrays are not 2D/3D, a dtype is not bool/integer,
            ``spacing`` has the wrong length or a non-positive value, τ is negative, or
            ``labels`` is invalid, or ``nsd_variant`` is unknown.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    spacing_mm = _validate_inputs(pred, gt, spacing, nsd_tolerance_mm)
    if nsd_variant not in NSD_VARIANTS:
        raise ValueError(
            f"compute_metrics: nsd_variant {nsd_variant!r} is not one of {NSD_VARIANTS}"
        )
    if pred.dtype == bool and gt.dtype == bool:
        if labels is not None and [int(v) for v in labels] != [1]:
            raise ValueError(
                f"compute_metrics: labels={list(labels)} given for bool (binary) "
                "inputs; binary inputs are scored as label 1 only"
            )
        return {1: _binary_metrics(pred, gt, spacing_mm, nsd_tolerance_mm, nsd_variant)}
    wanted = _present_labels(pred, gt) if labels is None else _checked_labels(labels)
    results: dict[int, _Result] = {}
    for label in wanted:
        results[label] = _binary_metrics(
            pred == label, gt == label, spacing_mm, nsd_tolerance_mm, nsd_variant
        )
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
    pred_mask: np.ndarray,
    gt_mask: np.ndarray,
    spacing_mm: tuple[float, ...],
    tau_mm: float,
    nsd_variant: str = NSD_SURFEL,
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
        result.update(_surface_metrics(pred_c, gt_c, spacing_c, tau_mm, nsd_variant))
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
    two axes are kept. The box has :data:`_CROP_MARGIN` extra voxels per side, clipped at the
    image border. Both masks must be non-empty.
    """
    keep = [axis for axis, size in enumerate(pred_mask.shape) if size > 1]
    if len(keep) < 2:  # a line or a point stays a 2D image (surfels need 2 or 3 axes)
        spare = [axis for axis in reversed(range(pred_mask.ndim)) if axis not in keep]
        keep = sorted(keep + spare[: 2 - len(keep)])
    shape = tuple(pred_mask.shape[axis] for axis in keep)
    pred_mask, gt_mask = pred_mask.reshape(shape), gt_mask.reshape(shape)
    spacing_kept = tuple(spacing_mm[axis] for axis in keep)
    window = _union_box(pred_mask, gt_mask, margin=_CROP_MARGIN)
    return pred_mask[window], gt_mask[window], spacing_kept


def _union_box(a: np.ndarray, b: np.ndarray, *, margin: int) -> tuple[slice, ...]:
    """Bounding box of ``a | b`` (not both empty) plus ``margin`` voxels per side, clipped."""
    box = []
    for axis, size in enumerate(a.shape):
        others = tuple(x for x in range(a.ndim) if x != axis)
        hits = np.flatnonzero(np.any(a, axis=others) | np.any(b, axis=others))
        start = max(int(hits[0]) - margin, 0)
        stop = min(int(hits[-1]) + 1 + margin, size)
        box.append(slice(start, stop))
    return tuple(box)


def hd95(pred_mask: np.ndarray, gt_mask: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """``hd95_mm`` of :func:`compute_metrics` alone (medpy 0.5.2 ``hd95``) for two non-empty
    bool masks of equal shape; NaN when one is empty."""
    pred_mask = np.asarray(pred_mask, dtype=bool)
    gt_mask = np.asarray(gt_mask, dtype=bool)
    if not pred_mask.any() or not gt_mask.any():
        return math.nan
    spacing = tuple(float(s) for s in spacing_mm)
    pred_c, gt_c, spacing_c = _crop_pair(pred_mask, gt_mask, spacing)
    pred_border, gt_border = _border(pred_c), _border(gt_c)
    pooled = np.concatenate(
        [
            _directed_distances(pred_border, gt_border, spacing_c),
            _directed_distances(gt_border, pred_border, spacing_c),
        ]
    )
    return float(np.percentile(pooled, 95))


def _surface_metrics(
    pred_mask: np.ndarray,
    gt_mask: np.ndarray,
    spacing_mm: tuple[float, ...],
    tau_mm: float,
    nsd_variant: str = NSD_SURFEL,
) -> dict[str, float]:
    """``nsd``, ``hd95_mm`` and ``assd_mm`` for two non-empty bool masks of equal shape."""
    pred_border = _border(pred_mask)
    gt_border = _border(gt_mask)
    pred_to_gt = _directed_distances(pred_border, gt_border, spacing_mm)
    gt_to_pred = _directed_distances(gt_border, pred_border, spacing_mm)
    pooled = np.concatenate([pred_to_gt, gt_to_pred])
    if nsd_variant == NSD_VOXEL:
        within = np.count_nonzero(pred_to_gt <= tau_mm) + np.count_nonzero(gt_to_pred <= tau_mm)
        nsd = within / pooled.size
    else:
        nsd = surfel_surface_dice(pred_mask, gt_mask, spacing_mm, tau_mm)
    return {
        "nsd": float(nsd),
        "hd95_mm": float(np.percentile(pooled, 95)),
        "assd_mm": float(pooled.mean()),
    }


def _border(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a bool mask: ``mask XOR erosion`` (face connectivity, outside = 0).

    Equal to ``mask ^ scipy.ndimage.binary_erosion(mask, cross, border_value=0)`` (medpy's
    border), computed with shifted views: a voxel is interior when it and its 2·ndim face
    neighbours are all in the mask.
    """
    padded = np.pad(mask, 1)
    interior = mask.copy()
    core = tuple(slice(1, -1) for _ in range(mask.ndim))
    for axis in range(mask.ndim):
        for step in (0, 2):
            window = list(core)
            window[axis] = slice(step, step + mask.shape[axis])
            interior &= padded[tuple(window)]
    return mask & ~interior


# Offsets tried in order of distance before the remaining points are searched exhaustively.
_MAX_OFFSETS = 4096
# Up to this many (point, target) pairs the remaining points are compared with every target;
# beyond it a k-d tree finds their nearest target.
_BRUTE_FORCE_PAIRS = 200_000


@functools.lru_cache(maxsize=64)
def _sorted_offsets(
    spacing_mm: tuple[float, ...], reach_mm: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Every grid offset ``(M, ndim)`` int64 of length <= ``reach_mm``, sorted by length, and
    the lengths in mm (the arithmetic of :func:`_distances_mm`). Without ``reach_mm`` the
    reach is chosen so that about :data:`_MAX_OFFSETS` offsets qualify."""
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    if reach_mm is None:
        unit_ball = math.pi if len(spacing) == 2 else 4.0 * math.pi / 3.0
        reach_mm = (_MAX_OFFSETS * float(np.prod(spacing)) / unit_ball) ** (1 / len(spacing))
    half = [math.floor(reach_mm / s) + 1 for s in spacing]  # the box holds the whole ball
    grids = np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij")
    offsets = np.stack([g.ravel() for g in grids], axis=1).astype(np.int64)
    distances = _distances_mm(offsets, spacing_mm)
    order = np.argsort(distances, kind="stable")
    order = order[distances[order] <= reach_mm]
    return offsets[order], distances[order]


def _within(
    from_border: np.ndarray, to_border: np.ndarray, spacing_mm: tuple[float, ...], tau_mm: float
) -> np.ndarray:
    """Bool vector (C order of the ``from_border`` points): is the nearest ``to_border``
    point at most ``tau_mm`` away? Same decisions as ``_directed_distances(...) <= tau_mm``;
    only the offsets no longer than τ are tried (the full search when they are too many)."""
    span = [math.floor(tau_mm / s) * 2 + 1 for s in spacing_mm]
    if math.prod(span) > 2 * _MAX_OFFSETS:
        return _directed_distances(from_border, to_border, spacing_mm) <= tau_mm
    offsets, _ = _sorted_offsets(spacing_mm, float(tau_mm))
    points, flat, base, shifts = _offset_search_setup(from_border, to_border, offsets)
    hit = np.zeros(len(points), dtype=bool)
    if not len(shifts):
        return hit
    hit = flat[base]  # offset 0 first: a shared surface point is at distance 0
    todo = np.flatnonzero(~hit).astype(base.dtype)
    step = max(1, 4_000_000 // max(len(todo), 1))
    for start in range(1, len(shifts), step):
        if not todo.size:
            break
        found = flat[base[todo][:, None] + shifts[None, start : start + step]].any(axis=1)
        hit[todo[found]] = True
        todo = todo[~found]
    return hit


def _offset_search_setup(
    from_border: np.ndarray, to_border: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(points, flat, base, shifts)``: the ``from_border`` points ``(N, ndim)``, the padded
    ``to_border`` flattened, each point's flat index in it and each offset's flat shift."""
    half = np.abs(offsets).max(axis=0) if len(offsets) else np.zeros(from_border.ndim, int)
    padded = np.pad(to_border, [(int(h), int(h)) for h in half])
    index_type = np.int32 if padded.size < 2**31 - 1 else np.int64
    strides = np.array([stride // padded.itemsize for stride in padded.strides], dtype=index_type)
    points = np.stack(np.nonzero(from_border), axis=1).astype(index_type)
    base = (points + half.astype(index_type)) @ strides
    return points, padded.reshape(-1), base, (offsets @ strides).astype(index_type)


def _distances_mm(offsets: np.ndarray, spacing_mm: tuple[float, ...]) -> np.ndarray:
    """Euclidean lengths (mm) of ``(N, ndim)`` voxel offsets, with the arithmetic of
    ``scipy.ndimage.distance_transform_edt``: scale per axis, square, add the axes in order,
    square root (so the values are bit-identical to its distance map)."""
    scaled = offsets.T.astype(np.float64)
    scaled *= np.asarray(spacing_mm, dtype=np.float64)[:, None]
    np.multiply(scaled, scaled, out=scaled)
    return np.sqrt(np.add.reduce(scaled, axis=0))


def _directed_distances(
    from_border: np.ndarray, to_border: np.ndarray, spacing_mm: tuple[float, ...]
) -> np.ndarray:
    """Distance (mm) from every ``from_border`` point to the nearest ``to_border`` point.

    Returns a float64 vector in C order of the ``from_border`` points; ``to_border`` must not
    be empty. The values are the exact Euclidean distances that
    ``scipy.ndimage.distance_transform_edt(~to_border, sampling=spacing_mm)`` gives at those
    points (same arithmetic). They are found without a distance map of the whole box: grid
    offsets are tried in order of their length (:data:`_MAX_OFFSETS` of them, in blocks),
    each point taking the first offset that lands on ``to_border``; points still unmatched then get
    their nearest ``to_border`` point from a k-d tree.
    """
    offsets, lengths = _sorted_offsets(spacing_mm)
    points, flat, base, shifts = _offset_search_setup(from_border, to_border, offsets)
    result = np.full(len(points), np.inf)
    todo = np.arange(len(points), dtype=base.dtype)
    start, block = 0, 8
    while start < len(shifts):
        hits = flat[base[todo][:, None] + shifts[None, start : start + block]]
        found = hits.any(axis=1)
        first = hits.argmax(axis=1)[found]
        result[todo[found]] = lengths[start + first]
        todo = todo[~found]
        if not todo.size:
            return result
        start, block = start + block, min(2 * block, 32 if todo.size > 1024 else 512)
    targets = np.stack(np.nonzero(to_border), axis=1)
    if len(todo) * len(targets) <= _BRUTE_FORCE_PAIRS:
        for index in todo:
            result[index] = _distances_mm(targets - points[index], spacing_mm).min()
        return result
    scale = np.asarray(spacing_mm, dtype=np.float64)
    tree = cKDTree(targets * scale, balanced_tree=False, compact_nodes=False)
    _, nearest = tree.query(points[todo] * scale)
    result[todo] = _distances_mm(targets[nearest] - points[todo], spacing_mm)
    return result


# --- surfels: DeepMind surface-distance's surface elements ---------------------------------------


@functools.lru_cache(maxsize=64)
def _surfel_size_table(spacing_mm: tuple[float, ...]) -> np.ndarray:
    """Surfel size (area in 3D, contour length in 2D, mm^(d-1)) of every neighbour code.

    The tables are DeepMind's own (``surface_distance.lookup_tables``, marching cubes /
    marching squares on the voxel-corner grid), scaled by the spacing.
    """
    from surface_distance import lookup_tables as _sd_tables  # only where NSD is computed

    if len(spacing_mm) == 3:
        return np.asarray(
            _sd_tables.create_table_neighbour_code_to_surface_area(spacing_mm), dtype=np.float64
        )
    return np.asarray(
        _sd_tables.create_table_neighbour_code_to_contour_length(spacing_mm), dtype=np.float64
    )


def neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """The neighbour code of every voxel corner of a 2D or 3D bool mask.

    The corner grid has one more point than the mask on every axis: corner ``i`` lies between
    voxels ``i - 1`` and ``i``. Its code has one bit per voxel of its 2x2(x2) neighbourhood,
    outside the mask counting as 0; the bit weights are those of DeepMind's
    ``ENCODE_NEIGHBOURHOOD_3D_KERNEL`` (128 for voxel ``(i-1, j-1, k-1)`` ... 1 for
    ``(i, j, k)``; in 2D 8 for ``(i-1, j-1)`` ... 1 for ``(i, j)``), i.e. the result of
    ``scipy.ndimage.correlate`` with that kernel on the mask padded by one zero layer at the
    end of each axis. Returns uint8.
    """
    mask = np.asarray(mask, dtype=bool)
    codes = np.pad(mask, 1).view(np.uint8)
    # Bit weight of neighbour (i - 1 + a, j - 1 + b, ...) = 2 ** sum((1 - a_k) * 2 ** (ndim-1-k)):
    # combine the axes one at a time, last axis first (2 bits, then 4, then 8).
    for axis in reversed(range(mask.ndim)):
        shift = 2 ** (mask.ndim - 1 - axis)
        low = [slice(None)] * mask.ndim
        high = [slice(None)] * mask.ndim
        low[axis], high[axis] = slice(None, -1), slice(1, None)
        codes = (codes[tuple(low)] << shift) | codes[tuple(high)]
    return codes


def surfels(mask: np.ndarray, spacing_mm: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``(corner_is_surface, surfel_sizes)`` of a 2D or 3D bool mask (corner grid of
    :func:`neighbour_codes`): a corner is a surface element when its neighbourhood is neither
    all outside nor all inside; ``surfel_sizes`` holds, for the surface corners in C order,
    DeepMind's surfel area (3D) / contour length (2D) of their code at ``spacing_mm``."""
    spacing = tuple(float(s) for s in spacing_mm)
    codes = neighbour_codes(mask)
    full = 2 ** (2**mask.ndim) - 1
    border = (codes != 0) & (codes != full)
    return border, _surfel_size_table(spacing)[codes[border]]


def surfel_surface_dice(
    pred_mask: np.ndarray, gt_mask: np.ndarray, spacing_mm: Sequence[float], tau_mm: float
) -> float:
    """DeepMind's surface Dice at tolerance ``tau_mm`` of two bool masks of equal shape.

    (Σ size_gt[d(gt -> pred) <= τ] + Σ size_pred[d(pred -> gt) <= τ]) / (Σ size_gt + Σ size_pred)
    over the surfels of :func:`surfels`, with Euclidean distances between corner points
    (spacing applied on every axis). 0.0 when exactly one mask is empty, NaN when both are.
    The masks may be 2D or 3D; size-1 axes are not dropped here.
    """
    pred_mask = np.asarray(pred_mask, dtype=bool)
    gt_mask = np.asarray(gt_mask, dtype=bool)
    spacing = tuple(float(s) for s in spacing_mm)
    has_pred, has_gt = bool(pred_mask.any()), bool(gt_mask.any())
    if not has_pred and not has_gt:
        return math.nan
    if not has_pred or not has_gt:
        return 0.0
    window = _union_box(pred_mask, gt_mask, margin=0)
    pred_border, pred_size = surfels(pred_mask[window], spacing)
    gt_border, gt_size = surfels(gt_mask[window], spacing)
    pred_near = _within(pred_border, gt_border, spacing, tau_mm)
    gt_near = _within(gt_border, pred_border, spacing, tau_mm)
    within = np.sum(gt_size[gt_near]) + np.sum(pred_size[pred_near])
    return float(within / (np.sum(gt_size) + np.sum(pred_size)))
