from __future__ import annotations

import numpy as np
import pytest

from medsegflow.errors import ConfigError
from medsegflow.preprocess.cleaning import clean_label
from medsegflow.preprocess.intensity import (
    WINDOW_PRESETS,
    describe_intensity,
    normalise_intensity,
    normalise_percentiles,
    window_ct,
)
from medsegflow.preprocess.slices import select_slices

# ---------------------------------------------------------------- intensity


@pytest.mark.parametrize(
    ("preset", "hu", "expected"),
    [
        # abdomen: level 40, width 400 -> [-160, 240]
        ("abdomen", [-1000, -160, 80, 240, 3000], [0, 0, 153, 255, 255]),
        # chest: level -600, width 1500 -> [-1350, 150]; -1050 -> 300/1500*255 = 51
        ("chest", [-2000, -1350, -1050, 150, 400], [0, 0, 51, 255, 255]),
        # brain: level 40, width 80 -> [0, 80]; 20 -> 63.75 -> 64
        ("brain", [-50, 0, 20, 80, 100], [0, 0, 64, 255, 255]),
    ],
)
def test_window_presets_exact_values(preset, hu, expected):
    level, width = WINDOW_PRESETS[preset]
    out = window_ct(np.array(hu, dtype=np.int16), level=level, width=width)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_window_presets_table():
    assert WINDOW_PRESETS == {"abdomen": (40, 400), "chest": (-600, 1500), "brain": (40, 80)}


def test_window_rejects_non_positive_width():
    with pytest.raises(ValueError, match="width"):
        window_ct(np.zeros(3), level=0, width=0)


def test_percentiles_on_ramp_with_black_background():
    ramp = np.arange(1, 1001, dtype=np.float32)  # foreground 1..1000
    image = np.concatenate([np.zeros(500, dtype=np.float32), ramp])
    out = normalise_percentiles(image)
    # percentiles of 1..1000 (linear): 0.5% -> 5.995, 99.5% -> 995.005; background excluded
    lo, hi = 5.995, 995.005
    assert out.dtype == np.uint8
    assert (out[:500] == 0).all()
    assert out[500 + 4] == 0 and out[500 + 995] == 255  # values 5 and 996 are clipped
    v = 500.0
    assert out[500 + 499] == round((v - lo) / (hi - lo) * 255)
    assert (np.diff(out[500:].astype(int)) >= 0).all()


def test_percentiles_without_foreground_gives_zeros():
    out = normalise_percentiles(np.full((2, 3, 4), 7.0))
    assert out.dtype == np.uint8 and not out.any()


def test_normalise_intensity_dispatch():
    hu = np.array([[[-160, 80, 240]]], dtype=np.int16)
    np.testing.assert_array_equal(
        normalise_intensity(hu, modality="CT", window=None), [[[0, 153, 255]]]
    )
    np.testing.assert_array_equal(
        normalise_intensity(hu, modality="ct", window={"level": 0, "width": 100}), [[[0, 255, 255]]]
    )
    mr = np.array([[[0, 10, 20, 30]]], dtype=np.float32)
    np.testing.assert_array_equal(
        normalise_intensity(mr, modality="MR", window="brain"), normalise_percentiles(mr)
    )
    assert describe_intensity(modality="CT", window=None) == "window 40/400"
    assert describe_intensity(modality="US", window=None) == "percentile 0.5-99.5"


def test_8bit_rasters_reach_the_models_unchanged_and_mr_keeps_percentiles(shared_data):
    from medsegflow.io import read_raster

    us = read_raster(shared_data / "busi_mini" / "images" / "10080.png")[None]  # (1, H, W, 3)
    assert us.dtype == np.uint8
    np.testing.assert_array_equal(normalise_intensity(us, modality="US", window=None), us)
    grey = us[..., 0]
    for modality in ("US", "XR", "endoscopy", "dermoscopy"):
        np.testing.assert_array_equal(
            normalise_intensity(grey, modality=modality, window=None), grey
        )
        assert describe_intensity(modality=modality, window=None, dtype=np.uint8) == (
            "8-bit unchanged"
        )
    # the old rule (0.5-99.5 percentile clipping) would have changed this image
    assert not np.array_equal(normalise_percentiles(grey), grey)
    # MR is normalised to percentiles whatever its dtype (MedSAM's pre_CT_MR.py), CT windowed
    np.testing.assert_array_equal(
        normalise_intensity(grey, modality="MR", window=None), normalise_percentiles(grey)
    )
    assert describe_intensity(modality="MR", window=None, dtype=np.uint8).startswith("percentile")
    assert not np.array_equal(normalise_intensity(grey, modality="CT", window=None), grey)
    # more than 8 bits (an int16 or float ultrasound): percentiles
    wide = grey.astype(np.int16) * 4
    np.testing.assert_array_equal(
        normalise_intensity(wide, modality="US", window=None), normalise_percentiles(wide)
    )


def test_unknown_window_preset_names_value_and_presets():
    with pytest.raises(ConfigError, match=r"'liver'.*abdomen, brain, chest"):
        normalise_intensity(np.zeros((1, 2, 2)), modality="CT", window="liver")
    with pytest.raises(ConfigError, match="level"):
        normalise_intensity(np.zeros((1, 2, 2)), modality="CT", window={"level": 3})


# ---------------------------------------------------------------- cleaning


