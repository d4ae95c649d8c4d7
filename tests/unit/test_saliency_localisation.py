"""Pixel AUC of saliency maps against reference labels (benchmarks/saliency_auc.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsegflow.datasets.canonical import label_path
from medsegflow.io import Volume, write_volume
from medsegflow.saliency.localisation import (
    LOCALISATION_COLUMNS,
    localisation_summary,
    pixel_auc,
    saliency_localisation,
)
from medsegflow.saliency.maps import saliency_map_path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def test_pixel_auc_counts_ordered_pairs_and_ties_half():
    # pairs (target, background): (0.4, 0.1) yes, (0.4, 0.35) yes, (0.8, .) yes, yes -> 4/4
    assert pixel_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 1, 0, 1])) == 1.0
    # 3 of 4 pairs ordered: 0.35 > 0.1 and 0.8 > both, but 0.35 < 0.4
    assert pixel_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert pixel_auc(np.full(6, 0.3), np.array([1, 0, 0, 1, 0, 0])) == 0.5  # all ties
    assert pixel_auc(np.array([0.9, 0.8, 0.1]), np.array([0, 0, 1])) == 0.0  # inverted
    assert math.isnan(pixel_auc(np.ones(4), np.zeros(4)))  # no target pixel
    with pytest.raises(ValueError, match="differ in size"):
        pixel_auc(np.ones(4), np.ones(5))


def _run_folders(sal, pre):
    """One case: label 1 on slice 1 (perfect map), label 2 on slice 2 (inverted map), and
    a val target on slice 0 where label 1 is absent."""
    label = np.zeros((3, 8, 8), np.uint8)
    label[1, 2:5, 2:5] = 1  # 9 target pixels on slice 1
    label[2, 0:2, 0:8] = 2  # label 2 on slice 2
    write_volume(label_path(pre, "c1"), Volume(label))
    good = np.zeros((3, 8, 8), np.float32)
    good[1, 2:5, 2:5] = 1.0  # perfect ranking on slice 1
    write_volume(saliency_map_path(sal, "c1", 1), Volume(good))
    inverted = np.ones((3, 8, 8), np.float32)
    inverted[2, 0:2, :] = 0.0  # the target scores lowest
    write_volume(saliency_map_path(sal, "c1", 2), Volume(inverted))
    targets = pd.DataFrame(
        {
            "case_id": ["c1", "c1", "c1"],
            "split": ["test", "test", "val"],
            "z": [1, 2, 0],
            "label": [1, 2, 1],
            "seconds": [0.1, 0.1, 0.1],
        }
    )
    targets.to_csv(sal / "targets.tsv", sep="\t", index=False)


def test_localisation_scores_each_target_slice_against_its_label(tmp_path):
    sal, pre = tmp_path / "saliency", tmp_path / "pre"
    _run_folders(sal, pre)
    table = saliency_localisation(sal, pre, splits=["test"])
    assert tuple(table.columns) == LOCALISATION_COLUMNS
    assert table[["z", "label", "n_target", "n_background"]].values.tolist() == [
        [1, 1, 9, 55],
        [2, 2, 16, 48],
    ]
    assert table["auc"].tolist() == [1.0, 0.0]
    every = saliency_localisation(sal, pre)  # slice 0 has no label-1 pixel: NaN
    assert len(every) == 3 and math.isnan(every.loc[every["z"] == 0, "auc"].item())
    summary = localisation_summary(every)
    assert summary[["label", "n", "mean_auc", "above_chance"]].values.tolist() == [
        [1, 1, 1.0, 1.0],
        [2, 1, 0.0, 0.0],
    ]


def test_the_script_prints_one_row_per_dataset_key_and_label(tmp_path, capsys):
    from saliency_auc import main

    assert main(["--results", str(tmp_path)]) == 2  # no saliency folder
    _run_folders(tmp_path / "saliency" / "ds" / "text", tmp_path / "preprocessed" / "ds")
    assert main(["--results", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "pixel AUC of the saliency maps, split(s) test:"
    assert [line.split() for line in lines[2:]] == [
        ["ds", "text", "1", "1", "1.000", "1.000", "1.000"],
        ["ds", "text", "2", "1", "0.000", "0.000", "0.000"],
    ]
