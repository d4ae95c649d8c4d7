"""The folder adapters on real public fixtures and on small folders built here.

Expected numbers are computed independently from the source files (SimpleITK, PIL, numpy)
and compared with what the adapters write into the canonical layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from medsegflow.datasets._params import assign_case_splits
from medsegflow.datasets.canonical import read_cases, read_label_map
from medsegflow.datasets.registry import prepare_dataset
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import LUMA_WEIGHTS, read_volume

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_data = pytest.mark.usefixtures("shared_data")  # fails (never skips) without ../shared/data

BUSI_BENIGN = {"10018", "10080", "10110"}  # green masks, per busi_mini/SOURCE.txt
BUSI_MALIGNANT = {"10509", "10523", "10535"}  # red masks


def _source(path: Path) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """(array_zyx, spacing_xyz, origin_xyz) read straight with SimpleITK."""
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin()


def _written(out: Path, case_id: str) -> tuple:
    return read_volume(out / "images" / f"{case_id}.nii.gz"), read_volume(
        out / "labels" / f"{case_id}.nii.gz"
    )


@needs_data
def test_msd_spleen_crop_keeps_hu_geometry_and_label(tmp_path: Path) -> None:
    root = DATA / "msd_spleen_crop"
    params = {
        "root": str(root),
        "images": "sub-*_ct.nii.gz",
        "modality": "CT",
        "label_replace": [["_ct.nii.gz", "_ct_seg-manual.nii.gz"]],
        "case_id": "(sub-[^_/]+)",
        "labels": {"background": 0, "spleen": 1},
        "split_all": "test",
        "caption": "{modality} scan with spleen ({case_id})",
    }
    out = tmp_path / "spleen"
    table = prepare_dataset(adapter="nifti_folder", params=params, seed=0, out_dir=out)
    assert list(table["case_id"]) == ["sub-spleen2"]
    image, label = _written(out, "sub-spleen2")
    src_zyx, spacing, origin = _source(root / "sub-spleen2_ct.nii.gz")
    assert image.array_zyx.shape == (26, 166, 164)
    assert image.array_zyx.dtype == np.float32
    np.testing.assert_array_equal(image.array_zyx, src_zyx)  # HU unchanged
    assert image.array_zyx.min() == -1019 and image.array_zyx.max() == 949
    np.testing.assert_allclose(image.geometry.spacing_xyz, spacing, rtol=1e-6)
    np.testing.assert_allclose(image.geometry.spacing_xyz, (0.795, 0.795, 5.0), atol=1e-3)
    np.testing.assert_allclose(image.geometry.origin_xyz, origin, atol=1e-4)
    assert set(np.unique(label.array_zyx)) == {0, 1}
    assert int(label.array_zyx.sum()) == 96672  # SOURCE.txt
    cases = read_cases(out)
    assert cases.loc[0, "split"] == "test" and cases.loc[0, "modality"] == "CT"
    assert cases.loc[0, "size_xyz"] == "164,166,26"
    assert cases.loc[0, "caption"] == "CT scan with spleen (sub-spleen2)"
    assert read_label_map(out) == {"background": 0, "spleen": 1}


@needs_data
@pytest.mark.parametrize("series", ["CT", "MR_T1"])
def test_ibsi_sarcoma_ct_and_mr(tmp_path: Path, series: str) -> None:
    root = DATA / "ibsi_sts"
    params = {
        "root": str(root),
        "images": f"STS_*/{series}_image.nii.gz",
        "label_replace": [[f"{series}_image", f"{series}_mask"]],
        "case_id": r"(STS_\d+)/",
        "modality": series[:2],
        "labels": {"background": 0, "tumour": 1},
        "split": {"STS_001": "train", "STS_002": "test"},
    }
    out = tmp_path / series
    prepare_dataset(adapter="nifti_folder", params=params, seed=0, out_dir=out)
    cases = read_cases(out).set_index("case_id")
    assert list(cases.index) == ["STS_001", "STS_002"]
    assert list(cases["split"]) == ["train", "test"]
    assert set(cases["modality"]) == {series[:2]}
    for case_id in cases.index:
        image, label = _written(out, case_id)
        src_zyx, spacing, _ = _source(root / case_id / f"{series}_image.nii.gz")
        mask_zyx, _, _ = _source(root / case_id / f"{series}_mask.nii.gz")
        np.testing.assert_array_equal(image.array_zyx, src_zyx)
        np.testing.assert_array_equal(label.array_zyx, mask_zyx)
        np.testing.assert_allclose(image.geometry.spacing_xyz, spacing, rtol=1e-6)
        np.testing.assert_allclose(image.geometry.spacing_xyz, (0.977, 0.977, 3.27), atol=1e-3)
        assert label.geometry.matches(image.geometry)
        assert cases.loc[case_id, "size_xyz"] == ",".join(map(str, src_zyx.shape[::-1]))
        assert 0 < label.array_zyx.sum() < label.array_zyx.size
    if series == "CT":
        image, _ = _written(out, "STS_001")
        assert image.array_zyx.min() == -1000 and image.array_zyx.max() == 1397


def _write_nnunet_raw(root: Path, n: int = 5) -> dict[str, np.ndarray]:
    """nnU-Net raw layout: imagesTr/case_XXX_0000.nii.gz, labelsTr/case_XXX.nii.gz (+ junk)."""
    labels = {}
    for i in range(n):
        rng = np.random.default_rng(i)
        image_zyx = rng.integers(-1000, 1000, size=(4, 6, 5)).astype(np.int16)
        label_zyx = np.zeros((4, 6, 5), np.uint8)
        label_zyx[1:3, 2:4, 1:4] = 1
        label_zyx[2, 3, 2] = 2
        for folder, name, array in (
            ("imagesTr", f"case_{i:03d}_0000", image_zyx),
            ("labelsTr", f"case_{i:03d}", label_zyx),
        ):
            img = sitk.GetImageFromArray(array)
            img.SetSpacing((0.7, 0.8, 2.5))
            (root / folder).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(img, str(root / folder / f"{name}.nii.gz"))
        labels[f"case_{i:03d}"] = label_zyx
    (root / "imagesTr" / "._case_000_0000.nii.gz").write_bytes(b"macOS resource fork")
    return labels


def test_nnunet_raw_defaults(tmp_path: Path) -> None:
    root = tmp_path / "Dataset001_Toy"
    labels = _write_nnunet_raw(root)
    params = {
        "root": str(root),
        "modality": "CT",
        "labels": {"background": 0, "liver": 1, "tumour": 2},
        "captions": {"case_000": "liver with one tumour voxel"},
    }
    out = tmp_path / "out"
    table = prepare_dataset(adapter="nifti_folder", params=params, seed=0, out_dir=out)
    assert list(table["case_id"]) == sorted(labels)
    assert table["split"].value_counts().to_dict() == {"train": 3, "val": 1, "test": 1}
    cases = read_cases(out).set_index("case_id")
    assert cases.loc["case_000", "caption"] == "liver with one tumour voxel"
    assert cases.loc["case_001", "caption"] == ""
    assert set(cases["spacing_xyz_mm"]) == {"0.7,0.8,2.5"}
    image, label = _written(out, "case_003")
    assert image.array_zyx.dtype == np.int16
    np.testing.assert_array_equal(label.array_zyx, labels["case_003"])


def test_nifti_binarize_merges_labels_and_recursive_glob(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    labels = _write_nnunet_raw(root / "Dataset002", n=3)
    params = {
        "root": str(root),
        "images": "**/*_0000.nii.gz",
        "modality": "CT",
        "binarize": True,
        "split_all": "test",
        "labels": {"background": 0, "liver": 1},
    }
    prepare_dataset(adapter="nifti_folder", params=params, seed=0, out_dir=tmp_path / "out")
    _, label = _written(tmp_path / "out", "case_002")
    np.testing.assert_array_equal(label.array_zyx, (labels["case_002"] > 0).astype(np.uint8))


def test_nifti_keep_labels_sets_the_others_to_background(tmp_path: Path) -> None:
    """Synapse's 8 organs of 13: labels outside keep_labels become 0 and leave the map."""
    root = tmp_path / "raw"
    labels = _write_nnunet_raw(root, n=2)
    params = {
        "root": str(root),
        "modality": "CT",
        "split_all": "test",
        "labels": {"background": 0, "liver": 1, "tumour": 2},
        "keep_labels": ["tumour"],
    }
    prepare_dataset(adapter="nifti_folder", params=params, seed=0, out_dir=tmp_path / "out")
    assert read_label_map(tmp_path / "out") == {"background": 0, "tumour": 2}
    _, label = _written(tmp_path / "out", "case_001")
    expected = np.where(labels["case_001"] == 2, 2, 0)
    np.testing.assert_array_equal(label.array_zyx, expected)
    assert int((label.array_zyx == 2).sum()) == 1
    with pytest.raises(ConfigError, match=r"params\.keep_labels: \['kidney'\] are not"):
        prepare_dataset(
            adapter="nifti_folder",
            params={**params, "keep_labels": ["kidney"]},
            seed=0,
            out_dir=tmp_path / "bad",
        )


