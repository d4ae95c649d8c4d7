"""The MedCLIP-SAMv2 2D dataset adapters on miniature copies of their official layouts.

Each tree is built in ``tmp_path`` from the real images of ``../shared/data``: MR slices of
the IBSI sarcoma sample written as MATLAB v7.3 files for Figshare, the chest X-rays of
``cxr_lung`` for COVID-QU-Ex, sarcoma CT slices as JPEG slices with RGB JPEG masks for the
lung CT set, and BUSI images as colour JPEGs with JPEG masks for Kvasir-SEG. Expected values
are computed here from the source arrays (h5py / PIL / numpy), not with the adapters' code.
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from medsegflow.datasets.canonical import read_cases, read_label_map
from medsegflow.datasets.registry import prepare_dataset
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import read_image, read_volume

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_data = pytest.mark.usefixtures("shared_data")  # fails (never skips) without ../shared/data


def _written(out: Path, case_id: str) -> tuple:
    return (
        read_volume(out / "images" / f"{case_id}.nii.gz"),
        read_volume(out / "labels" / f"{case_id}.nii.gz"),
    )


def _table(out: Path) -> dict[str, dict]:
    cases = read_cases(out)
    return {row["case_id"]: row for row in cases.to_dict("records")}


# --- Figshare brain tumour (MATLAB v7.3) -------------------------------------------------

MATLAB_HEADER = (
    b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 "
    b"HDF5 schema 1.00 ."
)


def _matlab_file(path: Path) -> h5py.File:
    """An HDF5 file laid out as MATLAB -v7.3 writes it: 512-byte user block, header text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return h5py.File(path, "w", userblock_size=512)


def _stamp_header(path: Path) -> None:
    header = MATLAB_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as handle:
        handle.write(header)


def _matlab_dataset(group, name: str, array: np.ndarray, matlab_class: str):
    dataset = group.create_dataset(name, data=np.asarray(array).T)  # column-major on disk
    dataset.attrs["MATLAB_class"] = np.bytes_(matlab_class)
    return dataset


def _write_cjdata(path: Path, image: np.ndarray, mask: np.ndarray, label: int, pid: str) -> None:
    with _matlab_file(path) as handle:
        cjdata = handle.create_group("cjdata")
        cjdata.attrs["MATLAB_class"] = np.bytes_("struct")
        _matlab_dataset(cjdata, "image", image, "int16")
        _matlab_dataset(cjdata, "tumorMask", mask.astype(np.uint8), "logical")
        _matlab_dataset(cjdata, "label", np.array([[float(label)]]), "double")
        codes = np.array([[ord(c) for c in pid]], dtype=np.uint16)  # a 1xN char row
        _matlab_dataset(cjdata, "PID", codes, "char").attrs["MATLAB_int_decode"] = np.int32(2)
        border = np.array([[10.0, 12.0, 11.0, 13.0]])
        _matlab_dataset(cjdata, "tumorBorder", border, "double")
    _stamp_header(path)


def _write_cvind(path: Path, folds: list[int]) -> None:
    with _matlab_file(path) as handle:
        _matlab_dataset(handle, "cvind", np.array(folds, dtype=float)[:, None], "double")
    _stamp_header(path)


FIGSHARE_SLICES = {  # file number: (sarcoma case, MR slice, class code, PID)
    1: ("STS_001", 20, 1, "100360"),
    2: ("STS_001", 28, 1, "100360"),
    3: ("STS_002", 15, 2, "112649"),
    4: ("STS_002", 20, 2, "112649"),
    5: ("STS_001", 35, 3, "MR040"),
    6: ("STS_002", 24, 3, "MR040"),
}


