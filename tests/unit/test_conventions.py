"""Unit tests for medsegflow.conventions: each paper's rule pinned on hand-made cases.

Geometry used throughout (see test_metrics.py for the derivation): two one-voxel-thick rods of
10 voxels along one axis, the prediction shifted by ``shift`` voxels along the rod. Overlap
10 - shift: DSC = (10 - shift) / 10, IoU = (10 - shift) / (10 + shift). Every rod voxel is a
surface voxel; the pooled surface distances are 2 (10 - shift) zeros plus s, s, 2s, 2s, ...,
shift*s, shift*s (s = spacing along the rod), so for shift 2: HD95 = 2s and NSD = 16/20 when
s > tau, 18/20 when s <= tau < 2s, 1 when 2s <= tau.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from medsegflow import conventions as cv
from medsegflow.metrics import compute_metrics, surfel_surface_dice

SPACING_ZYX = (2.5, 1.3, 0.8)
SHAPE = (24, 12, 16)
CLASSES = [1, 2, 3, 4]
E_DICE = cv.MEDSA_DICE_EPS
E_IOU = cv.MEDSA_IOU_SMOOTH


def _rods(axis: int, shift: int, *, shape=SHAPE, label: int = 1, length: int = 10):
    """(pred, gt) uint8 volumes with one rod each along ``axis``; pred shifted by ``shift``."""
    gt = np.zeros(shape, dtype=np.uint8)
    pred = np.zeros_like(gt)
    fixed = [min(5, n - 1) for n in shape]
    index_gt: list[int | slice] = list(fixed)
    index_pred: list[int | slice] = list(fixed)
    index_gt[axis] = slice(2, 2 + length)
    index_pred[axis] = slice(2 + shift, 2 + shift + length)
    gt[tuple(index_gt)] = label
    pred[tuple(index_pred)] = label
    return pred, gt


def _combo_case(axis: int = 0, shift: int = 2):
    """Classes 1..4: 1 = rods (neither empty), 2 = GT only, 3 = prediction only, 4 = absent."""
    pred, gt = _rods(axis, shift)
    gt[12:14, 9:11, 12:14] = 2
    pred[12:14, 0:2, 12:14] = 3
    return pred, gt


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


# --- SAMed --------------------------------------------------------------------------------------


def test_samed_every_empty_combination_and_voxel_hd95():
    pred, gt = _combo_case(axis=0, shift=2)
    result = cv.samed_case(pred, gt, SPACING_ZYX, CLASSES)
    # neither empty: medpy dc, hd95 in voxels (2 voxels along z), not mm (2 * 2.5 = 5 mm)
    assert result[1]["dsc"] == pytest.approx(0.8, abs=1e-12)
    assert result[1]["hd95"] == pytest.approx(2.0, abs=1e-12)
    mm = compute_metrics(pred, gt, SPACING_ZYX, labels=[1])[1]["hd95_mm"]
    assert mm == pytest.approx(5.0, abs=1e-12)
    # GT only (prediction empty) -> 0, 0
    assert (result[2]["dsc"], result[2]["hd95"]) == (0.0, 0.0)
    # prediction only (GT empty) -> 1, 0 (sic)
    assert (result[3]["dsc"], result[3]["hd95"]) == (1.0, 0.0)
    # both empty -> 0, 0
    assert (result[4]["dsc"], result[4]["hd95"]) == (0.0, 0.0)
    for label in CLASSES:
        assert _nan(result[label]["nsd"]) and _nan(result[label]["iou"])
        assert result[label]["counted"] is True


def test_samed_hd95_ignores_anisotropic_spacing_along_x():
    pred, gt = _rods(axis=2, shift=3)
    result = cv.samed_case(pred, gt, (1.0, 1.0, 4.0), [1])
    # pooled: 14 zeros, 1,1,2,2,3,3 -> sorted[18] = 3, sorted[19] = 3 -> 3 voxels (12 mm)
    assert result[1]["hd95"] == pytest.approx(3.0, abs=1e-12)
    assert result[1]["dsc"] == pytest.approx(0.7, abs=1e-12)


def test_samed_aggregate_mean_over_volumes_then_classes():
    case_a = cv.samed_case(*_combo_case(axis=0, shift=2), SPACING_ZYX, CLASSES)
    pred_b, gt_b = _rods(axis=0, shift=4)  # dsc 0.6; pooled 12 zeros, 1,1,2,2,3,3,4,4 -> 4
    case_b = cv.samed_case(pred_b, gt_b, SPACING_ZYX, CLASSES)
    assert case_b[1]["hd95"] == pytest.approx(4.0, abs=1e-12)
    agg = cv.samed_aggregate([case_a, case_b])
    per_class = agg["per_class"]
    assert per_class[1]["dsc"] == pytest.approx(0.7, abs=1e-12)
    assert per_class[1]["hd95"] == pytest.approx(3.0, abs=1e-12)
    assert per_class[2]["dsc"] == 0.0
    assert per_class[3]["dsc"] == pytest.approx(0.5, abs=1e-12)  # (1 + 0) / 2
    assert per_class[4]["dsc"] == 0.0
    assert agg["overall"]["dsc"] == pytest.approx((0.7 + 0 + 0.5 + 0) / 4, abs=1e-12)
    assert agg["overall"]["hd95"] == pytest.approx(3.0 / 4, abs=1e-12)
    assert agg["n_cases"] == 2 and agg["n_excluded"] == 0


# --- MedSAM CVPR24 ------------------------------------------------------------------------------


def _medsam_case_a():
    """GT labels 1 (rods) and 3 (block), so max(gt) = 3. Prediction: rods, label 2 (absent
    from GT, inside 1..3) and label 5 (above max(gt))."""
    pred, gt = _rods(axis=0, shift=2)
    gt[12:14, 9:11, 12:14] = 3
    pred[12:14, 0:2, 12:14] = 2
    pred[16:18, 0:2, 0:2] = 5
    return pred, gt


def test_medsam_every_empty_combination_and_label_range():
    pred, gt = _medsam_case_a()
    result = cv.medsam_case(pred, gt, SPACING_ZYX, [1, 2, 3, 4, 5])
    # neither empty: the surfel NSD at 2 with the spacing as the npz stores it, (x, y, z)
    nsd_1 = surfel_surface_dice(pred == 1, gt == 1, SPACING_ZYX[::-1], 2.0)
    assert result[1]["dsc"] == pytest.approx(0.8, abs=1e-12)
    assert result[1]["nsd"] == nsd_1 == 1.0  # z gets 0.8 mm as stored (2.5 mm in array order)
    assert surfel_surface_dice(pred == 1, gt == 1, SPACING_ZYX, 2.0) < 1.0
    # GT empty, prediction present, label inside 1..max(gt): 0, counted
    assert (result[2]["dsc"], result[2]["nsd"], result[2]["counted"]) == (0.0, 0.0, True)
    # prediction empty, GT present: 0
    assert (result[3]["dsc"], result[3]["nsd"], result[3]["counted"]) == (0.0, 0.0, True)
    # both empty, above max(gt): never looked at
    assert _nan(result[4]["dsc"]) and _nan(result[4]["nsd"]) and result[4]["counted"] is False
    # predicted but above max(gt): not scored either (no false-positive penalty)
    assert _nan(result[5]["dsc"]) and result[5]["counted"] is False
    assert all(_nan(result[label]["hd95"]) for label in result)
    summary = cv.medsam_case_summary(result)
    assert summary["dsc"] == pytest.approx(0.8 / 3, abs=1e-12)
    assert summary["nsd"] == pytest.approx(nsd_1 / 3, abs=1e-12)


def test_medsam_both_empty_inside_range_is_nan_and_zeroes_nsd():
    pred, gt = _rods(axis=0, shift=2)
    gt[12:14, 9:11, 12:14] = 3  # label 2 is absent from both, inside 1..3
    result = cv.medsam_case(pred, gt, SPACING_ZYX, [1, 2, 3])
    assert _nan(result[2]["dsc"]) and result[2]["counted"] is True
    assert result[1]["dsc"] == pytest.approx(0.8, abs=1e-12)
    # NaN case DSC fails ``dsc > 0.2``: no NSD is computed, the case NSD is 0
    assert all(_nan(result[label]["nsd"]) for label in (1, 2, 3))
    summary = cv.medsam_case_summary(result)
    assert _nan(summary["dsc"]) and summary["nsd"] == 0.0


@pytest.mark.parametrize(("shift", "dsc", "gated"), [(8, 0.2, True), (7, 0.3, False)])
def test_medsam_nsd_zero_when_case_dsc_at_most_0_2(shift, dsc, gated):
    pred, gt = _rods(axis=0, shift=shift)
    result = cv.medsam_case(pred, gt, SPACING_ZYX, [1])
    summary = cv.medsam_case_summary(result)
    assert result[1]["dsc"] == pytest.approx(dsc, abs=1e-12)
    ungated = surfel_surface_dice(pred, gt, SPACING_ZYX[::-1], 2.0)
    assert ungated > 0.0
    assert summary["nsd"] == (0.0 if gated else ungated)
    assert _nan(result[1]["nsd"]) is gated


def test_medsam_2d_is_a_unit_spacing_slab():
    gt = np.zeros((1, 12, 24), dtype=np.uint8)
    gt[0, 2:8, 4:14] = 1
    pred = np.roll(gt, 3, axis=2)  # 3 px: beyond the 2 px tolerance on the sides
    spacing = (1.0, 3.0, 3.0)
    result = cv.medsam_case(pred, gt, spacing, [1])
    assert cv.is_2d_case(gt)
    slab = surfel_surface_dice(pred == 1, gt == 1, (1.0, 1.0, 1.0), 2.0)
    contour = compute_metrics(pred, gt, (1.0, 1.0, 1.0), 2.0)[1]["nsd"]
    assert result[1]["nsd"] == slab and slab > contour


def test_medsam_3d_spacing_as_the_npz_stores_it_or_in_array_order():
    pred, gt = _rods(axis=2, shift=2)  # along x: 0.8 mm in array order, 2.5 mm as stored
    official = cv.medsam_case(pred, gt, SPACING_ZYX, [1])[1]["nsd"]
    in_order = cv.medsam_case(pred, gt, SPACING_ZYX, [1], spacing_order="zyx")[1]["nsd"]
    assert official == surfel_surface_dice(pred, gt, SPACING_ZYX[::-1], 2.0)
    assert in_order == surfel_surface_dice(pred, gt, SPACING_ZYX, 2.0) == 1.0
    assert official < in_order


def test_medsam_aggregate_skips_nan_dsc_but_keeps_zero_nsd():
    case_a = cv.medsam_case(*_medsam_case_a(), SPACING_ZYX, [1, 2, 3, 4, 5])
    pred, gt = _rods(axis=0, shift=2)
    gt[12:14, 9:11, 12:14] = 3
    case_b = cv.medsam_case(pred, gt, SPACING_ZYX, [1, 2, 3])
    agg = cv.medsam_aggregate([case_a, case_b])
    nsd_1 = case_a[1]["nsd"]
    assert agg["overall"]["dsc"] == pytest.approx(0.8 / 3, abs=1e-12)
    assert agg["overall"]["nsd"] == pytest.approx((nsd_1 / 3 + 0.0) / 2, abs=1e-12)
    assert agg["n_excluded"] == 1 and agg["n_cases"] == 2
    assert agg["per_class"][1]["dsc"] == pytest.approx(0.8, abs=1e-12)


# --- SAM-Med3D ----------------------------------------------------------------------------------


def test_sammed3d_every_empty_combination_and_1mm_nsd():
    pred, gt = _combo_case(axis=2, shift=2)  # rods along x (0.8 mm)
    result = cv.sammed3d_case(pred, gt, SPACING_ZYX, CLASSES)
    # the surfel NSD at 1 mm with the spacing in array order (at 2 mm it would be 1.0)
    nsd_1mm = surfel_surface_dice(pred == 1, gt == 1, SPACING_ZYX, 1.0)
    assert result[1]["nsd"] == nsd_1mm < 1.0
    assert surfel_surface_dice(pred == 1, gt == 1, SPACING_ZYX, 2.0) == 1.0
    assert result[1]["dsc"] == pytest.approx(0.8, abs=1e-12)
    assert result[1]["iou"] == pytest.approx(8 / 12, abs=1e-12)
    for label in (2, 3):  # GT only / prediction only
        assert (result[label]["dsc"], result[label]["nsd"], result[label]["iou"]) == (0, 0, 0)
        assert result[label]["counted"] is True
    assert _nan(result[4]["dsc"]) and _nan(result[4]["nsd"]) and result[4]["counted"] is False
    assert all(_nan(result[label]["hd95"]) for label in CLASSES)


def test_sammed3d_aggregate_nan_excluded_and_pooled_overall():
    case_a = cv.sammed3d_case(*_combo_case(axis=2, shift=2), SPACING_ZYX, CLASSES)
    pred_b, gt_b = _rods(axis=2, shift=4)  # dsc 0.6
    case_b = cv.sammed3d_case(pred_b, gt_b, SPACING_ZYX, CLASSES)
    agg = cv.sammed3d_aggregate([case_a, case_b])
    assert agg["per_class"][1]["dsc"] == pytest.approx(0.7, abs=1e-12)
    assert agg["per_class"][2]["dsc"] == 0.0  # nanmean(0, NaN)
    assert _nan(agg["per_class"][4]["dsc"])
    # pooled over (case, class): (0.8 + 0 + 0 + 0.6) / 4, not mean of class means (0.7/3)
    assert agg["overall"]["dsc"] == pytest.approx(0.35, abs=1e-12)
    nsd_sum = case_a[1]["nsd"] + case_b[1]["nsd"]
    assert agg["overall"]["nsd"] == pytest.approx(nsd_sum / 4, abs=1e-12)
    assert agg["per_class"][1]["count"] == 2 and agg["n_excluded"] == 0
    # their default label set: the labels of each GT; a GT without labels drops the file
    empty_gt = cv.sammed3d_case(pred_b, gt_b * 0, SPACING_ZYX, CLASSES, label_set="gt")
    assert empty_gt == {}
    dropped = cv.sammed3d_aggregate([case_a, empty_gt])
    assert dropped["n_cases"] == 1 and dropped["n_excluded"] == 1


def test_sammed3d_best_of_5_clicks():
    def click(d1, i1, d2):
        return {1: cv._scores(dsc=d1, iou=i1), 2: cv._scores(dsc=d2, iou=d2)}

    clicks = [
        click(0.5, 0.4, math.nan),
        click(0.7, 0.8, 0.2),
        click(0.6, 0.3, math.nan),
        click(0.9, 0.6, 0.1),
        click(0.8, 0.5, 0.3),
        click(1.0, 1.0, 1.0),  # a 6th click is ignored
    ]
    best = cv.sammed3d_best_of_clicks(clicks)
    assert best[1]["dsc"] == 0.9 and best[1]["iou"] == 0.8  # maxima from different clicks
    assert best[2]["dsc"] == 0.3
    assert _nan(best[1]["nsd"]) and _nan(best[1]["hd95"])
    with pytest.raises(ValueError, match="need 5"):
        cv.sammed3d_best_of_clicks(clicks[:4])


def test_sammed3d_best_of_clicks_on_real_predictions():
    results = []
    for shift in (6, 4, 2, 3, 5):
        pred, gt = _rods(axis=0, shift=shift)
        results.append(cv.sammed3d_case(pred, gt, SPACING_ZYX, [1]))
    best = cv.sammed3d_best_of_clicks(results)
    assert best[1]["dsc"] == pytest.approx(0.8, abs=1e-12)
    assert best[1]["iou"] == pytest.approx(8 / 12, abs=1e-12)


# --- Med-SA -------------------------------------------------------------------------------------

# Logits of one 4x4 image; GT = the top-left 2x2 block.
_LOGITS = np.zeros((1, 4, 4))
_LOGITS[0, 0, 0], _LOGITS[0, 0, 1], _LOGITS[0, 1, 0], _LOGITS[0, 1, 1] = 0.95, 0.8, 0.6, 0.2
_LOGITS[0, 3, 3], _LOGITS[0, 2, 3] = 0.4, 0.95
_GT_BLOCK = np.zeros((1, 4, 4), dtype=np.uint8)
_GT_BLOCK[0, :2, :2] = 1
# Per threshold (intersection, |pred|, |gt| = 4, union):
# 0.1: (4, 6, 6)  0.3: (3, 5, 6)  0.5: (3, 4, 5)  0.7: (2, 3, 5)  0.9: (1, 2, 5)
_EXPECTED_DICE = (
    (8 + E_DICE) / (10 + E_DICE)
    + (6 + E_DICE) / (9 + E_DICE)
    + (6 + E_DICE) / (8 + E_DICE)
    + (4 + E_DICE) / (7 + E_DICE)
    + (2 + E_DICE) / (6 + E_DICE)
) / 5
_EXPECTED_IOU = (
    (4 + E_IOU) / (6 + E_IOU)
    + (3 + E_IOU) / (6 + E_IOU)
    + (3 + E_IOU) / (5 + E_IOU)
    + (2 + E_IOU) / (5 + E_IOU)
    + (1 + E_IOU) / (5 + E_IOU)
) / 5


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_medsa_threshold_average_on_logits_and_probabilities():
    pred = (_LOGITS > 0).astype(np.uint8)
    by_logit = cv.medsa_case(pred, _GT_BLOCK, SPACING_ZYX, [1], {1: _LOGITS}, soft_kind="logit")
    assert by_logit[1]["dsc"] == pytest.approx(_EXPECTED_DICE, abs=1e-12)
    assert by_logit[1]["iou"] == pytest.approx(_EXPECTED_IOU, abs=1e-12)
    # without the eps terms: (4/5 + 2/3 + 3/4 + 4/7 + 1/3) / 5 = 0.62429
    assert by_logit[1]["dsc"] == pytest.approx((0.8 + 2 / 3 + 0.75 + 4 / 7 + 1 / 3) / 5, abs=1e-4)
    # probabilities: logit threshold t applied as prob > sigmoid(t) -> same pixels
    by_prob = cv.medsa_case(pred, _GT_BLOCK, SPACING_ZYX, [1], {1: _sigmoid(_LOGITS)})
    assert by_prob[1]["dsc"] == pytest.approx(_EXPECTED_DICE, abs=1e-12)
    assert by_prob[1]["iou"] == pytest.approx(_EXPECTED_IOU, abs=1e-12)
    # thresholding the probabilities at 0.1..0.9 directly would be a different number
    naive = cv.medsa_case(
        pred, _GT_BLOCK, SPACING_ZYX, [1], {1: _sigmoid(_LOGITS)}, soft_kind="logit"
    )
    assert naive[1]["dsc"] != pytest.approx(_EXPECTED_DICE, abs=1e-3)
    assert _nan(by_prob[1]["nsd"]) and _nan(by_prob[1]["hd95"])


def test_medsa_every_empty_combination():
    gt = np.zeros((1, 4, 4), dtype=np.uint8)
    gt[0, :2, :2] = 1  # class 1: GT present
    gt[0, 3, 0] = 3  # class 3: GT present, prediction empty
    logits = {
        1: _LOGITS[0][None],  # neither empty
        2: np.zeros((1, 4, 4)),  # both empty
        3: np.zeros((1, 4, 4)),  # prediction empty, GT one pixel
        4: np.zeros((1, 4, 4)),  # GT empty, prediction one pixel
    }
    logits[4][0, 2, 2] = 0.95
    pred = np.zeros_like(gt)
    result = {}
    for pair in ([1, 2], [3, 4]):  # eval_seg scores one or two channels
        result |= cv.medsa_case(pred, gt, SPACING_ZYX, pair, logits, soft_kind="logit")
    assert result[1]["dsc"] == pytest.approx(_EXPECTED_DICE, abs=1e-12)
    assert result[2]["dsc"] == pytest.approx(1.0, abs=1e-15)  # eps / eps
    assert result[2]["iou"] == pytest.approx(1.0, abs=1e-15)
    assert result[3]["dsc"] == pytest.approx(E_DICE / (1 + E_DICE), abs=1e-15)
    assert result[3]["iou"] == pytest.approx(E_IOU / (1 + E_IOU), abs=1e-15)
    assert result[4]["dsc"] == pytest.approx(E_DICE / (1 + E_DICE), abs=1e-15)
    assert result[4]["iou"] == pytest.approx(E_IOU / (1 + E_IOU), abs=1e-15)
    assert all(result[label]["counted"] for label in CLASSES)


def test_medsa_more_than_two_classes_is_their_attribute_error():
    logits = {label: np.zeros((1, 4, 4)) for label in (1, 2, 3)}
    result = cv.medsa_case(_GT_BLOCK, _GT_BLOCK, SPACING_ZYX, [1, 2, 3], logits)
    assert all(s["error"] == "AttributeError" and _nan(s["dsc"]) for s in result.values())
    agg = cv.medsa_aggregate([result])
    assert agg["error"] == "AttributeError" and _nan(agg["overall"]["dsc"])


def test_medsa_without_soft_outputs_is_nan():
    result = cv.medsa_case(_GT_BLOCK, _GT_BLOCK, SPACING_ZYX, [1])
    assert _nan(result[1]["dsc"]) and _nan(result[1]["iou"]) and result[1]["counted"] is False
    agg = cv.medsa_aggregate([result])
    assert _nan(agg["overall"]["dsc"]) and agg["n_excluded"] == 1


def test_medsa_3d_is_mean_over_slices_and_array_layouts_agree():
    gt = np.zeros((2, 4, 4), dtype=np.uint8)
    gt[0] = _GT_BLOCK[0]
    logits = np.zeros((2, 4, 4))
    logits[0] = _LOGITS[0]  # slice 1: empty GT, empty prediction -> 1
    expected = (_EXPECTED_DICE + 1.0) / 2
    by_dict = cv.medsa_case(gt, gt, SPACING_ZYX, [1], {1: logits}, soft_kind="logit")
    assert by_dict[1]["dsc"] == pytest.approx(expected, abs=1e-12)
    one_per_class = logits[None]  # (C=1, Z, Y, X): channel 0 is classes[0]
    background_first = np.stack([np.zeros_like(logits), logits])  # channel c is class c
    for soft in (one_per_class, background_first):
        result = cv.medsa_case(gt, gt, SPACING_ZYX, [1], soft, soft_kind="logit")
        assert result[1]["dsc"] == pytest.approx(expected, abs=1e-12)
    agg = cv.medsa_aggregate([by_dict, cv.medsa_case(gt, gt, SPACING_ZYX, [1])])
    assert agg["overall"]["dsc"] == pytest.approx(expected, abs=1e-12)
    assert agg["n_excluded"] == 1


# --- MedCLIP-SAMv2 ------------------------------------------------------------------------------


def test_medclip_binarise_strictly_above_200():
    image = np.array([0, 199, 200, 201, 254, 255], dtype=np.uint8)
    assert cv.medclip_binarise(image).tolist() == [False, False, False, True, True, True]


def test_medclip_nearest_resize_by_hand():
    small = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    assert cv.medclip_resize_nearest(small, (4, 4)).tolist() == [
        [1, 1, 2, 2],
        [1, 1, 2, 2],
        [3, 3, 4, 4],
        [3, 3, 4, 4],
    ]
    assert cv.medclip_resize_nearest(np.arange(16).reshape(4, 4), (2, 2)).tolist() == [
        [0, 2],
        [8, 10],
    ]
    # 3 -> 2: source index floor(d * 1.5) = 0, 1 (no half-pixel centring)
    assert cv.medclip_resize_nearest(np.arange(9).reshape(3, 3), (2, 2)).tolist() == [
        [0, 1],
        [3, 4],
    ]
    # 6 -> 34: d = 17 gives 17 * 6 / 34 = 3 exactly, but OpenCV's reciprocal gives 2
    assert cv.medclip_resize_nearest(np.arange(6)[None], (1, 34))[0, 17] == 2


def test_medclip_nearest_resize_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(7)
    for _ in range(200):
        src = tuple(int(v) for v in rng.integers(1, 40, 2))
        dst = tuple(int(v) for v in rng.integers(1, 60, 2))
        image = rng.integers(0, 256, src).astype(np.uint8)
        expected = cv2.resize(image, (dst[1], dst[0]), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(cv.medclip_resize_nearest(image, dst), expected)


def test_medclip_png_masks_resize_then_binarise_both():
    seg_png = np.array([[255, 0], [210, 180]], dtype=np.uint8)
    gt_png = np.array([[201] * 4, [200] * 4, [0] * 4, [255] * 4], dtype=np.uint8)
    seg, gt = cv.medclip_png_masks(seg_png, gt_png)
    assert seg.tolist() == [[True, True, False, False]] * 4
    assert gt.tolist() == [[True] * 4, [False] * 4, [False] * 4, [True] * 4]


def test_medclip_resizes_a_smaller_prediction_to_the_gt():
    gt = np.zeros((1, 4, 4), dtype=np.uint8)
    gt[0, :2, :2] = 1
    pred = np.array([[[1, 0], [0, 0]]], dtype=np.uint8)
    result = cv.medclip_case(pred, gt, SPACING_ZYX, [1])
    assert (result[1]["dsc"], result[1]["iou"], result[1]["nsd"]) == (1.0, 1.0, 1.0)


def _medclip_combo():
    pred, gt = _rods(axis=2, shift=2, shape=(1, 12, 24))
    gt[0, 9:11, 12:14] = 2  # GT only
    pred[0, 0:2, 12:14] = 3  # prediction only
    return pred, gt


def test_medclip_every_empty_combination():
    pred, gt = _medclip_combo()
    spacing = (1.0, 3.0, 3.0)  # ignored: NSD at 2 px with unit spacing
    result = cv.medclip_case(pred, gt, spacing, CLASSES)
    assert result[1]["dsc"] == pytest.approx(0.8, abs=1e-12)
    assert result[1]["iou"] == pytest.approx(8 / 12, abs=1e-12)
    slab = surfel_surface_dice(pred == 1, gt == 1, (1.0, 1.0, 1.0), 2.0)
    assert result[1]["nsd"] == slab
    for label in (2, 3):  # prediction empty / GT empty
        assert (result[label]["dsc"], result[label]["iou"], result[label]["nsd"]) == (0, 0, 0)
        assert result[label]["counted"] is True
    # absent from both while other labels are present: not among their labels
    assert _nan(result[4]["dsc"]) and result[4]["counted"] is False
    assert all(_nan(result[label]["hd95"]) for label in CLASSES)
    # no label at all: their assert fails, recorded as the official error
    empty = np.zeros_like(gt)
    failed = cv.medclip_case(empty, empty, spacing, [1, 2])
    assert all(s["error"] == "AssertionError" for s in failed.values())
    with pytest.raises(cv.ConventionUndefinedError) as err:
        cv.medclip_case_summary(failed)
    assert err.value.official_error == "AssertionError"


def test_medclip_aggregate_per_image_means_rounded():
    pred, gt = _medclip_combo()
    image_1 = cv.medclip_case(pred, gt, (1.0, 1.0, 1.0), CLASSES)
    perfect = np.zeros((1, 12, 24), dtype=np.uint8)
    perfect[0, 3:6, 3:9] = 1
    image_2 = cv.medclip_case(perfect, perfect, (1.0, 1.0, 1.0), [1])
    agg = cv.medclip_aggregate([image_1, image_2])
    # image 1: labels 1, 2, 3 scored -> 0.8 / 3 = 0.26667 -> 0.2667; image 2: 1.0
    assert agg["overall"]["dsc"] == pytest.approx((0.2667 + 1.0) / 2, abs=1e-12)
    nsd_1 = round(image_1[1]["nsd"] / 3, 4)
    assert agg["overall"]["nsd"] == pytest.approx((nsd_1 + 1.0) / 2, abs=1e-12)
    assert agg["error"] == "" and agg["n_excluded"] == 0
    unrounded = cv.medclip_aggregate([image_1, image_2], decimals=None)
    assert unrounded["overall"]["dsc"] == pytest.approx((0.8 / 3 + 1.0) / 2, abs=1e-12)
    # one image with two empty masks stops their whole evaluation
    empty = np.zeros_like(perfect)
    image_3 = cv.medclip_case(empty, empty, (1, 1, 1), [1])
    crashed = cv.medclip_aggregate([image_1, image_2, image_3])
    assert crashed["error"] == "AssertionError" and _nan(crashed["overall"]["dsc"])


# --- registry, table rows, input checks -----------------------------------------------------------


def test_registry_entries_share_one_signature():
    assert set(cv.CONVENTIONS) == {
        "samed",
        "medsam_cvpr24",
        "cvpr25",
        "sam_med3d",
        "med_sa",
        "medclip_samv2",
    }
    pred, gt = _combo_case()
    for name, convention in cv.CONVENTIONS.items():
        assert convention.name == name and convention.description and convention.citation
        assert convention.quirks
        words = convention.citation.replace("@", " ").split()
        assert any(len(w) == 40 and all(c in "0123456789abcdef" for c in w) for w in words)
        result = convention.case(pred, gt, SPACING_ZYX, CLASSES)
        assert set(CLASSES) <= set(result) or name == "sam_med3d"  # SAM-Med3D: GT labels
        for scores in result.values():
            assert set(scores) == {*cv.CASE_METRICS, "counted", "error"}
        agg = convention.aggregate([result])
        assert set(agg) == {"overall", "per_class", "n_cases", "n_excluded", "error"}
        assert set(cv.CASE_METRICS) <= set(agg["overall"])


def test_long_table_rows():
    pred, gt = _combo_case()
    result = cv.CONVENTIONS["samed"].case(pred, gt, SPACING_ZYX, CLASSES)
    rows = cv.long_table_rows(
        "samed", result, dataset="synapse", method="samed", case_id="c01", label_names={1: "a"}
    )
    assert [tuple(row) for row in rows] == [cv.LONG_TABLE_COLUMNS] * 4
    assert [row["error"] for row in rows] == [""] * 4
    assert rows[0]["label_name"] == "a" and rows[1]["label_name"] == ""
    assert [row["dsc"] for row in rows] == [pytest.approx(0.8), 0.0, 1.0, 0.0]
    with pytest.raises(KeyError):
        cv.long_table_rows("nope", result, dataset="d", method="m", case_id="c")


def test_bad_inputs_are_rejected():
    pred, gt = _combo_case()
    with pytest.raises(ValueError, match="shape"):
        cv.samed_case(pred[:-1], gt, SPACING_ZYX, CLASSES)
    with pytest.raises(ValueError, match="dtype"):
        cv.sammed3d_case(pred.astype(float), gt, SPACING_ZYX, CLASSES)
    with pytest.raises(ValueError, match="positive integer"):
        cv.medsam_case(pred, gt, SPACING_ZYX, [0, 1])
    with pytest.raises(ValueError, match="spacing"):
        cv.medsam_case(pred, gt, (1.0, 0.0, 1.0), [1])
    with pytest.raises(ValueError, match="channels"):
        cv.medsa_case(pred, gt, SPACING_ZYX, [1, 2], np.zeros((2, *SHAPE))[:1])


def test_medclip_does_not_score_volumes():
    pred, gt = _combo_case()  # (24, 12, 16): a volume, not a PNG image
    result = cv.medclip_case(pred, gt, SPACING_ZYX, CLASSES)
    assert all(not s["counted"] and _nan(s["dsc"]) and not s["error"] for s in result.values())
    agg = cv.medclip_aggregate([result])
    assert _nan(agg["overall"]["dsc"]) and agg["n_excluded"] == 1 and agg["error"] == ""
