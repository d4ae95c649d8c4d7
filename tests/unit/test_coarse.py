"""Saliency -> coarse mask post-processing (kmeans, crf, threshold, morphology)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from medsegflow.coarse.postprocess import (
    CoarseConfig,
    coarse_mask,
    disk,
    keep_components,
    parse_coarse_config,
)
from medsegflow.errors import ConfigError

SHAPE = (40, 48)


def _config(**kwargs) -> CoarseConfig:
    return parse_coarse_config(kwargs, "methods.m.coarse")


def _blob_map(rng_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy saliency map with a bright 12 x 16 rectangle, and that rectangle."""
    rng = np.random.default_rng(rng_seed)
    truth = np.zeros(SHAPE, dtype=bool)
    truth[10:22, 20:36] = True
    saliency = np.where(truth, 0.8, 0.15) + rng.normal(0, 0.03, SHAPE)
    return np.clip(saliency, 0, 1).astype(np.float32), truth


def test_config_defaults_and_errors():
    config = parse_coarse_config(None, "x")
    assert config == parse_coarse_config({}, "y")
    assert (config.method, config.threshold, config.top_k, config.fill_holes) == (
        "kmeans",
        0.5,
        1,
        True,
    )
    # MedCLIP-SAMv2's CRF defaults
    assert (config.sxy_gaussian, config.compat_gaussian) == (5.0, 3.0)
    assert (config.sxy_bilateral, config.srgb, config.compat_bilateral) == (5.0, 3.0, 5.0)
    assert (config.iterations, config.tau, config.epsilon) == (1, 1.05, 1e-8)
    assert _config(method="crf", threshold=1).threshold == 1.0
    bad = [
        ({"colour": 1}, "methods.m.coarse.colour: unknown key"),
        ({"method": "otsu"}, "methods.m.coarse.method"),
        ({"threshold": 1.5}, "methods.m.coarse.threshold"),
        ({"threshold": "0.5"}, "methods.m.coarse.threshold"),
        ({"top_k": -1}, "methods.m.coarse.top_k"),
        ({"top_k": 1.5}, "methods.m.coarse.top_k"),
        ({"min_area": True}, "methods.m.coarse.min_area"),
        ({"iterations": 0}, "methods.m.coarse.iterations"),
        ({"fill_holes": "yes"}, "methods.m.coarse.fill_holes"),
        ({"sxy_gaussian": 0}, "methods.m.coarse.sxy_gaussian"),
        ({"compat_bilateral": -1}, "methods.m.coarse.compat_bilateral"),
        ({"open_radius": 1.5}, "methods.m.coarse.open_radius"),
    ]
    for mapping, message in bad:
        with pytest.raises(ConfigError, match=message):
            _config(**mapping)


def test_threshold_is_inclusive_and_keeps_the_largest_component():
    saliency = np.zeros(SHAPE, dtype=np.float32)
    saliency[5:15, 5:15] = 0.5  # exactly at the threshold: foreground
    saliency[30:33, 30:33] = 0.9  # smaller, brighter
    saliency[20, 40] = 0.49
    mask = coarse_mask(saliency, np.zeros(SHAPE, np.uint8), _config(method="threshold"))
    expected = np.zeros(SHAPE, dtype=bool)
    expected[5:15, 5:15] = True
    np.testing.assert_array_equal(mask, expected)
    both = coarse_mask(saliency, np.zeros(SHAPE, np.uint8), _config(method="threshold", top_k=0))
    assert both.sum() == 100 + 9


def test_kmeans_takes_the_brighter_cluster_even_when_it_is_larger():
    saliency, truth = _blob_map()
    mask = coarse_mask(saliency, np.zeros(SHAPE, np.uint8), _config(method="kmeans"))
    np.testing.assert_array_equal(mask, truth)
    inverted = 0.95 - saliency  # now the background (most pixels) is the bright cluster
    mask = coarse_mask(inverted, np.zeros(SHAPE, np.uint8), _config(method="kmeans"))
    assert mask.all()  # the frame around the rectangle, and the rectangle as its hole filled
    unfilled = _config(method="kmeans", fill_holes=False)
    np.testing.assert_array_equal(
        coarse_mask(inverted, np.zeros(SHAPE, np.uint8), unfilled), ~truth
    )


