"""Bad input stops the run with one line naming the file (or key) and the problem.

Each bad dataset is built in ``tmp_path`` with one good case before the bad one, so the run
has already written files when it stops; ``cases.tsv`` (the stage's file target) must still
be absent, so partial output is never taken as complete.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from medsegflow import preflight
from medsegflow.__main__ import main as verify_command
from medsegflow.config import read_config_file
from medsegflow.datasets.canonical import read_cases
from medsegflow.datasets.registry import ADAPTERS, prepare_dataset
from medsegflow.errors import ConfigError, InputError
from medsegflow.preflight import check_stale_lock, check_writable

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SPLEEN_CT = DATA / "msd_spleen_crop" / "sub-spleen2_ct.nii.gz"


def _write_nifti(
    path: Path,
    array: np.ndarray,
    spacing: tuple[float, ...] = (1.0, 1.0, 2.0),
) -> Path:
    """Write a 3D ``zyx`` array, or a 4D ``tzyx`` one as a true 4D image (not a vector image)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [sitk.GetImageFromArray(a) for a in (array if array.ndim == 4 else [array])]
    for frame in frames:
        frame.SetSpacing(spacing)
    image = sitk.JoinSeries(frames) if array.ndim == 4 else frames[0]
    sitk.WriteImage(image, str(path))
    return path


def _ramp(shape: tuple[int, int, int] = (3, 4, 5)) -> np.ndarray:
    """An image that is not constant (a constant image is an error of its own)."""
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)


def _label_zyx(shape: tuple[int, int, int] = (3, 4, 5)) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[1, 1:3, 1:3] = 1
    return label


def _nnunet_folder(root: Path) -> tuple[Path, Path]:
    """A good case_000 and the paths (image, label) where the test writes the bad case_001."""
    image = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    _write_nifti(root / "imagesTr" / "case_000_0000.nii.gz", image)
    _write_nifti(root / "labelsTr" / "case_000.nii.gz", _label_zyx())
    return root / "imagesTr" / "case_001_0000.nii.gz", root / "labelsTr" / "case_001.nii.gz"


def _fails(exc: type[Exception], out: Path, *, adapter: str = "nifti_folder", params: dict) -> str:
    """Run the adapter, return the one-line message, check that no cases.tsv was left."""
    params = {"modality": "CT", "split_all": "test", **params}
    with pytest.raises(exc) as info:
        prepare_dataset(adapter=adapter, params=params, seed=0, out_dir=out)
    message = str(info.value)
    assert "\n" not in message, message
    assert not (out / "cases.tsv").exists()
    return message


@pytest.mark.usefixtures("shared_data")  # fails (never skips) without ../shared/data
def test_truncated_nifti(tmp_path: Path) -> None:
    image, label = _nnunet_folder(tmp_path / "raw")
    data = SPLEEN_CT.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    _write_nifti(label, np.zeros((26, 166, 164), np.uint8))
    message = _fails(InputError, tmp_path / "out", params={"root": str(tmp_path / "raw")})
    assert message.startswith(str(image)) and "truncated" in message
    assert (tmp_path / "out" / "images" / "case_000.nii.gz").is_file()  # partial output


def test_label_shape_differs_from_image(tmp_path: Path) -> None:
    image, label = _nnunet_folder(tmp_path / "raw")
    _write_nifti(image, _ramp())
    _write_nifti(label, _label_zyx((3, 4, 6)))
    message = _fails(InputError, tmp_path / "out", params={"root": str(tmp_path / "raw")})
    assert str(label) in message and str(image) in message
    assert "shape" in message and "(3, 4, 6)" in message


def test_label_spacing_differs_from_image(tmp_path: Path) -> None:
    image, label = _nnunet_folder(tmp_path / "raw")
    _write_nifti(image, _ramp(), spacing=(0.8, 0.8, 3.0))
    _write_nifti(label, _label_zyx(), spacing=(0.8, 0.8, 5.0))
    message = _fails(InputError, tmp_path / "out", params={"root": str(tmp_path / "raw")})
    assert str(label) in message and "spacing (0.8, 0.8, 5)" in message
    assert "(0.8, 0.8, 3)" in message


def test_label_values_outside_label_map(tmp_path: Path) -> None:
    image, label = _nnunet_folder(tmp_path / "raw")
    _write_nifti(image, _ramp())
    bad = _label_zyx()
    bad[0, 0, 0] = 7
    _write_nifti(label, bad)
    message = _fails(InputError, tmp_path / "out", params={"root": str(tmp_path / "raw")})
    assert message.startswith(str(label)) and "[7]" in message and "label map" in message


