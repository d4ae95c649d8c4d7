from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest

from medsegflow.errors import ConfigError
from medsegflow.families.registry import complete_method
from medsegflow.methods.classical import ClassicalConfig, parse_classical_config, segment_in_box
from medsegflow.preprocess.clustering import kmeans_1d, otsu_threshold

SIZE = 128


def _disc(cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _noisy(clean: np.ndarray, *, sd: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sd, clean.shape)
    return np.clip(clean + noise, 0, 255).astype(np.uint8)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _box_around(mask: np.ndarray, margin: int) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array(
        [xs.min() - margin, ys.min() - margin, xs.max() + margin, ys.max() + margin],
        dtype=np.float64,
    )


def test_otsu_threshold_between_the_modes():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(60, 8, 3000), rng.normal(190, 8, 2000)])
    t = otsu_threshold(np.clip(values, 0, 255).astype(np.uint8))
    assert 95 < t < 155
    # two exact modes: every t in 50..199 separates them; the middle of that run is taken
    exact = np.array([50] * 100 + [200] * 100, dtype=np.uint8)
    assert otsu_threshold(exact) == (50 + 199) // 2
    assert otsu_threshold(np.full(10, 7, dtype=np.uint8)) == 7


def test_otsu_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        otsu_threshold(np.zeros(4, dtype=np.float32))


def test_kmeans_1d_three_clusters():
    rng = np.random.default_rng(1)
    values = np.concatenate(
        [rng.normal(30, 5, 1000), rng.normal(120, 5, 500), rng.normal(220, 5, 200)]
    )
    values_u8 = np.clip(values, 0, 255).astype(np.uint8)
    centres = kmeans_1d(values_u8, n_clusters=3)
    np.testing.assert_allclose(centres, [30, 120, 220], atol=2.0)
    np.testing.assert_array_equal(centres, kmeans_1d(values_u8[::-1], n_clusters=3))
    # two balanced modes: both starts agree on the two means
    two = np.array([10] * 50 + [12] * 50 + [100] * 50 + [104] * 50, dtype=np.uint8)
    np.testing.assert_allclose(kmeans_1d(two, n_clusters=2), [11, 102])
    with pytest.raises(ValueError, match="n_clusters"):
        kmeans_1d(values, n_clusters=1)


@pytest.mark.parametrize("algorithm", ["otsu", "kmeans"])
@pytest.mark.parametrize(("inside", "outside"), [(50, 200), (200, 50)])
def test_segment_in_box_recovers_disc_with_auto_polarity(algorithm, inside, outside):
    disc = _disc(60, 70, 20)
    image = _noisy(np.where(disc, inside, outside).astype(float), sd=20, seed=2)
    box = _box_around(disc, margin=6)
    mask = segment(image, box, algorithm=algorithm, polarity="auto")
    assert mask.dtype == bool and mask.shape == image.shape
    assert _dice(mask, disc) > 0.9
    outside_box = np.ones_like(mask)
    outside_box[int(box[1]) : int(box[3]) + 1, int(box[0]) : int(box[2]) + 1] = False
    assert not mask[outside_box].any()


def test_explicit_polarity_is_obeyed():
    disc = _disc(64, 64, 20)
    image = _noisy(np.where(disc, 50, 200).astype(float), sd=10, seed=3)
    box = _box_around(disc, margin=6)
    dark = segment(image, box, algorithm="otsu", polarity="dark")
    bright = segment(image, box, algorithm="otsu", polarity="bright", fill_holes=False)
    assert _dice(dark, disc) > 0.9
    assert _dice(bright, disc) < 0.1


