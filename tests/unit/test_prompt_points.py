from __future__ import annotations

import numpy as np
import pytest

from medsegflow.prompts.boxes import gt_box_prompts
from medsegflow.prompts.points import (
    connected_components,
    inner_distance,
    negative_points,
    outer_distance,
    positive_points,
)
from medsegflow.prompts.sampling import (
    UNION,
    PromptSpec,
    gt_prompts,
    mask_prompts,
    volume_prompts,
)
from medsegflow.schema import complete
from medsegflow.stages.prompts import GT_PROMPT_SCHEMA


def spec_of(**keys) -> PromptSpec:
    """A prompt spec: ``keys`` over the schema's defaults (``type`` box unless given)."""
    config = complete({"type": "box", **keys}, GT_PROMPT_SCHEMA, key="prompts.t")
    return PromptSpec.from_config(config)


def raw_spec(**keys) -> PromptSpec:
    """A spec built directly (no schema check): ``keys`` over the schema's defaults."""
    return PromptSpec(**{**spec_of().__dict__, **keys})


def _disc(shape_yx, cy, cx, r) -> np.ndarray:
    yy, xx = np.mgrid[: shape_yx[0], : shape_yx[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _at(mask_yx: np.ndarray, points_xy: np.ndarray) -> np.ndarray:
    return mask_yx[points_xy[:, 1], points_xy[:, 0]]


def test_distances_hand_computed():
    mask = np.zeros((7, 9), dtype=bool)
    mask[1:6, 0:5] = True  # 5 x 5 square touching the left image edge
    depth = inner_distance(mask)
    assert depth[3, 2] == 3  # centre: 3 px to the nearest outside pixel
    assert depth[3, 0] == 1  # the image edge counts as outside
    assert depth[0, 0] == 0
    far = outer_distance(mask)
    assert far[3, 5] == 1 and far[3, 8] == 4 and far[3, 2] == 0
    assert np.isinf(outer_distance(np.zeros((3, 3)))).all()


def test_positive_points_inside_the_eroded_object():
    mask = _disc((60, 70), 30, 35, 12)
    points = positive_points(mask, n=40, erosion_px=4, rng=np.random.default_rng(0))
    assert points.shape == (40, 2) and points.dtype == np.int64
    assert (inner_distance(mask)[points[:, 1], points[:, 0]] > 4).all()
    assert len({tuple(p) for p in points}) == 40  # no repeats while candidates suffice
    again = positive_points(mask, n=40, erosion_px=4, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(points, again)


def test_positive_points_fall_back_to_the_most_interior_pixels():
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:8, 3:25] = True  # 3 px thick bar: erosion by 5 empties it
    points = positive_points(mask, n=6, erosion_px=5, rng=np.random.default_rng(1))
    assert (points[:, 1] == 6).all()  # the middle row, distance-transform maximum
    assert ((points[:, 0] >= 4) & (points[:, 0] <= 23)).all()
    single = np.zeros((5, 5), dtype=bool)
    single[2, 3] = True
    np.testing.assert_array_equal(
        positive_points(single, n=3, erosion_px=2, rng=np.random.default_rng(0)), [[3, 2]] * 3
    )
    with pytest.raises(ValueError, match="empty"):
        positive_points(np.zeros((4, 4)), n=1, erosion_px=0, rng=np.random.default_rng(0))


def test_negative_points_in_the_ring_inside_the_image():
    mask = _disc((40, 50), 8, 10, 6)  # near the top-left corner: the ring is clipped
    points = negative_points(mask, n=60, ring_px=(3, 7), rng=np.random.default_rng(2))
    assert points.shape == (60, 2)
    assert ((points[:, 0] >= 0) & (points[:, 0] < 50) & (points[:, 1] >= 0)).all()
    assert not _at(mask, points).any()
    dist = outer_distance(mask)[points[:, 1], points[:, 0]]
    assert ((dist >= 3) & (dist <= 7)).all()


def test_negative_points_fallbacks():
    mask = np.ones((10, 10), dtype=bool)
    mask[0, 0] = False
    # the ring [20, 30] lies outside the image: any background pixel is used
    points = negative_points(mask, n=2, ring_px=(20, 30), rng=np.random.default_rng(0))
    np.testing.assert_array_equal(points, [[0, 0], [0, 0]])
    full = np.ones((6, 6), dtype=bool)
    assert negative_points(full, n=3, ring_px=(1, 4), rng=np.random.default_rng(0)).shape == (0, 2)
    # allowed_yx keeps negatives off another component of the same label
    other = np.zeros((30, 30), dtype=bool)
    other[10:20, 16:20] = True
    obj = np.zeros((30, 30), dtype=bool)
    obj[10:20, 8:12] = True
    pts = negative_points(
        obj, n=100, ring_px=(1, 8), rng=np.random.default_rng(3), allowed_yx=~(obj | other)
    )
    assert not _at(other | obj, pts).any()


def test_connected_components_largest_first():
    mask = np.zeros((20, 20), dtype=bool)
    mask[0:2, 0:2] = True  # 4 px, first in raster order
    mask[10:15, 10:15] = True  # 25 px
    mask[5, 5] = mask[6, 6] = True  # diagonal pair: one 8-connected component of 2
    parts = connected_components(mask)
    assert [int(p.sum()) for p in parts] == [25, 4, 2]
    assert connected_components(np.zeros((3, 3))) == []


def test_box_points_prompt_contains_the_object_and_respects_bounds():
    mask = _disc((64, 80), 30, 40, 10)
    spec = spec_of(type="box_points", jitter=40, n_positive=3, n_negative=2, repeats=50)
    prompts = mask_prompts(mask, spec=spec, rng=np.random.default_rng(4))
    assert len(prompts) == 50 and {p.component for p in prompts} == {UNION}
    assert [p.repeat for p in prompts] == list(range(50))
    shift = 40 * 80 / 1024  # J pixels at the 1024 scale
    for p in prompts:
        x0, y0, x1, y1 = p.box_xyxy
        assert 30 - shift <= x0 <= 30 and 20 - shift <= y0 <= 20
        assert 50 <= x1 <= 50 + shift and 40 <= y1 <= 40 + shift
        assert p.points_xyl.shape == (5, 3)
        np.testing.assert_array_equal(p.points_xyl[:, 2], [1, 1, 1, 0, 0])
        assert _at(mask, p.points_xyl[:3, :2]).all() and not _at(mask, p.points_xyl[3:, :2]).any()
    boxes = np.array([p.box_xyxy for p in prompts])
    assert len(np.unique(boxes, axis=0)) > 10  # repeats are independent draws


def test_points_only_and_box_only_kinds():
    mask = _disc((40, 40), 20, 20, 8)
    points = mask_prompts(
        mask, spec=spec_of(type="points", n_positive=2), rng=np.random.default_rng(0)
    )
    assert points[0].box_xyxy is None and points[0].points_xyl.shape == (2, 3)
    box = mask_prompts(mask, spec=spec_of(type="box"), rng=np.random.default_rng(0))
    assert box[0].points_xyl.shape == (0, 3) and box[0].box_xyxy is not None
    assert mask_prompts(np.zeros((5, 5)), spec=spec_of(), rng=np.random.default_rng(0)) == []


def _three_blobs() -> np.ndarray:
    mask = np.zeros((60, 60), dtype=bool)
    mask[5:15, 5:15] = True  # 100 px
    mask[30:36, 40:50] = True  # 60 px
    mask[50:53, 5:8] = True  # 9 px
    return mask


def test_components_each_gives_one_prompt_per_component_and_repeat():
    mask = _three_blobs()
    spec = spec_of(type="points", n_positive=2, n_negative=2, components="each", repeats=3)
    prompts = mask_prompts(mask, spec=spec, rng=np.random.default_rng(5))
    assert [(p.component, p.repeat) for p in prompts] == [
        (c, r) for c in range(3) for r in range(3)
    ]
    parts = connected_components(mask)
    for p in prompts:
        pos, neg = p.points_xyl[:2, :2], p.points_xyl[2:, :2]
        assert _at(parts[p.component], pos).all()
        assert not _at(mask, neg).any()  # negatives avoid every component of the label


def test_mask_prompts_top_k():
    mask = _three_blobs()
    rng = np.random.default_rng(0)
    each = mask_prompts(mask, spec=spec_of(jitter=0, components="each"), rng=rng, k=2)
    np.testing.assert_array_equal([p.box_xyxy for p in each], [[5, 5, 14, 14], [40, 30, 49, 35]])
    union = mask_prompts(mask, spec=spec_of(jitter=0), rng=rng, k=2)
    assert len(union) == 1 and union[0].component == UNION
    np.testing.assert_array_equal(union[0].box_xyxy, [5, 5, 49, 35])  # not the 3rd blob
    pts = mask_prompts(mask, spec=spec_of(type="points", n_positive=4), rng=rng, k=1)
    assert len(pts) == 1 and _at(connected_components(mask)[0], pts[0].points_xyl[:, :2]).all()
    with pytest.raises(ValueError, match="k must be"):
        mask_prompts(mask, spec=spec_of(), rng=rng, k=0)


def test_box3d_prompts_are_one_3d_box_per_object_on_its_middle_slice():
    label = np.zeros((9, 30, 40), dtype=np.uint8)
    label[2:7, 5:12, 3:9] = 1  # z 2..6, y 5..11, x 3..8
    label[4, 20:24, 30:36] = 1  # a second 3D component of label 1, slice 4 only
    label[3:5, 15:18, 15:18] = 2
    union = gt_prompts(
        label,
        label_values=[1, 2],
        spec=spec_of(type="box3d", jitter=0),
        rng=np.random.default_rng(1),
    )
    assert [(z, v, p.z_range, p.component) for z, v, p in union] == [
        (4, 1, (2, 6), UNION),  # z_min + (z_max - z_min) // 2, LiteMedSAM's middle slice
        (3, 2, (3, 4), UNION),
    ]
    np.testing.assert_array_equal(union[0][2].box_xyxy, [3, 5, 35, 23])  # over every slice
    assert union[0][2].points_xyl.shape == (0, 3)
    each = volume_prompts(
        label, label_values=[1], spec=spec_of(type="box3d", jitter=0, components="each"),
        rng=np.random.default_rng(1),
    )  # fmt: skip
    assert [(z, p.z_range, p.component) for z, _, p in each] == [(4, (2, 6), 0), (4, (4, 4), 1)]
    np.testing.assert_array_equal(each[1][2].box_xyxy, [30, 20, 35, 23])
    jittered = gt_prompts(
        label, label_values=[2], spec=spec_of(type="box3d", jitter=200, repeats=3),
        rng=np.random.default_rng(2),
    )  # fmt: skip
    boxes = np.array([p.box_xyxy for *_, p in jittered])
    assert len(jittered) == 3 and len(np.unique(boxes, axis=0)) > 1  # repeats jitter anew
    assert (boxes[:, :2] <= [15, 15]).all() and (boxes[:, 2:] >= [17, 17]).all()  # outward


def test_gt_prompts_box_union_draws_the_same_boxes_as_gt_box_prompts():
    label = np.zeros((4, 40, 50), dtype=np.uint8)
    label[1:3, 5:30, 10:40] = 1
    label[2, 12:18, 20:26] = 2
    label[2, 35:38, 2:4] = 2
    boxes = gt_box_prompts(
        label, label_values=[1, 2], max_shift_1024=30, rng=np.random.default_rng(9)
    )
    prompts = gt_prompts(
        label, label_values=[1, 2], spec=spec_of(jitter=30), rng=np.random.default_rng(9)
    )
    assert [(z, v) for z, v, _ in prompts] == [(b.z, b.label) for b in boxes]
    np.testing.assert_array_equal([p.box_xyxy for *_, p in prompts], [b.box_xyxy for b in boxes])
    each = gt_prompts(
        label,
        label_values=[1, 2],
        spec=spec_of(components="each", repeats=2),
        rng=np.random.default_rng(9),
    )
    assert [(z, v, p.component) for z, v, p in each] == [
        (1, 1, 0), (1, 1, 0), (2, 1, 0), (2, 1, 0), (2, 2, 0), (2, 2, 0), (2, 2, 1), (2, 2, 1)
    ]  # fmt: skip


def test_prompt_spec_rejects_bad_values():
    with pytest.raises(ValueError, match="type"):
        raw_spec(type="scribble")
    with pytest.raises(ValueError, match="n_positive"):
        raw_spec(type="points", n_positive=0, n_negative=0)
    with pytest.raises(ValueError, match="ring_px"):
        raw_spec(ring_px=(5, 2))
    with pytest.raises(ValueError, match="components"):
        raw_spec(components="largest")
    spec = spec_of(source="gt", type="points", ring_px=[1, 9])
    assert spec.ring_px == (1.0, 9.0) and spec.has_points and not spec.has_box