def _planted_3d() -> np.ndarray:
    label = np.zeros((10, 40, 40), dtype=np.uint8)
    label[0:10, 0:10, 0:10] = 1  # A: 1000 voxels, 100 px per slice -> kept (not < 1000)
    label[0:9, 34:37, 0:37] = 1  # B: 9*3*37 = 999 voxels -> removed in 3D
    label[0:10, 0:10, 20:31] = 2  # C: 1100 voxels -> kept
    label[0:9, 20:32, 20:32] = 2  # D: 9*144 = 1296 voxels -> kept
    label[9, 20:29, 20:31] = 2  # 99 px in slice 9, 3D-connected to D -> removed in 2D
    label[5, 38, 38] = 2  # 1-voxel speck -> removed in 3D
    return label


def test_cleaning_removes_exactly_the_planted_components():
    label = _planted_3d()
    cleaned, report = clean_label(label)
    expected = label.copy()
    expected[0:9, 34:37, 0:37] = 0
    expected[9, 20:29, 20:31] = 0
    expected[5, 38, 38] = 0
    np.testing.assert_array_equal(cleaned, expected)
    assert cleaned.dtype == label.dtype
    assert (
        report.n_components_removed_3d,
        report.n_components_removed_2d,
        report.voxels_removed,
    ) == (2, 1, 999 + 99 + 1)
    p1, p2 = report.per_label[1], report.per_label[2]
    assert (p1.n_components_removed_3d, p1.n_components_removed_2d, p1.voxels_removed) == (
        1,
        0,
        999,
    )
    assert (p2.n_components_removed_3d, p2.n_components_removed_2d, p2.voxels_removed) == (
        1,
        1,
        100,
    )


def test_cleaning_thresholds_can_be_disabled():
    label = _planted_3d()
    cleaned, report = clean_label(label, min_voxels_3d=0)
    # without the 3D rule B survives (111 px per slice); the speck and the 99 px patch go in 2D
    assert (
        report.n_components_removed_3d,
        report.n_components_removed_2d,
        report.voxels_removed,
    ) == (0, 2, 100)
    assert (cleaned[0:9, 34:37, 0:37] == 1).all()
    cleaned, report = clean_label(label, min_voxels_3d=0, min_pixels_2d=0)
    np.testing.assert_array_equal(cleaned, label)
    assert report.voxels_removed == 0


def test_cleaning_one_slice_volume_uses_only_the_2d_rule():
    label = np.zeros((1, 64, 64), dtype=np.uint8)
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 20) ** 2 + (xx - 20) ** 2 <= 10**2  # 317 px: a 3D rule of 1000 would kill it
    label[0][disc] = 1
    label[0, 50:60, 50:60] = 2  # exactly 100 px -> kept
    label[0, 50:55, 5:15] = 1  # 50 px -> removed
    cleaned, report = clean_label(label)
    assert (cleaned[0][disc] == 1).all() and (cleaned[0, 50:60, 50:60] == 2).all()
    assert not cleaned[0, 50:55, 5:15].any()
    assert (
        report.n_components_removed_3d,
        report.n_components_removed_2d,
        report.voxels_removed,
    ) == (0, 1, 50)


def test_cleaning_rejects_bad_thresholds():
    with pytest.raises(ValueError, match="min_pixels_2d"):
        clean_label(np.zeros((1, 2, 2), np.uint8), min_pixels_2d=-1)


# ---------------------------------------------------------------- slices


def _label_with_fg_at(zs, shape=(8, 16, 16)) -> np.ndarray:
    label = np.zeros(shape, dtype=np.uint8)
    for i, z in enumerate(zs):
        label[z, 2:4, 2 : 2 + i + 1] = 1  # slice z has 2 * (i + 1) foreground pixels
    return label


def test_select_slices_counts_and_kinds():
    label = _label_with_fg_at([2, 5])
    chosen = select_slices(label, n_empty=3, rng=np.random.default_rng(0))
    assert len(chosen) == 5
    assert [c.z for c in chosen] == sorted(c.z for c in chosen)
    fg = [(c.z, c.n_foreground) for c in chosen if c.kind == "foreground"]
    assert fg == [(2, 2), (5, 4)]
    empty = [c for c in chosen if c.kind == "empty"]
    assert len(empty) == 3 and all(c.n_foreground == 0 and c.z not in (2, 5) for c in empty)


def test_select_slices_deterministic_and_bounded():
    label = _label_with_fg_at([2, 5])
    a = select_slices(label, n_empty=2, rng=np.random.default_rng(42))
    b = select_slices(label, n_empty=2, rng=np.random.default_rng(42))
    assert a == b
    draws = {
        tuple(c.z for c in select_slices(label, n_empty=2, rng=np.random.default_rng(s)))
        for s in range(20)
    }
    assert len(draws) > 1  # the empty slices really are random
    assert len(select_slices(label, n_empty=100, rng=np.random.default_rng(0))) == 8
    assert [c.z for c in select_slices(label, n_empty=0, rng=np.random.default_rng(0))] == [2, 5]


def test_select_slices_one_slice_volume():
    empty = select_slices(np.zeros((1, 8, 8), np.uint8), n_empty=0, rng=np.random.default_rng(0))
    assert [(c.z, c.n_foreground, c.kind) for c in empty] == [(0, 0, "empty")]
    full = select_slices(
        _label_with_fg_at([0], shape=(1, 8, 8)), n_empty=2, rng=np.random.default_rng(0)
    )
    assert [(c.z, c.n_foreground, c.kind) for c in full] == [(0, 2, "foreground")]