def test_kmeans_three_clusters_separates_a_lesion_from_its_organ():
    organ, lesion = _disc(64, 64, 30), _disc(64, 64, 10)
    clean = np.where(lesion, 220, np.where(organ, 120, 30)).astype(float)
    image = _noisy(clean, sd=8, seed=4)
    box = _box_around(organ, margin=4)
    km = segment(image, box, algorithm="kmeans", n_clusters=3, polarity="bright")
    assert _dice(km, lesion) > 0.9
    # two classes cannot: Otsu puts the organ with the lesion
    otsu = segment(image, box, algorithm="otsu", polarity="bright")
    assert _dice(otsu, organ) > 0.9 and _dice(otsu, lesion) < 0.5


def test_keep_largest_and_fill_holes():
    ring = _disc(64, 64, 20) & ~_disc(64, 64, 6)
    blob = _disc(64, 95, 3)  # a second, smaller bright object inside the box
    image = np.where(ring | blob, 200, 40).astype(np.uint8)
    box = np.array([40.0, 40.0, 100.0, 88.0])
    raw = segment(
        image,
        box,
        algorithm="otsu",
        polarity="bright",
        keep_largest=False,
        fill_holes=False,
        smoothing_sigma=0,
    )
    np.testing.assert_array_equal(raw, ring | blob)
    post = segment(image, box, algorithm="otsu", polarity="bright", smoothing_sigma=0)
    np.testing.assert_array_equal(post, _disc(64, 64, 20))


def test_smoothing_keeps_speckle_from_joining_object_and_background():
    """Noise pixels in the ring join the dark object 8-connectedly; smoothing first keeps
    the object separate (measured: DSC 0.876 without, 0.955 with sigma 1.5)."""
    lesion = _disc(64, 64, 12)
    clean = np.where(lesion, 110, 135).astype(float)
    image = _noisy(clean, sd=20, seed=7)
    box = _box_around(lesion, margin=6)
    raw = segment(image, box, algorithm="otsu", smoothing_sigma=0)
    smooth = segment(image, box, algorithm="otsu", smoothing_sigma=1.5)
    assert _dice(smooth, lesion) > 0.94
    assert _dice(smooth, lesion) > _dice(raw, lesion) + 0.05


def test_constant_box_gives_the_whole_box_and_bad_input_raises():
    image = np.full((10, 10), 90, dtype=np.uint8)
    mask = segment(image, np.array([2.0, 3.0, 5.5, 6.0]), algorithm="otsu")
    expected = np.zeros((10, 10), dtype=bool)
    expected[3:7, 2:7] = True  # x 2..ceil(5.5)=6, y 3..6
    np.testing.assert_array_equal(mask, expected)
    with pytest.raises(ValueError, match="uint8"):
        segment(image.astype(np.float32), np.array([0.0, 0, 4, 4]), algorithm="otsu")
    with pytest.raises(ValueError, match="covers no pixel"):
        segment(image, np.array([20.0, 20, 30, 30]), algorithm="otsu")


def segment(image, box, **keys):
    """:func:`segment_in_box` with ``keys`` over the classical schema's defaults."""
    return segment_in_box(image, box, **asdict(classical("t", **keys)))


def classical(name: str, **keys) -> ClassicalConfig:
    """A classical method's settings: ``keys`` over the family schema's defaults."""
    method = {"family": "classical", "prompts": "box20", **keys}
    return parse_classical_config(complete_method(method, name), name)


def test_parse_classical_config():
    config = classical("km3", algorithm="kmeans", n_clusters=3)
    assert config == ClassicalConfig("kmeans", 3, "auto", True, True, 1.0)  # schema defaults
    with pytest.raises(ConfigError, match=r"^methods\.km3\.bogus: unknown key"):
        classical("km3", algorithm="otsu", bogus=1)
    with pytest.raises(ConfigError, match=r"^methods\.m\.algorithm"):
        classical("m", algorithm="watershed")
    with pytest.raises(ConfigError, match=r"^methods\.m\.n_clusters: Otsu splits into 2"):
        classical("m", algorithm="otsu", n_clusters=3)
    with pytest.raises(ConfigError, match=r"^methods\.m\.polarity"):
        classical("m", algorithm="otsu", polarity="up")
