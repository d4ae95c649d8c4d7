"""Unit tests for medsegflow.metrics: hand-computed values, empty masks, labels, bad input.

Cross-checks against medpy and an independent surface-Dice reference live in
``test_metrics_reference.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from medsegflow.metrics import (
    METRIC_NAMES,
    NSD_VOXEL,
    compute_metrics,
    neighbour_codes,
    surfel_surface_dice,
)

FLAG_KEYS = ("gt_empty", "pred_empty", "gt_voxels", "pred_voxels")


def _rod_pair(axis: int, shift: int, *, length: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Two one-voxel-thick rods along ``axis`` in a (16, 16, 16) volume, pred shifted by
    ``shift`` voxels along the rod. Every voxel of a rod is a surface voxel."""
    gt = np.zeros((16, 16, 16), dtype=bool)
    pred = np.zeros_like(gt)
    index_gt: list[int | slice] = [5, 6, 7]
    index_pred: list[int | slice] = [5, 6, 7]
    index_gt[axis] = slice(2, 2 + length)
    index_pred[axis] = slice(2 + shift, 2 + shift + length)
    gt[tuple(index_gt)] = True
    pred[tuple(index_pred)] = True
    return pred, gt


# --- hand-computed values -------------------------------------------------------------------

# Rods of 10 voxels, pred shifted by 2 along the rod. Overlap 8: DSC = 16/20, IoU = 8/12.
# Pooled surface distances (20 values): 16 zeros, then s, s, 2s, 2s (s = spacing along the rod).
# HD95: position 0.95 * 19 = 18.05 between sorted[18] = 2s and sorted[19] = 2s -> 2s.
# ASSD = (2 * s + 2 * 2s) / 20 = 0.3 s.  Voxel-count NSD (nsd_variant="voxel", where every
# surface voxel weighs the same): 16/20 if tau < s, 18/20 if s <= tau < 2s, else 1.
SPACING_ZYX = (2.5, 1.3, 0.8)
VOXEL = {"nsd_variant": NSD_VOXEL}


@pytest.mark.parametrize(
    ("axis", "step_mm", "nsd_at_2mm"),
    [(0, 2.5, 16 / 20), (1, 1.3, 18 / 20), (2, 0.8, 1.0)],
)
def test_shift_along_rod_uses_the_spacing_of_that_axis(
    axis: int, step_mm: float, nsd_at_2mm: float
) -> None:
    pred, gt = _rod_pair(axis, 2)
    result = compute_metrics(pred, gt, SPACING_ZYX, 2.0, **VOXEL)[1]
    assert result["dsc"] == pytest.approx(0.8, rel=1e-12)
    assert result["iou"] == pytest.approx(8 / 12, rel=1e-12)
    assert result["hd95_mm"] == pytest.approx(2 * step_mm, rel=1e-12)
    assert result["assd_mm"] == pytest.approx(0.3 * step_mm, rel=1e-12)
    assert result["nsd"] == pytest.approx(nsd_at_2mm, rel=1e-12)
    assert result["precision"] == pytest.approx(0.8) and result["recall"] == pytest.approx(0.8)


def test_voxel_nsd_tolerance_steps_at_the_hand_computed_distances() -> None:
    pred, gt = _rod_pair(0, 2)  # distances 0 (x16), 2.5 (x2), 5.0 (x2)
    nsd = {
        tau: compute_metrics(pred, gt, SPACING_ZYX, tau, **VOXEL)[1]["nsd"]
        for tau in (1, 2.5, 4, 5)
    }
    assert nsd == pytest.approx({1: 0.8, 2.5: 0.9, 4: 0.9, 5: 1.0}, rel=1e-12)


