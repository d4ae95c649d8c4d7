"""The per-case SurfaceCache and the offset searches it memoises.

The score stage computes each label's masks, surfaces and distances once per case and shares
them between compute_metrics and every convention replay (medsegflow.metrics.SurfaceCache).
These tests check that sharing changes no value, that a cached pair is only reused for the very
same arrays, and that the distance searches (offset search, brute force and k-d tree for points
beyond the offsets' reach) give scipy's exact Euclidean distance transform values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from medsegflow.conventions import CONVENTIONS
from medsegflow.metrics import MaskPair, SurfaceCache, _border, compute_metrics


def _blob(shape: tuple[int, ...], seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(shape)
    return ndimage.gaussian_filter(noise, sigma=2.0) > 0.1


def _same(a: object, b: object) -> bool:
    """Equal nested results, floats compared exactly, NaN equal to NaN."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _labels_case() -> tuple[np.ndarray, np.ndarray]:
    """Three labels: 1 overlaps, 2 is a false positive on an empty GT, 3 only in the GT."""
    gt = np.zeros((12, 40, 44), dtype=np.uint8)
    gt[_blob(gt.shape, 1)] = 1
    gt[2:5, 30:36, 3:9] = 3
    pred = np.roll(gt, (1, 2, -3), axis=(0, 1, 2))
    pred[pred == 3] = 0
    pred[9:11, 2:6, 36:42] = 2
    return pred, gt


@pytest.mark.parametrize("metrics_first", [True, False])  # True: the score stage's order
@pytest.mark.parametrize(
    ("case", "spacing"),
    [
        ("labels", (3.0, 0.8, 0.7)),
        ("labels", (1.0, 1.0, 1.0)),
        ("image_2d", (1.0, 0.5, 0.5)),
    ],
)
def test_a_shared_cache_changes_no_value(
    case: str, spacing: tuple[float, ...], metrics_first: bool
) -> None:
    if case == "labels":
        pred, gt = _labels_case()
        classes = [1, 2, 3]
    else:  # a 2D image as a (1, H, W) volume: the slab conventions and the 2D metrics
        gt = _blob((1, 48, 52), 2).astype(np.uint8)
        pred = np.roll(gt, (0, 2, 1), axis=(0, 1, 2))
        classes = [1]
    cache = SurfaceCache()
    shared: dict[str, object] = {}
    if metrics_first:
        shared["metrics"] = compute_metrics(pred, gt, spacing, 2.0, labels=classes, cache=cache)
    for name, convention in CONVENTIONS.items():
        shared[name] = convention.case(pred, gt, spacing, classes, cache=cache)
    if not metrics_first:
        shared["metrics"] = compute_metrics(pred, gt, spacing, 2.0, labels=classes, cache=cache)
    alone = {name: c.case(pred, gt, spacing, classes) for name, c in CONVENTIONS.items()}
    alone["metrics"] = compute_metrics(pred, gt, spacing, 2.0, labels=classes)
    assert _same(shared, alone)
    assert shared["metrics"][1]["nsd"] < 1.0  # the shift is seen: the case is not trivial


def test_a_cached_pair_is_reused_only_for_the_same_arrays_and_label() -> None:
    pred, gt = _labels_case()
    cache = SurfaceCache()
    pair = cache.pair(pred, gt, 1)
    assert cache.pair(pred, gt, 1) is pair
    assert cache.pair(pred, gt, 3) is not pair
    assert cache.pair(pred.copy(), gt, 1) is not pair  # equal content, another array
    assert cache.pair(gt, pred, 1) is not pair
    np.testing.assert_array_equal(pair.pred, pred == 1)
    np.testing.assert_array_equal(pair.gt, gt == 1)


def _edt_at_border(
    from_mask: np.ndarray, to_mask: np.ndarray, spacing: tuple[float, ...]
) -> np.ndarray:
    """scipy's distance transform of the other mask's border, read at this mask's border."""
    edt = ndimage.distance_transform_edt(~_border(to_mask), sampling=spacing)
    return edt[_border(from_mask)]


@pytest.mark.parametrize(
    ("far", "spacing"),
    [
        ("none", (5.0, 0.8, 0.8)),
        ("few", (2.0, 0.9, 0.9)),  # a few points beyond the offsets' reach: brute force
        ("many", (1.0, 1.0, 1.0)),  # many: the k-d tree
        ("many", (0.5, 0.5, 3.0)),
    ],
)
def test_distances_equal_scipy_edt(far: str, spacing: tuple[float, ...]) -> None:
    gt = np.zeros((30, 70, 70), dtype=bool)
    gt[2:16, 3:35, 3:35] = _blob((14, 32, 32), 3)
    pred = np.roll(gt, (1, 3, -2), axis=(0, 1, 2))
    if far == "few":
        pred[28, 66, 66] = pred[27, 60, 68] = True
    elif far == "many":
        pred[20:29, 40:68, 45:69] = _blob((9, 28, 24), 4)
    pair = MaskPair(pred, gt)
    pred_to_gt, gt_to_pred = pair.distances(spacing)
    pred_c, gt_c, _ = pair._crop()
    np.testing.assert_array_equal(pred_to_gt, _edt_at_border(pred_c, gt_c, spacing))
    np.testing.assert_array_equal(gt_to_pred, _edt_at_border(gt_c, pred_c, spacing))
    if far != "none":
        assert pred_to_gt.max() > 20.0  # the far points were searched beyond the offsets


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (5.0, 0.8, 0.8), (0.5, 0.5, 3.0)])
@pytest.mark.parametrize("seed", [5, 6])
def test_hd95_that_stops_at_the_95th_percentile_equals_the_full_one(
    spacing: tuple[float, ...], seed: int
) -> None:
    gt = _blob((16, 48, 48), seed)
    pred = np.roll(gt, (1, 3, -2), axis=(0, 1, 2))
    pred[14:16, 40:47, 2:9] = True  # a spurious part far away makes the tail long
    early = MaskPair(pred, gt).hd95(spacing)  # no distances at hand: the search stops early
    full = MaskPair(pred, gt)
    pooled = np.concatenate(full.distances(spacing))
    assert np.isfinite(pooled).all()
    assert early == float(np.percentile(pooled, 95)) == full.hd95(spacing)
    assert early < pooled.max()  # the tail beyond the percentile is not needed
