"""``verify`` lists every problem of every dataset, one line naming the file, and exits 1.

The datasets are small real CT crops (sarcoma CT of ../shared/data) with planted faults:
a missing label, a label of another shape, of another spacing, with a value outside the
map, an image with NaNs, an empty image, a truncated file and a duplicate case id; a PNG
set with a mask of the wrong size; and a dataset with a bad parameter.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image

from medsegflow.__main__ import main
from medsegflow.datasets.canonical import AdapterResult, CaseSource
from medsegflow.datasets.registry import prepare_dataset
from medsegflow.errors import InputError
from medsegflow.io import Geometry, Volume, read_volume, write_volume
from medsegflow.verify import format_reports, verify_datasets

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("shared_data")


def _faulty_nifti_set(root: Path) -> dict[str, str]:
    """An nnU-Net raw tree with one fault per case; returns {case: what verify must say}."""
    ct = read_volume(DATA / "ibsi_sts" / "STS_001" / "CT_image.nii.gz")
    mask = read_volume(DATA / "ibsi_sts" / "STS_001" / "CT_mask.nii.gz")
    z = int(np.argmax(mask.array_zyx.sum(axis=(1, 2))))
    image = Volume(ct.array_zyx[z - 2 : z + 2, 100:164, 100:164].astype(np.float32), ct.geometry)
    label = Volume(mask.array_zyx[z - 2 : z + 2, 100:164, 100:164], ct.geometry)
    images, labels = root / "imagesTr", root / "labelsTr"

    def put(case: str, img: Volume, lab: Volume | None) -> None:
        write_volume(images / f"{case}_0000.nii.gz", img)
        if lab is not None:
            write_volume(labels / f"{case}.nii.gz", lab)

    put("good", image, label)
    put("nolabel", image, None)
    put("shape", image, Volume(label.array_zyx[:, :32], label.geometry))
    other = Geometry((2.0, 2.0, 5.0), ct.geometry.origin_xyz, ct.geometry.direction)
    put("spacing", image, Volume(label.array_zyx, other))
    bad_values = label.array_zyx.copy()
    bad_values[0, :3, :3] = 7
    put("values", image, Volume(bad_values, label.geometry))
    nan = image.array_zyx.copy()
    nan[1, 5:7, 5:9] = np.nan
    put("nan", Volume(nan, image.geometry), label)
    put("empty", Volume(np.zeros_like(image.array_zyx), image.geometry), label)
    put("truncated", image, label)
    raw = (images / "truncated_0000.nii.gz").read_bytes()
    (images / "truncated_0000.nii.gz").write_bytes(gzip.compress(gzip.decompress(raw)[:2000]))
    (images / "sub").mkdir()
    put("sub/good", image, label)  # a second case with id "good"
    return {
        "nolabel": "labelsTr/nolabel.nii.gz: file not found",
        "shape": "labelsTr/shape.nii.gz: label shape (z,y,x)=(4, 32, 64) differs",
        "spacing": "labelsTr/spacing.nii.gz: label geometry (spacing (2, 2, 5)",
        "values": "labelsTr/values.nii.gz: label values [7] are not in the label map",
        "nan": "imagesTr/nan_0000.nii.gz: image has 8 NaN or infinite intensities",
        "empty": "imagesTr/empty_0000.nii.gz: constant image (every voxel is 0.0); set "
        "allow_constant_images: true in the dataset's config to score it all the same",
        "truncated": "imagesTr/truncated_0000.nii.gz: cannot read image",
        "duplicate": "imagesTr/sub/good_0000.nii.gz: duplicate case id 'good'",
    }


def _config(tmp_path: Path) -> tuple[dict, dict[str, str]]:
    expected = _faulty_nifti_set(tmp_path / "ct")
    pngs = tmp_path / "png"
    (pngs / "images").mkdir(parents=True)
    (pngs / "masks").mkdir()
    xray = np.asarray(Image.open(DATA / "cxr_lung" / "1.jpg").convert("L"))[::8, ::8]
    Image.fromarray(xray).save(pngs / "images" / "a.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(pngs / "masks" / "a.png")
    config = {
        "seed": 0,
        "datasets": {
            "ct": {
                "adapter": "nifti_folder",
                "params": {
                    "root": str(tmp_path / "ct"),
                    "images": "imagesTr/**/*_0000.nii.gz",
                    "labels": {"background": 0, "tumour": 1},
                    "modality": "CT",
                },
            },
            "xr": {"adapter": "png_folder", "params": {"root": str(pngs), "modality": "XR"}},
            "typo": {"adapter": "png_folder", "params": {"root": str(pngs), "modalty": "XR"}},
        },
    }
    expected["xr"] = "masks/a.png: mask size 10x10 differs from image"
    expected["typo"] = "datasets.typo.params.modalty"
    return config, expected


def test_verify_lists_every_planted_fault_once(tmp_path: Path) -> None:
    config, expected = _config(tmp_path)
    reports = verify_datasets(config)
    lines = format_reports(reports).splitlines()
    for fault, text in expected.items():
        hits = [line for line in lines if text in line]
        assert len(hits) == 1, f"{fault}: expected one line with {text!r} in\n" + "\n".join(lines)
    assert not any("good_0000.nii.gz:" in line and "sub/" not in line for line in lines)
    assert lines[-1] == f"verify: {len(expected)} problems in 3 of 3 datasets (10 cases read)"
    assert len(lines) == len(expected) + 1
    assert not (tmp_path / "ct" / "cases.tsv").exists()  # verify writes nothing


def test_verify_command_exits_1_and_0(tmp_path: Path, capsys) -> None:
    config, expected = _config(tmp_path)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))  # no methods: the config itself is a problem too
    assert main(["verify", "--configfile", str(path)]) == 1
    out = capsys.readouterr().out
    assert "study.yaml: invalid config: <config>: 'methods' is a required property" in out
    assert all(text in out for text in expected.values())
    demo = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    config = {**demo, "datasets": config["datasets"]}
    assert main(["verify", "--configfile", str(path), "--dataset", "nosuch"]) == 1
    assert "datasets.nosuch: no such dataset" in capsys.readouterr().out
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["verify", "--configfile", str(path)]) == 1
    out = capsys.readouterr().out
    assert "invalid config" not in out and all(text in out for text in expected.values())
    clean = {**config, "datasets": {"ok": config["datasets"]["ct"]}}
    for case in ("nolabel", "shape", "spacing", "values", "nan", "empty", "truncated"):
        (tmp_path / "ct" / "imagesTr" / f"{case}_0000.nii.gz").unlink()
    (tmp_path / "ct" / "imagesTr" / "sub" / "good_0000.nii.gz").unlink()
    path.write_text(yaml.safe_dump(clean), encoding="utf-8")
    assert main(["verify", "--configfile", str(path)]) == 0  # labels without images: warned
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"WARNING: {tmp_path / 'ct/labelsTr/empty.nii.gz'}: label file with no image matching "
        "params.images 'imagesTr/**/*_0000.nii.gz'; left out (6 such files)",
        "verify: no problems in 1 datasets (1 cases read, 1 warnings)",
    ], lines  # labelsTr/sub holds no expected label any more: not looked into
    for label in (tmp_path / "ct" / "labelsTr").rglob("*.nii.gz"):
        if label.name != "good.nii.gz" or label.parent.name == "sub":
            label.unlink()
    path.write_text(yaml.safe_dump(clean), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "medsegflow", "verify", "--configfile", str(path)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "verify: no problems in 1 datasets (1 cases read)"


def test_verify_on_a_study_config_names_every_missing_root():
    """experiments/medclip_samv2.yaml with its placeholder roots: one line per dataset."""
    config = yaml.safe_load(
        (REPO / "experiments" / "medclip_samv2.yaml").read_text(encoding="utf-8")
    )
    lines = format_reports(verify_datasets(config)).splitlines()
    roots = [entry["params"]["root"] for entry in config["datasets"].values()]
    assert len(lines) == len(roots) + 1
    for root, line in zip(roots, lines, strict=False):
        assert line.startswith(root) and "not found" in line, line
    assert lines[-1] == "verify: 4 problems in 4 of 4 datasets (0 cases read)"


# --- named adapters with planted faults, laid out as their official downloads ------------------
# Each fault must be its own line naming the file; the good cases beside them are still read.


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _busi_faults(root: Path) -> dict[str, str]:
    """Dataset_BUSI_with_GT from real BUSI images: 2 good cases and 5 faults."""
    src = DATA / "busi_mini"

    def image(case: str) -> np.ndarray:
        return np.asarray(Image.open(src / "images" / f"{case}.png").convert("RGB"))

    def mask(case: str) -> np.ndarray:
        rgb = np.asarray(Image.open(src / "masks" / f"{case}.png").convert("RGB"))
        return ((rgb.max(-1) > 127) * 255).astype(np.uint8)

    benign, malignant = root / "benign", root / "malignant"
    _save_png(benign / "benign (1).png", image("10018"))  # good
    _save_png(benign / "benign (1)_mask.png", mask("10018"))
    _save_png(benign / "benign (2).png", image("10080"))  # no mask
    _save_png(benign / "benign (3).png", image("10110"))  # image cut after 300 bytes
    _save_png(benign / "benign (3)_mask.png", mask("10110"))
    raw = (benign / "benign (3).png").read_bytes()
    (benign / "benign (3).png").write_bytes(raw[:300])
    _save_png(benign / "benign (9)_mask.png", mask("10018"))  # a mask without its image
    _save_png(malignant / "malignant (1).png", image("10509"))  # good
    _save_png(malignant / "malignant (1)_mask.png", mask("10509"))
    _save_png(malignant / "malignant (2).png", image("10523"))  # mask of half the size
    _save_png(malignant / "malignant (2)_mask.png", mask("10523")[::2, ::2])
    return {  # no normal/ folder
        "busi missing mask": "benign (2).png: mask file not found, expected",
        "busi corrupt png": "benign (3).png: cannot read image (corrupt or truncated file)",
        "busi orphan mask": "benign (9)_mask.png: a mask without its image",
        "busi wrong-size mask": "malignant (2)_mask.png: mask size",
        "busi class folder": "Dataset_BUSI_with_GT/normal: BUSI class folder not found",
    }


def _write_mat73(path: Path, cjdata: dict[str, np.ndarray]) -> None:
    """A MATLAB -v7.3 file as MATLAB writes it: HDF5 with a 512-byte user block holding the
    MATLAB header, the struct a group, every array column-major (transposed on disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as handle:
        group = handle.create_group("cjdata")
        for name, value in cjdata.items():
            group[name] = np.asarray(value).T
    with open(path, "r+b") as handle:
        handle.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .")


def _figshare_faults(root: Path) -> dict[str, str]:
    """Figshare brain tumour slices (<n>.mat) from the real sarcoma MR: 2 good, 6 faults."""
    mr = read_volume(DATA / "ibsi_sts" / "STS_001" / "MR_T1_image.nii.gz").array_zyx
    gtv = read_volume(DATA / "ibsi_sts" / "STS_001" / "MR_T1_mask.nii.gz").array_zyx > 0

    def slice_mat(number: int, z: int, *, label: float = 1.0, mask_rows: int | None = None):
        image = np.round(mr[z]).astype(np.int16)
        mask = gtv[z, :mask_rows].astype(np.uint8)
        pid = np.array([[ord(c) for c in f"P{number % 2}"]], dtype=np.uint16)
        path = root / "brainTumorDataPublic_1-766" / f"{number}.mat"
        _write_mat73(path, {"image": image, "tumorMask": mask, "label": [[label]], "PID": pid})
        return path

    slice_mat(1, 20)  # good
    slice_mat(2, 24)  # truncated to half its size
    slice_mat(3, 26, label=7.0)  # not a class code
    slice_mat(4, 28, mask_rows=100)  # tumorMask of another shape
    slice_mat(5, 30, label=2.0)  # good
    truncated = root / "brainTumorDataPublic_1-766" / "2.mat"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    (root / "brainTumorDataPublic_1-766" / "6.mat").write_bytes(b"")  # empty file
    garbage = np.random.default_rng(0).integers(0, 256, 21, dtype=np.uint8).tobytes()
    (root / "brainTumorDataPublic_1-766" / "7.mat").write_bytes(garbage)
    slice_mat(8, 32)  # a second copy of a slice number
    (root / "brainTumorDataPublic_767-1532").mkdir()
    shutil.copy(
        root / "brainTumorDataPublic_1-766" / "8.mat", root / "brainTumorDataPublic_767-1532"
    )
    return {
        "figshare truncated mat": "1-766/2.mat: cannot read MATLAB .mat file (corrupt or",
        "figshare bad label code": "1-766/3.mat: cjdata.label is [7.0], expected 1, 2 or 3",
        "figshare mask shape": "1-766/4.mat: cjdata.tumorMask shape (100, 174) differs",
        "figshare empty mat": "1-766/6.mat: cannot read MATLAB .mat file (corrupt or truncated)",
        "figshare garbage mat": "1-766/7.mat: cannot read MATLAB .mat file (corrupt or truncated)",
        "figshare duplicate slice": "767-1532/8.mat: slice 8 is also",
    }


def _transunet_faults(root: Path) -> dict[str, str]:
    """TransUNet's data/Synapse from the real spleen CT crop: 1 good case and 4 faults."""
    ct = read_volume(DATA / "msd_spleen_crop" / "sub-spleen2_ct.nii.gz").array_zyx
    seg = read_volume(DATA / "msd_spleen_crop" / "sub-spleen2_ct_seg-manual.nii.gz").array_zyx
    image = ((np.clip(ct[8:14, 40:104, 40:104], -125, 275) + 125) / 400).astype(np.float32)
    label = (seg[8:14, 40:104, 40:104] > 0).astype(np.float32)  # 1 = spleen
    train, test = root / "train_npz", root / "test_vol_h5"
    train.mkdir(parents=True)
    test.mkdir()
    for case in ("case0005", "case0006", "case0007"):
        for k in range(image.shape[0]):
            lab = label[k].copy()
            if case == "case0007" and k == 2:
                lab[:2, :2] = 9  # TransUNet's values end at 8
            np.savez(train / f"{case}_slice{k:03d}.npz", image=image[k], label=lab)
    (train / "case0006_slice003.npz").unlink()  # a gap in case0006
    (train / "notes.txt").write_text("not a slice\n", encoding="utf-8")
    bad = label.copy()
    bad[0, :3, :3] = 12
    with h5py.File(test / "case0001.npy.h5", "w") as handle:
        handle["image"] = image
        handle["label"] = bad
    return {
        "transunet missing slice": "train_npz/case0006_slice003.npz: slice missing",
        "transunet value out of map (train)": "case0007_slice*.npz (6 slices): label values [9]",
        "transunet value out of map (test)": "test_vol_h5/case0001.npy.h5: label values [12]",
        "transunet stray file": "train_npz/notes.txt: not a TransUNet training slice",
    }


def _direction_only_fault(root: Path) -> dict[str, str]:
    """The real spleen CT crop (direction diag(-1, -1, 1)) with a label that is right in
    every voxel, spacing and origin, but stored with the identity direction."""
    ct = read_volume(DATA / "msd_spleen_crop" / "sub-spleen2_ct.nii.gz")
    seg = read_volume(DATA / "msd_spleen_crop" / "sub-spleen2_ct_seg-manual.nii.gz")
    write_volume(root / "imagesTr" / "spleen_0000.nii.gz", ct)
    write_volume(root / "imagesTr" / "flipped_0000.nii.gz", ct)
    write_volume(root / "labelsTr" / "spleen.nii.gz", seg)
    identity = Geometry(ct.geometry.spacing_xyz, ct.geometry.origin_xyz)
    write_volume(root / "labelsTr" / "flipped.nii.gz", Volume(seg.array_zyx, identity))
    return {
        "direction only": (
            "labelsTr/flipped.nii.gz: label geometry (spacing (0.7949, 0.7949, 5), origin "
            "(406.2, 406.2, 0), direction (1, 0, 0, 0, 1, 0, 0, 0, 1)) differs from image "
            f"{root}/imagesTr/flipped_0000.nii.gz (spacing (0.7949, 0.7949, 5), origin "
            "(406.2, 406.2, 0), direction (-1, 0, 0, 0, -1, 0, 0, 0, 1)) in direction"
        )
    }


def _named_config(tmp_path: Path) -> tuple[dict, dict[str, str]]:
    expected = {
        **_busi_faults(tmp_path / "Dataset_BUSI_with_GT"),
        **_figshare_faults(tmp_path / "figshare"),
        **_transunet_faults(tmp_path / "data" / "Synapse"),
        **_direction_only_fault(tmp_path / "Task09_Spleen"),
    }
    datasets = {
        "busi": {"adapter": "busi", "params": {"root": str(tmp_path / "Dataset_BUSI_with_GT")}},
        "brain": {"adapter": "figshare_brain", "params": {"root": str(tmp_path / "figshare")}},
        "synapse": {
            "adapter": "synapse_transunet",
            "params": {"root": str(tmp_path / "data" / "Synapse")},
        },
        "spleen": {
            "adapter": "nifti_folder",
            "params": {
                "root": str(tmp_path / "Task09_Spleen"),
                "images": "imagesTr/*_0000.nii.gz",
                "labels": {"background": 0, "spleen": 1},
                "modality": "CT",
            },
        },
    }
    demo = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    return {**demo, "datasets": datasets}, expected


def test_verify_lists_every_fault_of_the_named_adapters(tmp_path: Path) -> None:
    config, expected = _named_config(tmp_path)
    reports = {report.dataset: report for report in verify_datasets(config)}
    lines = format_reports(list(reports.values())).splitlines()
    for fault, text in expected.items():
        hits = [line for line in lines if text in line]
        assert len(hits) == 1, f"{fault}: expected one line with {text!r} in\n" + "\n".join(lines)
    assert len(lines) == len(expected) + 1, "\n".join(lines)
    assert lines[-1] == f"verify: {len(expected)} problems in 4 of 4 datasets (13 cases read)"
    # the good cases were read: BUSI 1 + 1 (+ 2 faulty reads), Figshare 1, 5, 4 (and 8 once),
    # TransUNet case0005, case0007, case0001, the spleen twice
    assert {name: r.n_cases for name, r in reports.items()} == {
        "busi": 4,
        "brain": 4,
        "synapse": 3,
        "spleen": 2,
    }


def test_verify_command_on_the_named_adapters_exits_1(tmp_path: Path, capsys) -> None:
    config, expected = _named_config(tmp_path)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["verify", "--configfile", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    for fault, text in expected.items():
        assert sum(text in line for line in out) == 1, fault
    assert out[-1].startswith(f"verify: {len(expected)} problems in 4 of 4 datasets")


@pytest.mark.parametrize(
    ("adapter", "build", "first"),
    [
        ("busi", _busi_faults, "benign (9)_mask.png: a mask without its image"),
        ("figshare_brain", _figshare_faults, "767-1532/8.mat: slice 8 is also"),
        ("synapse_transunet", _transunet_faults, "notes.txt: not a TransUNet training slice"),
    ],
)
def test_a_normal_run_still_stops_at_the_first_fault(
    tmp_path: Path, adapter: str, build, first: str
) -> None:
    build(tmp_path / "root")
    with pytest.raises(InputError) as info:
        prepare_dataset(
            adapter=adapter, params={"root": str(tmp_path / "root")}, seed=0, out_dir=tmp_path / "o"
        )
    message = str(info.value)
    assert "\n" not in message and first in message, message
    assert not (tmp_path / "o" / "cases.tsv").exists()


def test_unexpected_errors_are_one_line_and_the_other_datasets_are_checked(
    tmp_path: Path, monkeypatch
) -> None:
    """A reader's or adapter's own exception (here planted) names the case's files or the
    dataset, with the exception type; it stops neither the dataset nor the run."""
    import medsegflow.verify as verify

    def boom(params, *, seed):
        raise ZeroDivisionError("division by zero")

    def flaky(params, *, seed):
        def load():
            raise RecursionError("too deep")

        result = real("busi", key="adapter")(params, seed=seed)  # BUSI with one odd case
        return AdapterResult(
            result.label_map, [CaseSource("odd", "/data/odd.png", load), *result.sources]
        )

    real = verify.get_adapter
    fakes = {"boom": boom, "flaky": flaky}
    monkeypatch.setattr(
        verify, "get_adapter", lambda name, key: fakes.get(name) or real(name, key=key)
    )
    busi = _busi_faults(tmp_path / "Dataset_BUSI_with_GT")
    config = {
        "datasets": {
            "a": {"adapter": "boom", "params": {"root": "/data/a"}},
            "b": {"adapter": "flaky", "params": {"root": str(tmp_path / "Dataset_BUSI_with_GT")}},
        }
    }
    lines = format_reports(verify_datasets(config)).splitlines()
    assert lines[0] == (
        "datasets.a: adapter 'boom' failed while listing the cases under /data/a "
        "(ZeroDivisionError: division by zero)"
    )
    assert "/data/odd.png: cannot read (RecursionError: too deep)" in lines
    assert all(sum(text in line for line in lines) == 1 for text in busi.values())
    assert lines[-1] == f"verify: {len(busi) + 2} problems in 2 of 2 datasets (5 cases read)"