def test_sideways_shift_gives_the_neighbour_distance() -> None:
    gt = np.zeros((8, 9, 10), dtype=bool)
    gt[4, 4, 2:8] = True
    pred = np.roll(gt, 1, axis=1)  # rods side by side along y: every distance is 1.3 mm
    result = compute_metrics(pred, gt, SPACING_ZYX, 1.0, **VOXEL)[1]
    assert result["dsc"] == 0.0 and result["iou"] == 0.0
    assert result["hd95_mm"] == pytest.approx(1.3, rel=1e-12)
    assert result["assd_mm"] == pytest.approx(1.3, rel=1e-12)
    assert result["nsd"] == 0.0
    assert compute_metrics(pred, gt, SPACING_ZYX, 1.3, **VOXEL)[1]["nsd"] == 1.0


def test_overlap_counts_over_the_whole_field_of_view() -> None:
    gt = np.zeros((10, 10, 10), dtype=bool)
    gt[2:5, 2:5, 2:5] = True  # 27 voxels
    pred = np.zeros_like(gt)
    pred[3:6, 2:5, 2:5] = True  # 27 voxels, 18 shared
    result = compute_metrics(pred, gt, (1.0, 1.0, 1.0))[1]
    tp, fp, fn, tn = 18, 9, 9, 1000 - 36
    assert result["dsc"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert result["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert result["specificity"] == pytest.approx(tn / (tn + fp))
    assert result["accuracy"] == pytest.approx((tp + tn) / 1000)
    assert (result["gt_voxels"], result["pred_voxels"]) == (27, 27)


# --- single voxels, image border, all-ones --------------------------------------------------


def test_identical_single_voxels() -> None:
    gt = np.zeros((5, 6, 7), dtype=bool)
    gt[2, 3, 4] = True
    result = compute_metrics(gt.copy(), gt, SPACING_ZYX)[1]
    assert (result["dsc"], result["iou"], result["nsd"]) == (1.0, 1.0, 1.0)
    assert (result["hd95_mm"], result["assd_mm"]) == (0.0, 0.0)


def test_single_voxels_at_a_known_offset() -> None:
    gt = np.zeros((6, 8, 9), dtype=bool)
    pred = np.zeros_like(gt)
    gt[1, 2, 6] = True
    pred[2, 4, 3] = True  # offset (1, 2, -3) voxels
    expected = math.sqrt(2.5**2 + (2 * 1.3) ** 2 + (3 * 0.8) ** 2)
    result = compute_metrics(pred, gt, SPACING_ZYX, expected - 1e-6, **VOXEL)[1]
    assert result["hd95_mm"] == pytest.approx(expected, rel=1e-12)
    assert result["assd_mm"] == pytest.approx(expected, rel=1e-12)
    assert (result["dsc"], result["nsd"]) == (0.0, 0.0)
    assert compute_metrics(pred, gt, SPACING_ZYX, expected + 1e-6, **VOXEL)[1]["nsd"] == 1.0


def test_one_voxel_image() -> None:
    one = np.ones((1, 1, 1), dtype=bool)
    result = compute_metrics(one, one, (1.0, 2.0, 3.0))[1]
    assert (result["dsc"], result["hd95_mm"], result["nsd"]) == (1.0, 0.0, 1.0)


def test_all_ones_masks() -> None:
    ones = np.ones((4, 5, 6), dtype=np.uint8)
    result = compute_metrics(ones, ones, SPACING_ZYX)[1]
    assert (result["dsc"], result["iou"], result["nsd"], result["hd95_mm"]) == (1, 1, 1, 0)
    assert (result["precision"], result["recall"], result["accuracy"]) == (1.0, 1.0, 1.0)
    assert np.isnan(result["specificity"])  # TN + FP = 0: no background in the field of view


def test_box_on_the_image_border_counts_the_image_border_as_background() -> None:
    # A (3, 3, 3) box in the corner of a (3, 6, 6) image, touching the image border on five
    # faces. Outside the image counts as background, so only its centre voxel is interior:
    # 26 surface voxels. pred = the box shifted by one voxel along x (0.8 mm).
    # pred -> gt: 16 surface voxels shared with the gt surface (0 mm); the 9 on the far x face
    # and pred's surface voxel at gt's interior centre (1, 1, 1) are at 0.8 mm. gt -> pred is
    # the mirror image. Pooled: 32 zeros and 20 values of 0.8 mm.
    gt = np.zeros((3, 6, 6), dtype=bool)
    gt[:, :3, :3] = True
    pred = np.roll(gt, 1, axis=2)
    result = compute_metrics(pred, gt, SPACING_ZYX, 0.5, **VOXEL)[1]
    assert result["assd_mm"] == pytest.approx(20 * 0.8 / 52, rel=1e-12)
    assert result["nsd"] == pytest.approx(32 / 52, rel=1e-12)
    assert result["hd95_mm"] == pytest.approx(0.8, rel=1e-12)


# --- surfel NSD (the default): DeepMind's surface elements on the voxel-corner grid -------------


# A k x k square and the same square one pixel lower, spacing (y, x) = (1, 3) mm, tau 0.5 mm.
# On the corner grid each square's contour has 2 (k - 1) vertical unit segments of 1 mm,
# 2 (k - 1) horizontal ones of 3 mm and 4 corner cuts of c = hypot(0.5, 1.5) mm (marching
# squares). Within 0.5 mm of the other contour (distance 0): the overlapping parts of the two
# vertical sides, 2 (k - 1) segments of 1 mm, and 2 corner cuts. Surfel NSD =
# (2 (k - 1) + 2c) / (8 (k - 1) + 4c); counting surface pixels instead gives 1/2.
def test_surfel_nsd_weighs_contour_pieces_by_length() -> None:
    k = 4
    gt = np.zeros((10, 10), dtype=bool)
    gt[3 : 3 + k, 3 : 3 + k] = True
    pred = np.roll(gt, 1, axis=0)
    c = math.hypot(0.5, 1.5)
    expected = (2 * (k - 1) + 2 * c) / (8 * (k - 1) + 4 * c)
    assert compute_metrics(pred, gt, (1.0, 3.0), 0.5)[1]["nsd"] == pytest.approx(expected)
    assert compute_metrics(pred, gt, (1.0, 3.0), 0.5, **VOXEL)[1]["nsd"] == 0.5
    assert compute_metrics(pred, gt, (1.0, 3.0), 1.0)[1]["nsd"] == 1.0
    # a 2D image stored as a one-slice volume gets the same 2D contour
    assert compute_metrics(pred[None], gt[None], (9.0, 1.0, 3.0), 0.5)[1]["nsd"] == pytest.approx(
        expected
    )


@pytest.mark.parametrize("ndim", [2, 3])
def test_neighbour_codes_equal_the_deepmind_kernel_correlation(ndim: int) -> None:
    from scipy import ndimage

    mask = np.random.default_rng(ndim).random((5, 6, 7)[:ndim]) > 0.5
    kernel = (2 ** np.arange(2**ndim)[::-1]).reshape((2,) * ndim)  # 128 ... 1 (8 ... 1 in 2D)
    padded = np.pad(mask, [(0, 1)] * ndim).astype(np.uint8)
    expected = ndimage.correlate(padded, kernel.astype(np.uint8), mode="constant", cval=0)
    np.testing.assert_array_equal(neighbour_codes(mask), expected)


def test_surfel_nsd_of_shifted_cube_within_and_beyond_the_shift() -> None:
    gt = np.zeros((12, 12, 12), dtype=bool)
    gt[3:8, 3:8, 3:8] = True
    pred = np.roll(gt, 1, axis=0)  # 2.5 mm along z
    assert surfel_surface_dice(pred, gt, SPACING_ZYX, 2.5) == 1.0
    below = surfel_surface_dice(pred, gt, SPACING_ZYX, 2.4)
    assert 0.0 < below < 1.0
    assert surfel_surface_dice(pred, np.zeros_like(gt), SPACING_ZYX, 2.0) == 0.0
    assert np.isnan(surfel_surface_dice(gt & False, gt & False, SPACING_ZYX, 2.0))


def test_unknown_nsd_variant_is_rejected() -> None:
    with pytest.raises(ValueError, match="nsd_variant"):
        compute_metrics(*_rod_pair(0, 1), SPACING_ZYX, nsd_variant="area")


# --- empty-mask rule ------------------------------------------------------------------------


def _masks(n_pred: int, n_gt: int) -> tuple[np.ndarray, np.ndarray]:
    pred = np.zeros((10, 10, 10), dtype=bool)
    gt = np.zeros_like(pred)
    pred.flat[:n_pred] = True
    gt.flat[500 : 500 + n_gt] = True
    return pred, gt


def test_both_empty_follow_the_table() -> None:
    result = compute_metrics(*_masks(0, 0), SPACING_ZYX)[1]
    assert (result["dsc"], result["iou"], result["nsd"]) == (1.0, 1.0, 1.0)
    assert (result["hd95_mm"], result["assd_mm"]) == (0.0, 0.0)
    assert np.isnan(result["precision"]) and np.isnan(result["recall"])
    assert (result["specificity"], result["accuracy"]) == (1.0, 1.0)
    assert (result["gt_empty"], result["pred_empty"]) == (True, True)
    assert (result["gt_voxels"], result["pred_voxels"]) == (0, 0)


def test_false_positive_on_empty_gt_follows_the_table() -> None:
    result = compute_metrics(*_masks(5, 0), SPACING_ZYX)[1]
    assert (result["dsc"], result["iou"], result["nsd"]) == (0.0, 0.0, 0.0)
    assert np.isnan(result["hd95_mm"]) and np.isnan(result["assd_mm"])
    assert result["precision"] == 0.0 and np.isnan(result["recall"])
    assert result["specificity"] == pytest.approx(995 / 1000)
    assert result["accuracy"] == pytest.approx(995 / 1000)
    assert (result["gt_empty"], result["pred_empty"]) == (True, False)
    assert (result["gt_voxels"], result["pred_voxels"]) == (0, 5)


def test_missed_object_follows_the_table() -> None:
    result = compute_metrics(*_masks(0, 5), SPACING_ZYX)[1]
    assert (result["dsc"], result["iou"], result["nsd"]) == (0.0, 0.0, 0.0)
    assert np.isnan(result["hd95_mm"]) and np.isnan(result["assd_mm"])
    assert np.isnan(result["precision"]) and result["recall"] == 0.0
    assert result["specificity"] == 1.0
    assert result["accuracy"] == pytest.approx(995 / 1000)
    assert (result["gt_empty"], result["pred_empty"]) == (False, True)


def test_result_keys_and_types() -> None:
    result = compute_metrics(*_masks(3, 4), SPACING_ZYX)[1]
    assert list(result) == [*METRIC_NAMES, *FLAG_KEYS]
    assert all(type(result[name]) is float for name in METRIC_NAMES)
    assert type(result["gt_empty"]) is bool and type(result["gt_voxels"]) is int


# --- labels ---------------------------------------------------------------------------------


def _three_label_volumes() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((8, 20, 20), dtype=np.uint8)
    gt[2:6, 2:8, 2:8] = 1
    gt[2:6, 10:16, 2:8] = 2
    gt[1:4, 5:15, 12:18] = 3
    pred = np.roll(gt, 1, axis=2)
    pred[pred == 3] = 0  # label 3 missed
    pred[6, 18, 18] = 4  # label 4 only in pred
    return pred, gt


def test_multiclass_default_labels_and_per_label_values() -> None:
    pred, gt = _three_label_volumes()
    results = compute_metrics(pred, gt, SPACING_ZYX)
    assert list(results) == [1, 2, 3, 4]
    for label in (1, 2):
        binary = compute_metrics(pred == label, gt == label, SPACING_ZYX)[1]
        np.testing.assert_equal(results[label], binary)
    assert results[3]["pred_empty"] and results[3]["recall"] == 0.0
    assert results[4]["gt_empty"] and results[4]["precision"] == 0.0


def test_requested_labels_are_honoured_and_absent_label_is_both_empty() -> None:
    pred, gt = _three_label_volumes()
    results = compute_metrics(pred, gt, SPACING_ZYX, labels=[2, 7])
    assert list(results) == [2, 7]
    absent = results[7]
    assert (absent["dsc"], absent["nsd"], absent["hd95_mm"]) == (1.0, 1.0, 0.0)
    assert absent["gt_empty"] and absent["pred_empty"]


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.int64, np.uint64])
def test_label_detection_is_dtype_independent(dtype: type) -> None:
    pred, gt = _three_label_volumes()
    reference = compute_metrics(pred, gt, SPACING_ZYX)
    np.testing.assert_equal(
        compute_metrics(pred.astype(dtype), gt.astype(dtype), SPACING_ZYX), reference
    )