def test_split_assignment_is_deterministic(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    _write_nnunet_raw(root, n=5)
    params = {
        "root": str(root),
        "modality": "CT",
        "labels": {"background": 0, "liver": 1, "tumour": 2},
        "splits": {"train": 0.6, "val": 0.2, "test": 0.2},
    }
    first = prepare_dataset(adapter="nifti_folder", params=params, seed=7, out_dir=tmp_path / "a")
    again = prepare_dataset(adapter="nifti_folder", params=params, seed=7, out_dir=tmp_path / "b")
    assert first.equals(again)
    ids = [f"c{i:02d}" for i in range(20)]
    splits = assign_case_splits(ids, {}, seed=3)
    assert splits == assign_case_splits(list(reversed(ids)), {}, seed=3)  # order-free
    assert sorted(splits.values()).count("train") == 12
    assert any(assign_case_splits(ids, {}, seed=s) != splits for s in range(4, 8))


def _busi_params(colors: dict) -> dict:
    return {
        "root": str(DATA / "busi_mini"),
        "mask_mode": "colors",
        "colors": colors,
        "modality": "US",
        "split_all": "test",
    }


@needs_data
@pytest.mark.parametrize("mode", ["colors", "binary"])
def test_busi_binary_lesion_counts_match_colour_masks(tmp_path: Path, mode: str) -> None:
    params = _busi_params({"lesion": [[0, 255, 0], [255, 0, 0]]})
    if mode == "binary":  # any channel > 127 is lesion
        params.update(mask_mode="binary", colors=None, labels={"background": 0, "lesion": 1})
    out = tmp_path / "busi"
    table = prepare_dataset(adapter="png_folder", params=params, seed=0, out_dir=out)
    assert set(table["case_id"]) == BUSI_BENIGN | BUSI_MALIGNANT
    assert read_label_map(out) == {"background": 0, "lesion": 1}
    for case_id in table["case_id"]:
        mask_rgb = np.asarray(Image.open(DATA / "busi_mini" / "masks" / f"{case_id}.png"))
        source_rgb = np.asarray(Image.open(DATA / "busi_mini" / "images" / f"{case_id}.png"))
        image, label = _written(out, case_id)
        h, w = mask_rgb.shape[:2]
        assert label.array_zyx.shape == image.array_zyx.shape == (1, h, w)
        assert set(np.unique(label.array_zyx)) == {0, 1}
        assert int(label.array_zyx.sum()) == int(mask_rgb.any(axis=-1).sum())
        np.testing.assert_array_equal(image.array_zyx[0], source_rgb[..., 0])  # grey RGB
        assert image.array_zyx.dtype == np.uint8
        assert image.geometry.spacing_xyz == (1.0, 1.0, 1.0)


@needs_data
def test_busi_benign_malignant_classes(tmp_path: Path) -> None:
    params = _busi_params({"benign": [[0, 255, 0]], "malignant": [[255, 0, 0]]})
    out = tmp_path / "busi2"
    prepare_dataset(adapter="png_folder", params=params, seed=0, out_dir=out)
    assert read_label_map(out) == {"background": 0, "benign": 1, "malignant": 2}
    for case_id in BUSI_BENIGN | BUSI_MALIGNANT:
        mask_rgb = np.asarray(Image.open(DATA / "busi_mini" / "masks" / f"{case_id}.png"))
        _, label = _written(out, case_id)
        expected = 1 if case_id in BUSI_BENIGN else 2
        assert set(np.unique(label.array_zyx)) == {0, expected}
        assert int((label.array_zyx == expected).sum()) == int(mask_rgb.any(axis=-1).sum())


@needs_data
def test_cxr_lung_jpeg_with_0_255_masks(tmp_path: Path) -> None:
    params = {
        "root": str(DATA / "cxr_lung"),
        "images": "*.jpg",
        "mask": "{stem}-mask.png",
        "labels": {"background": 0, "lung": 1},
        "spacing_mm": [0.5, 0.6],
        "modality": "XR",
        "split": {1: "train", 2: "test"},  # int keys, as YAML reads them
    }
    out = tmp_path / "cxr"
    table = prepare_dataset(adapter="png_folder", params=params, seed=0, out_dir=out)
    assert list(table["case_id"]) == ["1", "2"]
    cases = read_cases(out)
    assert list(cases["case_id"]) == ["1", "2"]
    assert list(cases["size_xyz"]) == ["512,512,1"] * 2
    assert list(cases["spacing_xyz_mm"]) == ["0.5,0.6,1"] * 2
    assert cases["spacing_known"].tolist() == [True, True]  # given by params.spacing_mm
    for case_id in ("1", "2"):
        mask_yx = np.asarray(Image.open(DATA / "cxr_lung" / f"{case_id}-mask.png"))
        source_yx = np.asarray(Image.open(DATA / "cxr_lung" / f"{case_id}.jpg"))
        image, label = _written(out, case_id)
        np.testing.assert_array_equal(image.array_zyx[0], source_yx)
        assert int(label.array_zyx.sum()) == int((mask_yx == 255).sum())
        assert 0.15 < label.array_zyx.mean() < 0.6  # both lung fields
        np.testing.assert_allclose(label.geometry.spacing_xyz, (0.5, 0.6, 1.0))


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_png_colour_image_stays_rgb_and_01_masks(tmp_path: Path) -> None:
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[0, 0] = (200, 100, 50)
    rgb[1, 2] = (0, 0, 255)
    _save(tmp_path / "images" / "a.png", rgb)
    mask_yx = np.zeros((3, 4), np.uint8)
    mask_yx[1:, 1:3] = 1  # a 0/1 mask, not 0/255
    _save(tmp_path / "masks" / "a.png", mask_yx)
    params = {"root": str(tmp_path), "modality": "US", "split_all": "train"}
    prepare_dataset(adapter="png_folder", params=params, seed=0, out_dir=tmp_path / "out")
    written = tmp_path / "out" / "images" / "a.nii.gz"
    image = read_volume(written, colour="rgb")  # the canonical colour image: (1, H, W, 3)
    assert image.array_zyx.dtype == np.uint8 and image.array_zyx.shape == (1, 3, 4, 3)
    np.testing.assert_array_equal(image.array_zyx[0], rgb)
    # a step that needs one channel converts explicitly: BT.601 luminance, rounded
    grey = read_volume(written, colour="grey").array_zyx
    assert grey[0, 0, 0] == round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)
    assert grey[0, 1, 2] == round(255 * LUMA_WEIGHTS[2])
    with pytest.raises(InputError, match="RGB"):
        read_volume(written)
    label = read_volume(tmp_path / "out" / "labels" / "a.nii.gz")
    np.testing.assert_array_equal(label.array_zyx[0], mask_yx)