def test_nan_intensities(tmp_path: Path) -> None:
    image, label = _nnunet_folder(tmp_path / "raw")
    bad = np.zeros((3, 4, 5), np.float32)
    bad[1, 2, 3] = bad[2, 0, 0] = np.nan
    _write_nifti(image, bad)
    _write_nifti(label, _label_zyx())
    message = _fails(InputError, tmp_path / "out", params={"root": str(tmp_path / "raw")})
    assert message.startswith(str(image)) and "2 NaN" in message


def test_4d_image(tmp_path: Path) -> None:
    image, label = _nnunet_folder(tmp_path / "raw")
    _write_nifti(image, np.zeros((2, 3, 4, 5), np.float32))
    _write_nifti(label, _label_zyx())
    message = _fails(InputError, tmp_path / "out", params={"root": str(tmp_path / "raw")})
    assert message.startswith(str(image)) and "4D" in message


def test_unknown_adapter(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        prepare_dataset(adapter="nope", params={}, seed=0, out_dir=tmp_path / "out")
    message = str(info.value)
    assert "\n" not in message and message.startswith("adapter:") and "'nope'" in message
    assert all(name in message for name in ADAPTERS)
    assert not (tmp_path / "out").exists()


def test_image_without_label(tmp_path: Path) -> None:
    image, label = _nnunet_folder(tmp_path / "raw")
    _write_nifti(image, _ramp())
    message = _fails(InputError, tmp_path / "out", params={"root": str(tmp_path / "raw")})
    assert message.startswith(str(image)) and f"expected {label}" in message
    assert not (tmp_path / "out").exists()  # found before anything is written


@pytest.mark.parametrize(
    ("adapter", "key"), [("nifti_folder", "label_glob"), ("png_folder", "mask_colour")]
)
def test_unknown_param_key(tmp_path: Path, adapter: str, key: str) -> None:
    message = _fails(
        ConfigError, tmp_path / "out", adapter=adapter, params={"root": str(tmp_path), key: "x"}
    )
    assert message.startswith(f"params.{key}:") and "unknown parameter" in message


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"modality": None}, "params.modality"),
        ({"binarize": "yes"}, "params.binarize"),
        ({"case_id": "(a)(b)"}, "params.case_id"),
        ({"case_id": "(nomatch_\\d+)"}, "params.case_id"),
        ({"label_replace": [["imagesTr"]]}, "params.label_replace[0]"),
        ({"labels": {"background": 1, "liver": 2}}, "params.labels"),
        ({"split": {"case_000": "train"}}, "params.split"),
        ({"splits": {"training": 1.0}, "split_all": None}, "params.splits.training"),
        ({"split_all": "holdout"}, "params.split_all"),
        ({"caption": "{organ}"}, "params.caption"),
    ],
)
def test_bad_param_values(tmp_path: Path, params: dict, key: str) -> None:
    image, label = _nnunet_folder(tmp_path / "raw")
    _write_nifti(image, _ramp())
    _write_nifti(label, _label_zyx())
    params = {"root": str(tmp_path / "raw"), **params}
    if params.get("split"):
        params["split_all"] = None
    message = _fails(ConfigError, tmp_path / "out", params=params)
    assert message.startswith(f"{key}:"), message


def test_missing_root_and_no_matching_images(tmp_path: Path) -> None:
    message = _fails(InputError, tmp_path / "out", params={"root": str(tmp_path / "missing")})
    assert str(tmp_path / "missing") in message and "imagesTr/*.nii.gz" in message
    message = _fails(
        InputError, tmp_path / "out", params={"root": str(tmp_path), "images": "scans/*.nii.gz"}
    )
    assert str(tmp_path) in message and "'scans/*.nii.gz'" in message


def _png_folder(root: Path, bad_mask_rgb: np.ndarray) -> Path:
    """A good case a.png and a bad case b.png whose mask the test provides."""
    for stem, mask_rgb in (("a", np.zeros((4, 5, 3), np.uint8)), ("b", bad_mask_rgb)):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.arange(20, dtype=np.uint8).reshape(4, 5)).save(
            root / "images" / f"{stem}.png"
        )
        Image.fromarray(mask_rgb).save(root / "masks" / f"{stem}.png")
    return root / "masks" / "b.png"


