"""The key slice of box3d prompts (``key_slice: middle | largest``): where the prompt sits,
where propagation starts, and how the prompt set records that it came from the reference."""

from __future__ import annotations

import numpy as np
import pytest

from medsegflow.errors import ConfigError
from medsegflow.prompts.propagation import propagate_box_3d, propagation_order
from medsegflow.prompts.sampling import PromptSpec, key_slice, volume_prompts
from medsegflow.stages.prompts import parse_prompt_config


def _object() -> np.ndarray:
    """Slices 1..7 (middle 4); slice 6 holds the most voxels."""
    obj = np.zeros((9, 20, 20), bool)
    for z, side in ((1, 2), (2, 3), (3, 3), (4, 4), (5, 5), (6, 9), (7, 2)):
        obj[z, 5 : 5 + side, 5 : 5 + side] = True
    return obj


def test_key_slice_rules():
    obj = _object()
    assert key_slice(obj, "middle") == 4
    assert key_slice(obj, "largest") == 6
    tie = np.zeros((5, 4, 4), bool)
    tie[1, :2, :2] = tie[3, :2, :2] = True
    assert key_slice(tie, "largest") == 1  # the lowest z on a tie
    with pytest.raises(ValueError, match="empty"):
        key_slice(np.zeros((3, 4, 4), bool))


def _spec(**keys) -> PromptSpec:
    values = {"type": "box3d", "jitter": 0.0, "n_positive": 0, "n_negative": 0}
    values |= {"erosion_px": 0.0, "ring_px": (0.0, 0.0), "components": "union", "repeats": 1}
    return PromptSpec(**(values | keys))


def test_volume_prompts_sit_on_the_key_slice():
    label = _object().astype(np.uint8)
    rng = np.random.default_rng(0)
    [(z_mid, _, middle)] = volume_prompts(label, label_values=[1], spec=_spec(), rng=rng)
    [(z_big, _, largest)] = volume_prompts(
        label, label_values=[1], spec=_spec(key_slice="largest"), rng=rng
    )
    assert (z_mid, z_big) == (4, 6)
    assert middle.z_range == largest.z_range == (1, 7)  # same 3D box, another start
    np.testing.assert_array_equal(middle.box_xyxy, largest.box_xyxy)


def test_propagation_starts_at_the_key_slice():
    assert propagation_order((1, 7)) == [4, 5, 6, 7, 3, 2, 1]
    assert propagation_order((1, 7), z_key=4) == propagation_order((1, 7))
    assert propagation_order((1, 7), z_key=6) == [6, 7, 5, 4, 3, 2, 1]
    with pytest.raises(ValueError, match="outside"):
        propagation_order((1, 7), z_key=8)
    seen = []

    def segment(z, box):
        seen.append(z)
        return np.ones((20, 20), bool)

    box = np.array([5.0, 5.0, 13.0, 13.0])
    propagate_box_3d(segment, box_xyxy=box, z_range=(1, 7), shape_zyx=(9, 20, 20), z_key=6)
    assert seen == [6, 7, 5, 4, 3, 2, 1]


def test_key_slice_is_a_box3d_option_with_middle_by_default():
    assert parse_prompt_config({"type": "box3d"}, "b3")["key_slice"] == "middle"
    assert parse_prompt_config({"type": "box3d", "key_slice": "largest"}, "b3")
    with pytest.raises(ConfigError, match=r"prompts\.b\.key_slice"):
        parse_prompt_config({"type": "box3d", "key_slice": "first"}, "b")
    with pytest.raises(ConfigError, match="box3d prompts only"):
        parse_prompt_config({"type": "box", "key_slice": "largest"}, "b")
