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
no distance map of the whole box is built. A :class:`SurfaceCache` made for one case lets
:func:`compute_metrics` and the convention replays (:mod:`medsegflow.conventions`) share each
label's masks, surfaces and distances (:class:`MaskPair`).

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
from collections.abc import Callable, Sequence
from typing import Any

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
    cache: SurfaceCache | None = None,
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
        cache: one case's :class:`SurfaceCache`, shared with the convention replays of the
            same arrays so that their surfaces and distances are computed once (the values
            do not depend on it).

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
        pair = cache.pair(pred, gt) if cache is not None else MaskPair(pred, gt)
        return {1: _binary_metrics(pair, spacing_mm, nsd_tolerance_mm, nsd_variant)}
    wanted = _present_labels(pred, gt) if labels is None else _checked_labels(labels)
    results: dict[int, _Result] = {}
    for label in wanted:
        if cache is not None:
            pair = cache.pair(pred, gt, label)
        else:
            pair = MaskPair(pred == label, gt == label)
        results[label] = _binary_metrics(pair, spacing_mm, nsd_tolerance_mm, nsd_variant)
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
    pair: MaskPair, spacing_mm: tuple[float, ...], tau_mm: float, nsd_variant: str = NSD_SURFEL
) -> _Result:
    """All metrics for one pair of bool masks of equal shape (any layout, zyx or yx)."""
    n_pred, n_gt, size = pair.n_pred, pair.n_gt, pair.pred.size
    result: _Result = {}
    if n_pred == 0 and n_gt == 0:
        tp = 0
        result.update(dsc=1.0, iou=1.0, nsd=1.0, hd95_mm=0.0, assd_mm=0.0)
    elif n_pred == 0 or n_gt == 0:
        tp = 0
        result.update(dsc=0.0, iou=0.0, nsd=0.0, hd95_mm=math.nan, assd_mm=math.nan)
    else:
        tp = pair.tp
        result.update(dsc=2.0 * tp / (n_pred + n_gt), iou=tp / (n_pred + n_gt - tp))
        result.update(pair.surface_metrics(spacing_mm, tau_mm, nsd_variant))
    fp, fn = n_pred - tp, n_gt - tp
    tn = size - tp - fp - fn
    result.update(
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        specificity=_ratio(tn, tn + fp),
        accuracy=_ratio(tp + tn, size),
    )
    ordered: _Result = {name: float(result[name]) for name in METRIC_NAMES}
    ordered.update(gt_empty=n_gt == 0, pred_empty=n_pred == 0, gt_voxels=n_gt, pred_voxels=n_pred)
    return ordered


def _ratio(numerator: int, denominator: int) -> float:
    """``numerator / denominator``, NaN when the denominator is 0 (undefined)."""
    return numerator / denominator if denominator else math.nan


