from __future__ import annotations

import numpy as np
import pytest

from medsegflow.prompts.propagation import (
    box_3d_from_mask,
    box_from_mask_widened,
    litemedsam_margin_px,
    propagate_box_3d,
    propagation_order,
)

SHAPE_ZYX = (10, 20, 30)  # Z, H, W
BOX = np.array([5.0, 4.0, 12.0, 9.0])


class FakeSegment:
    """Records every (z, box) it is asked for; returns a prepared mask (empty if none)."""

    def __init__(self, masks: dict[int, np.ndarray], allowed: range) -> None:
        self.masks = masks
        self.allowed = allowed
        self.calls: list[tuple[int, np.ndarray]] = []

    def __call__(self, z: int, box_xyxy: np.ndarray) -> np.ndarray:
        assert z in self.allowed, f"slice {z} outside the box's z range was requested"
        assert box_xyxy.dtype == np.float64 and box_xyxy.shape == (4,)
        self.calls.append((z, box_xyxy.copy()))
        return self.masks.get(z, np.zeros(SHAPE_ZYX[1:], dtype=bool))


def rect(rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(SHAPE_ZYX[1:], dtype=bool)
    mask[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
    return mask


def official_order(z_min: int, z_max: int, depth: int, *, newer: bool) -> list[int]:
    """The official loops of MedSAM_infer_npz_3D, transcribed literally."""
    visited = []
    z_middle = int((z_max - z_min) / 2 + z_min)
    if newer:  # 2a5a0556
        z_max = min(z_max + 1, depth)
    visited += list(range(z_middle, z_max))
    if newer:
        z_min = max(-1, z_min - 1)
    visited += list(range(z_middle - 1, z_min, -1))
    return visited


def test_propagation_boxes_follow_previous_prediction_with_margin():
    masks = {
        4: rect((5, 8), (10, 14)),  # middle slice: box [10, 5, 14, 8]
        5: rect((6, 7), (11, 12)),  # box [11, 6, 12, 7]
        # 6: empty prediction -> slice 7 falls back to the middle box
        3: rect((0, 2), (27, 29)),  # at the top-right border
    }
    fake = FakeSegment(masks, allowed=range(2, 8))
    out = propagate_box_3d(fake, box_xyxy=BOX, z_range=(2, 7), shape_zyx=SHAPE_ZYX)

    assert [z for z, _ in fake.calls] == [4, 5, 6, 7, 3, 2]
    boxes = {z: box for z, box in fake.calls}
    np.testing.assert_array_equal(boxes[4], [5, 4, 12, 9])  # the given box, not widened
    np.testing.assert_array_equal(boxes[5], [7, 2, 17, 11])  # [10, 5, 14, 8] +- 3
    np.testing.assert_array_equal(boxes[6], [8, 3, 15, 10])  # [11, 6, 12, 7] +- 3
    np.testing.assert_array_equal(boxes[7], [5, 4, 12, 9])  # slice 6 empty: middle box
    np.testing.assert_array_equal(boxes[3], [7, 2, 17, 11])  # down starts from slice 4
    np.testing.assert_array_equal(boxes[2], [24, 0, 29, 5])  # clipped to x <= 29, y >= 0

    assert list(out) == [4, 5, 6, 7, 3, 2]
    assert all(m.dtype == bool and m.shape == (20, 30) for m in out.values())
    np.testing.assert_array_equal(out[4], masks[4])
    assert out[4].sum() == 4 * 5 and out[6].sum() == 0 and out[2].sum() == 0


def test_fractional_margin_and_official_scale():
    masks = {4: rect((5, 8), (10, 14))}
    fake = FakeSegment(masks, allowed=range(4, 6))
    propagate_box_3d(fake, box_xyxy=BOX, z_range=(4, 5), shape_zyx=SHAPE_ZYX, margin_px=1.5)
    np.testing.assert_array_equal(fake.calls[1][1], [8.5, 3.5, 15.5, 9.5])
    assert litemedsam_margin_px((512, 512)) == 6.0
    assert litemedsam_margin_px((300, 200)) == 3 * 300 / 256  # longest side counts
    assert litemedsam_margin_px((256, 100)) == 3.0


def test_fallback_when_middle_prediction_is_empty():
    fake = FakeSegment({}, allowed=range(0, 10))
    propagate_box_3d(fake, box_xyxy=BOX, z_range=(0, 9), shape_zyx=SHAPE_ZYX)
    assert [z for z, _ in fake.calls] == [4, 5, 6, 7, 8, 9, 3, 2, 1, 0]
    for _, box in fake.calls:
        np.testing.assert_array_equal(box, BOX)


def test_segment_gets_a_fresh_box_each_call():
    seen = []

    def segment(z: int, box_xyxy: np.ndarray) -> np.ndarray:
        seen.append(box_xyxy.copy())
        box_xyxy[:] = -1.0  # a careless callee must not corrupt the middle box
        return np.zeros((20, 30), dtype=bool)

    given = BOX.copy()
    propagate_box_3d(segment, box_xyxy=given, z_range=(3, 5), shape_zyx=SHAPE_ZYX)
    assert len(seen) == 3
    for box in seen:
        np.testing.assert_array_equal(box, [5, 4, 12, 9])
    np.testing.assert_array_equal(given, [5, 4, 12, 9])


def test_visited_slices_hand_case_both_revisions():
    # z_range (2, 7): z_middle = int(5 / 2 + 2) = 4
    assert propagation_order((2, 7)) == [4, 5, 6, 7, 3, 2]
    assert propagation_order((2, 7), include_ends=False) == [4, 5, 6, 3]
    assert official_order(2, 7, 10, newer=True) == [4, 5, 6, 7, 3, 2]
    assert official_order(2, 7, 10, newer=False) == [4, 5, 6, 3]
    # even number of slices: z_range (2, 5) -> z_middle = int(3.5) = 3
    assert propagation_order((2, 5)) == [3, 4, 5, 2]
    assert propagation_order((2, 5), include_ends=False) == [3, 4]

    fake = FakeSegment({}, allowed=range(3, 7))
    out = propagate_box_3d(
        fake, box_xyxy=BOX, z_range=(2, 7), shape_zyx=SHAPE_ZYX, include_ends=False
    )
    assert [z for z, _ in fake.calls] == [4, 5, 6, 3]
    assert list(out) == [4, 5, 6, 3]


@pytest.mark.parametrize("newer", [True, False])
def test_order_matches_the_official_loops_on_every_range(newer):
    depth = 9
    for z_min in range(depth):
        for z_max in range(z_min + 1, depth):  # the official code asserts z_min < z_max
            expected = official_order(z_min, z_max, depth, newer=newer)
            got = propagation_order((z_min, z_max), include_ends=newer)
            assert got == expected, (z_min, z_max)


@pytest.mark.parametrize("include_ends", [True, False])
def test_single_slice_range_segments_only_that_slice(include_ends):
    fake = FakeSegment({}, allowed=range(4, 5))
    out = propagate_box_3d(
        fake, box_xyxy=BOX, z_range=(4, 4), shape_zyx=SHAPE_ZYX, include_ends=include_ends
    )
    assert [z for z, _ in fake.calls] == [4]
    assert list(out) == [4]


def test_whole_volume_range_reaches_both_borders():
    fake = FakeSegment({}, allowed=range(0, 10))
    out = propagate_box_3d(fake, box_xyxy=BOX, z_range=(0, 9), shape_zyx=SHAPE_ZYX)
    assert sorted(out) == list(range(10))


def test_box_from_mask_widened_values_and_clipping():
    mask = rect((5, 8), (10, 14))
    np.testing.assert_array_equal(box_from_mask_widened(mask, 3.0, (20, 30)), [7, 2, 17, 11])
    np.testing.assert_array_equal(box_from_mask_widened(mask, 0.0, (20, 30)), [10, 5, 14, 8])
    corner = rect((17, 19), (0, 1))  # bottom-left corner
    np.testing.assert_array_equal(box_from_mask_widened(corner, 4.0, (20, 30)), [0, 13, 5, 19])
    with pytest.raises(ValueError, match=r"\(20, 30\).*\(20, 31\)"):
        box_from_mask_widened(mask, 3.0, (20, 31))
    with pytest.raises(ValueError, match="margin_px"):
        box_from_mask_widened(mask, -1.0, (20, 30))
    with pytest.raises(ValueError, match="empty"):
        box_from_mask_widened(np.zeros((20, 30), dtype=bool), 3.0, (20, 30))


def test_box_3d_from_mask_union_and_inclusive_z():
    mask = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    mask[3, 2:5, 5:7] = 1  # rows 2..4, columns 5..6
    mask[6, 8, 1:10] = 1  # row 8, columns 1..9
    box, z_range = box_3d_from_mask(mask)
    assert box.dtype == np.float64
    np.testing.assert_array_equal(box, [1, 2, 9, 8])
    assert z_range == (3, 6) and all(type(z) is int for z in z_range)

    fake = FakeSegment({}, allowed=range(3, 7))
    out = propagate_box_3d(fake, box_xyxy=box, z_range=z_range, shape_zyx=mask.shape)
    assert list(out) == [4, 5, 6, 3]  # z_middle = int(3 / 2 + 3) = 4

    with pytest.raises(ValueError, match="empty"):
        box_3d_from_mask(np.zeros((3, 4, 5), dtype=bool))
    with pytest.raises(ValueError, match=r"\(4, 5\)"):
        box_3d_from_mask(np.ones((4, 5), dtype=bool))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"z_range": (5, 3)}, r"\(5, 3\)"),
        ({"z_range": (-1, 3)}, r"\(-1, 3\).*10"),
        ({"z_range": (2, 10)}, r"\(2, 10\).*10"),
        ({"box_xyxy": np.zeros(5)}, r"\(5,\)"),
        ({"box_xyxy": np.zeros((2, 2))}, r"\(2, 2\)"),
        ({"box_xyxy": np.array([12.0, 4.0, 5.0, 9.0])}, r"\[12\.0, 4\.0, 5\.0, 9\.0\]"),
        ({"box_xyxy": np.array([5.0, np.nan, 12.0, 9.0])}, "finite"),
        ({"margin_px": -0.5}, r"-0\.5"),
        ({"shape_zyx": (10, 20)}, r"\(10, 20\)"),
        ({"shape_zyx": (0, 20, 30)}, r"\(0, 20, 30\)"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_value(kwargs, message):
    args = {"box_xyxy": BOX, "z_range": (2, 7), "shape_zyx": SHAPE_ZYX} | kwargs
    fake = FakeSegment({}, allowed=range(0, 10))
    with pytest.raises(ValueError, match=message):
        propagate_box_3d(fake, **args)
    assert fake.calls == []  # validated before any slice is segmented


def test_segment_returning_wrong_shape_is_rejected():
    def segment(z: int, box_xyxy: np.ndarray) -> np.ndarray:
        return np.zeros((30, 20), dtype=bool)

    with pytest.raises(ValueError, match=r"z=4.*\(30, 20\).*\(20, 30\)"):
        propagate_box_3d(segment, box_xyxy=BOX, z_range=(2, 7), shape_zyx=SHAPE_ZYX)
