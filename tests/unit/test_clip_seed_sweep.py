"""The scoring helpers of benchmarks/clip_seed_sweep.py (the sweep itself trains CLIPs)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from medsegflow.config import load_config, read_config_file

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from clip_seed_sweep import eval_images, mask_box_iou  # noqa: E402


def test_mask_box_iou_compares_the_masks_boxes():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[2:5, 2:5] = True  # box 3 x 3
    b[3, 3] = b[5, 5] = True  # two pixels, box 3 x 3 shifted by one
    assert mask_box_iou(a, b) == pytest.approx(4 / 14)
    assert mask_box_iou(a, a) == 1.0
    assert mask_box_iou(a, np.zeros_like(a)) == 0.0


def test_eval_images_are_the_demo_phantoms_with_their_prompt():
    config = load_config(read_config_file(REPO / "config.yaml"))
    spec = config["datasets"]["phantom_us"]
    prompt_set = spec["text_prompts"]["specific"]
    images = eval_images(spec, seed=1, n=2, prompt_set=prompt_set, key="k")
    assert len(images) == 2
    (first, target, sentences), (second, _, _) = images
    assert first.dtype == np.uint8 and first.shape == target.shape and target.dtype == bool
    assert 0 < target.sum() < target.size
    assert not np.array_equal(first, second)
    assert sentences == [prompt_set["labels"]["lesion"]]