def test_mask_with_unexpected_colour(tmp_path: Path) -> None:
    mask_rgb = np.zeros((4, 5, 3), np.uint8)
    mask_rgb[0, :2] = (0, 250, 10)  # antialiased green: accepted
    mask_rgb[2, 1:4] = (0, 0, 255)  # blue: not a listed colour
    mask = _png_folder(tmp_path / "busi", mask_rgb)
    params = {
        "root": str(tmp_path / "busi"),
        "mask_mode": "colors",
        "modality": "US",
        "colors": {"benign": [[0, 255, 0]], "malignant": [[255, 0, 0]]},
    }
    message = _fails(InputError, tmp_path / "out", adapter="png_folder", params=params)
    assert message.startswith(str(mask)) and "(0, 0, 255) on 3 pixels" in message


def test_mask_size_differs_from_image(tmp_path: Path) -> None:
    mask = _png_folder(tmp_path / "pngs", np.zeros((4, 6, 3), np.uint8))
    message = _fails(
        InputError,
        tmp_path / "out",
        adapter="png_folder",
        params={"root": str(tmp_path / "pngs"), "modality": "US"},
    )
    assert message.startswith(str(mask)) and "6x4" in message and "5x4" in message
    assert str(tmp_path / "pngs" / "images" / "b.png") in message


def test_truncated_uncompressed_nifti(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    full = _write_nifti(root / "a_img.nii", np.ones((4, 5, 6), np.float32))
    _write_nifti(root / "a_seg.nii", _label_zyx((4, 5, 6)))
    full.write_bytes(full.read_bytes()[:-40])
    params = {"root": str(root), "images": "*_img.nii", "label_replace": [["_img", "_seg"]]}
    message = _fails(InputError, tmp_path / "out", params=params)
    assert message.startswith(str(full)) and "truncated" in message and "declares" in message


def test_nii_and_nii_gz_side_by_side(tmp_path: Path) -> None:
    """ITK would read case_001_0000.nii when asked for case_001_0000.nii.gz."""
    image, label = _nnunet_folder(tmp_path / "raw")
    _write_nifti(image, _ramp())
    _write_nifti(image.with_suffix(""), np.ones((3, 4, 5), np.float32))
    _write_nifti(label, _label_zyx())
    message = _fails(InputError, tmp_path / "out", params={"root": str(tmp_path / "raw")})
    assert message.startswith(str(image)) and "ambiguous" in message


def test_duplicate_case_ids(tmp_path: Path) -> None:
    for case in ("p1", "p2"):
        _write_nifti(tmp_path / "raw" / case / "ct.nii.gz", _ramp())
        _write_nifti(tmp_path / "raw" / case / "seg.nii.gz", _label_zyx())
    params = {
        "root": str(tmp_path / "raw"),
        "images": "*/ct.nii.gz",
        "label_replace": [["ct", "seg"]],
    }
    message = _fails(InputError, tmp_path / "out", params=params)
    assert "p2/ct.nii.gz: duplicate case id 'ct'" in message and "p1/ct.nii.gz" in message


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"mask_mode": "rgb"}, "params.mask_mode"),
        ({"colors": {"lesion": [[0, 255, 0]]}}, "params.colors"),
        ({"mask_mode": "colors"}, "params.colors"),
        ({"mask_mode": "colors", "colors": {"lesion": [[0, 300, 0]]}}, "params.colors.lesion"),
        (
            {"mask_mode": "colors", "colors": {"a": [0, 255, 0], "b": [[0, 255, 0]]}},
            "params.colors.b",
        ),
        (
            {"mask_mode": "colors", "colors": {"lesion": [0, 255, 0]}, "labels": {"background": 0}},
            "params.colors.lesion",
        ),
        ({"labels": {"background": 0, "a": 1, "b": 2}}, "params.labels"),
        ({"spacing_mm": [0.5]}, "params.spacing_mm"),
        ({"spacing_mm": [0.5, -1]}, "params.spacing_mm"),
        ({"mask": "masks/label.png"}, "params.mask"),
        ({"mask": "masks/{name}.png"}, "params.mask"),
        ({"images": "/abs/*.png"}, "params.images"),
    ],
)
def test_bad_png_param_values(tmp_path: Path, params: dict, key: str) -> None:
    _png_folder(tmp_path / "pngs", np.zeros((4, 5, 3), np.uint8))
    params = {"root": str(tmp_path / "pngs"), **params}
    message = _fails(ConfigError, tmp_path / "out", adapter="png_folder", params=params)
    assert message.startswith(f"{key}:"), message


