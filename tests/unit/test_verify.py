"""``verify`` lists every problem of every dataset, one line naming the file, and exits 1.

The datasets are small real CT crops (sarcoma CT of ../shared/data) with planted faults:
a missing label, a label of another shape, of another spacing, with a value outside the
map, an image with NaNs, an empty image, a truncated file and a duplicate case id; a PNG
set with a mask of the wrong size; and a dataset with a bad parameter.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medsegflow.__main__ import main
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
        "empty": "imagesTr/empty_0000.nii.gz: empty image (every voxel is 0.0)",
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
