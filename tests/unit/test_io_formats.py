"""``medsegflow.io.read_image``: every format gives the same array, spacing and geometry.

The reference is the real sarcoma CT (0.98 x 0.98 x 3.27 mm, oblique-free but with a
non-zero origin) read straight with SimpleITK; each test writes it in another format and
reads it back through the one I/O module.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk
from dicom_fixtures import write_dicom_series
from PIL import Image
from scipy.io import savemat

from medsegflow.errors import InputError
from medsegflow.io import read_arrays, read_image

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CT = DATA / "ibsi_sts" / "STS_001" / "CT_image.nii.gz"
pytestmark = pytest.mark.usefixtures("shared_data")


@pytest.fixture(scope="module")
def ct_crop() -> sitk.Image:
    """A 6-slice, 40 x 48 crop of the real CT around its centre (keeps its geometry)."""
    image = sitk.ReadImage(str(CT))
    sx, sy, sz = image.GetSize()
    return image[sx // 2 - 20 : sx // 2 + 20, sy // 2 - 24 : sy // 2 + 24, sz // 2 : sz // 2 + 6]


def _assert_same(volume, image: sitk.Image) -> None:
    assert volume.array_zyx.shape == sitk.GetArrayFromImage(image).shape
    np.testing.assert_array_equal(volume.array_zyx, sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(volume.geometry.spacing_xyz, image.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(volume.geometry.origin_xyz, image.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(volume.geometry.direction, image.GetDirection(), atol=1e-6)
    assert volume.spacing_known


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd", ".nii"])
def test_itk_formats_keep_values_and_geometry(tmp_path: Path, ct_crop, suffix: str) -> None:
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(ct_crop, str(path))
    volume = read_image(path)
    _assert_same(volume, ct_crop)
    assert volume.geometry.spacing_xyz[2] == pytest.approx(3.27, abs=0.01)


def test_dicom_series_folder_keeps_geometry(tmp_path: Path, ct_crop) -> None:
    write_dicom_series(ct_crop, tmp_path / "series")
    volume = read_image(tmp_path / "series")
    assert volume.array_zyx.shape == (6, 48, 40)
    np.testing.assert_array_equal(volume.array_zyx, sitk.GetArrayFromImage(ct_crop))
    np.testing.assert_allclose(volume.geometry.spacing_xyz, ct_crop.GetSpacing(), rtol=1e-4)
    np.testing.assert_allclose(volume.geometry.origin_xyz, ct_crop.GetOrigin(), atol=1e-3)
    assert volume.spacing_known


def test_dicom_folder_with_two_series_or_none_is_refused(tmp_path: Path, ct_crop) -> None:
    write_dicom_series(ct_crop[:, :, :2], tmp_path / "two", uid="1.2.3.4")
    write_dicom_series(ct_crop[:, :, 2:4], tmp_path / "b", uid="1.2.3.5")
    for path in (tmp_path / "b").iterdir():
        path.rename(tmp_path / "two" / f"b_{path.name}")
    assert len(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(tmp_path / "two"))) == 2
    with pytest.raises(InputError, match=r"two: 2 DICOM series in one folder"):
        read_image(tmp_path / "two")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: no DICOM series"):
        read_image(tmp_path / "empty")


def test_npz_with_and_without_spacing(tmp_path: Path, ct_crop) -> None:
    array = sitk.GetArrayFromImage(ct_crop)
    np.savez_compressed(
        tmp_path / "a.npz",
        imgs=array,
        gts=(array > 0).astype(np.uint8),
        spacing=np.array(ct_crop.GetSpacing()),
    )
    volume = read_image(tmp_path / "a.npz", key="imgs")
    np.testing.assert_array_equal(volume.array_zyx, array)
    np.testing.assert_allclose(volume.geometry.spacing_xyz, ct_crop.GetSpacing())
    assert volume.spacing_known
    np.savez(tmp_path / "b.npz", image=array[0])
    flat = read_image(tmp_path / "b.npz", key="image")
    assert flat.array_zyx.shape == (1, 48, 40) and not flat.spacing_known
    assert flat.geometry.spacing_xyz == (1.0, 1.0, 1.0)
    told = read_image(tmp_path / "b.npz", key="image", spacing_xyz=(0.5, 0.7))
    assert told.spacing_known and told.geometry.spacing_xyz == (0.5, 0.7, 1.0)
    with pytest.raises(InputError, match=r"b\.npz: no array \['label'\]; it holds \['image'\]"):
        read_image(tmp_path / "b.npz", key="label")


def test_hdf5_volume_like_transunet_test_vol(tmp_path: Path, ct_crop) -> None:
    array = sitk.GetArrayFromImage(ct_crop).astype(np.float32)
    with h5py.File(tmp_path / "case0001.npy.h5", "w") as handle:
        handle["image"] = array
        handle["label"] = (array > 0).astype(np.uint8)
    volume = read_image(tmp_path / "case0001.npy.h5", key="image")
    np.testing.assert_array_equal(volume.array_zyx, array)
    assert not volume.spacing_known
    with h5py.File(tmp_path / "s.h5", "w") as handle:
        handle["image"] = array
        handle["image"].attrs["spacing"] = [0.9, 0.9, 2.5]
    assert read_image(tmp_path / "s.h5", key="image").geometry.spacing_xyz == (0.9, 0.9, 2.5)


def _write_mat73(path: Path, fields: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3 file as MATLAB writes it: a 512-byte user block, the struct as an HDF5
    group, every array stored column-major (so h5py sees it transposed)."""
    with h5py.File(path, "w", userblock_size=512) as handle:
        group = handle.create_group("cjdata")
        for name, value in fields.items():
            group[name] = np.asarray(value).T
    with open(path, "r+b") as handle:
        handle.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .")


