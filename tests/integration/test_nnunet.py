"""Real nnU-Net runs through the workflow: convert, plan, train, predict, score.

They are the shared demo run's (``demo_run``): every nnU-Net method of the reduced demo,
one trained on the ground truth, one on another method's train/val predictions
(pseudo-labels), on a tiny schedule on the CPU: the point is the plumbing, not the
accuracy. Methods, schedules and label sources are read from the run's config.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medsegflow.io import read_volume
from medsegflow.nnunet.naming import dataset_name

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nnunet(demo_run: Path) -> list[tuple[str, str, dict]]:
    """``(dataset, method, method config)`` of every nnU-Net row of the run."""
    from medsegflow.config import load_config
    from medsegflow.workflow import methods_for_dataset

    raw = yaml.safe_load((demo_run / "config.yaml").read_text(encoding="utf-8"))
    config = load_config(raw)
    rows = [
        (dataset, method, config["methods"][method])
        for dataset in config["datasets"]
        for method in methods_for_dataset(config, dataset)
        if config["methods"][method]["family"] == "nnunet"
    ]
    assert any(not spec.get("labels_from") for _, _, spec in rows), "no GT-trained nnU-Net"
    assert any(spec.get("labels_from") for _, _, spec in rows), "no pseudo-label nnU-Net"
    return rows


def _cases(run: Path, dataset: str) -> pd.DataFrame:
    path = run / f"results/data/{dataset}/cases.tsv"
    return pd.read_csv(path, sep="\t", dtype={"case_id": str})


def _ids(cases: pd.DataFrame, test: bool) -> list[str]:
    return sorted(cases.loc[(cases["split"] == "test") == test, "case_id"])


def test_predictions_cover_the_test_split_in_canonical_geometry(demo_run, nnunet) -> None:
    for dataset, method, _ in nnunet:
        test_ids = _ids(_cases(demo_run, dataset), test=True)
        labels = json.loads(
            (demo_run / f"results/data/{dataset}/labels.json").read_text(encoding="utf-8")
        )
        folder = demo_run / "results/predictions" / dataset / method
        manifest = pd.read_csv(folder / "manifest.tsv", sep="\t", dtype={"case_id": str})
        assert sorted(manifest["case_id"]) == test_ids, (dataset, method)
        assert set(manifest["split"]) == {"test"} and set(manifest["n_prompts"]) == {0}
        assert (manifest["seconds"] > 0).all()
        for case_id in test_ids:
            pred = read_volume(folder / f"{case_id}.nii.gz")
            image = read_volume(demo_run / f"results/data/{dataset}/images/{case_id}.nii.gz")
            assert pred.array_zyx.shape == image.array_zyx.shape
            assert pred.geometry == image.geometry
            assert set(np.unique(pred.array_zyx)) <= set(labels.values())


def test_metrics_csv_scores_every_test_case(demo_run, nnunet) -> None:
    for dataset, method, _ in nnunet:
        test_ids = set(_ids(_cases(demo_run, dataset), test=True))
        labels = json.loads(
            (demo_run / f"results/data/{dataset}/labels.json").read_text(encoding="utf-8")
        )
        classes = set(labels) - {"background"}
        path = demo_run / f"results/metrics/{dataset}/{method}.csv"
        rows = pd.read_csv(path, dtype={"case_id": str})
        assert set(rows["case_id"]) == test_ids and len(rows) == len(test_ids) * len(classes)
        assert set(rows["method"]) == {method} and set(rows["label_name"]) == classes
        assert rows["dsc"].between(0, 1).all() and not rows["dsc"].isna().any()


def test_training_marker_records_the_schedule_and_checkpoint(demo_run, nnunet) -> None:
    for dataset, method, spec in nnunet:
        marker = json.loads(
            (demo_run / f"results/models/nnunet/{dataset}/{method}/training.json").read_text(
                encoding="utf-8"
            )
        )
        assert marker["num_epochs"] == spec["epochs"]
        assert marker["num_iterations_per_epoch"] == spec["iterations_per_epoch"]
        assert marker["num_val_iterations_per_epoch"] == spec["val_iterations"]
        assert marker["fold"] == "all" and marker["configuration"] == spec["configuration"]
        assert marker["trainer"] == "MedSegFlow_nnUNetTrainer" and marker["device"] == "cpu"
        assert (demo_run / marker["checkpoint"]).is_file()
        labels = spec.get("labels_from") or "gt"
        assert marker["dataset_name"] == dataset_name(dataset, labels)
        assert marker["last_epoch"]["train_losses"] is not None
        log = (demo_run / f"logs/train_nnunet/{dataset}/{method}.log").read_text(encoding="utf-8")
        assert "Epoch 0" in log and "train_loss" in log  # nnU-Net's own output, in the job log


def test_training_cases_are_train_and_val_only(demo_run, nnunet) -> None:
    for dataset, _, spec in nnunet:
        training = _ids(_cases(demo_run, dataset), test=False)
        raw = (
            demo_run
            / "results/nnunet/nnUNet_raw"
            / dataset_name(dataset, spec.get("labels_from") or "gt")
        )
        images = sorted(p.name[: -len("_0000.nii.gz")] for p in (raw / "imagesTr").iterdir())
        assert images == training, (dataset, spec)


def test_pseudolabels_train_the_weak_method_and_test_cases_stay_out(demo_run, nnunet) -> None:
    for dataset, _, spec in nnunet:
        if not spec.get("labels_from"):
            continue
        source = spec["labels_from"]
        training = _ids(_cases(demo_run, dataset), test=False)
        pseudo = demo_run / "results/pseudolabels" / dataset / source
        manifest = pd.read_csv(pseudo / "manifest.tsv", sep="\t", dtype={"case_id": str})
        assert sorted(manifest["case_id"]) == training and "test" not in set(manifest["split"])
        raw = demo_run / "results/nnunet/nnUNet_raw" / dataset_name(dataset, source)
        differs = 0
        for case_id in training:
            label = read_volume(raw / "labelsTr" / f"{case_id}.nii.gz").array_zyx
            expected = read_volume(pseudo / f"{case_id}.nii.gz").array_zyx
            np.testing.assert_array_equal(label, expected)
            gt = read_volume(demo_run / f"results/data/{dataset}/labels/{case_id}.nii.gz")
            differs += int(not np.array_equal(label, gt.array_zyx))
        assert differs > 0, source  # the source method's masks, not the ground truth
