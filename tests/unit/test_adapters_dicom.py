"""``nifti_folder`` on DICOM series: one folder per series, read with SimpleITK's series reader.

The series are written here, slice by slice, from real CT volumes of ``../shared/data``: the
MSD spleen crop (direction diag(-1, -1, 1), origin (406.2, 406.2, 0), 0.795 x 0.795 x 5 mm)
and a crop of the IBSI sarcoma CT (identity direction, 0.98 x 0.98 x 3.27 mm), each with its
reference mask as NIfTI. The adapter must give the source voxels and geometry back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_fixtures import write_dicom_series

from medsegflow.datasets.canonical import read_cases
from medsegflow.datasets.registry import prepare_dataset
from medsegflow.io import read_volume
from medsegflow.verify import format_reports, verify_datasets

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
pytestmark = pytest.mark.usefixtures("shared_data")  # fails (never skips) without the data

SPLEEN_ID = "spleen2"
STS_ID = "1.2.826.0.1.3680043.8.498.1"  # series folders are often named by a UID (with dots)


def _sources() -> dict[str, tuple[sitk.Image, sitk.Image]]:
    spleen = DATA / "msd_spleen_crop"
    sts = DATA / "ibsi_sts" / "STS_001"
    ct = sitk.ReadImage(str(sts / "CT_image.nii.gz"))
    mask = sitk.ReadImage(str(sts / "CT_mask.nii.gz"))
    z = int(np.argmax(sitk.GetArrayFromImage(mask).sum(axis=(1, 2))))
    crop = (slice(60, 140), slice(60, 150), slice(z - 4, z + 4))
    return {
        SPLEEN_ID: (
            sitk.ReadImage(str(spleen / "sub-spleen2_ct.nii.gz")),
            sitk.ReadImage(str(spleen / "sub-spleen2_ct_seg-manual.nii.gz")),
        ),
        STS_ID: (ct[crop], mask[crop]),
    }


def _dicom_tree(root: Path) -> dict[str, tuple[sitk.Image, sitk.Image]]:
    """``dicom/<case>/IM*.dcm`` with ``labels/<case>.nii.gz``; the files of a series are named
    against the slice order (IM0000 is the last slice), so the reader must sort them."""
    sources = _sources()
    for number, (case, (image, label)) in enumerate(sources.items()):
        flipped_names = root / "tmp" / case
        write_dicom_series(image, flipped_names, uid=f"1.2.826.0.1.3680043.2.{number}", prefix="IM")
        files = sorted(flipped_names.iterdir())
        (root / "dicom" / case).mkdir(parents=True)
        for k, path in enumerate(files):
            path.rename(root / "dicom" / case / f"IM{len(files) - 1 - k:04d}.dcm")
        flipped_names.rmdir()
        (root / "labels").mkdir(exist_ok=True)
        sitk.WriteImage(label, str(root / "labels" / f"{case}.nii.gz"))
    (root / "tmp").rmdir()
    return sources


def _params(root: Path, **extra) -> dict:
    return {
        "root": str(root),
        "images": "dicom/*",
        "label": "labels/{case_id}.nii.gz",
        "labels": {"background": 0, "foreground": 1},
        "modality": "CT",
        "split_all": "test",
        **extra,
    }


def test_nifti_folder_reads_dicom_series_folders_with_geometry(tmp_path: Path) -> None:
    root = tmp_path / "study"
    sources = _dicom_tree(root)
    out = tmp_path / "out"
    table = prepare_dataset(adapter="nifti_folder", params=_params(root), seed=0, out_dir=out)
    assert sorted(table["case_id"]) == sorted([SPLEEN_ID, STS_ID])
    cases = read_cases(out).set_index("case_id")
    assert cases.loc[SPLEEN_ID, "size_xyz"] == "164,166,26"
    assert cases.loc[SPLEEN_ID, "spacing_xyz_mm"] == "0.794922,0.794922,5"
    assert cases.loc[STS_ID, "size_xyz"] == "80,90,8"
    assert bool(cases["spacing_known"].all())
    for case, (image, label) in sources.items():
        written = read_volume(out / "images" / f"{case}.nii.gz")
        written_label = read_volume(out / "labels" / f"{case}.nii.gz")
        np.testing.assert_array_equal(written.array_zyx, sitk.GetArrayFromImage(image))
        np.testing.assert_array_equal(written_label.array_zyx, sitk.GetArrayFromImage(label))
        geometry = written.geometry
        np.testing.assert_allclose(geometry.spacing_xyz, image.GetSpacing(), rtol=1e-5)
        np.testing.assert_allclose(geometry.origin_xyz, image.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(geometry.direction, image.GetDirection(), atol=1e-6)
        assert written_label.geometry.matches(geometry)
    spleen_direction = read_volume(out / "images" / f"{SPLEEN_ID}.nii.gz").geometry.direction
    assert spleen_direction == pytest.approx((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert int(read_volume(out / "labels" / f"{SPLEEN_ID}.nii.gz").array_zyx.sum()) == 96672


def test_dicom_series_files_are_not_images_of_their_own_and_verify_checks_them(
    tmp_path: Path,
) -> None:
    root = tmp_path / "study"
    _dicom_tree(root)
    (root / "dicom" / "notes").mkdir()  # a folder without a series
    (root / "dicom" / "notes" / "README.txt").write_text("scanner notes\n", encoding="utf-8")
    (root / "labels" / "notes.nii.gz").write_bytes(
        (root / "labels" / f"{SPLEEN_ID}.nii.gz").read_bytes()
    )
    (root / "dicom" / "empty" / "sub").mkdir(parents=True)  # only folders: not an image
    config = {
        "datasets": {
            "ct": {"adapter": "nifti_folder", "params": _params(root, images="dicom/**/*")}
        }
    }
    lines = format_reports(verify_datasets(config)).splitlines()
    assert lines == [
        f"{root}/dicom/notes: no DICOM series in this folder",
        "verify: 1 problems in 1 of 1 datasets (3 cases read)",
    ]
    # labels stored as DICOM series too, found by label_replace
    for case, (_, label) in _sources().items():
        write_dicom_series(label, root / "labels_dcm" / case, uid=f"1.2.3.{len(case)}", prefix="IM")
    params = _params(root, label=None, label_replace=[["dicom/", "labels_dcm/"]])
    (root / "dicom" / "notes" / "README.txt").unlink()
    (root / "dicom" / "notes").rmdir()
    out = tmp_path / "out"
    prepare_dataset(adapter="nifti_folder", params=params, seed=0, out_dir=out)
    label = read_volume(out / "labels" / f"{SPLEEN_ID}.nii.gz")
    assert int(label.array_zyx.sum()) == 96672
    assert label.geometry.direction == pytest.approx((-1, 0, 0, 0, -1, 0, 0, 0, 1))