def test_negative_and_large_labels_are_found() -> None:
    gt = np.zeros((4, 6, 6), dtype=np.int32)
    gt[1:3, 1:3, 1:3] = -1
    gt[1:3, 3:5, 3:5] = 70000
    assert list(compute_metrics(gt.copy(), gt, (1, 1, 1))) == [-1, 70000]


def test_bool_pred_with_integer_gt_counts_as_label_one() -> None:
    pred, gt = _three_label_volumes()
    results = compute_metrics(pred == 1, gt, SPACING_ZYX)
    assert list(results) == [1, 2, 3]
    np.testing.assert_equal(results[1], compute_metrics(pred == 1, gt == 1, SPACING_ZYX)[1])
    assert results[2]["pred_empty"]


# --- bad input ------------------------------------------------------------------------------


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(4, 5, 6\).*\(4, 5, 7\)"):
        compute_metrics(np.zeros((4, 5, 6), bool), np.zeros((4, 5, 7), bool), (1, 1, 1))


def test_wrong_spacing_length_names_the_shape() -> None:
    with pytest.raises(ValueError, match=r"2 values.*\(4, 5, 6\)"):
        compute_metrics(np.zeros((4, 5, 6), bool), np.zeros((4, 5, 6), bool), (1.0, 1.0))


