"""Caption pairs for CLIP training: what is paired, captions from train labels only."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsegflow.clip.captions import (
    MIN_PIXELS,
    caption_prefix,
    make_caption_table,
    make_clip_captions,
    structures_phrase,
)
from medsegflow.datasets.canonical import label_path, read_cases
from medsegflow.errors import ConfigError
from medsegflow.io import read_raster, read_volume

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clip_fixtures import make_phantom_datasets  # noqa: E402


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return make_phantom_datasets(tmp_path_factory.mktemp("phantoms"))


def test_phrases():
    assert caption_prefix("Axial abdominal CT with one lesion.", "CT") == "Axial abdominal CT"
    assert caption_prefix("Chest X-ray.", "XR") == "Chest X-ray"
    assert caption_prefix("", "MR") == "MR"
    long = "A long free-text report that names many findings in detail."
    assert caption_prefix(long, "") == "Medical image"
    assert structures_phrase([]) == "no labelled structure"
    assert structures_phrase(["liver"]) == "the liver"
    assert structures_phrase(["liver", "left_kidney", "lesion"]) == (
        "the liver, the left kidney and the lesion"
    )


def test_pairs_of_2d_images_and_3d_slices(phantoms, tmp_path):
    (ct_data, ct_pre), (us_data, us_pre) = phantoms
    table = make_caption_table(datasets=phantoms, out_dir=tmp_path, seed=1)
    saved = pd.read_csv(tmp_path / "captions.csv", keep_default_na=False)
    assert list(saved.columns[:2]) == ["image", "caption"] and len(saved) == len(table)
    assert set(table["split"]) == {"train"}
    for image in table["image"]:
        assert read_raster(tmp_path / image).dtype == np.uint8

    us = table[table["dataset"] == "us"]
    cases = read_cases(us_data).set_index("case_id")
    assert (us["kind"] == "image").all()
    assert list(us["caption"]) == [cases.loc[c, "caption"] for c in us["case_id"]]

    ct = table[table["dataset"] == "ct"]
    slices = pd.read_csv(ct_pre / "slices.tsv", sep="\t", dtype={"case_id": str})
    assert len(ct) == int((slices["split"] == "train").sum())
    assert ct["caption"].str.startswith("Axial abdominal CT slice showing ").all()
    row = ct.iloc[len(ct) // 2]
    label_yx = read_volume(label_path(ct_pre, row["case_id"])).array_zyx[row["z"]]
    names = {1: "liver", 2: "spleen", 3: "kidney", 4: "lesion"}
    shown = [n for v, n in names.items() if (label_yx == v).sum() >= MIN_PIXELS]
    assert row["caption"] == f"Axial abdominal CT slice showing {structures_phrase(shown)}."
    image = read_raster(tmp_path / row["image"])
    expected = read_volume(ct_pre / "images" / f"{row['case_id']}.nii.gz").array_zyx[row["z"]]
    assert np.array_equal(image, expected)


def test_crops_are_seeded_and_captioned_by_what_they_show(phantoms, tmp_path):
    first = make_caption_table(datasets=phantoms, out_dir=tmp_path / "a", seed=7, crops_per_image=2)
    second = make_caption_table(
        datasets=phantoms, out_dir=tmp_path / "b", seed=7, crops_per_image=2
    )
    pd.testing.assert_frame_equal(first, second)
    crops = first[first["kind"] == "crop"]
    assert len(crops) == 2 * int((first["kind"] != "crop").sum())
    ct_crops = crops[crops["dataset"] == "ct"]
    assert ct_crops["caption"].str.contains(" crop showing ").all()
    assert ct_crops["caption"].nunique() > 2  # some crops show a structure, some others
    # a crop of a captioned 2D image that shows its lesion takes the image's caption
    us = first[first["dataset"] == "us"]
    whole = us[us["kind"] == "image"].set_index("case_id")["caption"]
    us_crops = us[us["kind"] == "crop"]
    showing = ~us_crops["caption"].str.contains(" crop showing ")
    assert showing.any()
    assert (
        us_crops.loc[showing, "caption"].to_numpy()
        == whole[us_crops.loc[showing, "case_id"]].to_numpy()
    ).all()
    assert set(us_crops.loc[~showing, "caption"]) <= {
        "Breast ultrasound crop showing no labelled structure."
    }
    for image in crops["image"].iloc[:5]:
        a, b = read_raster(tmp_path / "a" / image), read_raster(tmp_path / "b" / image)
        assert a.shape == (24, 24) and np.array_equal(a, b)


def test_test_labels_are_never_read(phantoms, tmp_path):
    copies = []
    for data_dir, pre_dir in phantoms:
        root = tmp_path / pre_dir.name
        shutil.copytree(data_dir, root / "data")
        shutil.copytree(pre_dir, root / "pre" / pre_dir.name)
        for case_id in read_cases(data_dir).query("split == 'test'")["case_id"]:
            label_path(root / "pre" / pre_dir.name, case_id).unlink()
            label_path(root / "data", case_id).unlink()
        copies.append((root / "data", root / "pre" / pre_dir.name))
    table = make_caption_table(
        datasets=copies,
        out_dir=tmp_path / "out",
        splits=("train", "val"),
        seed=1,
        crops_per_image=1,
    )
    assert set(table["split"]) == {"train", "val"}
    with pytest.raises(ConfigError, match="must be among"):
        make_caption_table(datasets=copies, out_dir=tmp_path / "x", splits=("test",), seed=1)


def test_caption_job_of_a_clip_models_entry(phantoms, tmp_path):
    cases = [str(d / "cases.tsv") for d, _ in phantoms]
    manifests = [str(p / "manifest.tsv") for _, p in phantoms]
    demo = make_clip_captions(
        spec={"arch": "demo"},
        name="demo",
        cases=cases,
        manifests=manifests,
        out_csv=tmp_path / "demo" / "captions.csv",
        seed=1,
    )
    assert (demo["kind"] == "crop").sum() == 2 * (demo["kind"] != "crop").sum()
    tuned = make_clip_captions(
        spec={"arch": "biomedclip", "finetune": {"splits": ["train", "val"]}},
        name="ft",
        cases=cases,
        manifests=manifests,
        out_csv=tmp_path / "ft" / "captions.csv",
        seed=1,
    )
    assert not (tuned["kind"] == "crop").any() and set(tuned["split"]) == {"train", "val"}
    with pytest.raises(ValueError, match="different datasets"):
        make_clip_captions(
            spec={"arch": "demo"},
            name="demo",
            cases=cases,
            manifests=manifests[::-1],
            out_csv=tmp_path / "x" / "captions.csv",
            seed=1,
        )


def test_extra_phantom_pairs_are_new_cases_captioned_like_the_dataset(phantoms, tmp_path):
    (_, ct_pre), (us_data, us_pre) = phantoms
    spec = {"adapter": "phantom", "params": {"kind": "us", "n_cases": 4, "shape": [48, 48]}}
    table = make_caption_table(
        datasets=[(us_data, us_pre)],
        out_dir=tmp_path,
        seed=3,
        crops_per_image=2,
        crop_fraction=0.3,
        phantoms={"us": spec},
        phantom_images=5,
    )
    extra = table[table["case_id"].str.startswith("clip_us_")]
    assert sorted(extra["case_id"].unique()) == [f"clip_us_{i:04d}" for i in range(5)]
    assert set(extra["split"]) == {"train"} and set(extra["dataset"]) == {"us"}
    assert (extra["kind"] == "image").sum() == 5 and (extra["kind"] == "crop").sum() == 10
    crops = set(extra.loc[extra["kind"] == "crop", "caption"])
    assert "Breast ultrasound crop showing no labelled structure." in crops  # small crops
    assert len(crops) > 1  # ... and crops that show the lesion, with the image's caption
    kinds = extra.loc[extra["kind"] == "image", "caption"]
    assert set(kinds) <= {
        f"Breast ultrasound with a {k} hypoechoic lesion." for k in ("benign", "malignant")
    }
    images = [read_raster(tmp_path / p) for p in extra.loc[extra["kind"] == "image", "image"]]
    assert all(i.dtype == np.uint8 and i.shape == (48, 48) and i.max() == 255 for i in images)
    # none repeats a case of the dataset: their own seeds
    dataset_images = [
        read_raster(tmp_path / p)
        for p in table.loc[
            ~table["case_id"].str.startswith("clip_") & (table["kind"] == "image"), "image"
        ]
    ]
    assert not any(np.array_equal(a, b) for a in images for b in dataset_images)
    # a dataset that is not a phantom gets none
    plain = make_caption_table(
        datasets=[(us_data, us_pre)], out_dir=tmp_path / "plain", seed=3, phantom_images=5
    )
    assert not plain["case_id"].str.startswith("clip_").any()


def test_lesion_free_twins_are_the_extra_phantoms_without_their_lesion(phantoms, tmp_path):
    (_, _), (us_data, us_pre) = phantoms
    spec = {"adapter": "phantom", "params": {"kind": "us", "n_cases": 4, "shape": [48, 48]}}
    table = make_caption_table(
        datasets=[(us_data, us_pre)],
        out_dir=tmp_path,
        seed=3,
        crops_per_image=2,
        crop_fraction=0.3,
        phantoms={"us": spec},
        phantom_images=3,
        lesion_free=True,
    )
    free = table[table["case_id"].str.endswith("_free")]
    assert sorted(free["case_id"]) == [f"clip_us_{i:04d}_free" for i in range(3)]
    assert set(free["kind"]) == {"image"}  # whole images only
    assert set(free["caption"]) == {"Breast ultrasound with no lesion."}
    for row in free.itertuples():
        twin = read_raster(tmp_path / row.image).astype(int)
        lesion_row = table[
            (table["case_id"] == row.case_id[: -len("_free")]) & (table["kind"] == "image")
        ]
        original = read_raster(tmp_path / lesion_row["image"].iloc[0]).astype(int)
        difference = np.abs(twin - original)  # each image normalised by its own percentiles
        assert np.median(difference) < 12 and difference.max() > 60  # the lesion region
    with pytest.raises(ConfigError, match="kind 'us' only"):
        from medsegflow.datasets.phantom import extra_cases

        extra_cases({"kind": "ct"}, seed=1, n=1, prefix="clip", lesion=False)