def test_png_masks_matching_the_image_glob_are_skipped(tmp_path: Path) -> None:
    for stem in ("p1", "p2"):
        _save(tmp_path / f"{stem}.png", np.arange(90, 120, dtype=np.uint8).reshape(5, 6))
        _save(
            tmp_path / f"{stem}_mask.png", np.pad(np.full((3, 2), 255, np.uint8), ((1, 1), (2, 2)))
        )
    params = {
        "root": str(tmp_path),
        "images": "*.png",
        "mask": "{stem}_mask.png",
        "modality": "XR",
        "splits": {"train": 1.0},
    }
    table = prepare_dataset(adapter="png_folder", params=params, seed=0, out_dir=tmp_path / "out")
    assert list(table["case_id"]) == ["p1", "p2"]
    assert set(table["split"]) == {"train"}
    _, label = _written(tmp_path / "out", "p2")
    assert int(label.array_zyx.sum()) == 6


def _busi_tree(root: Path) -> dict[str, np.ndarray]:
    """A miniature Dataset_BUSI_with_GT from real BUSI images: RGB images, 0/255 masks;
    benign (2) has its lesion in two mask files, normal (1) an empty mask."""
    src = DATA / "busi_mini"

    def lesion(case: str) -> np.ndarray:
        return np.asarray(Image.open(src / "masks" / f"{case}.png").convert("RGB")).max(-1) > 127

    def save(path: Path, array: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)

    expected = {}
    for folder, name, case in (
        ("benign", "benign (1)", "10018"),
        ("benign", "benign (2)", "10080"),
        ("malignant", "malignant (7)", "10509"),
        ("normal", "normal (1)", "10110"),
    ):
        image = np.asarray(Image.open(src / "images" / f"{case}.png").convert("RGB"))
        save(root / folder / f"{name}.png", image)
        mask = lesion(case) if folder != "normal" else np.zeros(image.shape[:2], bool)
        if name == "benign (2)":  # two lesion files: left and right of the lesion's centre
            cut = int(np.nonzero(mask)[1].mean())
            left, right = mask.copy(), mask.copy()
            left[:, cut:], right[:, :cut] = False, False
            save(root / folder / f"{name}_mask.png", left.astype(np.uint8) * 255)
            save(root / folder / f"{name}_mask_1.png", right.astype(np.uint8) * 255)
        else:
            save(root / folder / f"{name}_mask.png", mask.astype(np.uint8) * 255)
        expected[name] = mask
    return expected