# --- config files, output folders, locks and job errors (docs/bad_input.md) ---------------


def test_duplicate_yaml_key_names_file_line_and_key(tmp_path: Path, capsys) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(
        "seed: 1\nprompts:\n  box:\n    type: box\n    jitter: 5\n    jitter: 10\n",
        encoding="utf-8",
    )
    line = (
        f"{path}, line 6: duplicate key 'prompts.box.jitter' (also on line 5); give each key once"
    )
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    assert str(info.value) == line
    assert verify_command(["verify", "--configfile", str(path)]) == 1
    assert capsys.readouterr().out.strip() == line


@pytest.mark.parametrize("name", ["results/data", "results/predictions/ct/otsu_box", "logs"])
def test_read_only_output_folder_is_named(tmp_path: Path, monkeypatch, name: str) -> None:
    folder = tmp_path / name
    folder.mkdir(parents=True)
    check_writable(tmp_path)
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: let os.access read the permission bits
        monkeypatch.setattr(
            preflight.os, "access", lambda p, mode: bool(Path(p).stat().st_mode & 0o200)
        )
    try:
        with pytest.raises(ConfigError) as info:
            check_writable(tmp_path)
    finally:
        folder.chmod(0o755)
    assert str(info.value) == (
        f"{folder}/: folder is not writable (dr-xr-xr-x); make it writable "
        f"(chmod -R u+w {folder}) or run in another folder"
    )


def test_lock_of_a_dead_run_is_named_and_a_live_ones_left_alone(tmp_path: Path) -> None:
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.output.lock").write_text("results/x\n", encoding="utf-8")
    check_stale_lock(tmp_path)  # no owner named: Snakemake's own lock check decides
    gone = subprocess.Popen(["true"])
    gone.wait()
    host = socket.gethostname()
    (locks / f"medsegflow-{host}-{gone.pid}.pid").write_text("", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        check_stale_lock(tmp_path)
    assert str(info.value) == (
        f"{locks}/: locked by a run that was killed (process {gone.pid} no longer exists); "
        "rerun the same command once with --unlock, then run it again"
    )
    (locks / f"medsegflow-{host}-{os.getpid()}.pid").write_text("", encoding="utf-8")
    check_stale_lock(tmp_path)  # a run still alive owns it


def test_bad_input_in_a_job_is_one_console_line_and_a_logged_traceback(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    code = (
        "from medsegflow.errors import InputError\n"
        "from medsegflow.logs import log_to\n"
        f"with log_to({str(log)!r}):\n"
        "    print('working')\n"
        "    raise InputError('raw/a.nii.gz: cannot read image')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8"
    )
    assert result.returncode == 1
    assert result.stderr == "raw/a.nii.gz: cannot read image\n" and result.stdout == ""
    text = log.read_text(encoding="utf-8")
    assert "working" in text and "failed after" in text
    assert text.rstrip().endswith("medsegflow.errors.InputError: raw/a.nii.gz: cannot read image")
    assert "Traceback (most recent call last)" in text


def test_split_entry_naming_no_case_is_a_warning_in_verify_and_on_the_console(
    tmp_path: Path,
) -> None:
    from medsegflow.verify import format_reports, verify_datasets

    _nnunet_folder(tmp_path / "raw")
    params = {
        "root": str(tmp_path / "raw"),
        "modality": "CT",
        "split": {"case_000": "test", "case_999": "train"},
    }
    config = {"datasets": {"ct": {"adapter": "nifti_folder", "params": params}}}
    lines = format_reports(verify_datasets(config)).splitlines()
    warning = "params.split names 1 case(s) not found in the dataset, e.g. case_999"
    assert lines == [
        f"WARNING: {warning}",
        "verify: no problems in 1 datasets (1 cases read, 1 warnings)",
    ]
    code = (
        "from medsegflow.datasets.registry import prepare_dataset\n"
        "from medsegflow.logs import log_to\n"
        f"with log_to({str(tmp_path / 'job.log')!r}):\n"
        f"    prepare_dataset(adapter='nifti_folder', params={params!r}, seed=0,\n"
        f"                    out_dir={str(tmp_path / 'out')!r})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"WARNING: {warning}\n"
    table = read_cases(tmp_path / "out")
    assert table.set_index("case_id")["warnings"].to_dict() == {"case_000": warning}