def _figshare_tree(root: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Files 1-6 split over two unpacked zip parts, ``cvind.mat`` beside them."""
    volumes = {}
    expected = {}
    for number, (case, z, code, pid) in FIGSHARE_SLICES.items():
        if case not in volumes:
            volumes[case] = (
                read_image(DATA / "ibsi_sts" / case / "MR_T1_image.nii.gz").array_zyx,
                read_image(DATA / "ibsi_sts" / case / "MR_T1_mask.nii.gz").array_zyx,
            )
        image = np.round(volumes[case][0][z]).astype(np.int16)
        mask = volumes[case][1][z] > 0
        part = "brainTumorDataPublic_1-766" if number <= 3 else "brainTumorDataPublic_767-1532"
        _write_cjdata(root / part / f"{number}.mat", image, mask, code, pid)
        expected[number] = (image, mask)
    _write_cvind(root / "cvind.mat", [1, 1, 2, 2, 3, 3])
    (root / "README.txt").write_text("brain tumor dataset\n", encoding="utf-8")
    return expected


@needs_data
def test_figshare_brain_reads_matlab_files_and_splits_by_patient(tmp_path: Path) -> None:
    root = tmp_path / "figshare"
    expected = _figshare_tree(root)
    out = tmp_path / "brain"
    table = prepare_dataset(
        adapter="figshare_brain", params={"root": str(root)}, seed=0, out_dir=out
    )
    ids = {1: "meningioma_0001", 2: "meningioma_0002", 3: "glioma_0003", 4: "glioma_0004"}
    ids |= {5: "pituitary_0005", 6: "pituitary_0006"}
    assert list(table["case_id"]) == list(ids.values())
    rows = _table(out)
    patients: dict[str, set[str]] = {}
    for number, case_id in ids.items():
        patients.setdefault(FIGSHARE_SLICES[number][3], set()).add(rows[case_id]["split"])
    assert all(len(s) == 1 for s in patients.values())  # no patient in two splits
    assert sorted(next(iter(s)) for s in patients.values()) == ["test", "train", "val"]
    assert rows["glioma_0003"]["caption"] == "Brain MRI, glioma."
    assert rows["pituitary_0005"]["caption"] == "Brain MRI, pituitary tumour."
    assert rows["meningioma_0001"]["modality"] == "MR"
    assert not any(r["spacing_known"] for r in rows.values())
    assert read_label_map(out) == {"background": 0, "tumour": 1}
    for number, case_id in ids.items():
        image, label = _written(out, case_id)
        source_image, source_mask = expected[number]
        assert image.array_zyx.dtype == np.int16
        np.testing.assert_array_equal(image.array_zyx[0], source_image)  # (H, W), not transposed
        np.testing.assert_array_equal(label.array_zyx[0], source_mask.astype(np.uint8))
        assert label.spacing_zyx == (1.0, 1.0, 1.0)
    assert _written(out, "glioma_0003")[1].array_zyx.sum() == expected[3][1].sum() > 100
    assert _written(out, "meningioma_0001")[0].array_zyx.shape == (1, 158, 174)


@needs_data
def test_figshare_brain_classes_labels_spacing_and_official_fold(tmp_path: Path) -> None:
    root = tmp_path / "figshare"
    expected = _figshare_tree(root)
    params = {
        "root": str(root),
        "classes": ["glioma", "pituitary"],
        "labels_by_class": True,
        "spacing_mm": [0.49, 0.49],
        "split_all": "test",
    }
    out = tmp_path / "by_class"
    table = prepare_dataset(adapter="figshare_brain", params=params, seed=0, out_dir=out)
    assert list(table["case_id"]) == [
        "glioma_0003",
        "glioma_0004",
        "pituitary_0005",
        "pituitary_0006",
    ]
    assert read_label_map(out) == {"background": 0, "meningioma": 1, "glioma": 2, "pituitary": 3}
    rows = _table(out)
    assert rows["glioma_0004"]["spacing_xyz_mm"] == "0.49,0.49,1"
    assert all(r["spacing_known"] and r["split"] == "test" for r in rows.values())
    _, label = _written(out, "pituitary_0006")
    assert label.spacing_zyx == pytest.approx((1.0, 0.49, 0.49))
    assert set(np.unique(label.array_zyx)) == {0, 3}
    assert (label.array_zyx == 3).sum() == expected[6][1].sum()

    fold = {"root": str(root), "test_fold": 2, "val_fraction": 0.5}
    out = tmp_path / "fold"
    prepare_dataset(adapter="figshare_brain", params=fold, seed=0, out_dir=out)
    splits = {k: r["split"] for k, r in _table(out).items()}
    assert splits["glioma_0003"] == splits["glioma_0004"] == "test"  # fold 2 = patient 112649
    assert splits["meningioma_0001"] == splits["meningioma_0002"]
    assert splits["pituitary_0005"] == splits["pituitary_0006"]
    assert {splits["meningioma_0001"], splits["pituitary_0005"]} == {"train", "val"}


@needs_data
def test_figshare_brain_errors_name_the_file_or_key(tmp_path: Path) -> None:
    root = tmp_path / "figshare"
    _figshare_tree(root)
    run = {"seed": 0, "out_dir": tmp_path / "o"}
    with pytest.raises(ConfigError, match=r"params\.classes: \['astrocytoma'\]"):
        prepare_dataset(
            adapter="figshare_brain", params={"root": str(root), "classes": ["astrocytoma"]}, **run
        )
    with pytest.raises(ConfigError, match=r"params\.test_fold: expected a cvind\.mat fold 1\.\.5"):
        prepare_dataset(adapter="figshare_brain", params={"root": str(root), "test_fold": 7}, **run)
    with pytest.raises(ConfigError, match=r"params\.split_all: give either params\.test_fold"):
        params = {"root": str(root), "test_fold": 1, "split_all": "test"}
        prepare_dataset(adapter="figshare_brain", params=params, **run)
    with pytest.raises(
        InputError, match=r"missing: Figshare brain tumour folder not found \(params\.root\)"
    ):
        prepare_dataset(adapter="figshare_brain", params={"root": str(tmp_path / "missing")}, **run)
    _write_cvind(root / "cvind.mat", [1, 2, 2, 2, 3, 3])  # patient 100360 in folds 1 and 2
    with pytest.raises(InputError, match=r"cvind\.mat: patient 100360 has slices in fold 2"):
        prepare_dataset(adapter="figshare_brain", params={"root": str(root), "test_fold": 2}, **run)
    broken = root / "brainTumorDataPublic_767-1532" / "5.mat"
    with _matlab_file(broken) as handle:
        group = handle.create_group("cjdata")
        _matlab_dataset(group, "PID", np.array([[ord("7")]], dtype=np.uint16), "char")
    with pytest.raises(InputError, match=r"5\.mat: no dataset 'cjdata/label'"):
        prepare_dataset(adapter="figshare_brain", params={"root": str(root)}, **run)
    empty = tmp_path / "zips"
    empty.mkdir()
    (empty / "brainTumorDataPublic_1-766.zip").write_bytes(b"PK")
    with pytest.raises(
        InputError, match=r"no <n>\.mat slice file.*unpack brainTumorDataPublic_1-766\.zip"
    ):
        prepare_dataset(adapter="figshare_brain", params={"root": str(empty)}, **run)


# --- COVID-QU-Ex ---------------------------------------------------------------------------

COVID_NAMES = {
    "COVID-19": "covid_{n}.png",
    "Non-COVID": "non_COVID ({n}).png",
    "Normal": "Normal ({n}).png",
}


def _cxr(index: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(Image.open(DATA / "cxr_lung" / f"{index}.jpg").convert("L"))
    mask = np.asarray(Image.open(DATA / "cxr_lung" / f"{index}-mask.png").convert("L")) > 127
    return image, mask


def _infection(lung: np.ndarray) -> np.ndarray:
    """A stand-in infection mask: the lower half of the (real) lung mask."""
    out = lung.copy()
    out[: lung.shape[0] // 2] = False
    return out


def _covid_tree(root: Path, part: str, *, infection: bool) -> dict[str, tuple]:
    """One image per split and class; returns ``{case_id: (image, lung, infection)}``."""
    expected = {}
    n = 0
    for folder in ("Train", "Val", "Test"):
        for cls, pattern in COVID_NAMES.items():
            n += 1
            image, lung = _cxr(1 + n % 2)
            inf = _infection(lung) if cls != "Normal" else np.zeros_like(lung)
            class_dir = root / part / part / folder / cls
            name = pattern.format(n=n)
            folders = {"images": image, "lung masks": lung * 255}
            if infection:
                folders["infection masks"] = inf * 255
            for sub, array in folders.items():
                (class_dir / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.asarray(array, dtype=np.uint8)).save(class_dir / sub / name)
            case_id = name.replace(" (", "_").replace(").png", "").replace(".png", "")
            expected[case_id] = (folder.lower(), cls, image, lung, inf)
    return expected


@needs_data
def test_covid_qu_ex_lung_task_keeps_the_official_splits(tmp_path: Path) -> None:
    root = tmp_path / "covidqu"
    expected = _covid_tree(root, "Lung Segmentation Data", infection=False)
    out = tmp_path / "lung"
    table = prepare_dataset(adapter="covid_qu_ex", params={"root": str(root)}, seed=0, out_dir=out)
    assert sorted(table["case_id"]) == sorted(expected)
    assert "non_COVID_2" in expected and "Normal_3" in expected
    rows = _table(out)
    for case_id, (split, _, image, lung, _) in expected.items():
        assert rows[case_id]["split"] == split
        assert rows[case_id]["modality"] == "XR"
        assert not rows[case_id]["spacing_known"]
        written_image, label = _written(out, case_id)
        np.testing.assert_array_equal(written_image.array_zyx[0], image)
        np.testing.assert_array_equal(label.array_zyx[0], lung.astype(np.uint8))
    assert rows["covid_1"]["caption"] == "Chest X-ray, COVID-19."
    assert rows["non_COVID_5"]["caption"] == "Chest X-ray, non-COVID infection."
    assert rows["Normal_9"]["caption"] == "Chest X-ray, normal."
    assert read_label_map(out) == {"background": 0, "lung": 1}
    assert _written(out, "covid_1")[1].array_zyx.sum() == expected["covid_1"][3].sum() > 10000


@needs_data
def test_covid_qu_ex_infection_task_with_and_without_lungs(tmp_path: Path) -> None:
    root = tmp_path / "covidqu"
    expected = _covid_tree(root, "Infection Segmentation Data", infection=True)
    params = {"root": str(root), "task": "infection", "classes": ["COVID-19", "Normal"]}
    out = tmp_path / "inf"
    table = prepare_dataset(adapter="covid_qu_ex", params=params, seed=0, out_dir=out)
    assert sorted(table["case_id"]) == sorted(k for k, v in expected.items() if v[1] != "Non-COVID")
    assert read_label_map(out) == {"background": 0, "infection": 1}
    _, label = _written(out, "covid_4")
    np.testing.assert_array_equal(label.array_zyx[0], expected["covid_4"][4].astype(np.uint8))
    assert 0 < label.array_zyx.sum() < expected["covid_4"][3].sum()
    assert not _written(out, "Normal_6")[1].array_zyx.any()  # normal: empty infection mask

    out = tmp_path / "both"
    prepare_dataset(
        adapter="covid_qu_ex", params={**params, "with_lung": True}, seed=0, out_dir=out
    )
    assert read_label_map(out) == {"background": 0, "lung": 1, "infection": 2}
    _, label = _written(out, "covid_7")
    _, _, _, lung, inf = expected["covid_7"]
    assert (label.array_zyx[0] == 2).sum() == inf.sum()
    assert (label.array_zyx[0] == 1).sum() == (lung & ~inf).sum()
    assert (label.array_zyx[0] > 0).sum() == lung.sum()


@needs_data
def test_covid_qu_ex_errors_name_the_file_or_key(tmp_path: Path) -> None:
    root = tmp_path / "covidqu"
    _covid_tree(root, "Lung Segmentation Data", infection=False)
    run = {"seed": 0, "out_dir": tmp_path / "o"}
    with pytest.raises(ConfigError, match=r"params\.task: expected one of \['lung', 'infection'\]"):
        prepare_dataset(adapter="covid_qu_ex", params={"root": str(root), "task": "heart"}, **run)
    with pytest.raises(
        ConfigError, match=r"params\.with_lung: only used with params\.task 'infection'"
    ):
        prepare_dataset(adapter="covid_qu_ex", params={"root": str(root), "with_lung": True}, **run)
    with pytest.raises(
        InputError,
        match=r"Infection Segmentation Data/Infection Segmentation Data: COVID-QU-Ex folder not",
    ):
        prepare_dataset(
            adapter="covid_qu_ex", params={"root": str(root), "task": "infection"}, **run
        )
    base = root / "Lung Segmentation Data" / "Lung Segmentation Data"
    (base / "Val" / "COVID-19" / "lung masks" / "covid_4.png").unlink()
    with pytest.raises(
        InputError,
        match=r"images/covid_4\.png: mask file not found, expected .*lung masks/covid_4\.png",
    ):
        prepare_dataset(adapter="covid_qu_ex", params={"root": str(root)}, **run)
    for path in (base / "Test" / "Normal" / "lung masks").iterdir():
        path.unlink()
    (base / "Test" / "Normal" / "lung masks").rmdir()
    with pytest.raises(
        InputError, match=r"Test/Normal/lung masks: COVID-QU-Ex mask folder not found"
    ):
        prepare_dataset(
            adapter="covid_qu_ex", params={"root": str(root), "classes": ["Normal"]}, **run
        )


# --- Lung CT (Kaggle polomarco/chest-ct-segmentation) -----------------------------------

LUNG_PATIENTS = {  # patient id: (sarcoma case, CT slices)
    "ID00007637202177411956430": ("STS_001", (20, 30)),
    "ID00009637202177434476278": ("STS_002", (20, 25)),
    "ID00010637202177584971671": ("STS_001", (35, 40)),
}


def _lung_ct_tree(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """8-bit JPEG slices and RGB JPEG masks (tumour mask in blue = lung, a box in green =
    heart); returns ``{case_id: (image as written, lung mask, heart mask)}`` read back with PIL."""
    images, masks = root / "images" / "images", root / "masks" / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    expected = {}
    for pid, (case, slices) in LUNG_PATIENTS.items():
        ct = read_image(DATA / "ibsi_sts" / case / "CT_image.nii.gz").array_zyx
        gtv = read_image(DATA / "ibsi_sts" / case / "CT_mask.nii.gz").array_zyx > 0
        for k, z in enumerate(slices):
            grey = np.rint(np.clip((ct[z] + 1000.0) / 1400.0, 0, 1) * 255).astype(np.uint8)
            Image.fromarray(np.stack([grey] * 3, axis=-1)).save(
                images / f"{pid}_{k}.jpg", quality=95
            )
            rgb = np.zeros((*grey.shape, 3), dtype=np.uint8)
            rgb[..., 2] = gtv[z] * 255
            rgb[5:25, 5:40, 1] = 255  # "heart", away from the tumour
            Image.fromarray(rgb).save(masks / f"{pid}_mask_{k}.jpg", quality=95)
            back = np.asarray(Image.open(masks / f"{pid}_mask_{k}.jpg").convert("RGB"))
            written = np.asarray(Image.open(images / f"{pid}_{k}.jpg"))
            expected[f"{pid}_{k:03d}"] = (written, back[..., 2] > 127, back[..., 1] > 127, gtv[z])
    (root / "train.csv").write_text("ImageId,MaskId\n", encoding="utf-8")
    return expected


@needs_data
def test_lung_ct_reads_rgb_jpeg_masks_and_splits_by_patient(tmp_path: Path, caplog) -> None:
    root = tmp_path / "chest-ct-segmentation"
    expected = _lung_ct_tree(root)
    unlabelled = root / "images" / "images" / "ID00010637202177584971671_7.jpg"
    unlabelled.write_bytes(
        (root / "images" / "images" / "ID00010637202177584971671_0.jpg").read_bytes()
    )
    out = tmp_path / "lung"
    with caplog.at_level(logging.WARNING):
        table = prepare_dataset(adapter="lung_ct", params={"root": str(root)}, seed=0, out_dir=out)
    assert "1 images have no mask and are skipped" in caplog.text
    assert sorted(table["case_id"]) == sorted(expected)
    rows = _table(out)
    splits = {pid: {rows[f"{pid}_{k:03d}"]["split"] for k in range(2)} for pid in LUNG_PATIENTS}
    assert all(len(s) == 1 for s in splits.values())
    assert sorted(next(iter(s)) for s in splits.values()) == ["test", "train", "val"]
    assert read_label_map(out) == {"background": 0, "lung": 1}
    for case_id, (image, lung, _, source) in expected.items():
        written_image, label = _written(out, case_id)
        np.testing.assert_array_equal(written_image.array_zyx[0], image[..., 0])
        np.testing.assert_array_equal(label.array_zyx[0], lung.astype(np.uint8))
        assert abs(int(lung.sum()) - int(source.sum())) <= 0.05 * source.sum() + 20  # JPEG edges
        assert not rows[case_id]["spacing_known"]
        assert rows[case_id]["modality"] == "CT" and rows[case_id]["caption"] == "Chest CT."
    assert expected["ID00007637202177411956430_000"][1].sum() > 500

    out = tmp_path / "both"
    params = {"root": str(root), "structures": ["heart", "lung"], "split_all": "test"}
    prepare_dataset(adapter="lung_ct", params=params, seed=0, out_dir=out)
    assert read_label_map(out) == {"background": 0, "heart": 1, "lung": 2}
    _, label = _written(out, "ID00009637202177434476278_001")
    _, lung, heart, _ = expected["ID00009637202177434476278_001"]
    assert (label.array_zyx[0] == 1).sum() == (heart & ~lung).sum() > 600
    assert (label.array_zyx[0] == 2).sum() == lung.sum() > 0


@needs_data
def test_lung_ct_errors_name_the_file_or_key(tmp_path: Path) -> None:
    root = tmp_path / "chest-ct-segmentation"
    _lung_ct_tree(root)
    run = {"seed": 0, "out_dir": tmp_path / "o"}
    with pytest.raises(ConfigError, match=r"params\.structures: \['liver'\] are not among"):
        prepare_dataset(
            adapter="lung_ct", params={"root": str(root), "structures": ["liver"]}, **run
        )
    with pytest.raises(ConfigError, match=r"params\.unlabelled: expected 'skip' or 'error'"):
        prepare_dataset(adapter="lung_ct", params={"root": str(root), "unlabelled": "keep"}, **run)
    mask = root / "masks" / "masks" / "ID00009637202177434476278_mask_1.jpg"
    mask.rename(root / "ID00009637202177434476278_mask_1.jpg")
    with pytest.raises(InputError, match=r"ID00009637202177434476278_1\.jpg: mask file not found"):
        prepare_dataset(adapter="lung_ct", params={"root": str(root), "unlabelled": "error"}, **run)
    (root / "ID00009637202177434476278_mask_1.jpg").rename(mask)
    (root / "images" / "images" / "ID00009637202177434476278_0.jpg").unlink()
    with pytest.raises(
        InputError, match=r"ID00009637202177434476278_mask_0\.jpg: a mask without its image"
    ):
        prepare_dataset(adapter="lung_ct", params={"root": str(root)}, **run)
    with pytest.raises(InputError, match=r"nowhere: lung CT folder not found \(params\.root\)"):
        prepare_dataset(adapter="lung_ct", params={"root": str(tmp_path / "nowhere")}, **run)


# --- Kvasir-SEG -------------------------------------------------------------------------

KVASIR_IDS = {
    "cju0qkwl35piu0993l0dewei2": "10018",
    "cju0qoxqj9q6s0835b43399p4": "10080",
    "cju0roawvklrq0799vmjorwfv": "10509",
    "cju0rx1idathl0835detmsp84": "10523",
}


def _kvasir_tree(parent: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tinted (colour) BUSI images as JPEG, their binary masks as JPEG; returns
    ``{case_id: (RGB image as written, mask read back > 127)}``."""
    root = parent / "Kvasir-SEG"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    expected = {}
    for case_id, busi in KVASIR_IDS.items():
        rgb = np.asarray(Image.open(DATA / "busi_mini" / "images" / f"{busi}.png").convert("RGB"))
        tinted = (rgb.astype(np.float32) * np.array([1.0, 0.75, 0.5])).astype(np.uint8)
        mask = np.asarray(Image.open(DATA / "busi_mini" / "masks" / f"{busi}.png").convert("RGB"))
        binary = (mask.max(axis=-1) > 127).astype(np.uint8) * 255
        Image.fromarray(tinted).save(root / "images" / f"{case_id}.jpg", quality=90)
        Image.fromarray(binary).convert("RGB").save(root / "masks" / f"{case_id}.jpg", quality=75)
        back = np.asarray(Image.open(root / "masks" / f"{case_id}.jpg").convert("RGB"))
        image = np.asarray(Image.open(root / "images" / f"{case_id}.jpg").convert("RGB"))
        expected[case_id] = (image, back.max(axis=-1) > 127, binary > 0)
    (root / "kavsir_bboxes.json").write_text("{}\n", encoding="utf-8")
    return expected


@needs_data
def test_kvasir_seg_thresholds_jpeg_masks_and_reads_split_lists(tmp_path: Path) -> None:
    expected = _kvasir_tree(tmp_path / "kvasir-seg")
    out = tmp_path / "kvasir"
    params = {"root": str(tmp_path / "kvasir-seg"), "splits": {"train": 0.75, "test": 0.25}}
    table = prepare_dataset(adapter="kvasir_seg", params=params, seed=0, out_dir=out)
    assert sorted(table["case_id"]) == sorted(KVASIR_IDS)
    assert sorted(table["split"]) == ["test", "train", "train", "train"]
    rows = _table(out)
    assert read_label_map(out) == {"background": 0, "polyp": 1}
    for case_id, (image, mask, source) in expected.items():
        written_image = read_volume(out / "images" / f"{case_id}.nii.gz", colour="rgb")
        label = read_volume(out / "labels" / f"{case_id}.nii.gz")
        assert written_image.array_zyx.dtype == np.uint8  # RGB kept, as decoded
        np.testing.assert_array_equal(written_image.array_zyx[0], image)
        values = np.unique(label.array_zyx)
        assert set(values) == {0, 1}  # JPEG noise removed
        np.testing.assert_array_equal(label.array_zyx[0], mask.astype(np.uint8))
        assert abs(int(label.array_zyx.sum()) - int(source.sum())) <= 0.01 * source.sum()
        assert rows[case_id]["caption"] == "Colonoscopy image of a polyp."
        assert rows[case_id]["modality"] == "endoscopy"
        assert not rows[case_id]["spacing_known"]

    root = tmp_path / "kvasir-seg" / "Kvasir-SEG"
    ids = list(KVASIR_IDS)
    (root / "train.txt").write_text(f"{ids[0]}\n{ids[1]}.jpg\n\n{ids[2]}\n", encoding="utf-8")
    (root / "val.txt").write_text(f"{ids[3]}\n", encoding="utf-8")
    lists = {"root": str(root), "split_lists": {"train": "train.txt", "test": "val.txt"}}
    table = prepare_dataset(adapter="kvasir_seg", params=lists, seed=0, out_dir=tmp_path / "lists")
    assert dict(zip(table["case_id"], table["split"], strict=True)) == {
        ids[0]: "train",
        ids[1]: "train",
        ids[2]: "train",
        ids[3]: "test",
    }


@needs_data
def test_kvasir_seg_errors_name_the_file_or_key(tmp_path: Path) -> None:
    _kvasir_tree(tmp_path / "kvasir-seg")
    root = tmp_path / "kvasir-seg" / "Kvasir-SEG"
    ids = list(KVASIR_IDS)
    run = {"seed": 0, "out_dir": tmp_path / "o"}
    (root / "train.txt").write_text("\n".join(ids[:3]) + "\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=rf"params\.split_lists: 1 image\(s\) are in no list, e\.g\. {ids[3]}"
    ):
        prepare_dataset(
            adapter="kvasir_seg",
            params={"root": str(root), "split_lists": {"train": "train.txt"}},
            **run,
        )
    (root / "val.txt").write_text("cju0notthere\n", encoding="utf-8")
    params = {"root": str(root), "split_lists": {"train": "train.txt", "test": "val.txt"}}
    with pytest.raises(InputError, match=r"val\.txt:1: 'cju0notthere' is not an image"):
        prepare_dataset(adapter="kvasir_seg", params=params, **run)
    with pytest.raises(ConfigError, match=r"params\.split_lists\.holdout: unknown split"):
        prepare_dataset(
            adapter="kvasir_seg",
            params={"root": str(root), "split_lists": {"holdout": "val.txt"}},
            **run,
        )
    with pytest.raises(
        ConfigError, match=r"params\.labels: unknown parameter for adapter 'kvasir_seg'"
    ):
        prepare_dataset(adapter="kvasir_seg", params={"root": str(root), "labels": {}}, **run)
    (root / "masks" / f"{ids[2]}.jpg").unlink()
    with pytest.raises(
        InputError,
        match=rf"images/{ids[2]}\.jpg: mask file not found, expected .*masks/{ids[2]}\.jpg",
    ):
        prepare_dataset(adapter="kvasir_seg", params={"root": str(root)}, **run)
    (root / "masks").rename(root / "Masks_old")
    with pytest.raises(InputError, match=r"Kvasir-SEG/masks: Kvasir-SEG folder not found"):
        prepare_dataset(adapter="kvasir_seg", params={"root": str(root)}, **run)
