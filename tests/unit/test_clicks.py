from __future__ import annotations

import numpy as np
import pytest

from medsegflow.prompts.clicks import deepest_index, largest_error_region, next_click


def _rect(shape, rows, cols) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
    return mask


def test_missed_object_gets_a_positive_click_at_its_deepest_pixel():
    gt = _rect((40, 50), (10, 20), (5, 25))  # 11 x 21 rectangle
    # depth 6 (voxel units) on row 15, columns 10..20: 11 equally deep pixels in raster
    # order, the CVPR25 draw RandomState(42).choice(11) picks the 7th
    assert np.random.RandomState(42).choice(11) == 6
    click = next_click(np.zeros_like(gt), gt)
    np.testing.assert_array_equal(click, [16, 15, 1])
    assert click.dtype == np.int64


def test_largest_error_region_wins_and_false_positive_gets_a_negative_click():
    gt = _rect((60, 60), (10, 30), (10, 30))
    pred = gt.copy()
    pred[10:13, 10:13] = False  # false negative, 9 px
    pred |= _rect((60, 60), (40, 48), (35, 55))  # false positive, 9 x 21 = 189 px
    region = largest_error_region(pred, gt)
    assert region.sum() == 189 and not gt[region].any()
    # depth 5 on row 44, columns 39..51 (13 ties): RandomState(42).choice(13) = 6 -> column 45
    np.testing.assert_array_equal(next_click(pred, gt), [45, 44, 0])
    # remove the false positive: now the small miss is the only error
    pred = gt.copy()
    pred[10:13, 10:13] = False
    np.testing.assert_array_equal(next_click(pred, gt), [11, 11, 1])


def test_centre_is_the_distance_transform_maximum_not_the_centroid():
    # an L shape: its centroid lies outside it, the click must lie inside, deepest pixel
    gt = _rect((40, 40), (5, 34), (5, 12)) | _rect((40, 40), (27, 34), (5, 34))
    x, y, label = next_click(np.zeros_like(gt), gt)
    assert gt[y, x] and label == 1
    # deepest (distance 5), raster order: (y, x) = (29, 9), (30, 9), (30, 10); choice(3) = 2
    assert (x, y) == (10, 30)


def test_false_negatives_and_false_positives_form_one_error_component():
    # CVPR25: the error is pred != gt; a miss touching a spurious part is one component
    gt = _rect((30, 30), (5, 14), (5, 9))  # 10 x 5 missed strip (50 px)
    pred = _rect((30, 30), (5, 14), (10, 13))  # 10 x 4 spurious strip beside it (40 px)
    pred |= _rect((30, 30), (25, 29), (20, 29))  # a separate 50 px false positive
    region = largest_error_region(pred, gt)
    assert region.sum() == 90 and gt[region].any() and pred[region].any()
    x, y, label = next_click(pred, gt)
    assert region[y, x] and label == int(gt[y, x])


def test_3d_click_label_is_the_reference_at_the_click():
    gt = np.zeros((12, 12, 12), dtype=bool)
    gt[2:7, 2:7, 2:7] = True
    assert deepest_index(gt) == (4, 4, 4)
    pred = np.zeros_like(gt)
    pred[9:11] = True  # a separate 288-voxel false positive slab, larger than the 125 miss
    from medsegflow.prompts.clicks import next_click_index

    z, y, x, label = next_click_index(pred, gt)
    assert pred[z, y, x] and not gt[z, y, x] and label == 0


def test_no_error_no_click_and_bad_input():
    gt = _rect((10, 10), (2, 5), (2, 5))
    assert next_click(gt.copy(), gt) is None
    assert largest_error_region(np.zeros((4, 4)), np.zeros((4, 4))) is None
    with pytest.raises(ValueError, match="shapes"):
        next_click(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="mode"):
        next_click(gt, gt, mode="edge")
    with pytest.raises(ValueError, match="random generator"):
        next_click(np.zeros_like(gt), gt, mode="random")


def test_random_mode_stays_inside_the_largest_region_and_is_seeded():
    gt = _rect((50, 50), (5, 25), (5, 25)) | _rect((50, 50), (40, 42), (40, 42))
    rng = np.random.default_rng(0)
    clicks = np.array(
        [next_click(np.zeros_like(gt), gt, mode="random", rng=rng) for _ in range(300)]
    )
    big = _rect((50, 50), (5, 25), (5, 25))
    assert big[clicks[:, 1], clicks[:, 0]].all()  # never in the small region
    assert (clicks[:, 2] == 1).all()
    assert len({(x, y) for x, y, _ in clicks}) > 100  # spread over the region
    a = next_click(np.zeros_like(gt), gt, mode="random", rng=np.random.default_rng(7))
    b = next_click(np.zeros_like(gt), gt, mode="random", rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
