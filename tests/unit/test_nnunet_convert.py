"""Canonical dataset -> nnU-Net raw: names, dataset.json, geometry, labels, pseudo-labels."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medsegflow import workflow as wf
from medsegflow.config import load_config
from medsegflow.datasets.canonical import (
    CanonicalCase,
    image_path,
    label_path,
    write_canonical_dataset,
)
from medsegflow.errors import ConfigError, InputError
from medsegflow.families import nnunet as nnu
from medsegflow.io import Geometry, Volume, read_volume, write_volume
from medsegflow.nnunet.convert import (
    channel_name,
    check_training_cases,
    consecutive_labels,
    convert_dataset,
    labels_to_original,
    remap_labels,
)
from medsegflow.nnunet.naming import ID_RANGE, check_unique_ids, dataset_id, dataset_name
from medsegflow.nnunet.trainer import BASE_TRAINERS

LABEL_MAP = {"background": 0, "organ": 2, "lesion": 7}  # not consecutive on purpose
GEOMETRY = Geometry((0.7, 0.9, 3.0), (12.5, -40.0, 7.25), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
SPLITS = {"c0": "train", "c1": "train", "c2": "val", "c3": "test", "c4": "test"}


def _case(case_id: str, split: str, modality: str = "CT") -> CanonicalCase:
    """5 x 20 x 24 HU volume: organ (2) box with a lesion (7) inside, shifted per case."""
    k = int(case_id[1:])
    label = np.zeros((5, 20, 24), dtype=np.uint8)
    label[1:4, 4 + k : 14 + k, 5:18] = 2
    label[2, 7 + k : 10 + k, 8:11] = 7
    rng = np.random.default_rng(k)
    image = (np.where(label > 0, 80.0, -50.0) + rng.normal(0, 5, label.shape)).astype(np.float32)
    return CanonicalCase(case_id, split, modality, Volume(image, GEOMETRY), Volume(label, GEOMETRY))


@pytest.fixture()
def canonical(tmp_path: Path) -> Path:
    out = tmp_path / "data" / "toy"
    write_canonical_dataset(
        (_case(c, s) for c, s in SPLITS.items()), label_map=LABEL_MAP, out_dir=out
    )
    return out


def _convert(canonical: Path, tmp_path: Path, **kwargs) -> tuple[dict, Path]:
    marker = convert_dataset(
        data_dir=canonical,
        nnunet_dir=tmp_path / "nnunet",
        dataset="toy",
        out_marker=tmp_path / "converted.json",
        **kwargs,
    )
    return marker, tmp_path / "nnunet" / "nnUNet_raw" / marker["dataset_name"]


def test_consecutive_labels_and_mapping_back() -> None:
    labels, back = consecutive_labels({"background": 0, "liver": 1, "tumour": 5})
    assert labels == {"background": 0, "liver": 1, "tumour": 2}
    assert back == {0: 0, 1: 1, 2: 5}
    label_zyx = np.array([[[0, 1, 5], [5, 5, 0]]], dtype=np.uint8)
    forward = remap_labels(label_zyx, {v: k for k, v in back.items()})
    np.testing.assert_array_equal(forward, [[[0, 1, 2], [2, 2, 0]]])
    np.testing.assert_array_equal(labels_to_original(forward, {"0": 0, "1": 1, "2": 5}), label_zyx)
    with pytest.raises(InputError, match=r"^pred\.nii\.gz: label values \[3\] are not in"):
        remap_labels(np.array([[[0, 3]]]), {0: 0, 1: 1}, source="pred.nii.gz")
    with pytest.raises(InputError, match="background"):
        consecutive_labels({"background": 1, "organ": 2})


def test_channel_name_uses_ct_normalisation_only_for_ct() -> None:
    assert channel_name("CT") == "CT" and channel_name("ct") == "CT"
    assert channel_name("MR") == "MR" and channel_name("US") == "US"


def test_conversion_layout_dataset_json_and_geometry(canonical: Path, tmp_path: Path) -> None:
    marker, folder = _convert(canonical, tmp_path)
    assert folder.name == f"Dataset{dataset_id('toy', 'gt'):03d}_toy__gt"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [
        "c0_0000.nii.gz",
        "c1_0000.nii.gz",
        "c2_0000.nii.gz",
    ]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == [
        "c0.nii.gz",
        "c1.nii.gz",
        "c2.nii.gz",
    ]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == [
        "c3_0000.nii.gz",
        "c4_0000.nii.gz",
    ]
    content = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    assert content["channel_names"] == {"0": "CT"}
    assert content["labels"] == {"background": 0, "organ": 1, "lesion": 2}
    assert content["numTraining"] == 3
    assert content["file_ending"] == ".nii.gz"
    assert content["medsegflow"]["nnunet_to_original"] == {"0": 0, "1": 2, "2": 7}
    assert marker["training_cases"] == ["c0", "c1", "c2"] and marker["test_cases"] == ["c3", "c4"]
    for case_id in ("c0", "c2"):
        source = image_path(canonical, case_id)
        assert (folder / "imagesTr" / f"{case_id}_0000.nii.gz").read_bytes() == source.read_bytes()
        label = read_volume(folder / "labelsTr" / f"{case_id}.nii.gz")
        original = read_volume(label_path(canonical, case_id))
        assert label.geometry == original.geometry  # spacing, origin, direction exactly
        assert label.array_zyx.dtype == np.uint8
        np.testing.assert_array_equal(
            labels_to_original(label.array_zyx, {0: 0, 1: 2, 2: 7}), original.array_zyx
        )
        assert set(np.unique(label.array_zyx)) == {0, 1, 2}
    image = read_volume(folder / "imagesTs" / "c3_0000.nii.gz")
    assert image.geometry == read_volume(image_path(canonical, "c3")).geometry
    assert image.geometry.matches(GEOMETRY) and image.array_zyx.shape == (5, 20, 24)


def test_reconversion_replaces_the_folder(canonical: Path, tmp_path: Path) -> None:
    _, folder = _convert(canonical, tmp_path)
    (folder / "imagesTr" / "stale_0000.nii.gz").write_bytes(b"old")
    _, again = _convert(canonical, tmp_path)
    assert again == folder and not (folder / "imagesTr" / "stale_0000.nii.gz").exists()


def test_other_modality_is_the_channel_name(tmp_path: Path) -> None:
    out = tmp_path / "mr"
    cases = (_case(c, s, modality="MR") for c, s in SPLITS.items())
    write_canonical_dataset(cases, label_map=LABEL_MAP, out_dir=out)
    _, folder = _convert(out, tmp_path)
    assert json.loads((folder / "dataset.json").read_text(encoding="utf-8"))["channel_names"] == {
        "0": "MR"
    }


def test_image_without_its_label_is_one_line_naming_the_file(
    canonical: Path, tmp_path: Path
) -> None:
    label_path(canonical, "c1").unlink()
    with pytest.raises(InputError) as err:
        _convert(canonical, tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{image_path(canonical, 'c1')}: image has no label file")
    assert not (tmp_path / "converted.json").exists()


def test_test_labels_are_never_read(canonical: Path, tmp_path: Path) -> None:
    for case_id in ("c3", "c4"):
        label_path(canonical, case_id).unlink()
    marker, folder = _convert(canonical, tmp_path)
    assert marker["test_cases"] == ["c3", "c4"]
    assert not (folder / "labelsTr" / "c3.nii.gz").exists()


def test_guard_stops_a_test_case_entering_training() -> None:
    check_training_cases(["a", "b"], {"a": "train", "b": "val"}, source="labels")
    with pytest.raises(InputError, match=r"^labels: case t \(split test\) would enter"):
        check_training_cases(["a", "t"], {"a": "train", "t": "test"}, source="labels")


def _pseudolabels(canonical: Path, folder: Path, case_ids: list[str]) -> Path:
    """Predictions of a pretend method: the organ only (no lesion), dilated in x by 2 voxels."""
    rows = []
    for case_id in case_ids:
        gt = read_volume(label_path(canonical, case_id))
        pred = np.where(gt.array_zyx > 0, 2, 0).astype(np.uint8)
        pred[:, :, 2:] |= pred[:, :, :-2]
        write_volume(folder / f"{case_id}.nii.gz", Volume(pred, gt.geometry))
        rows.append({"case_id": case_id, "split": SPLITS[case_id], "n_prompts": 1, "seconds": 0})
    manifest = folder / "manifest.tsv"
    pd.DataFrame(rows).to_csv(manifest, sep="\t", index=False)
    return manifest


def test_pseudolabels_replace_the_ground_truth(canonical: Path, tmp_path: Path) -> None:
    manifest = _pseudolabels(canonical, tmp_path / "pseudo", ["c0", "c1", "c2"])
    marker, folder = _convert(canonical, tmp_path, labels="otsu_box", pseudolabels=manifest)
    assert folder.name == dataset_name("toy", "otsu_box") and folder.name.endswith("__otsu_box")
    assert marker["label_source"] == "otsu_box"
    for case_id in ("c0", "c1", "c2"):
        pred = read_volume(tmp_path / "pseudo" / f"{case_id}.nii.gz").array_zyx
        label = read_volume(folder / "labelsTr" / f"{case_id}.nii.gz").array_zyx
        np.testing.assert_array_equal(label, np.where(pred == 2, 1, 0))  # organ 2 -> 1
        gt = read_volume(label_path(canonical, case_id)).array_zyx
        assert not np.array_equal(labels_to_original(label, {0: 0, 1: 2, 2: 7}), gt)
    names = {p.name for p in (folder / "imagesTr").iterdir()}
    names |= {p.name for p in (folder / "labelsTr").iterdir()}
    assert not any(n.startswith(("c3", "c4")) for n in names)


def test_all_empty_pseudolabels_are_refused_naming_the_manifest(
    canonical: Path, tmp_path: Path
) -> None:
    manifest = _pseudolabels(canonical, tmp_path / "pseudo", ["c0", "c1", "c2"])
    for case_id in ("c0", "c1", "c2"):
        path = tmp_path / "pseudo" / f"{case_id}.nii.gz"
        pred = read_volume(path)
        write_volume(path, Volume(np.zeros_like(pred.array_zyx), pred.geometry))
    with pytest.raises(InputError, match=r"manifest\.tsv: all 3 training labels of .* are empty"):
        _convert(canonical, tmp_path, labels="otsu_box", pseudolabels=manifest)


def test_pseudolabel_manifest_must_cover_every_training_case(
    canonical: Path, tmp_path: Path
) -> None:
    manifest = _pseudolabels(canonical, tmp_path / "pseudo", ["c0", "c2"])
    with pytest.raises(
        InputError, match=r"manifest\.tsv: no pseudo-label for train/val cases \['c1'\]"
    ):
        _convert(canonical, tmp_path, labels="otsu_box", pseudolabels=manifest)


def test_dataset_ids_are_stable_three_digit_and_collisions_name_both() -> None:
    assert dataset_id("phantom_us", "gt") == 210  # CRC-32 based: the same on every machine
    assert dataset_name("phantom_us", "gt") == "Dataset210_phantom_us__gt"
    assert ID_RANGE[0] <= dataset_id("x", "otsu_box") <= ID_RANGE[1]
    seen: dict[int, tuple[str, str]] = {}
    for i in itertools.count():
        pair = (f"ds{i}", "gt")
        if dataset_id(*pair) in seen:
            first = seen[dataset_id(*pair)]
            break
        seen[dataset_id(*pair)] = pair
    assert check_unique_ids([first, ("other", "gt")])[first] == dataset_id(*first)
    with pytest.raises(ConfigError) as err:
        check_unique_ids([first, ("other", "gt"), pair])
    assert f"datasets.{first[0]}" in str(err.value) and f"datasets.{pair[0]}" in str(err.value)


@pytest.fixture()
def raw_config(repo_root: Path) -> dict:
    with open(repo_root / "config.yaml", encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    raw["methods"]["nnunet_a"] = {
        "family": "nnunet",
        "epochs": 1,
        "num_processes": 1,
        "fingerprint_voxels": 1000000,
    }
    raw["methods"]["nnunet_b"] = {
        "family": "nnunet",
        "configuration": "3d_fullres",
        "num_processes": 3,
    }
    raw["methods"]["nnunet_pl"] = {"family": "nnunet", "labels_from": "otsu_box"}
    return raw


def test_workflow_inputs_of_nnunet_jobs(raw_config: dict) -> None:
    config = load_config(raw_config)
    nnu.check_nnunet(config)
    assert config["methods"]["nnunet_a"]["fold"] == "all"
    assert config["methods"]["nnunet_a"]["iterations_per_epoch"] == 250
    assert wf.predict_inputs(config, "phantom_us", "nnunet_a") == {
        "preprocessed": "results/preprocessed/phantom_us/manifest.tsv",
        "data": "results/data/phantom_us/cases.tsv",
        "model": "results/models/nnunet/phantom_us/nnunet_a/training.json",
    }
    assert nnu.plan_params(config, "phantom_ct", "gt") == {
        "configurations": ["2d", "3d_fullres"],
        "num_processes": 3,
        "fingerprint_voxels": None,  # a method at nnU-Net's default sample
    }
    assert nnu.train_inputs(config, "phantom_ct", "nnunet_pl") == {
        "planned": "results/nnunet/planned/phantom_ct/otsu_box.json"
    }
    assert nnu.convert_inputs(config, "phantom_ct", "otsu_box") == {
        "cases": "results/data/phantom_ct/cases.tsv",
        "pseudolabels": "results/pseudolabels/phantom_ct/otsu_box/manifest.tsv",
    }
    assert sorted(nnu.nnunet_pairs(config)) == [
        ("phantom_ct", "gt"),
        ("phantom_ct", "otsu_box"),
        ("phantom_us", "gt"),
        ("phantom_us", "medclip_sam"),  # the demo's nnunet_weak (US only)
        ("phantom_us", "otsu_box"),
    ]
    labels = wf.wildcard_patterns(config)["labels"]
    assert sorted(labels.split("|")) == ["gt", "medclip_sam", "otsu_box"]


@pytest.mark.parametrize(
    ("labels_from", "needle"),
    [
        ("nope", "methods.nnunet_pl.labels_from: unknown method 'nope'"),
        ("nnunet_pl", "methods.nnunet_pl.labels_from: labels_from forms a cycle"),
        ("gt", "methods.nnunet_pl.labels_from: 'gt' is reserved"),
    ],
)
def test_bad_labels_from_names_the_key(raw_config: dict, labels_from: str, needle: str) -> None:
    raw_config["methods"]["nnunet_pl"]["labels_from"] = labels_from
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(raw_config)  # the family's check runs when the config is loaded


def test_schema_rejects_bad_nnunet_values(raw_config: dict) -> None:
    raw_config["methods"]["nnunet_a"]["fold"] = 5
    with pytest.raises(ConfigError, match="methods.nnunet_a.fold"):
        load_config(raw_config)
    raw_config["methods"]["nnunet_a"].update(fold="all", configuration="3d_lowres")
    with pytest.raises(ConfigError, match="methods.nnunet_a.configuration"):
        load_config(raw_config)


def test_schema_trainers_are_the_supported_base_trainers(repo_root: Path) -> None:
    schema_file = repo_root / "medsegflow/schemas/families/nnunet.schema.yaml"
    with open(schema_file, encoding="utf-8") as handle:
        schema = yaml.safe_load(handle)
    assert schema["properties"]["trainer"]["enum"] == list(BASE_TRAINERS)
