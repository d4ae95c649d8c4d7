"""Phantom generators and the ``phantom`` adapter: determinism, intensities, geometry."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medsegflow.datasets.canonical import assign_splits, read_cases, read_label_map
from medsegflow.datasets.phantom import DEFAULT_SPLITS, build
from medsegflow.datasets.registry import prepare_dataset
from medsegflow.errors import ConfigError
from medsegflow.io import read_volume
from medsegflow.phantoms import (
    CT_LABEL_MAP,
    US_LABEL_MAP,
    ct_caption,
    generate_ct_case,
    generate_us_case,
)
from medsegflow.phantoms.ct import HU_AIR, HU_LIVER

LIVER, LESION = CT_LABEL_MAP["liver"], CT_LABEL_MAP["lesion"]
SMALL_CT = {"shape": [16, 64, 64], "spacing_mm": [5.0, 1.6, 1.6]}


def _ct(seed: int, **kwargs):
    return generate_ct_case(np.random.default_rng(seed), **kwargs)


def _us(seed: int, **kwargs):
    return generate_us_case(np.random.default_rng(seed), **kwargs)


def _small() -> dict:
    return {"shape_zyx": (16, 64, 64), "spacing_zyx_mm": (5.0, 1.6, 1.6)}


@pytest.fixture(scope="module")
def ct_cases():
    """Default-size CT cases requesting 0, 1, 2 and 3 lesions."""
    return [_ct(10 + n, n_lesions=n) for n in range(4)]


def test_ct_is_deterministic_per_seed():
    a, b, c = _ct(1, **_small()), _ct(1, **_small()), _ct(2, **_small())
    np.testing.assert_array_equal(a.image_zyx, b.image_zyx)
    np.testing.assert_array_equal(a.label_zyx, b.label_zyx)
    assert a.caption == b.caption
    assert not np.array_equal(a.image_zyx, c.image_zyx)


def test_ct_arrays_and_labels(ct_cases):
    for case in ct_cases:
        assert case.image_zyx.shape == case.label_zyx.shape == (40, 128, 128)
        assert case.image_zyx.dtype == np.float32 and case.label_zyx.dtype == np.uint8
        assert set(np.unique(case.label_zyx)) <= set(CT_LABEL_MAP.values())
        for organ in ("liver", "spleen", "kidney"):
            assert (case.label_zyx == CT_LABEL_MAP[organ]).sum() > 1000, organ


def test_ct_hounsfield_ranges(ct_cases):
    for case in ct_cases:
        image, label = case.image_zyx, case.label_zyx
        assert abs(image[:, :4, :4].mean() - HU_AIR) < 5
        assert image.max() > 400  # vertebra
        lesion = label == LESION
        deep_liver = ndimage.binary_erosion(label == LIVER, iterations=2)
        deep_liver &= ~ndimage.binary_dilation(lesion, iterations=4)
        assert abs(image[deep_liver].mean() - HU_LIVER) < 8
        if lesion.any():
            ring = ndimage.binary_dilation(lesion, iterations=3) & (label == LIVER)
            assert image[ring].mean() - image[lesion].mean() > 15


def test_ct_lesions_are_separate_large_components(ct_cases):
    for n, case in enumerate(ct_cases):
        components, count = ndimage.label(case.label_zyx == LESION, structure=np.ones((3, 3, 3)))
        assert count == case.n_lesions
        assert case.n_lesions == n  # the default grid has room for 3 lesions
        sizes = np.bincount(components.ravel())[1:]
        assert (sizes >= 1000).all(), sizes
        assert case.caption == ct_caption(n)


def test_ct_captions_count_in_words():
    assert ct_caption(0) == "Axial abdominal CT with no liver lesion."
    assert ct_caption(1) == "Axial abdominal CT with one hypodense liver lesion."
    assert ct_caption(2) == "Axial abdominal CT with two hypodense liver lesions."


def _organ_volumes_mm3(label_zyx: np.ndarray, voxel_mm3: float) -> dict[str, float]:
    liver = np.isin(label_zyx, [LIVER, LESION]).sum() * voxel_mm3
    return {"liver": liver, "spleen": (label_zyx == CT_LABEL_MAP["spleen"]).sum() * voxel_mm3}


def test_ct_anatomy_is_in_mm_whatever_the_spacing():
    fine = _ct(5, n_lesions=1)
    spacing = (5.0, 0.8, 1.6)  # coarser in z and x only: axis order must be honoured
    coarse = _ct(5, n_lesions=1, shape_zyx=(20, 128, 64), spacing_zyx_mm=spacing)
    fine_mm3 = _organ_volumes_mm3(fine.label_zyx, 2.5 * 0.8 * 0.8)
    coarse_mm3 = _organ_volumes_mm3(coarse.label_zyx, float(np.prod(spacing)))
    for name, volume in fine_mm3.items():
        assert volume == pytest.approx(coarse_mm3[name], rel=0.05), name
    liver_fine = np.isin(fine.label_zyx, [LIVER, LESION])
    liver_coarse = np.isin(coarse.label_zyx, [LIVER, LESION])
    for axis, (fine_mm, coarse_mm) in enumerate(zip((2.5, 0.8, 0.8), spacing, strict=True)):
        others = tuple(a for a in range(3) if a != axis)
        extent_fine = np.ptp(np.flatnonzero(liver_fine.any(axis=others))) * fine_mm
        extent_coarse = np.ptp(np.flatnonzero(liver_coarse.any(axis=others))) * coarse_mm
        assert extent_fine == pytest.approx(extent_coarse, abs=2 * coarse_mm), axis


def test_us_is_deterministic_per_seed():
    a, b, c = _us(1), _us(1), _us(2)
    np.testing.assert_array_equal(a.image_yx, b.image_yx)
    np.testing.assert_array_equal(a.mask_yx, b.mask_yx)
    assert a.caption == b.caption and a.kind == b.kind
    assert not np.array_equal(a.image_yx, c.image_yx)


@pytest.mark.parametrize("kind", ["benign", "malignant"])
def test_us_lesion_is_dark_inside_and_has_its_posterior_effect(kind):
    for seed in range(8):
        case = _us(seed, kind=kind)
        image, mask = case.image_yx, case.mask_yx.astype(bool)
        assert image.dtype == np.float32 and image.min() >= 0 and image.max() <= 255
        assert set(np.unique(case.mask_yx)) == {0, 1}
        assert case.caption == f"Breast ultrasound with a {kind} hypoechoic lesion."
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        margin = 0.05 * image.shape[0]
        assert rows[0] > margin and rows[-1] < image.shape[0] - margin
        assert cols[0] > margin and cols[-1] < image.shape[1] - margin
        ring = ndimage.binary_dilation(mask, iterations=10) & ~ndimage.binary_dilation(
            mask, iterations=3
        )
        assert image[mask].mean() < 0.6 * image[ring].mean()
        ratio = _posterior_ratio(image, mask)
        if kind == "benign":
            assert ratio > 1.15, (seed, ratio)  # posterior enhancement
        else:
            assert ratio < 0.85, (seed, ratio)  # posterior shadowing


def _posterior_ratio(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean just under the lesion's central columns over the mean at that depth beside it."""
    cols = np.flatnonzero(mask.any(axis=0))
    width = cols[-1] - cols[0]
    central = slice(cols[0] + width // 4, cols[-1] - width // 4 + 1)
    bottom = np.flatnonzero(mask[:, central].any(axis=1))[-1]  # not a spicule's tip
    band = slice(bottom + 3, min(bottom + 15, image.shape[0]))
    left = image[band, max(cols[0] - width // 2, 0) : max(cols[0] - 5, 0)]
    right = image[band, cols[-1] + 5 : cols[-1] + width // 2]
    return float(image[band, central].mean() / np.concatenate([left, right], axis=1).mean())


@pytest.mark.parametrize("kind", ["benign", "malignant"])
def test_us_lesion_free_twin_differs_only_at_the_lesion_and_below(kind):
    with_lesion, twin = _us(5, kind=kind), _us(5, kind=kind, lesion=False)
    mask = with_lesion.mask_yx.astype(bool)
    assert not twin.mask_yx.any() and twin.caption == "Breast ultrasound with no lesion."
    changed = np.abs(with_lesion.image_yx - twin.image_yx) > 0.5  # grey levels of 255
    assert changed[mask].mean() > 0.9
    # the lesion's soft edge and its posterior effect reach below it, nothing above or far
    # beside it changes by more than rounding
    cols = np.flatnonzero(mask.any(axis=0))
    top = np.flatnonzero(mask.any(axis=1))[0]
    beside = np.ones_like(mask)
    beside[:, max(cols[0] - 10, 0) : cols[-1] + 11] = False
    beside[: max(top - 10, 0)] = True
    assert beside.sum() > 0.3 * mask.size and not changed[beside].any()
    assert twin.image_yx[mask].mean() > 1.5 * with_lesion.image_yx[mask].mean()


def test_us_lesion_size_is_in_mm():
    coarse = _us(3)
    fine = _us(3, shape_yx=(256, 256), spacing_yx_mm=(0.1, 0.1))
    assert coarse.mask_yx.sum() * 0.04 == pytest.approx(fine.mask_yx.sum() * 0.01, rel=0.05)


def test_build_writes_a_canonical_ct_dataset(tmp_path):
    params = {"kind": "ct", "n_cases": 4, **SMALL_CT}
    table = prepare_dataset(adapter="phantom", params=params, seed=3, out_dir=tmp_path)
    cases = read_cases(tmp_path)
    assert list(cases["case_id"]) == ["ct_000", "ct_001", "ct_002", "ct_003"]
    expected = assign_splits(list(cases["case_id"]), DEFAULT_SPLITS, seed=3)
    assert dict(zip(cases["case_id"], cases["split"], strict=True)) == expected
    assert set(cases["modality"]) == {"CT"}
    assert set(cases["spacing_xyz_mm"]) == {"1.6,1.6,5"}
    assert set(cases["size_xyz"]) == {"64,64,16"}
    assert cases["caption"].str.startswith("Axial abdominal CT with ").all()
    assert (cases["caption"] == "Axial abdominal CT with no liver lesion.").any()
    assert read_label_map(tmp_path) == CT_LABEL_MAP
    assert len(table) == 4
    image = read_volume(tmp_path / "images" / "ct_001.nii.gz")
    first = list(build(params, seed=3).cases)[1]
    np.testing.assert_array_equal(image.array_zyx, first.image.array_zyx)
    assert image.geometry.matches(first.image.geometry)


def test_build_writes_a_canonical_us_dataset(tmp_path):
    prepare_dataset(
        adapter="phantom", params={"kind": "us", "n_cases": 3}, seed=0, out_dir=tmp_path
    )
    cases = read_cases(tmp_path)
    assert list(cases["case_id"]) == ["us_000", "us_001", "us_002"]
    assert sorted(cases["split"]) == ["test", "train", "val"]
    assert set(cases["modality"]) == {"US"}
    assert set(cases["size_xyz"]) == {"128,128,1"}
    assert set(cases["spacing_xyz_mm"]) == {"0.2,0.2,1"}
    assert "benign" in cases["caption"][0] and "malignant" in cases["caption"][1]
    assert read_label_map(tmp_path) == US_LABEL_MAP


@pytest.mark.parametrize("kind", ["ct", "us"])
def test_build_cases_do_not_depend_on_n_cases(kind):
    extra = SMALL_CT if kind == "ct" else {}
    few = next(build({"kind": kind, "n_cases": 3, **extra}, seed=7).cases)
    many = next(build({"kind": kind, "n_cases": 9, **extra}, seed=7).cases)
    np.testing.assert_array_equal(few.image.array_zyx, many.image.array_zyx)
    other_seed = next(build({"kind": kind, "n_cases": 3, **extra}, seed=8).cases)
    assert not np.array_equal(few.image.array_zyx, other_seed.image.array_zyx)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"kind": "ct", "bogus": 1}, "params.bogus"),
        ({"kind": "mri"}, "params.kind"),
        ({}, "params.kind"),
        ({"kind": "ct", "n_cases": 2}, "params.n_cases"),
        ({"kind": "ct", "n_cases": True}, "params.n_cases"),
        ({"kind": "ct", "shape": [128, 128]}, "params.shape"),
        ({"kind": "us", "spacing_mm": [0.2, -0.1]}, "params.spacing_mm"),
        ({"kind": "us", "noise": 2.0}, "params.noise"),
        ({"kind": "ct", "splits": {"train": 0.5, "tset": 0.5}}, "params.splits.tset"),
        ({"kind": "ct", "splits": {"train": 0.0}}, "params.splits"),
    ],
)
def test_build_rejects_bad_params_naming_the_key(params, key):
    with pytest.raises(ConfigError, match=rf"^{key}:"):
        build(params, seed=0)