def _kept_axes(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The axes the surface metrics keep: those of size > 1, at least two (a line or a point
    stays a 2D image: surfels need 2 or 3 axes), in their original order."""
    keep = [axis for axis, size in enumerate(shape) if size > 1]
    if len(keep) < 2:
        spare = [axis for axis in reversed(range(len(shape))) if axis not in keep]
        keep = sorted(keep + spare[: 2 - len(keep)])
    return tuple(keep)


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


class MaskPair:
    """A predicted and a reference bool mask of equal shape, and what the metrics take from
    them, each computed once on first use: the voxel counts, the crop, the surface voxels, the
    directed distances per spacing, and the surfels and surface Dice per axis view, spacing
    and τ. Every value equals the one-off computation's; the masks must not change while the
    pair is in use.

    Two views of the axes exist: the metrics of :func:`compute_metrics` drop size-1 axes
    (:func:`_kept_axes`), :func:`surfel_surface_dice` and the conventions score the array as
    it is (a ``(1, H, W)`` image is a one-voxel slab); a volume without size-1 axes has one.
    """

    def __init__(self, pred_mask: np.ndarray, gt_mask: np.ndarray) -> None:
        self.pred = np.asarray(pred_mask, dtype=bool)
        self.gt = np.asarray(gt_mask, dtype=bool)
        if self.pred.shape != self.gt.shape:
            raise ValueError(f"MaskPair: pred shape {self.pred.shape} != gt {self.gt.shape}")
        self._memo: dict[tuple, object] = {}

    def _get(self, key: tuple, make: Callable[[], object]) -> Any:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    @property
    def n_pred(self) -> int:
        """Voxels of the predicted mask."""
        return self._get(("n_pred",), lambda: int(np.count_nonzero(self.pred)))

    @property
    def n_gt(self) -> int:
        """Voxels of the reference mask."""
        return self._get(("n_gt",), lambda: int(np.count_nonzero(self.gt)))

    @property
    def tp(self) -> int:
        """Voxels in both masks."""

        def make() -> int:
            if not self.n_pred or not self.n_gt:
                return 0
            pred_c, gt_c, _ = self._crop()
            return int(np.count_nonzero(pred_c & gt_c))

        return self._get(("tp",), make)

    def _crop(self) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
        """``(pred, gt, kept axes)``: both masks with size-1 axes dropped (:func:`_kept_axes`),
        cropped to the bounding box of their union plus :data:`_CROP_MARGIN` voxels per side
        (clipped at the image border). Both masks must not be empty together."""

        def make() -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
            keep = _kept_axes(self.pred.shape)
            shape = tuple(self.pred.shape[axis] for axis in keep)
            pred, gt = self.pred.reshape(shape), self.gt.reshape(shape)
            window = _union_box(pred, gt, margin=_CROP_MARGIN)
            return pred[window], gt[window], keep

        return self._get(("crop",), make)

    def distances(self, spacing_mm: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """``(d(pred -> gt), d(gt -> pred))`` in mm over the surface voxels (medpy's border,
        :func:`_border`) of the cropped masks; ``spacing_mm`` has one value per axis of the
        masks. Both masks must be non-empty."""
        pred_c, gt_c, keep = self._crop()
        spacing = tuple(float(spacing_mm[axis]) for axis in keep)

        def make() -> tuple[np.ndarray, np.ndarray]:
            pred_border, gt_border = self._get(
                ("border",), lambda: (_border(pred_c), _border(gt_c))
            )
            return _directed_pair(pred_border, gt_border, spacing)

        return self._get(("distances", spacing), make)

    def hd95(self, spacing_mm: Sequence[float]) -> float:
        """medpy 0.5.2 ``hd95`` (:func:`hd95`); NaN when a mask is empty. Without the
        distances of :meth:`distances` at hand, the search stops once the smallest 95 % of
        them are known (the larger ones stay inf: the percentile only reads the former)."""
        if not self.n_pred or not self.n_gt:
            return math.nan
        pred_c, gt_c, keep = self._crop()
        spacing = tuple(float(spacing_mm[axis]) for axis in keep)
        if ("distances", spacing) in self._memo:
            return float(np.percentile(np.concatenate(self.distances(spacing_mm)), 95))

        def make() -> float:
            pred_border, gt_border = self._get(
                ("border",), lambda: (_border(pred_c), _border(gt_c))
            )
            count = int(np.count_nonzero(pred_border)) + int(np.count_nonzero(gt_border))
            enough = math.ceil(0.95 * (count - 1)) + 2  # ranks the percentile reads, and one
            partial = _directed_pair(pred_border, gt_border, spacing, enough=enough)
            return float(np.percentile(np.concatenate(partial), 95))

        return self._get(("hd95", spacing), make)

    def surface_metrics(
        self, spacing_mm: tuple[float, ...], tau_mm: float, nsd_variant: str = NSD_SURFEL
    ) -> dict[str, float]:
        """``nsd``, ``hd95_mm`` and ``assd_mm`` of :func:`compute_metrics` (size-1 axes
        dropped) for two non-empty masks."""
        pred_to_gt, gt_to_pred = self.distances(spacing_mm)
        pooled = np.concatenate([pred_to_gt, gt_to_pred])
        if nsd_variant == NSD_VOXEL:
            within = np.count_nonzero(pred_to_gt <= tau_mm) + np.count_nonzero(gt_to_pred <= tau_mm)
            nsd = within / pooled.size
        else:
            nsd = self.surface_dice(spacing_mm, tau_mm, drop_flat_axes=True)
        return {
            "nsd": float(nsd),
            "hd95_mm": float(np.percentile(pooled, 95)),
            "assd_mm": float(pooled.mean()),
        }

    def _surfels(self, keep: tuple[int, ...]) -> tuple[np.ndarray, ...]:
        """``(pred corner is surface, pred codes there, gt likewise)`` of the masks with only
        the ``keep`` axes, on the tight bounding box of their union (:func:`neighbour_codes`)."""

        def make() -> tuple[np.ndarray, ...]:
            pred_c, gt_c, crop_keep = self._crop()
            if keep == crop_keep:  # the crop holds the union: its tight box is the same
                pred, gt = pred_c, gt_c
            else:
                shape = tuple(self.pred.shape[axis] for axis in keep)
                pred, gt = self.pred.reshape(shape), self.gt.reshape(shape)
            window = _union_box(pred, gt, margin=0)
            return (*_surface_corners(pred[window]), *_surface_corners(gt[window]))

        return self._get(("surfels", keep), make)

    def surface_dice(
        self, spacing_mm: Sequence[float], tau_mm: float, *, drop_flat_axes: bool = False
    ) -> float:
        """DeepMind's surface Dice (:func:`surfel_surface_dice`) at ``tau_mm``; ``spacing_mm``
        has one value per axis of the masks. ``drop_flat_axes``: score without the size-1 axes
        (:func:`compute_metrics`'s view), otherwise the array as it is. 0.0 when exactly one
        mask is empty, NaN when both are."""
        if not self.n_pred and not self.n_gt:
            return math.nan
        if not self.n_pred or not self.n_gt:
            return 0.0
        keep = _kept_axes(self.pred.shape) if drop_flat_axes else tuple(range(self.pred.ndim))
        spacing = tuple(float(spacing_mm[axis]) for axis in keep)

        def make() -> float:
            pred_border, pred_codes, gt_border, gt_codes = self._surfels(keep)
            table = _surfel_size_table(spacing)
            pred_size, gt_size = table[pred_codes], table[gt_codes]
            pred_to_gt, gt_to_pred = self._capped(keep, spacing, float(tau_mm))
            within = np.sum(gt_size[gt_to_pred <= tau_mm]) + np.sum(pred_size[pred_to_gt <= tau_mm])
            return float(within / (np.sum(gt_size) + np.sum(pred_size)))

        return self._get(("surface_dice", keep, spacing, float(tau_mm)), make)

    def _capped(
        self, keep: tuple[int, ...], spacing: tuple[float, ...], tau_mm: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Corner-to-corner distances of the surfels of view ``keep`` (:func:`_capped_pair`)
        up to at least ``tau_mm``; one search serves every smaller τ at that spacing."""
        key = ("capped", keep, spacing)
        held = self._memo.get(key)
        if held is None or held[0] < tau_mm:
            pred_border, _, gt_border, _ = self._surfels(keep)
            held = (tau_mm, *_capped_pair(pred_border, gt_border, spacing, tau_mm))
            self._memo[key] = held
        return held[1], held[2]


class SurfaceCache:
    """One case's :class:`MaskPair` per (pred array, gt array, label), so that
    :func:`compute_metrics` and every convention replay of the case
    (:mod:`medsegflow.conventions`) share the masks, surfaces and distances of each label
    instead of computing them again.

    Arrays are matched by identity (the cache holds them, so an identity cannot be reused by
    another array while it lives); they must not be modified while the cache is in use.
    Make one per case and drop it afterwards.
    """

    def __init__(self) -> None:
        self._pairs: dict[tuple[int, int, int | None], tuple[np.ndarray, np.ndarray, MaskPair]]
        self._pairs = {}

    def pair(self, pred: np.ndarray, gt: np.ndarray, label: int | None = None) -> MaskPair:
        """The :class:`MaskPair` of ``(pred == label, gt == label)``; with ``label`` None,
        ``pred`` and ``gt`` are the masks themselves."""
        key = (id(pred), id(gt), None if label is None else int(label))
        held = self._pairs.get(key)
        if held is not None and held[0] is pred and held[1] is gt:
            return held[2]
        pair = MaskPair(pred, gt) if label is None else MaskPair(pred == label, gt == label)
        self._pairs[key] = (pred, gt, pair)
        return pair


def hd95(pred_mask: np.ndarray, gt_mask: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """``hd95_mm`` of :func:`compute_metrics` alone (medpy 0.5.2 ``hd95``) for two non-empty
    bool masks of equal shape; NaN when one is empty."""
    return MaskPair(pred_mask, gt_mask).hd95(tuple(float(s) for s in spacing_mm))


def _border(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a bool mask: ``mask XOR erosion`` (face connectivity, outside = 0).

    Equal to ``mask ^ scipy.ndimage.binary_erosion(mask, cross, border_value=0)`` (medpy's
    border), computed with shifted views: a voxel is interior when it and its 2·ndim face
    neighbours are all in the mask.
    """
    padded = _pad_zeros(mask, (1,) * mask.ndim)
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
# While more points than this are unmatched, the first _ONE_OFFSET_STEPS offsets are tried one
# at a time (each gather serves only the points still unmatched); then blocks of offsets.
_ONE_OFFSET_POINTS = 256
_ONE_OFFSET_STEPS = 512
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


def _capped_pair(
    a: np.ndarray, b: np.ndarray, spacing_mm: tuple[float, ...], tau_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(d(a -> b), d(b -> a))`` as :func:`_directed_pair` where at most ``tau_mm``, inf
    beyond: only the offsets no longer than τ are tried (the full search when they are too
    many), so ``d <= t`` decides, for every t <= τ, whether a point is within t."""
    span = [math.floor(tau_mm / s) * 2 + 1 for s in spacing_mm]
    if math.prod(span) > 2 * _MAX_OFFSETS:
        return tuple(np.where(d <= tau_mm, d, np.inf) for d in _directed_pair(a, b, spacing_mm))
    offsets, lengths = _sorted_offsets(spacing_mm, float(tau_mm))
    flat, base, shifts, n_a, _ = _pair_search_setup(a, b, offsets)
    result, _, _ = _nearest(base, flat, shifts, lengths, len(base))
    return result[:n_a], result[n_a:]


def _reach(offsets: np.ndarray) -> tuple[int, ...]:
    """The largest absolute offset per axis."""
    return tuple(int(h) for h in np.abs(offsets).max(axis=0))


def _pad_zeros(mask: np.ndarray, half: Sequence[int]) -> np.ndarray:
    """``mask`` with ``half[axis]`` zeros added on both sides of each axis (``np.pad``)."""
    shape = tuple(n + 2 * h for n, h in zip(mask.shape, half, strict=True))
    padded = np.zeros(shape, dtype=mask.dtype)
    padded[tuple(slice(h, h + n) for n, h in zip(mask.shape, half, strict=True))] = mask
    return padded


def _pair_search_setup(
    a: np.ndarray, b: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, tuple[int, ...]]:
    """``(flat, base, shifts, n_a, half)`` for searching both directions of a mask pair at
    once: ``b`` then ``a``, each padded by ``half`` (the offsets' reach per axis) and
    flattened, one after the other; the flat index of every point of ``a`` in the ``b`` part
    (C order, ``n_a`` of them), then of every point of ``b`` in the ``a`` part; and each
    offset's flat shift."""
    half = _reach(offsets)
    padded = [n + 2 * h for n, h in zip(a.shape, half, strict=True)]
    both = np.zeros((2, *padded), dtype=bool)  # b, then a
    window = tuple(slice(h, h + n) for n, h in zip(a.shape, half, strict=True))
    both[0][window], both[1][window] = b, a
    size = math.prod(padded)
    base_a = np.flatnonzero(both[1])  # intp: np.take converts other index types first
    base_b = np.flatnonzero(both[0])
    base = np.concatenate([base_a, base_b + size])
    strides = [math.prod(padded[axis + 1 :]) for axis in range(a.ndim)]
    shifts = (offsets @ np.asarray(strides, dtype=np.intp)).astype(np.intp)
    return both.reshape(-1), base, shifts, len(base_a), half


def _distances_mm(offsets: np.ndarray, spacing_mm: tuple[float, ...]) -> np.ndarray:
    """Euclidean lengths (mm) of ``(N, ndim)`` voxel offsets, with the arithmetic of
    ``scipy.ndimage.distance_transform_edt``: scale per axis, square, add the axes in order,
    square root (so the values are bit-identical to its distance map)."""
    scaled = offsets.T.astype(np.float64)
    scaled *= np.asarray(spacing_mm, dtype=np.float64)[:, None]
    np.multiply(scaled, scaled, out=scaled)
    return np.sqrt(np.add.reduce(scaled, axis=0))


def _directed_pair(
    a: np.ndarray, b: np.ndarray, spacing_mm: tuple[float, ...], *, enough: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(d(a -> b), d(b -> a))``: the distance (mm) from every point of the bool mask ``a``
    to the nearest point of ``b`` (C order of the points of ``a``), and the reverse.

    Both masks must be non-empty. The values are the exact Euclidean distances that
    ``scipy.ndimage.distance_transform_edt(~b, sampling=spacing_mm)`` gives at those points
    (same arithmetic). They are found without a distance map of the whole box: grid offsets
    are tried in order of their length (:data:`_MAX_OFFSETS` of them), each point taking the
    first offset that lands on the other mask (both directions in the same pass); points
    still unmatched then get their nearest point by brute force or from a k-d tree.

    With ``enough``, the search may stop once that many points (of both directions) have
    their distance: every other one is then inf, and no smaller than any of those.
    """
    offsets, lengths = _sorted_offsets(spacing_mm)
    flat, base, shifts, n_a, half = _pair_search_setup(a, b, offsets)
    result, todo, targets = _nearest(base, flat, shifts, lengths, enough or len(base))
    if enough is not None and len(base) - todo.size >= enough:
        return result[:n_a], result[n_a:]
    if todo.size:
        size = flat.size // 2
        padded = tuple(n + 2 * h for n, h in zip(a.shape, half, strict=True))
        for from_a, to_mask in ((True, b), (False, a)):
            which = todo < n_a if from_a else todo >= n_a
            flat_index = targets[which] - (0 if from_a else size)
            points = np.stack(np.unravel_index(flat_index, padded), axis=1) - np.asarray(half)
            result[todo[which]] = _exhaustive_nearest(points, to_mask, spacing_mm)
    return result[:n_a], result[n_a:]


def _nearest(
    base: np.ndarray, flat: np.ndarray, shifts: np.ndarray, lengths: np.ndarray, enough: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(result, todo, targets)``: for every flat point index of ``base``, the length of the
    first of ``shifts`` (lengths ``lengths``, in order) that lands on ``flat`` (inf if none);
    the positions of the points with none, and their flat indices. The search stops early
    once ``enough`` points have their length (after a whole offset or block of offsets, so
    that every point left is at least as far as every point matched)."""
    result = np.full(len(base), np.inf)
    todo = np.arange(len(base), dtype=base.dtype)
    low = -int(shifts.min())  # flat[low + shift:] holds every shifted point, base - low >= 0
    targets = base - base.dtype.type(low)
    start, matched = 0, 0  # matched: points of todo already given a distance
    unmatched = np.ones(len(todo), dtype=bool)
    while start < min(len(shifts), _ONE_OFFSET_STEPS) and todo.size - matched > _ONE_OFFSET_POINTS:
        # one offset at a time while many points are unmatched, then blocks of offsets; todo
        # keeps matched points (masked out) until a quarter of it is matched
        hits = np.take(flat[low + int(shifts[start]) :], targets)
        hits = np.flatnonzero(np.logical_and(hits, unmatched, out=hits))
        start += 1
        if hits.size:
            result[todo[hits]] = lengths[start - 1]
            unmatched[hits] = False
            matched += hits.size
            if 4 * matched > todo.size or len(base) - todo.size + matched >= enough:
                todo, targets = todo[unmatched], targets[unmatched]
                unmatched, matched = np.ones(len(todo), dtype=bool), 0
                if len(base) - todo.size >= enough:
                    break
    todo, targets = todo[unmatched], targets[unmatched] + base.dtype.type(low)
    block = 32
    while start < len(shifts) and todo.size and len(base) - todo.size < enough:  # the last few
        hits = np.take(flat, targets[:, None] + shifts[None, start : start + block])
        first = hits.argmax(axis=1)
        found = hits[np.arange(len(first)), first]
        result[todo[found]] = lengths[start + first[found]]
        todo, targets = todo[~found], targets[~found]
        start, block = start + block, min(2 * block, 512)
    return result, todo, targets


def _exhaustive_nearest(
    points: np.ndarray, to_mask: np.ndarray, spacing_mm: tuple[float, ...]
) -> np.ndarray:
    """Distance from each point ``(N, ndim)`` to the nearest point of ``to_mask``: brute force
    for few (point, target) pairs, else a k-d tree (lengths by :func:`_distances_mm`)."""
    targets = np.stack(np.nonzero(to_mask), axis=1)
    if len(points) * len(targets) <= _BRUTE_FORCE_PAIRS:
        return np.array([_distances_mm(targets - point, spacing_mm).min() for point in points])
    scale = np.asarray(spacing_mm, dtype=np.float64)
    tree = cKDTree(targets * scale, balanced_tree=False, compact_nodes=False)
    _, nearest = tree.query(points * scale)
    return _distances_mm(targets[nearest] - points, spacing_mm)


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
    codes = _pad_zeros(mask, (1,) * mask.ndim).view(np.uint8)
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
    border, codes = _surface_corners(mask)
    return border, _surfel_size_table(spacing)[codes]


def _surface_corners(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(corner_is_surface, codes)``: the corners of :func:`surfels` and their neighbour
    codes (C order)."""
    codes = neighbour_codes(mask)
    full = 2 ** (2**mask.ndim) - 1
    border = (codes != 0) & (codes != full)
    return border, codes[border]


def surfel_surface_dice(
    pred_mask: np.ndarray, gt_mask: np.ndarray, spacing_mm: Sequence[float], tau_mm: float
) -> float:
    """DeepMind's surface Dice at tolerance ``tau_mm`` of two bool masks of equal shape.

    (Σ size_gt[d(gt -> pred) <= τ] + Σ size_pred[d(pred -> gt) <= τ]) / (Σ size_gt + Σ size_pred)
    over the surfels of :func:`surfels`, with Euclidean distances between corner points
    (spacing applied on every axis). 0.0 when exactly one mask is empty, NaN when both are.
    The masks may be 2D or 3D; size-1 axes are not dropped here.
    """
    return MaskPair(pred_mask, gt_mask).surface_dice(spacing_mm, tau_mm)
