"""The score stage's convention replay: rows per convention and the joined table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from medsegflow.errors import ConfigError
from medsegflow.ranking import ALL_CLASSES
from medsegflow.stages.replay import (
    OWN,
    REPLAY_COLUMNS,
    ConventionReplay,
    check_conventions,
    conventions_table,
)
from medsegflow.tables import summarise


def _cases():
    """Case 1: liver predicted well, spleen absent from both. Case 2: spleen only in the
    prediction (GT empty)."""
    gt1 = np.zeros((1, 12, 12), np.uint8)
    gt1[0, 2:8, 2:8] = 1
    pred1 = gt1.copy()
    pred1[0, 2:4, 2:8] = 0  # 24 of 36 pixels: DSC 48/60 = 0.8
    gt2 = np.zeros((1, 12, 12), np.uint8)
    gt2[0, 1:5, 1:5] = 1
    pred2 = gt2.copy()
    pred2[0, 8:11, 8:11] = 2
    return [(pred1, gt1), (pred2, gt2)]


def test_replay_rows_follow_each_papers_empty_mask_rule():
    replay = ConventionReplay(["samed", "sam_med3d"], {0: "background", 1: "liver", 2: "spleen"})
    for pred, gt in _cases():
        replay.add(pred, gt, (1.0, 0.5, 0.5))
    rows = replay.rows(dataset="d", method="m")
    assert list(rows.columns) == list(REPLAY_COLUMNS)
    table = rows.set_index(["convention", "label_name"])
    # liver: 0.8 on case 1, 1.0 on case 2 under both conventions
    assert table.loc[("samed", "liver"), "dsc"] == pytest.approx(0.9)
    assert table.loc[("sam_med3d", "liver"), "dsc"] == pytest.approx(0.9)
    # spleen: SAMed scores both-empty (case 1) 0 and prediction-without-GT (case 2) 1
    assert table.loc[("samed", "spleen"), "dsc"] == pytest.approx(0.5)
    # SAM-Med3D scores only the labels present in each GT (its default): no spleen value
    assert math.isnan(table.loc[("sam_med3d", "spleen"), "dsc"])
    assert (rows["error"] == "").all()
    assert math.isnan(table.loc[("samed", "spleen"), "nsd"])  # SAMed has no NSD
    assert set(rows["label_name"]) == {"liver", "spleen", ALL_CLASSES}
    assert (rows["n_cases"] == 2).all()


def test_conventions_table_puts_medsegflow_first_with_its_own_numbers(tmp_path):
    records = []
    for case, dsc in (("a", 0.6), ("b", 0.8)):
        records.append(
            {
                "dataset": "d",
                "method": "m",
                "case_id": case,
                "split": "test",
                "label": 1,
                "label_name": "liver",
                "dsc": dsc,
                "nsd": 0.5,
                "hd95_mm": 3.0,
                "iou": 0.5,
                "assd_mm": 1.0,
                "precision": 1.0,
                "recall": 1.0,
                "specificity": 1.0,
                "accuracy": 1.0,
            }
        )
    summary = summarise(pd.DataFrame(records), n_boot=100)
    replay = ConventionReplay(["samed"], {1: "liver"})
    for pred, gt in _cases()[:1]:
        replay.add(pred, gt, (1.0, 1.0, 1.0))
    path = tmp_path / "m_conventions.csv"
    replay.rows(dataset="d", method="m").to_csv(path, index=False)
    table = conventions_table([path], summary)
    assert list(dict.fromkeys(table["convention"])) == [OWN, "samed"]
    own = table[(table["convention"] == OWN) & (table["label_name"] == "liver")].iloc[0]
    assert own["dsc"] == pytest.approx(0.7) and own["hd95"] == pytest.approx(3.0)
    assert own["n_cases"] == 2
    assert table[(table["convention"] == "samed")]["dsc"].iloc[0] == pytest.approx(0.8)


def test_official_errors_and_quirks_reach_the_table(tmp_path):
    """Two empty masks stop MedCLIP-SAMv2's evaluation (AssertionError): the replay reports
    the error with no numbers; every convention's row names its quirks."""
    replay = ConventionReplay(["medclip_samv2", "samed"], {1: "lesion"})
    empty = np.zeros((1, 12, 12), np.uint8)
    for pred, gt in [*_cases()[:1], (empty, empty)]:
        replay.add(pred, gt, (1.0, 1.0, 1.0))
    path = tmp_path / "m_conventions.csv"
    replay.rows(dataset="d", method="m").to_csv(path, index=False)
    summary = pd.DataFrame(columns=["dataset", "method", "label_name", "metric", "mean"])
    table = conventions_table([path], summary).set_index(["convention", "label_name"])
    medclip = table.loc[("medclip_samv2", ALL_CLASSES)]
    assert medclip["error"] == "AssertionError" and math.isnan(medclip["dsc"])
    assert "two empty masks" in medclip["quirks"]
    samed = table.loc[("samed", ALL_CLASSES)]
    assert samed["error"] == "" and samed["dsc"] == pytest.approx(0.4)  # 0.8 and 0 (both empty)
    assert "Dice 1" in samed["quirks"]


def test_unknown_convention_names_the_key():
    with pytest.raises(ConfigError, match=r"metrics\.conventions: unknown conventions \['x'\]"):
        check_conventions(["samed", "x"])