@pytest.mark.parametrize("spacing", [(1.0, 0.0, 1.0), (1.0, -2.0, 1.0), (1.0, math.nan, 1.0)])
def test_non_positive_spacing_is_rejected(spacing: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="spacing"):
        compute_metrics(np.zeros((4, 5, 6), bool), np.zeros((4, 5, 6), bool), spacing)


@pytest.mark.parametrize(
    ("pred", "kwargs", "message"),
    [
        (np.zeros((4, 5, 6), np.float32), {}, "float32"),
        (np.zeros((4, 5, 6), bool), {"labels": [2]}, "labels"),
        (np.zeros((4, 5, 6), np.uint8), {"labels": [1, 1]}, "duplicates"),
        (np.zeros((4, 5, 6), np.uint8), {"labels": [1.5]}, "1.5"),
        (np.zeros((4, 5, 6), bool), {"nsd_tolerance_mm": -1.0}, "nsd_tolerance_mm"),
    ],
)
def test_other_bad_input(pred: np.ndarray, kwargs: dict, message: str) -> None:
    gt = np.zeros(pred.shape, dtype=pred.dtype if pred.dtype != np.float32 else bool)
    with pytest.raises(ValueError, match=message):
        compute_metrics(pred, gt, (1.0, 1.0, 1.0), **kwargs)


def test_1d_input_is_rejected_naming_the_shape() -> None:
    with pytest.raises(ValueError, match=r"\(7,\)"):
        compute_metrics(np.zeros(7, bool), np.zeros(7, bool), (1.0,))


def test_summary_states_each_metric_definition() -> None:
    import pandas as pd

    from medsegflow.metrics import METRIC_DEFINITIONS
    from medsegflow.tables import summarise

    assert set(METRIC_DEFINITIONS) == set(METRIC_NAMES)
    pred, gt = _rod_pair(0, 2)
    row = {"dataset": "d", "method": "m", "label": 1, "label_name": "rod"}
    rows = pd.DataFrame([row | compute_metrics(pred, gt, SPACING_ZYX)[1]])
    summary = summarise(rows, n_boot=100).set_index("metric")
    assert "DeepMind" in summary.loc["nsd", "definition"]
    assert "surfel" in summary.loc["nsd", "definition"]
    assert "medpy" in summary.loc["hd95_mm", "definition"]
