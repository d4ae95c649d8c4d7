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


def test_click_tables_follow_the_cvpr25_protocol():
    """The box step (click 0) is left out of the AUC; the NSD of a step is 0 when the step's
    DSC over the classes present in the reference is <= 0.2; an absent class is not scored."""
    import pandas as pd

    from medsegflow.interactive import clicks_tables

    steps = {0: 0.9, 1: 0.1, 2: 0.3, 3: 0.3, 4: 1.0, 5: 1.0}  # organ DSC per click
    rows = []
    for click, dsc in steps.items():
        for label, name, value, empty in ((1, "organ", dsc, False), (2, "cyst", 0.0, True)):
            rows.append(
                {"dataset": "d", "method": "m", "case_id": "a", "label": label,
                 "label_name": name, "click": click, "dsc": value, "nsd": 0.5,
                 "distance_unit": "mm", "gt_empty": empty}
            )  # fmt: skip
    curves, auc = clicks_tables(pd.DataFrame(rows))
    organ = curves[curves["label_name"] == "organ"].set_index("click")["nsd"]
    assert organ[1] == 0.0 and organ[2] == 0.5  # DSC 0.1 <= 0.2: NSD 0
    assert set(curves["label_name"]) == {"organ"}  # the cyst is absent from the reference
    row = auc.set_index("label_name").loc["organ"]
    assert row["dsc_auc"] == pytest.approx(0.5 * 0.1 + 0.3 + 0.3 + 1.0 + 0.5 * 1.0)
    assert row["nsd_auc"] == pytest.approx(0.0 + 0.5 + 0.5 + 0.5 + 0.25)
    assert row["n_clicks"] == 5


def test_components_largest_first_ties_in_raster_order_like_the_cvpr25_argmax():
    from medsegflow.components import keep_largest, label_by_size, largest_component

    mask = np.zeros((6, 12), dtype=bool)
    mask[0, 8:10] = True  # 2 px, first in raster order
    mask[3:5, 0:2] = True  # 4 px
    mask[3:5, 5:7] = True  # 4 px, same size, later in raster order
    labelled, order = label_by_size(mask)
    sizes = np.bincount(labelled.ravel())
    assert sizes[order].tolist() == [4, 4, 2] and order.tolist() == [2, 3, 1]
    sizes[0] = 0
    assert (labelled == np.argmax(sizes)).sum() == 4  # CVPR25: argmax of the bincount
    np.testing.assert_array_equal(largest_component(mask), labelled == 2)
    assert keep_largest(mask, top_k=2).sum() == 8 and keep_largest(mask, min_size=3).sum() == 8
    assert not largest_component(np.zeros((3, 3, 3))).any()