@needs_data
def test_busi_adapter_reads_the_official_tree(tmp_path: Path) -> None:
    root = tmp_path / "Dataset_BUSI_with_GT"
    expected = _busi_tree(root)
    split = {"benign_001": "train", "benign_002": "val", "malignant_007": "test"}
    params = {"root": str(root), "split": {**split, "normal_001": "test"}}
    out = tmp_path / "busi"
    table = prepare_dataset(adapter="busi", params=params, seed=0, out_dir=out)
    assert list(table["case_id"]) == ["benign_001", "benign_002", "malignant_007", "normal_001"]
    cases = read_cases(out)
    assert dict(zip(cases["case_id"], cases["split"], strict=True))["benign_002"] == "val"
    captions = dict(zip(cases["case_id"], cases["caption"], strict=True))
    assert captions["malignant_007"] == "Breast ultrasound, malignant."
    assert captions["normal_001"] == "Breast ultrasound, normal."
    assert read_label_map(out) == {"background": 0, "lesion": 1}
    assert not cases["spacing_known"].any()  # BUSI publishes no pixel spacing
    for case_id, name in (("benign_001", "benign (1)"), ("benign_002", "benign (2)")):
        image, label = _written(out, case_id)
        np.testing.assert_array_equal(label.array_zyx[0], expected[name].astype(np.uint8))
        assert image.array_zyx.shape == label.array_zyx.shape
        assert label.spacing_zyx == (1.0, 1.0, 1.0)
    assert _written(out, "benign_002")[1].array_zyx.sum() == expected["benign (2)"].sum() > 100
    assert not _written(out, "normal_001")[1].array_zyx.any()  # normal: empty reference
    grey = np.asarray(Image.open(DATA / "busi_mini/images/10509.png").convert("RGB"))[..., 0]
    np.testing.assert_array_equal(_written(out, "malignant_007")[0].array_zyx[0], grey)


