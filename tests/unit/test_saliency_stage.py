"""The saliency stage: preprocessed folder + CLIP + sentences -> map volumes + tables."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from test_m2ib import native_clip

from medsegflow.errors import ConfigError, InputError
from medsegflow.io import Geometry, Volume, read_volume, write_volume
from medsegflow.manifests import MANIFEST_COLUMNS, SLICES_COLUMNS
from medsegflow.saliency.m2ib import M2IBParams, image_saliency
from medsegflow.saliency.maps import (
    SALIENCY_MANIFEST_COLUMNS,
    SALIENCY_TARGET_COLUMNS,
    read_saliency_manifest,
    read_saliency_map,
    read_saliency_targets,
    saliency_map_path,
)
from medsegflow.stages.coarse import make_coarse_masks
from medsegflow.stages.saliency import _target_seed, compute_saliency

torch.set_num_threads(1)

CT_GEOMETRY = Geometry((0.8, 0.7, 2.5), (10.0, -4.0, 3.0))
US_GEOMETRY = Geometry((0.3, 0.3, 1.0), (1.5, 2.5, 0.0))
PARAMS = M2IBParams.from_config(dict(vlayer=1, steps=2, samples=2), key_prefix="s")
KEY = "methods.txt.saliency"
TEXTS = {
    "ct01": {1: ["a liver"], 2: ["a lesion", "a dark lesion"]},
    "ct02": {1: ["a liver"], 2: ["a lesion"]},
    "us01": {2: ["a round lesion"]},
}


@pytest.fixture(scope="module")
def bundle():
    """A tiny CLIP with open_clip's native towers (32 px input, 4 x 4 patches)."""
    return native_clip()


def _case(pre, case_id, image, label, geometry):
    write_volume(pre / "images" / f"{case_id}.nii.gz", Volume(image, geometry))
    write_volume(pre / "labels" / f"{case_id}.nii.gz", Volume(label, geometry))


def _preprocessed(root):
    """ct01 (val): 4 x 24 x 28, label 1 on z 1-2, label 2 on z 2; ct02 (test): label 1 on
    z 0; us01 (val): 1 x 30 x 26 with label 2."""
    pre = root / "pre"
    rng = np.random.default_rng(0)
    label = np.zeros((4, 24, 28), np.uint8)
    label[1:3, 5:15, 6:20] = 1
    label[2, 8:12, 9:13] = 2
    image = rng.integers(0, 80, label.shape).astype(np.uint8) + 100 * (label > 0).astype(np.uint8)
    _case(pre, "ct01", image, label, CT_GEOMETRY)
    other = np.zeros((3, 24, 28), np.uint8)
    other[0, 4:10, 4:10] = 1
    _case(pre, "ct02", rng.integers(0, 255, other.shape, dtype=np.uint8), other, CT_GEOMETRY)
    lesion = np.zeros((1, 30, 26), np.uint8)
    lesion[0, 10:20, 8:16] = 2
    _case(pre, "us01", rng.integers(0, 255, lesion.shape, dtype=np.uint8), lesion, US_GEOMETRY)
    rows = [
        ("ct01", "val", "CT", "window", 0, 0, 0),
        ("ct02", "test", "CT", "window", 0, 0, 0),
        ("us01", "val", "US", "percentiles", 0, 0, 0),
    ]
    pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_csv(
        pre / "manifest.tsv", sep="\t", index=False
    )
    pd.DataFrame([], columns=list(SLICES_COLUMNS)).to_csv(pre / "slices.tsv", sep="\t", index=False)
    (pre / "labels.json").write_text(
        json.dumps({"background": 0, "liver": 1, "lesion": 2}), encoding="utf-8"
    )
    return pre


def _run(pre, out, bundle, **kwargs):
    settings = {"texts": TEXTS, "params": PARAMS, "splits": ("val",), "seed": 7}
    return compute_saliency(
        preprocessed_dir=pre, out_dir=out, bundle=bundle, key_prefix=KEY, **(settings | kwargs)
    )