def test_mat_v73_and_v5_give_matlab_row_column_order(tmp_path: Path, ct_crop) -> None:
    slice_yx = sitk.GetArrayFromImage(ct_crop)[2].astype(np.int16)
    pid = np.array([[ord(c)] for c in "MR-042"], dtype=np.uint16)
    _write_mat73(tmp_path / "1.mat", {"image": slice_yx, "label": np.array([[2.0]]), "PID": pid.T})
    volume = read_image(tmp_path / "1.mat", key="cjdata.image")
    np.testing.assert_array_equal(volume.array_zyx[0], slice_yx)
    assert not volume.spacing_known
    fields = read_arrays(tmp_path / "1.mat", ["cjdata/label", "cjdata/PID"])
    assert float(fields["cjdata/label"].ravel()[0]) == 2.0
    assert "".join(map(chr, fields["cjdata/PID"].ravel())) == "MR-042"
    savemat(tmp_path / "2.mat", {"cjdata": {"image": slice_yx, "label": 3}})
    np.testing.assert_array_equal(
        read_image(tmp_path / "2.mat", key="cjdata/image").array_zyx[0], slice_yx
    )
    with pytest.raises(InputError, match=r"2\.mat: no variable 'cjdata\.tumorMask'"):
        read_image(tmp_path / "2.mat", key="cjdata.tumorMask")


def test_rasters_have_unknown_spacing(tmp_path: Path, ct_crop) -> None:
    grey = np.clip(sitk.GetArrayFromImage(ct_crop)[0] + 1000, 0, 65535).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "a.tif")
    tif = read_image(tmp_path / "a.tif")
    np.testing.assert_array_equal(tif.array_zyx[0], grey)
    assert not tif.spacing_known
    rgb = np.stack([grey % 256, grey // 256, np.zeros_like(grey)], -1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "b.png")
    png = read_image(tmp_path / "b.png")
    np.testing.assert_allclose(
        png.array_zyx[0], rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587, rtol=1e-5
    )


def test_corrupt_array_files_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(InputError, match=r"x\.npz: cannot read \.npz file"):
        read_image(tmp_path / "x.npz", key="imgs")
    (tmp_path / "y.h5").write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    with pytest.raises(InputError, match=r"y\.h5: cannot read \.h5 file"):
        read_image(tmp_path / "y.h5", key="image")
    with pytest.raises(InputError, match=r"z\.mat: file not found"):
        read_image(tmp_path / "z.mat", key="cjdata.image")


def _damaged(tmp_path: Path, ct_crop, suffix: str, damage: str) -> Path:
    """A real CT slice saved as ``suffix``, then emptied, replaced by 21 bytes of garbage,
    cut to half its size or with its second half garbled."""
    slice_yx = sitk.GetArrayFromImage(ct_crop)[2].astype(np.int16)
    path = tmp_path / f"slice{suffix}"
    if suffix == ".mat":
        savemat(path, {"cjdata": {"image": slice_yx, "label": 1}})
    elif suffix == ".mat73":
        path = tmp_path / "slice73.mat"
        _write_mat73(path, {"image": slice_yx, "label": np.array([[1.0]])})
    elif suffix == ".npz":
        np.savez_compressed(path, imgs=slice_yx)
    elif suffix == ".h5":
        with h5py.File(path, "w") as handle:
            handle["image"] = slice_yx
    else:
        Image.fromarray((slice_yx % 256).astype(np.uint8)).save(path)
    raw = path.read_bytes()
    rng = np.random.default_rng(0)
    path.write_bytes(
        {
            "empty": b"",
            "garbage": rng.integers(0, 256, 21, dtype=np.uint8).tobytes(),
            "truncated": raw[: len(raw) // 2],
            "garbled": raw[: len(raw) // 2]
            + rng.integers(0, 256, len(raw) // 2, np.uint8).tobytes(),
        }[damage]
    )
    return path


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated", "garbled"])
@pytest.mark.parametrize("suffix", [".mat", ".mat73", ".npz", ".h5", ".png", ".tif"])
def test_damaged_files_raise_input_error_naming_the_file(
    tmp_path: Path, ct_crop, suffix: str, damage: str
) -> None:
    """Every reader's own exceptions (scipy's MatReadError, IndexError and TypeError, h5py's
    OSError and RuntimeError, numpy's zip errors, Pillow's) become one InputError line."""
    path = _damaged(tmp_path, ct_crop, suffix, damage)
    key = {".mat": "cjdata.image", ".mat73": "cjdata/image", ".npz": "imgs", ".h5": "image"}
    if damage == "garbled":  # uncompressed data garbled past the header may still be read
        try:
            read_image(path, key=key.get(suffix))
        except InputError as err:
            assert str(err).startswith(f"{path}: cannot read "), err
        return
    with pytest.raises(InputError) as info:
        read_image(path, key=key.get(suffix))
    message = str(info.value)
    assert message.startswith(f"{path}: cannot read ") and "\n" not in message, message
    if damage == "empty" and suffix not in (".png", ".tif"):
        assert message.endswith("(corrupt or truncated): empty file")
