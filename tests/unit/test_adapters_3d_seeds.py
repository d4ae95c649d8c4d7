"""The named 3D / challenge adapters (flare22, synapse, synapse_transunet, msd, medsam_npz).

Each test builds a miniature copy of the dataset's official layout in tmp_path from the real
volumes in ../shared/data (TotalSegmentator's example CT with its multi-organ label volume,
the MSD spleen crop, the chest X-ray and BUSI images), runs it through ``prepare_dataset`` and
compares the canonical output with numbers computed here from the source files.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from medsegflow.datasets.canonical import assign_splits, read_cases, read_label_map
from medsegflow.datasets.flare22 import medsam_split
from medsegflow.datasets.registry import prepare_dataset
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import Geometry, Volume, read_volume, write_volume

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_data = pytest.mark.usefixtures("shared_data")  # fails (never skips) without ../shared/data

TS = DATA / "totalseg_example"
SPLEEN = DATA / "msd_spleen_crop"
# TotalSegmentator 'total' ids of the example label volume (labels_example_seg.json)
TS_IDS = {
    "spleen": 1,
    "right_kidney": 2,
    "left_kidney": 3,
    "gallbladder": 4,
    "liver": 5,
    "stomach": 6,
    "pancreas": 7,
    "right_adrenal_gland": 8,
    "left_adrenal_gland": 9,
    "esophagus": 15,
    "duodenum": 19,
    "aorta": 52,
    "inferior_vena_cava": 63,
    "portal_and_splenic_vein": 64,
}
FLARE = {
    "liver": 1,
    "right_kidney": 2,
    "spleen": 3,
    "pancreas": 4,
    "aorta": 5,
    "inferior_vena_cava": 6,
    "right_adrenal_gland": 7,
    "left_adrenal_gland": 8,
    "gallbladder": 9,
    "esophagus": 10,
    "stomach": 11,
    "duodenum": 12,
    "left_kidney": 13,
}
BTCV = {
    "spleen": 1,
    "right_kidney": 2,
    "left_kidney": 3,
    "gallbladder": 4,
    "esophagus": 5,
    "liver": 6,
    "stomach": 7,
    "aorta": 8,
    "inferior_vena_cava": 9,
    "portal_and_splenic_vein": 10,
    "pancreas": 11,
    "right_adrenal_gland": 12,
    "left_adrenal_gland": 13,
}
# SAMed preprocess/README.md: label of the processed data
TRANSUNET = {
    "spleen": 1,
    "right_kidney": 2,
    "left_kidney": 3,
    "gallbladder": 4,
    "liver": 5,
    "stomach": 6,
    "aorta": 7,
    "pancreas": 8,
}


def _ts_ct() -> tuple[Volume, np.ndarray]:
    """TotalSegmentator's example CT (HU, 3 mm) and its label ids, read with SimpleITK."""
    image = sitk.ReadImage(str(TS / "example_ct_sm.nii.gz"))
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(TS / "example_seg.nii.gz")))
    geometry = Geometry(image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    return Volume(sitk.GetArrayFromImage(image), geometry), seg


def _spleen() -> tuple[Volume, np.ndarray]:
    image = sitk.ReadImage(str(SPLEEN / "sub-spleen2_ct.nii.gz"))
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(SPLEEN / "sub-spleen2_ct_seg-manual.nii.gz")))
    geometry = Geometry(image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    return Volume(sitk.GetArrayFromImage(image), geometry), seg


def _relabel(ts_seg: np.ndarray, target: dict[str, int]) -> np.ndarray:
    """TotalSegmentator ids -> a dataset's ids by organ name; other structures 0."""
    out = np.zeros(ts_seg.shape, np.uint8)
    for name, value in target.items():
        out[ts_seg == TS_IDS[name]] = value
    return out


def _write_pair(image_path: Path, label_path: Path, image: Volume, label: np.ndarray) -> None:
    write_volume(image_path, image)
    write_volume(label_path, Volume(label.astype(np.uint8), image.geometry))


def _counts(array: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(array, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


def _written(out: Path, case_id: str) -> tuple[Volume, Volume]:
    return read_volume(out / "images" / f"{case_id}.nii.gz"), read_volume(
        out / "labels" / f"{case_id}.nii.gz"
    )


# --------------------------------------------------------------------------- FLARE22


def _flare_tree(root: Path) -> dict[str, np.ndarray]:
    ct, ts_seg = _ts_ct()
    spleen_ct, spleen_seg = _spleen()
    base = root / "FLARE22Train"
    labels = {
        "FLARE22_Tr_0001": (ct, _relabel(ts_seg, FLARE)),
        "FLARE22_Tr_0002": (spleen_ct, np.where(spleen_seg > 0, FLARE["spleen"], 0)),
        "FLARE22_Tr_0003": (
            Volume(ct.array_zyx[:15], ct.geometry),
            _relabel(ts_seg[:15], FLARE),
        ),
    }
    for case_id, (image, label) in labels.items():
        _write_pair(
            base / "images" / f"{case_id}_0000.nii.gz",
            base / "labels" / f"{case_id}.nii.gz",
            image,
            label,
        )
    return {case_id: label for case_id, (_, label) in labels.items()}


@needs_data
def test_flare22_official_tree_labels_and_splits(tmp_path: Path) -> None:
    sources = _flare_tree(tmp_path / "FLARE22")
    out = tmp_path / "out"
    table = prepare_dataset(
        adapter="flare22", params={"root": str(tmp_path / "FLARE22")}, seed=0, out_dir=out
    )
    ids = ["FLARE22_Tr_0001", "FLARE22_Tr_0002", "FLARE22_Tr_0003"]
    assert list(table["case_id"]) == ids
    expected = assign_splits(ids, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    cases = read_cases(out).set_index("case_id")
    assert cases["split"].to_dict() == expected
    assert sorted(expected.values()) == ["test", "train", "val"]
    assert set(cases["modality"]) == {"CT"}
    assert read_label_map(out) == {"background": 0, **FLARE}
    assert cases.loc["FLARE22_Tr_0001", "spacing_xyz_mm"] == "3,3,3"
    assert cases.loc["FLARE22_Tr_0002", "spacing_xyz_mm"] == "0.794922,0.794922,5"
    assert bool(cases["spacing_known"].all())
    image, label = _written(out, "FLARE22_Tr_0001")
    np.testing.assert_array_equal(image.array_zyx, _ts_ct()[0].array_zyx)  # HU unchanged
    counts = _counts(label.array_zyx)
    assert counts == _counts(sources["FLARE22_Tr_0001"])
    # TotalSegmentator's voxel counts of the organs, now under FLARE22's values
    assert counts[FLARE["liver"]] == 38634 and counts[FLARE["spleen"]] == 9452
    assert counts[FLARE["duodenum"]] == 1110 and counts[FLARE["left_kidney"]] == 3676
    assert FLARE["esophagus"] not in counts  # not in the example volume
    _, label2 = _written(out, "FLARE22_Tr_0002")
    assert _counts(label2.array_zyx) == {0: 164 * 166 * 26 - 96672, 3: 96672}


def test_flare22_medsam_split_is_the_first_40_sorted_cases(tmp_path: Path) -> None:
    ids = [f"FLARE22_Tr_{n:04d}" for n in range(50, 0, -1)]
    split = medsam_split(ids)
    assert [c for c in sorted(ids) if split[c] == "test"] == ids[:10][::-1]  # 0041..0050
    assert list(split.values()).count("train") == 40


@needs_data
def test_flare22_keep_labels_and_errors(tmp_path: Path) -> None:
    sources = _flare_tree(tmp_path / "FLARE22")
    root = tmp_path / "FLARE22" / "FLARE22Train"  # the folder holding images/ and labels/
    params = {"root": str(root), "keep_labels": ["liver", "spleen"], "split": "medsam"}
    out = tmp_path / "out"
    prepare_dataset(adapter="flare22", params=params, seed=0, out_dir=out)
    assert set(read_cases(out)["split"]) == {"train"}  # 3 cases: all among MedSAM's first 40
    params = {**params, "split_all": "test"}
    del params["split"]
    prepare_dataset(adapter="flare22", params=params, seed=0, out_dir=out)
    assert read_label_map(out) == {"background": 0, "liver": 1, "spleen": 3}
    _, label = _written(out, "FLARE22_Tr_0003")
    source = sources["FLARE22_Tr_0003"]
    expected = np.where(np.isin(source, [1, 3]), source, 0)
    np.testing.assert_array_equal(label.array_zyx, expected)
    assert set(read_cases(out)["split"]) == {"test"}
    with pytest.raises(ConfigError, match=r"params\.keep_labels: \['kidney'\]"):
        prepare_dataset(
            adapter="flare22",
            params={**params, "keep_labels": ["kidney"]},
            seed=0,
            out_dir=tmp_path / "bad",
        )
    (root / "labels" / "FLARE22_Tr_0002.nii.gz").unlink()
    with pytest.raises(InputError, match=r"FLARE22_Tr_0002_0000\.nii\.gz: label file not found"):
        prepare_dataset(adapter="flare22", params=params, seed=0, out_dir=tmp_path / "bad")
    with pytest.raises(InputError, match="no FLARE22 image folder"):
        prepare_dataset(
            adapter="flare22", params={"root": str(tmp_path)}, seed=0, out_dir=tmp_path / "bad"
        )


# --------------------------------------------------------------------------- Synapse


def _synapse_raw_tree(root: Path) -> None:
    ct, ts_seg = _ts_ct()
    spleen_ct, spleen_seg = _spleen()
    training = root / "RawData" / "Training"
    pairs = {
        "0001": (ct, _relabel(ts_seg, BTCV)),
        "0005": (spleen_ct, np.where(spleen_seg > 0, BTCV["spleen"], 0)),
        "0022": (Volume(ct.array_zyx[10:], ct.geometry), _relabel(ts_seg[10:], BTCV)),
    }
    for number, (image, label) in pairs.items():
        _write_pair(
            training / "img" / f"img{number}.nii.gz",
            training / "label" / f"label{number}.nii.gz",
            image,
            label,
        )
    write_volume(root / "RawData" / "Testing" / "img" / "img0061.nii.gz", ct)  # no label


@needs_data
def test_synapse_raw_13_labels_and_transunet_split(tmp_path: Path) -> None:
    _synapse_raw_tree(tmp_path / "Abdomen")
    out = tmp_path / "out"
    params = {"root": str(tmp_path / "Abdomen"), "split": "transunet"}
    table = prepare_dataset(adapter="synapse", params=params, seed=0, out_dir=out)
    assert list(table["case_id"]) == ["case0001", "case0005", "case0022"]
    cases = read_cases(out).set_index("case_id")
    # lists/lists_Synapse: 0005 in train.txt, 0001 and 0022 in test_vol.txt
    assert cases["split"].to_dict() == {"case0001": "test", "case0005": "train", "case0022": "test"}
    assert read_label_map(out) == {"background": 0, **BTCV}
    assert cases.loc["case0001", "spacing_xyz_mm"] == "3,3,3"
    assert bool(cases["spacing_known"].all())
    _, ts_seg = _ts_ct()
    _, label = _written(out, "case0001")
    counts = _counts(label.array_zyx)
    assert counts == _counts(_relabel(ts_seg, BTCV))
    assert counts[BTCV["liver"]] == 38634 and counts[BTCV["portal_and_splenic_vein"]] == 901
    _, label = _written(out, "case0022")
    assert label.array_zyx.shape == (20, 101, 122)

    with pytest.raises(ConfigError, match=r"params\.split: expected 'transunet'"):
        prepare_dataset(
            adapter="synapse", params={**params, "split": "samed"}, seed=0, out_dir=tmp_path / "x"
        )
    extra = tmp_path / "Abdomen" / "RawData" / "Training"
    (extra / "img" / "img0050.nii.gz").write_bytes((extra / "img" / "img0001.nii.gz").read_bytes())
    (extra / "label" / "label0050.nii.gz").write_bytes(
        (extra / "label" / "label0001.nii.gz").read_bytes()
    )
    with pytest.raises(ConfigError, match=r"params\.split: 1 case\(s\) have no split.*case0050"):
        prepare_dataset(adapter="synapse", params=params, seed=0, out_dir=tmp_path / "x")


def _transunet_tree(root: Path) -> None:
    """TransUNet's data/Synapse made as its datasets/README.md describes, from the same CTs."""
    ct, ts_seg = _ts_ct()
    spleen_ct, spleen_seg = _spleen()

    def scaled(hu: np.ndarray) -> np.ndarray:
        return ((np.clip(hu.astype(np.float32), -125, 275) + 125) / 400).astype(np.float32)

    train = root / "train_npz"
    train.mkdir(parents=True)
    image, label = scaled(spleen_ct.array_zyx), np.where(spleen_seg > 0, 1, 0).astype(np.float32)
    for k in range(image.shape[0]):
        np.savez(train / f"case0005_slice{k:03d}.npz", image=image[k], label=label[k])
    test = root / "test_vol_h5"
    test.mkdir()
    with h5py.File(test / "case0001.npy.h5", "w") as handle:
        handle["image"] = scaled(ct.array_zyx)
        handle["label"] = _relabel(ts_seg, TRANSUNET).astype(np.float32)


@needs_data
def test_synapse_transunet_slices_become_one_case(tmp_path: Path) -> None:
    root = tmp_path / "data" / "Synapse"
    _transunet_tree(root)
    out = tmp_path / "out"
    table = prepare_dataset(
        adapter="synapse_transunet", params={"root": str(root)}, seed=0, out_dir=out
    )
    assert list(table["case_id"]) == ["case0001", "case0005"]
    cases = read_cases(out).set_index("case_id")
    assert cases["split"].to_dict() == {"case0001": "test", "case0005": "train"}
    assert cases.loc["case0005", "size_xyz"] == "164,166,26"  # 26 slices stacked
    assert set(cases["spacing_xyz_mm"]) == {"1,1,1"}
    assert not cases["spacing_known"].any()
    assert read_label_map(out) == {"background": 0, **TRANSUNET}
    image, label = _written(out, "case0005")
    spleen_ct, _ = _spleen()
    expected = (np.clip(spleen_ct.array_zyx, -125, 275) + 125) / 400
    np.testing.assert_allclose(image.array_zyx, expected, atol=1e-6)
    assert _counts(label.array_zyx) == {0: 164 * 166 * 26 - 96672, 1: 96672}
    _, label = _written(out, "case0001")
    counts = _counts(label.array_zyx)
    assert counts[TRANSUNET["liver"]] == 38634 and counts[TRANSUNET["aorta"]] == 997
    assert counts[TRANSUNET["pancreas"]] == 644 and counts[TRANSUNET["stomach"]] == 4675

    params = {"root": str(root), "spacing": [0.795, 0.795, 5.0], "rescale_hu": True}
    prepare_dataset(adapter="synapse_transunet", params=params, seed=0, out_dir=tmp_path / "hu")
    cases = read_cases(tmp_path / "hu").set_index("case_id")
    assert cases.loc["case0005", "spacing_xyz_mm"] == "0.795,0.795,5"
    assert bool(cases["spacing_known"].all())
    image, _ = _written(tmp_path / "hu", "case0005")
    np.testing.assert_allclose(image.array_zyx, np.clip(spleen_ct.array_zyx, -125, 275), atol=1e-3)


@needs_data
def test_synapse_8_organs_match_between_raw_and_transunet(tmp_path: Path) -> None:
    _synapse_raw_tree(tmp_path / "Abdomen")
    _transunet_tree(tmp_path / "Synapse")
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    prepare_dataset(
        adapter="synapse",
        params={"root": str(tmp_path / "Abdomen"), "organs": "transunet8", "split": "transunet"},
        seed=0,
        out_dir=raw,
    )
    prepare_dataset(
        adapter="synapse_transunet", params={"root": str(tmp_path / "Synapse")}, seed=0, out_dir=pre
    )
    assert read_label_map(raw) == read_label_map(pre) == {"background": 0, **TRANSUNET}
    _, raw_label = _written(raw, "case0001")
    _, pre_label = _written(pre, "case0001")
    np.testing.assert_array_equal(raw_label.array_zyx, pre_label.array_zyx)
    _, ts_seg = _ts_ct()
    eight = sum(int((ts_seg == TS_IDS[name]).sum()) for name in TRANSUNET)
    assert int((raw_label.array_zyx > 0).sum()) == eight  # IVC, veins, adrenals dropped
    assert int((raw_label.array_zyx == TRANSUNET["spleen"]).sum()) == 9452
    for case in ("case0001", "case0005"):
        assert (
            read_cases(raw).set_index("case_id").loc[case, "split"]
            == read_cases(pre).set_index("case_id").loc[case, "split"]
        )


@needs_data
def test_synapse_transunet_errors_name_the_file(tmp_path: Path) -> None:
    root = tmp_path / "Synapse"
    _transunet_tree(root)
    (root / "train_npz" / "case0005_slice010.npz").unlink()
    with pytest.raises(InputError, match=r"case0005_slice010\.npz: slice missing"):
        prepare_dataset(
            adapter="synapse_transunet", params={"root": str(root)}, seed=0, out_dir=tmp_path / "x"
        )
    (root / "train_npz").rename(tmp_path / "unused")
    with h5py.File(root / "test_vol_h5" / "case0002.npy.h5", "w") as handle:
        handle["image"] = np.zeros((2, 4, 4), np.float32)
    with pytest.raises(InputError, match=r"case0002\.npy\.h5: no dataset 'label'"):
        prepare_dataset(
            adapter="synapse_transunet", params={"root": str(root)}, seed=0, out_dir=tmp_path / "x"
        )
    with pytest.raises(ConfigError, match=r"params\.spacing: expected \[x, y\] or \[x, y, z\]"):
        prepare_dataset(
            adapter="synapse_transunet",
            params={"root": str(root), "spacing": [1, 0]},
            seed=0,
            out_dir=tmp_path / "x",
        )


# --------------------------------------------------------------------------- MSD


def _msd_spleen_tree(root: Path) -> None:
    spleen_ct, spleen_seg = _spleen()
    ct, ts_seg = _ts_ct()
    _write_pair(
        root / "imagesTr" / "spleen_2.nii.gz", root / "labelsTr" / "spleen_2.nii.gz", spleen_ct,
        spleen_seg,
    )  # fmt: skip
    _write_pair(
        root / "imagesTr" / "spleen_3.nii.gz", root / "labelsTr" / "spleen_3.nii.gz", ct,
        (ts_seg == TS_IDS["spleen"]).astype(np.uint8),
    )  # fmt: skip
    (root / "imagesTr" / "._spleen_2.nii.gz").write_bytes(b"macOS resource fork")
    write_volume(root / "imagesTs" / "spleen_1.nii.gz", ct)
    meta = {
        "name": "Spleen",
        "description": "Spleen Segmentation",
        "reference": "Memorial Sloan Kettering Cancer Center",
        "licence": "CC-BY-SA 4.0",
        "release": "1.0 06/08/2018",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "spleen"},
        "numTraining": 2,
        "numTest": 1,
        "training": [
            {"image": "./imagesTr/spleen_3.nii.gz", "label": "./labelsTr/spleen_3.nii.gz"},
            {"image": "./imagesTr/spleen_2.nii.gz", "label": "./labelsTr/spleen_2.nii.gz"},
        ],
        "test": ["./imagesTs/spleen_1.nii.gz"],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=4), encoding="utf-8")


@needs_data
def test_msd_task09_spleen_dataset_json(tmp_path: Path) -> None:
    root = tmp_path / "Task09_Spleen"
    _msd_spleen_tree(root)
    out = tmp_path / "out"
    params = {"root": str(root), "split": {"spleen_2": "test", "spleen_3": "train"}}
    table = prepare_dataset(adapter="msd", params=params, seed=0, out_dir=out)
    assert list(table["case_id"]) == ["spleen_3", "spleen_2"]  # dataset.json order; no spleen_1
    cases = read_cases(out).set_index("case_id")
    assert cases["split"].to_dict() == {"spleen_3": "train", "spleen_2": "test"}
    assert set(cases["modality"]) == {"CT"}
    assert read_label_map(out) == {"background": 0, "spleen": 1}
    assert cases.loc["spleen_2", "spacing_xyz_mm"] == "0.794922,0.794922,5"
    assert cases.loc["spleen_2", "size_xyz"] == "164,166,26"
    image, label = _written(out, "spleen_2")
    assert image.array_zyx.min() == -1019 and image.array_zyx.max() == 949  # HU
    assert int(label.array_zyx.sum()) == 96672
    _, label = _written(out, "spleen_3")
    assert int(label.array_zyx.sum()) == 9452

    seeded = prepare_dataset(
        adapter="msd", params={"root": str(root), "splits": {"train": 1, "test": 1}}, seed=3,
        out_dir=tmp_path / "seeded",
    )  # fmt: skip
    expected = assign_splits(["spleen_3", "spleen_2"], {"train": 1, "test": 1}, seed=3)
    assert dict(zip(seeded["case_id"], seeded["split"], strict=True)) == expected


@needs_data
def test_msd_multi_label_names_channels_and_errors(tmp_path: Path) -> None:
    root = tmp_path / "Task07_Pancreas"
    ct, ts_seg = _ts_ct()
    label = np.zeros(ts_seg.shape, np.uint8)
    label[ts_seg == TS_IDS["pancreas"]] = 1
    label[ts_seg == TS_IDS["liver"]] = 2  # stand-in for the tumour class
    image_path = root / "imagesTr" / "pancreas_001.nii.gz"
    _write_pair(image_path, root / "labelsTr" / "pancreas_001.nii.gz", ct, label)
    meta = {
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "Pancreas", "2": "non-enhancing Tumour"},
        "training": [
            {"image": "./imagesTr/pancreas_001.nii.gz", "label": "./labelsTr/pancreas_001.nii.gz"}
        ],
    }
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    out = tmp_path / "out"
    params = {"root": str(root), "split_all": "test", "keep_labels": ["non_enhancing_tumour"]}
    prepare_dataset(adapter="msd", params=params, seed=0, out_dir=out)
    assert read_label_map(out) == {"background": 0, "non_enhancing_tumour": 2}
    _, written = _written(out, "pancreas_001")
    assert _counts(written.array_zyx) == {0: label.size - 38634, 2: 38634}

    with pytest.raises(
        ConfigError, match=r"params\.channel: 1 is not a channel of .*dataset\.json"
    ):
        prepare_dataset(adapter="msd", params={**params, "channel": 1}, seed=0, out_dir=out)

    # a 4-channel task (Task01 BrainTumour's dataset.json): 4D NIfTI images
    brain = tmp_path / "Task01_BrainTumour"
    channels = [sitk.GetImageFromArray(ct.array_zyx[:4] + 100 * k) for k in range(4)]
    for image in channels:
        image.SetSpacing((0.9, 0.8, 2.5))
    four_d = sitk.JoinSeries(channels)
    (brain / "imagesTr").mkdir(parents=True)
    sitk.WriteImage(four_d, str(brain / "imagesTr" / "BRATS_001.nii.gz"))
    write_volume(
        brain / "labelsTr" / "BRATS_001.nii.gz", Volume(label[:4], Geometry((0.9, 0.8, 2.5)))
    )
    meta = {
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {
            "0": "background",
            "1": "edema",
            "2": "non-enhancing tumor",
            "3": "enhancing tumour",
        },
        "training": [
            {"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}
        ],
    }
    (brain / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    table = prepare_dataset(
        adapter="msd",
        params={"root": str(brain), "channel": 2, "split_all": "test"},
        seed=0,
        out_dir=tmp_path / "brain",
    )
    assert list(table["modality"]) == ["t1gd"]
    written = read_volume(tmp_path / "brain" / "images" / "BRATS_001.nii.gz")
    np.testing.assert_array_equal(written.array_zyx, ct.array_zyx[:4] + 200)  # channel 2
    np.testing.assert_allclose(written.geometry.spacing_xyz, (0.9, 0.8, 2.5))
    three_d = Volume(ct.array_zyx[:4], Geometry((0.9, 0.8, 2.5)))
    write_volume(brain / "imagesTr" / "BRATS_001.nii.gz", three_d)  # a 3D image now
    with pytest.raises(InputError, match=r"BRATS_001\.nii\.gz: no channel 2; the image has 1"):
        prepare_dataset(
            adapter="msd",
            params={"root": str(brain), "channel": 2, "split_all": "test"},
            seed=0,
            out_dir=tmp_path / "brain2",
        )
    assert not (tmp_path / "brain2" / "cases.tsv").exists()

    (root / "labelsTr" / "pancreas_001.nii.gz").unlink()
    with pytest.raises(InputError, match=r"pancreas_001\.nii\.gz: label file not found"):
        prepare_dataset(adapter="msd", params=params, seed=0, out_dir=tmp_path / "x")
    (root / "dataset.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match=r"dataset\.json: cannot read dataset\.json"):
        prepare_dataset(adapter="msd", params=params, seed=0, out_dir=tmp_path / "x")


# --------------------------------------------------------------------------- MedSAM npz


def _window_uint8(hu: np.ndarray) -> np.ndarray:
    """MedSAM pre_CT_MR.py's CT preprocessing: window level 40, width 400, scaled to 0..255."""
    clipped = np.clip(hu, -160, 240)
    return np.uint8((clipped - clipped.min()) / (clipped.max() - clipped.min()) * 255.0)


def _cxr() -> tuple[np.ndarray, np.ndarray]:
    grey = np.asarray(Image.open(DATA / "cxr_lung" / "1.jpg"))
    mask = (np.asarray(Image.open(DATA / "cxr_lung" / "1-mask.png")) > 0).astype(np.uint8)
    return grey, mask


@needs_data
def test_medsam_npz_training_tree_2d_and_3d(tmp_path: Path) -> None:
    root = tmp_path / "train_npz"
    spleen_ct, spleen_seg = _spleen()
    (root / "CT" / "Spleen").mkdir(parents=True)
    np.savez_compressed(
        root / "CT" / "Spleen" / "CT_Spleen_spleen_2.npz",
        imgs=_window_uint8(spleen_ct.array_zyx),
        gts=spleen_seg.astype(np.uint8),
        spacing=spleen_ct.geometry.spacing_xyz,  # img_sitk.GetSpacing()
    )
    grey, mask = _cxr()
    (root / "XRay" / "Lung").mkdir(parents=True)
    np.savez_compressed(
        root / "XRay" / "Lung" / "XRay_Lung_1.npz", imgs=np.repeat(grey[..., None], 3, -1), gts=mask
    )
    out = tmp_path / "out"
    params = {"root": str(root), "labels": {"background": 0, "organ": 1}, "split_all": "train"}
    table = prepare_dataset(adapter="medsam_npz", params=params, seed=0, out_dir=out)
    assert list(table["case_id"]) == ["CT_Spleen_spleen_2", "XRay_Lung_1"]
    cases = read_cases(out).set_index("case_id")
    assert cases["modality"].to_dict() == {"CT_Spleen_spleen_2": "CT", "XRay_Lung_1": "XRay"}
    assert cases.loc["CT_Spleen_spleen_2", "spacing_xyz_mm"] == "0.794922,0.794922,5"
    assert cases.loc["CT_Spleen_spleen_2", "size_xyz"] == "164,166,26"
    assert cases["spacing_known"].to_dict() == {"CT_Spleen_spleen_2": True, "XRay_Lung_1": False}
    assert cases.loc["XRay_Lung_1", "size_xyz"] == "512,512,1"
    image, label = _written(out, "CT_Spleen_spleen_2")
    np.testing.assert_array_equal(image.array_zyx, _window_uint8(spleen_ct.array_zyx))
    assert int(label.array_zyx.sum()) == 96672
    image, label = _written(out, "XRay_Lung_1")
    np.testing.assert_array_equal(image.array_zyx[0], grey)  # equal RGB channels: one kept
    assert int(label.array_zyx.sum()) == int(mask.sum()) > 0

    prepare_dataset(
        adapter="medsam_npz",
        params={**params, "spacing_order": "zyx", "images": "CT/**/*.npz"},
        seed=0,
        out_dir=tmp_path / "zyx",
    )
    assert read_cases(tmp_path / "zyx").loc[0, "spacing_xyz_mm"] == "5,0.794922,0.794922"


@needs_data
def test_medsam_npz_validation_tree_with_gts_folder(tmp_path: Path) -> None:
    root = tmp_path / "validation"
    (root / "imgs").mkdir(parents=True)
    (root / "gts").mkdir()
    ct, ts_seg = _ts_ct()
    gts = np.zeros(ts_seg.shape, np.uint8)
    for k, name in enumerate(("liver", "spleen", "aorta"), start=1):  # one id per object
        gts[ts_seg == TS_IDS[name]] = k
    spacing = ct.geometry.spacing_xyz
    np.savez_compressed(
        root / "imgs" / "3DBox_CT_0001.npz",
        imgs=_window_uint8(ct.array_zyx),
        boxes=np.array([[10, 10, 2, 60, 60, 20]]),
        spacing=spacing,
    )
    np.savez_compressed(root / "gts" / "3DBox_CT_0001.npz", gts=gts, spacing=spacing)
    rgb = np.asarray(Image.open(DATA / "busi_mini" / "images" / "10018.png"))
    lesion = np.asarray(Image.open(DATA / "busi_mini" / "masks" / "10018.png")).max(-1) > 0
    boxes = np.array([[1, 2, 30, 40]])
    np.savez_compressed(root / "imgs" / "2DBox_US_0001.npz", imgs=rgb, boxes=boxes)
    np.savez_compressed(root / "gts" / "2DBox_US_0001.npz", gts=lesion.astype(np.uint8))
    out = tmp_path / "out"
    params = {"root": str(root), "gts_dir": "gts", "binarize": True, "split_all": "test"}
    table = prepare_dataset(adapter="medsam_npz", params=params, seed=0, out_dir=out)
    assert list(table["case_id"]) == ["2DBox_US_0001", "3DBox_CT_0001"]  # gts/ not images
    cases = read_cases(out).set_index("case_id")
    assert cases["modality"].to_dict() == {"2DBox_US_0001": "US", "3DBox_CT_0001": "CT"}
    assert cases.loc["3DBox_CT_0001", "spacing_xyz_mm"] == "3,3,3"
    assert read_label_map(out) == {"background": 0, "foreground": 1}
    _, label = _written(out, "3DBox_CT_0001")
    assert int(label.array_zyx.sum()) == 38634 + 9452 + 997
    image, label = _written(out, "2DBox_US_0001")
    assert image.array_zyx.shape == (1, 575, 757)
    assert int(label.array_zyx.sum()) == int(lesion.sum()) > 0

    labelled = {**params, "binarize": False, "labels": {"background": 0, "liver": 1, "spleen": 2}}
    with pytest.raises(InputError, match=r"gts/3DBox_CT_0001\.npz: label values \[3\] are not in"):
        prepare_dataset(adapter="medsam_npz", params=labelled, seed=0, out_dir=tmp_path / "x")
    labelled["labels"]["aorta"] = 3
    labelled["keep_labels"] = ["spleen"]
    labelled["images"] = "imgs/3DBox_*.npz"
    prepare_dataset(adapter="medsam_npz", params=labelled, seed=0, out_dir=tmp_path / "kept")
    _, label = _written(tmp_path / "kept", "3DBox_CT_0001")
    assert _counts(label.array_zyx) == {0: label.array_zyx.size - 9452, 2: 9452}


@needs_data
def test_medsam_npz_errors_name_the_file_or_key(tmp_path: Path) -> None:
    root = tmp_path / "npz"
    root.mkdir()
    grey, mask = _cxr()
    np.savez_compressed(root / "XRay_Lung_1.npz", imgs=np.stack([grey] * 3, -1))  # no gts
    base = {"root": str(root), "binarize": True}
    with pytest.raises(ConfigError, match=r"params\.labels: give the label map"):
        prepare_dataset(
            adapter="medsam_npz", params={"root": str(root)}, seed=0, out_dir=tmp_path / "x"
        )
    with pytest.raises(ConfigError, match=r"params\.binarize: give either binarize or labels"):
        prepare_dataset(
            adapter="medsam_npz",
            params={**base, "labels": {"background": 0, "x": 1}},
            seed=0,
            out_dir=tmp_path / "x",
        )
    with pytest.raises(InputError, match=r"XRay_Lung_1\.npz: no array \['gts'\]"):
        prepare_dataset(adapter="medsam_npz", params=base, seed=0, out_dir=tmp_path / "x")
    np.savez_compressed(root / "lung_1.npz", imgs=grey, gts=mask)
    with pytest.raises(InputError, match=r"lung_1\.npz: cannot tell the modality"):
        prepare_dataset(adapter="medsam_npz", params=base, seed=0, out_dir=tmp_path / "x")
    np.savez_compressed(root / "XRay_Lung_1.npz", imgs=np.zeros((4, 5, 6), np.uint8), gts=mask)
    with pytest.raises(InputError, match=r"XRay_Lung_1\.npz: 'imgs' has shape \(4, 5, 6\)"):
        prepare_dataset(
            adapter="medsam_npz",
            params={**base, "images": "XRay_*.npz"},
            seed=0,
            out_dir=tmp_path / "x",
        )
    with pytest.raises(InputError, match=r"gts folder not found \(params\.gts_dir\)"):
        prepare_dataset(
            adapter="medsam_npz", params={**base, "gts_dir": "gts"}, seed=0, out_dir=tmp_path / "x"
        )
