from __future__ import annotations

import numpy as np
import pytest

from medsegflow.prompts.boxes import (
    BoxPrompt,
    box_from_mask,
    gt_box_prompts,
    jitter_box,
    slice_objects,
)


def test_box_from_mask_exact_values():
    mask = np.zeros((20, 30), dtype=bool)
    mask[3:7, 10:15] = True  # rows 3..6, columns 10..14
    mask[12, 22] = True  # a second piece extends the box
    box = box_from_mask(mask)
    assert box.dtype == np.float64
    np.testing.assert_array_equal(box, [10, 3, 22, 12])


def test_box_from_mask_rejects_empty_and_non_2d():
    with pytest.raises(ValueError, match="empty"):
        box_from_mask(np.zeros((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="shape"):
        box_from_mask(np.ones((1, 4, 4), dtype=bool))


def test_jitter_moves_every_side_outward_within_bounds():
    box = np.array([100.0, 120.0, 150.0, 200.0])
    shape = (512, 256)  # (H, W): longest side 512 -> one 1024-pixel is 0.5 px
    rng = np.random.default_rng(0)
    draws = np.array(
        [jitter_box(box, image_shape_yx=shape, max_shift_1024=20, rng=rng) for _ in range(2000)]
    )
    outward = (draws - box) * np.array([-1, -1, 1, 1])
    assert (outward >= 0).all()  # never inward
    assert (outward <= 20 * 512 / 1024).all()  # at most J * max(H, W) / 1024 = 10 px
    np.testing.assert_array_equal(outward % 0.5, 0)  # integer steps at the 1024 scale
    np.testing.assert_array_equal(outward.max(axis=0), [10, 10, 10, 10])  # reaches J
    assert (outward.min(axis=0) == 0).all()
    # the four sides are drawn independently
    assert abs(np.corrcoef(outward[:, 0], outward[:, 2])[0, 1]) < 0.1


def test_jitter_is_clipped_to_the_image():
    shape = (64, 48)  # H, W
    box = np.array([1.0, 2.0, 46.0, 62.0])
    rng = np.random.default_rng(1)
    for _ in range(200):
        out = jitter_box(box, image_shape_yx=shape, max_shift_1024=1000, rng=rng)
        assert 0 <= out[0] <= box[0] and 0 <= out[1] <= box[1]
        assert box[2] <= out[2] <= 47 and box[3] <= out[3] <= 63


def test_jitter_seeded_and_zero():
    box = np.array([5.0, 6.0, 20.0, 30.0])
    a = jitter_box(box, image_shape_yx=(100, 100), max_shift_1024=50, rng=np.random.default_rng(3))
    b = jitter_box(box, image_shape_yx=(100, 100), max_shift_1024=50, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    zero = jitter_box(
        box, image_shape_yx=(100, 100), max_shift_1024=0, rng=np.random.default_rng(3)
    )
    np.testing.assert_array_equal(zero, box)
    with pytest.raises(ValueError, match="max_shift_1024"):
        jitter_box(box, image_shape_yx=(100, 100), max_shift_1024=-1, rng=np.random.default_rng(3))


def _two_label_volume() -> np.ndarray:
    label = np.zeros((5, 40, 50), dtype=np.uint8)
    label[1:4, 5:30, 10:40] = 1  # organ in slices 1..3
    label[2:4, 12:18, 20:26] = 2  # lesion inside it in slices 2..3
    label[3, 35:38, 2:4] = 2  # second lesion piece in slice 3: box covers the union
    return label


def test_gt_box_prompts_order_and_containment():
    label = _two_label_volume()
    prompts = gt_box_prompts(
        label, label_values=[2, 1], max_shift_1024=30, rng=np.random.default_rng(0)
    )
    assert [(p.z, p.label) for p in prompts] == [(1, 1), (2, 2), (2, 1), (3, 2), (3, 1)]
    for p in prompts:
        ys, xs = np.nonzero(label[p.z] == p.label)
        assert p.x_min <= xs.min() and p.x_max >= xs.max()
        assert p.y_min <= ys.min() and p.y_max >= ys.max()
        assert 0 <= p.x_min <= p.x_max <= 49 and 0 <= p.y_min <= p.y_max <= 39
    union = next(p for p in prompts if (p.z, p.label) == (3, 2))
    assert union.x_min <= 2 and union.y_max >= 37  # covers both lesion pieces


def test_gt_box_prompts_deterministic_and_exact_without_jitter():
    label = _two_label_volume()
    a = gt_box_prompts(label, label_values=[1, 2], max_shift_1024=20, rng=np.random.default_rng(7))
    b = gt_box_prompts(label, label_values=[1, 2], max_shift_1024=20, rng=np.random.default_rng(7))
    assert a == b
    exact = gt_box_prompts(label, label_values=[1], max_shift_1024=0, rng=np.random.default_rng(7))
    assert exact[0] == BoxPrompt(z=1, label=1, x_min=10, y_min=5, x_max=39, y_max=29)
    np.testing.assert_array_equal(exact[0].box_xyxy, [10, 5, 39, 29])
    with pytest.raises(ValueError, match="background"):
        gt_box_prompts(label, label_values=[0], max_shift_1024=0, rng=np.random.default_rng(0))


def test_slice_objects_order_and_masks():
    label = _two_label_volume()
    objects = list(slice_objects(label, label_values=[2, 1]))
    assert [(z, v) for z, v, _ in objects] == [(1, 1), (2, 2), (2, 1), (3, 2), (3, 1)]
    z, value, mask = objects[3]
    np.testing.assert_array_equal(mask, label[3] == 2)
    assert mask.dtype == bool and mask.sum() == 6 * 6 + 3 * 2