def test_labelled_targets_maps_and_geometry(tmp_path, bundle):
    pre = _preprocessed(tmp_path)
    (pre / "labels" / "ct02.nii.gz").unlink(missing_ok=True)  # test split: never read
    out = tmp_path / "sal"
    manifest = _run(pre, out, bundle)
    assert list(manifest.columns) == list(SALIENCY_MANIFEST_COLUMNS)
    assert manifest[["case_id", "split", "n_targets"]].values.tolist() == [
        ["ct01", "val", 3],
        ["us01", "val", 1],
    ]
    pd.testing.assert_frame_equal(read_saliency_manifest(out), manifest, check_dtype=False)
    targets = read_saliency_targets(out)
    assert list(targets.columns) == list(SALIENCY_TARGET_COLUMNS)
    assert targets[["case_id", "z", "label"]].values.tolist() == [
        ["ct01", 1, 1],
        ["ct01", 2, 1],
        ["ct01", 2, 2],
        ["us01", 0, 2],
    ]
    assert sorted(p.name for p in (out / "maps").iterdir()) == [
        "ct01_label1.nii.gz",
        "ct01_label2.nii.gz",
        "us01_label2.nii.gz",
    ]
    image = read_volume(pre / "images" / "ct01.nii.gz")
    organ = read_saliency_map(out, "ct01", 1)
    assert organ.array_zyx.dtype == np.float32 and organ.array_zyx.shape == (4, 24, 28)
    assert organ.geometry.matches(image.geometry)
    assert not organ.array_zyx[[0, 3]].any()  # slices without the label stay 0
    for z in (1, 2):
        assert organ.array_zyx[z].min() == 0 and organ.array_zyx[z].max() == pytest.approx(1)
    lesion = read_saliency_map(out, "ct01", 2).array_zyx
    assert not lesion[[0, 1, 3]].any() and lesion[2].max() == pytest.approx(1)
    # each target's map is M2IB of its slice and sentences with its own seed
    expected = image_saliency(
        bundle, image.array_zyx[2], TEXTS["ct01"][2], PARAMS, seed=_target_seed(7, "ct01", 2, 2)
    )
    np.testing.assert_allclose(lesion[2], expected, atol=1e-6)
    us = read_saliency_map(out, "us01", 2)
    assert us.array_zyx.shape == (1, 30, 26) and us.geometry.matches(US_GEOMETRY)


def test_all_slices_reads_no_label_and_maps_do_not_depend_on_the_case_set(tmp_path, bundle):
    pre = _preprocessed(tmp_path)
    labelled = _run(pre, tmp_path / "labelled", bundle)
    assert labelled["n_targets"].sum() == 4
    shutil.rmtree(pre / "labels")
    out = tmp_path / "all"
    manifest = _run(pre, out, bundle, slice_mode="all", splits=("test", "val"))
    assert dict(zip(manifest["case_id"], manifest["n_targets"], strict=True)) == {
        "ct01": 8,
        "ct02": 6,
        "us01": 1,
    }
    targets = read_saliency_targets(out)
    assert len(targets) == 15 and set(targets["split"]) == {"val", "test"}
    full = read_saliency_map(out, "ct01", 1).array_zyx
    assert all(full[z].max() == pytest.approx(1) for z in range(4))
    # a slice computed in both runs has the same map: seeds are per target
    part = read_saliency_map(tmp_path / "labelled", "ct01", 1).array_zyx
    np.testing.assert_array_equal(full[1:3], part[1:3])


def test_the_coarse_stage_reads_the_folder(tmp_path, bundle):
    pre = _preprocessed(tmp_path)
    out = tmp_path / "sal"
    _run(pre, out, bundle)
    coarse = make_coarse_masks(
        saliency_dir=out,
        preprocessed_dir=pre,
        out_dir=tmp_path / "coarse",
        config={"method": "threshold"},
        key_prefix="methods.txt.coarse",
    )
    assert coarse["n_targets"].tolist() == [3, 1]


def test_errors_name_the_key_or_the_file(tmp_path, bundle):
    pre = _preprocessed(tmp_path)
    out = tmp_path / "sal"
    with pytest.raises(ConfigError, match=r"methods\.txt\.slice_mode: 'some'"):
        _run(pre, out, bundle, slice_mode="some")
    with pytest.raises(ConfigError, match=r"methods\.txt\.saliency\.vlayer: 3 is outside 0\.\.2"):
        _run(pre, out, bundle, params=M2IBParams.from_config(dict(vlayer=3), key_prefix="s"))
    with pytest.raises(ConfigError, match=r"saliency\.vlayer: 2 is the last vision block"):
        _run(pre, out, bundle, params=M2IBParams.from_config(dict(vlayer=2), key_prefix="s"))
    with pytest.raises(InputError, match="no cases in splits"):
        _run(pre, out, bundle, splits=("train",))
    with pytest.raises(InputError, match="case us01 has no text prompts"):
        _run(pre, out, bundle, texts={"ct01": TEXTS["ct01"]})
    write_volume(pre / "labels" / "ct01.nii.gz", Volume(np.zeros((4, 24, 27), np.uint8)))
    with pytest.raises(InputError, match=r"ct01\.nii\.gz: label shape"):
        _run(pre, out, bundle)
    assert not (out / "manifest.tsv").exists()


def test_saliency_map_path(tmp_path):
    assert saliency_map_path(tmp_path, "c1", 3) == tmp_path / "maps" / "c1_label3.nii.gz"
    with pytest.raises(InputError, match="file not found"):
        read_saliency_map(tmp_path, "c1", 3)
