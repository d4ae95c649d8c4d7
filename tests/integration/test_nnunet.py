"""A tiny real nnU-Net run through the workflow: convert, plan, train, predict, score.

Six 64 x 64 ultrasound phantoms train (train + val), three are predicted; one method
trains on the ground truth, one on Otsu's train/val predictions (pseudo-labels). One
epoch of four iterations on the CPU: the point is the plumbing, not the accuracy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medsegflow.io import read_volume
from medsegflow.nnunet.naming import dataset_name

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SCHEDULE = {
    "family": "nnunet",
    "epochs": 1,
    "iterations_per_epoch": 4,
    "val_iterations": 1,
    "num_processes": 1,
    "mirroring": False,
}
TARGETS = ["results/metrics/phantom_us/nnunet_gt.csv", "results/metrics/phantom_us/nnunet_pl.csv"]


def tiny_config(repo_root: Path) -> dict:
    with open(repo_root / "config.yaml", encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    config["datasets"] = {
        "phantom_us": {
            "adapter": "phantom",
            "params": {"kind": "us", "n_cases": 9, "shape": [64, 64]},
        }
    }
    config["methods"] = {
        "otsu_box": config["methods"]["otsu_box"],
        "nnunet_gt": dict(SCHEDULE),
        "nnunet_pl": {**SCHEDULE, "labels_from": "otsu_box"},
    }
    config["ablations"] = {}
    return config


def snakemake(workdir: Path, repo_root: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, "-s", str(repo_root / "Snakefile"), "--cores", "2", *args]
    cmd += ["--configfile", str(workdir / "config.yaml")]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, encoding="utf-8")


@pytest.fixture(scope="module")
def run(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("nnunet")
    (workdir / "config.yaml").write_text(yaml.safe_dump(tiny_config(repo_root)), encoding="utf-8")
    result = snakemake(workdir, repo_root, *TARGETS)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return workdir


def _cases(workdir: Path) -> pd.DataFrame:
    path = workdir / "results/data/phantom_us/cases.tsv"
    return pd.read_csv(path, sep="\t", dtype={"case_id": str})


def test_split_sizes_of_the_tiny_dataset(run: Path) -> None:
    counts = _cases(run)["split"].value_counts().to_dict()
    assert counts["train"] + counts["val"] == 6 and counts["test"] == 3


def test_predictions_cover_the_test_split_in_canonical_geometry(run: Path) -> None:
    cases = _cases(run)
    test_ids = sorted(cases.loc[cases["split"] == "test", "case_id"])
    for method in ("nnunet_gt", "nnunet_pl"):
        folder = run / "results/predictions/phantom_us" / method
        manifest = pd.read_csv(folder / "manifest.tsv", sep="\t", dtype={"case_id": str})
        assert sorted(manifest["case_id"]) == test_ids
        assert set(manifest["split"]) == {"test"} and set(manifest["n_prompts"]) == {0}
        assert (manifest["seconds"] > 0).all()
        for case_id in test_ids:
            pred = read_volume(folder / f"{case_id}.nii.gz")
            image = read_volume(run / f"results/data/phantom_us/images/{case_id}.nii.gz")
            assert pred.array_zyx.shape == image.array_zyx.shape == (1, 64, 64)
            assert pred.geometry == image.geometry
            assert set(np.unique(pred.array_zyx)) <= {0, 1}


def test_metrics_csv_scores_every_test_case(run: Path) -> None:
    cases = _cases(run)
    test_ids = set(cases.loc[cases["split"] == "test", "case_id"])
    for method in ("nnunet_gt", "nnunet_pl"):
        rows = pd.read_csv(run / f"results/metrics/phantom_us/{method}.csv", dtype={"case_id": str})
        assert set(rows["case_id"]) == test_ids and len(rows) == 3
        assert set(rows["method"]) == {method} and set(rows["label_name"]) == {"lesion"}
        assert rows["dsc"].between(0, 1).all() and not rows["dsc"].isna().any()


def test_training_marker_records_the_schedule_and_checkpoint(run: Path) -> None:
    marker = json.loads(
        (run / "results/models/nnunet/phantom_us/nnunet_gt/training.json").read_text(
            encoding="utf-8"
        )
    )
    assert marker["num_epochs"] == 1 and marker["num_iterations_per_epoch"] == 4
    assert marker["num_val_iterations_per_epoch"] == 1
    assert marker["fold"] == "all" and marker["configuration"] == "2d"
    assert marker["trainer"] == "MedSegFlow_nnUNetTrainer" and marker["device"] == "cpu"
    assert (run / marker["checkpoint"]).is_file()
    assert marker["dataset_name"] == dataset_name("phantom_us", "gt")
    assert marker["last_epoch"]["train_losses"] is not None
    log = (run / "logs/train_nnunet/phantom_us/nnunet_gt.log").read_text(encoding="utf-8")
    assert "Epoch 0" in log and "train_loss" in log  # nnU-Net's own output is in the job log


def test_pseudolabels_train_the_second_method_and_test_cases_stay_out(run: Path) -> None:
    cases = _cases(run)
    training = sorted(cases.loc[cases["split"] != "test", "case_id"])
    pseudo = run / "results/pseudolabels/phantom_us/otsu_box"
    manifest = pd.read_csv(pseudo / "manifest.tsv", sep="\t", dtype={"case_id": str})
    assert sorted(manifest["case_id"]) == training and "test" not in set(manifest["split"])
    raw = run / "results/nnunet/nnUNet_raw" / dataset_name("phantom_us", "otsu_box")
    assert sorted(p.name[: -len("_0000.nii.gz")] for p in (raw / "imagesTr").iterdir()) == training
    differs = 0
    for case_id in training:
        label = read_volume(raw / "labelsTr" / f"{case_id}.nii.gz").array_zyx
        np.testing.assert_array_equal(label, read_volume(pseudo / f"{case_id}.nii.gz").array_zyx)
        gt = read_volume(run / f"results/data/phantom_us/labels/{case_id}.nii.gz").array_zyx
        differs += int(not np.array_equal(label, gt))
    assert differs > 0  # Otsu's masks, not the ground truth
    marker = json.loads(
        (run / "results/models/nnunet/phantom_us/nnunet_pl/training.json").read_text(
            encoding="utf-8"
        )
    )
    assert marker["dataset_name"] == dataset_name("phantom_us", "otsu_box")


def test_rerun_is_a_no_op(run: Path, repo_root: Path) -> None:
    result = snakemake(run, repo_root, *TARGETS, "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr
