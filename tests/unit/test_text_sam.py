"""The text_sam family: coarse masks as predictions, or SAM on prompts from them."""

from __future__ import annotations

import pandas as pd
import pytest
from test_saliency_stage import _preprocessed

from medsegflow.errors import InputError
from medsegflow.families.registry import complete_method
from medsegflow.io import Volume, read_volume, write_volume
from medsegflow.methods.text_sam import sam_config
from medsegflow.promptable.predict2d import SamConfig
from medsegflow.stages.predict import predict_dataset

METHOD = {"family": "text_sam", "clip": "c", "text_prompts": "p"}


def _coarse(root, pre, cases):
    coarse = root / "coarse"
    rows = []
    for case_id in cases:
        image = read_volume(pre / "images" / f"{case_id}.nii.gz")
        mask = (image.array_zyx > 150).astype("uint8")
        write_volume(coarse / f"{case_id}.nii.gz", Volume(mask, image.geometry))
        rows.append({"case_id": case_id, "split": "x", "n_targets": 2, "n_empty": 0, "seconds": 0})
    pd.DataFrame(rows).to_csv(coarse / "manifest.tsv", sep="\t", index=False)
    return coarse


def test_without_sam_the_coarse_masks_are_the_prediction(tmp_path):
    pre = _preprocessed(tmp_path)
    coarse = _coarse(tmp_path, pre, ["ct01", "us01"])
    out = tmp_path / "pred"
    manifest = predict_dataset(
        method=METHOD,
        method_name="txt",
        inputs={"preprocessed": pre / "manifest.tsv", "coarse": coarse / "manifest.tsv"},
        out_dir=out,
        splits=("val",),
        seed=0,
    )
    assert list(manifest["case_id"]) == ["ct01", "us01"]
    assert list(manifest["n_prompts"]) == [2, 2]
    for case_id in ("ct01", "us01"):
        pred = read_volume(out / f"{case_id}.nii.gz")
        mask = read_volume(coarse / f"{case_id}.nii.gz")
        image = read_volume(pre / "images" / f"{case_id}.nii.gz")
        assert (pred.array_zyx == mask.array_zyx).all()
        assert pred.geometry.matches(image.geometry)
    assert (out / "manifest.tsv").is_file()


def test_a_case_missing_from_the_coarse_masks_names_the_manifest(tmp_path):
    pre = _preprocessed(tmp_path)
    coarse = _coarse(tmp_path, pre, ["ct01"])
    with pytest.raises(InputError, match=r"coarse/manifest.tsv: case us01 \(val\) is missing"):
        predict_dataset(
            method=METHOD,
            method_name="txt",
            inputs={"preprocessed": pre / "manifest.tsv", "coarse": coarse / "manifest.tsv"},
            out_dir=tmp_path / "pred",
            splits=("val",),
            seed=0,
        )
    assert not (tmp_path / "pred" / "manifest.tsv").exists()


def test_sam_decoding_takes_the_methods_keys_and_no_clicks():
    method = {**METHOD, "model": "sam_demo", "voting": "staple", "batch_size": 8}
    assert sam_config(complete_method(method, "txt")) == SamConfig(
        multimask=False,  # the text_sam schema's default (the sam family's is true)
        voting="staple",
        click_rounds=0,
        click_mode="center",
        click_mask_input=False,
        batch_size=8,
    )