@needs_data
def test_busi_adapter_errors_name_the_file_or_key(tmp_path: Path) -> None:
    root = tmp_path / "Dataset_BUSI_with_GT"
    _busi_tree(root)
    with pytest.raises(ConfigError, match=r"params\.classes: \['cyst'\] are not BUSI classes"):
        prepare_dataset(
            adapter="busi", params={"root": str(root), "classes": ["cyst"]}, seed=0, out_dir=root
        )
    benign_only = {"root": str(root), "classes": ["benign"], "split_all": "test"}
    table = prepare_dataset(adapter="busi", params=benign_only, seed=0, out_dir=tmp_path / "b")
    assert list(table["case_id"]) == ["benign_001", "benign_002"]
    (root / "malignant" / "malignant (7)_mask.png").unlink()
    with pytest.raises(InputError, match=r"malignant \(7\)\.png: mask file not found"):
        prepare_dataset(adapter="busi", params={"root": str(root)}, seed=0, out_dir=root / "o")


@needs_data
def test_isic2016_adapter_reads_both_official_sets(tmp_path: Path) -> None:
    """Real BUSI images stand in for dermoscopy (RGB JPEG images, 0/255 PNG masks)."""
    src = DATA / "busi_mini"
    root = tmp_path / "ISIC"
    expected = {}
    layout = {"Training": ["0000000", "0000001", "0000002", "0000004"], "Test": ["0000003"]}
    sources = iter(["10018", "10080", "10110", "10509", "10523"])
    for folder, ids in layout.items():
        for isic_id in ids:
            case = next(sources)
            image = np.asarray(Image.open(src / "images" / f"{case}.png").convert("RGB"))
            mask = np.asarray(Image.open(src / "masks" / f"{case}.png").convert("RGB")).max(-1)
            data = root / f"ISBI2016_ISIC_Part1_{folder}_Data"
            truth = root / f"ISBI2016_ISIC_Part1_{folder}_GroundTruth"
            data.mkdir(parents=True, exist_ok=True)
            truth.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(data / f"ISIC_{isic_id}.jpg", quality=95)
            Image.fromarray(((mask > 127) * 255).astype(np.uint8)).save(
                truth / f"ISIC_{isic_id}_Segmentation.png"
            )
            expected[f"ISIC_{isic_id}"] = mask > 127
    params = {"root": str(root), "val_fraction": 0.25}
    table = prepare_dataset(adapter="isic2016", params=params, seed=0, out_dir=tmp_path / "out")
    assert sorted(table["case_id"]) == sorted(expected)
    splits = dict(zip(table["case_id"], table["split"], strict=True))
    assert splits["ISIC_0000003"] == "test"
    assert sorted(v for k, v in splits.items() if k != "ISIC_0000003") == [
        "train",
        "train",
        "train",
        "val",
    ]
    _, label = _written(tmp_path / "out", "ISIC_0000001")
    np.testing.assert_array_equal(label.array_zyx[0], expected["ISIC_0000001"])
    assert read_label_map(tmp_path / "out") == {"background": 0, "lesion": 1}
    (root / "ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_0000003_Segmentation.png").unlink()
    with pytest.raises(InputError, match=r"ISIC_0000003\.jpg: mask file not found"):
        prepare_dataset(adapter="isic2016", params=params, seed=0, out_dir=tmp_path / "bad")