def test_kmeans_on_a_constant_map_is_empty():
    for value in (0.0, 0.7):
        mask = coarse_mask(
            np.full(SHAPE, value, np.float32), np.zeros(SHAPE, np.uint8), _config(method="kmeans")
        )
        assert mask.shape == SHAPE and mask.dtype == bool and not mask.any()


def test_fill_holes_top_k_min_area_and_eight_connectivity():
    ring = np.zeros(SHAPE, dtype=np.float32)
    ring[5:20, 5:20] = 1.0
    ring[9:16, 9:16] = 0.0  # a 7 x 7 hole
    image = np.zeros(SHAPE, np.uint8)
    filled = coarse_mask(ring, image, _config(method="threshold"))
    assert filled.sum() == 15 * 15
    kept = coarse_mask(ring, image, _config(method="threshold", fill_holes=False))
    assert kept.sum() == 15 * 15 - 49
    mask = np.zeros(SHAPE, dtype=bool)
    mask[0:4, 0:4] = True  # 16 px
    mask[4:6, 4:6] = True  # touches the first diagonally: same 8-connected component
    mask[30:35, 30:35] = True  # 25 px
    mask[20:23, 40:43] = True  # 9 px
    one = keep_components(mask, top_k=1, min_area=0)
    assert one.sum() == 25 and one[30, 30]
    two = keep_components(mask, top_k=2, min_area=0)
    assert two.sum() == 25 + 20  # the diagonal pair counts as one 20 px component
    big = keep_components(mask, top_k=0, min_area=10)
    assert big.sum() == 45 and not big[21, 41]
    assert not keep_components(mask, top_k=0, min_area=100).any()
    assert not keep_components(np.zeros(SHAPE, bool), top_k=1, min_area=0).any()


def test_morphology_opens_closes_and_keeps_border_objects():
    saliency = np.zeros(SHAPE, dtype=np.float32)
    saliency[10:30, 0:20] = 0.9  # touches the left border
    saliency[19, 20:30] = 0.9  # 1-px spur: removed by the opening
    saliency[12:28, 9] = 0.0  # 1-px slit: closed
    image = np.zeros(SHAPE, np.uint8)
    config = _config(method="morphology", open_radius=1, close_radius=1)
    mask = coarse_mask(saliency, image, config)
    assert not mask[19, 22:].any()  # the spur is gone
    assert mask[11:29, 0:19].all()  # slit closed, left border column kept (edge padding)
    assert not mask[:10].any() and not mask[30:].any()
    plain = coarse_mask(saliency, image, _config(method="threshold", top_k=0, fill_holes=False))
    assert plain[19, 25] and not plain[15, 9]
    assert plain.sum() == 20 * 20 - 16 + 10
    # radius 0 skips opening and closing; the hole filling of the method remains
    unchanged = coarse_mask(
        saliency,
        image,
        _config(method="morphology", open_radius=0, close_radius=0, top_k=0, fill_holes=False),
    )
    filled = coarse_mask(saliency, image, _config(method="threshold", top_k=0))
    np.testing.assert_array_equal(unchanged, filled)
    assert filled.sum() == plain.sum() + 16
    assert disk(2).sum() == 13 and disk(0).sum() == 1


def test_crf_recovers_a_blob_and_follows_the_image_edges():
    saliency, truth = _blob_map(1)
    image = np.where(truth, 200, 40).astype(np.uint8)
    mask = coarse_mask(saliency, image, _config(method="crf"))
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.95
    # a blurred, offset saliency blob: the bilateral term pulls the mask to the image edges
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    blurred = np.exp(-(((yy - 17) / 8.0) ** 2 + ((xx - 28) / 10.0) ** 2)).astype(np.float32)
    strong = dataclasses.replace(_config(method="crf"), iterations=5, compat_bilateral=10.0)
    refined = coarse_mask(blurred, image, strong)
    assert refined.any()
    dice = 2 * (refined & truth).sum() / (refined.sum() + truth.sum())
    assert dice > 0.8
    empty = coarse_mask(np.zeros(SHAPE, np.float32), image, _config(method="crf"))
    assert not empty.any()


def test_shape_errors():
    config = _config(method="threshold")
    with pytest.raises(ValueError, match="shape"):
        coarse_mask(np.zeros((2, 3, 4), np.float32), np.zeros((2, 3, 4), np.uint8), config)
    with pytest.raises(ValueError, match="differs"):
        coarse_mask(np.zeros((3, 4), np.float32), np.zeros((4, 3), np.uint8), config)
