"""Bootstrap rank intervals (challengeR's aggregate-then-rank) on tables with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medsegflow.plots import plot_ranking
from medsegflow.ranking import ALL_CLASSES, RANKING_COLUMNS, bootstrap_ranks, rank_methods


def _rows(values: dict[str, dict[str, list[float]]], dataset: str = "d") -> pd.DataFrame:
    """Metric rows from {method: {class: [value per case]}} (dsc and hd95_mm = 10 - 10 dsc)."""
    records = []
    for method, classes in values.items():
        for label, (name, per_case) in enumerate(classes.items(), start=1):
            for i, v in enumerate(per_case):
                records.append(
                    {
                        "dataset": dataset,
                        "method": method,
                        "case_id": f"c{i}",
                        "label": label,
                        "label_name": name,
                        "dsc": v,
                        "hd95_mm": 10 - 10 * v,
                    }
                )
    return pd.DataFrame(records)


def test_a_clear_winner_has_a_one_rank_interval():
    rows = _rows(
        {
            "a": {"liver": [0.9, 0.92, 0.88, 0.91]},
            "b": {"liver": [0.5, 0.55, 0.45, 0.52]},
        }
    )
    table = rank_methods(rows, metrics=["dsc", "hd95_mm"], n_boot=200, seed=1)
    assert list(table.columns) == list(RANKING_COLUMNS)
    assert set(table["label_name"]) == {"liver"}  # one class: no "all classes" group
    for metric in ("dsc", "hd95_mm"):  # hd95 is lower-is-better: same order
        sub = table[table["metric"] == metric].set_index("method")
        assert sub.loc["a", "rank"] == 1 and sub.loc["b", "rank"] == 2
        assert (sub.loc["a", "rank_ci_low"], sub.loc["a", "rank_ci_high"]) == (1, 1)
        assert sub.loc["a", "share_first"] == 1.0 and sub.loc["b", "share_first"] == 0.0
        assert sub["kendall_tau"].iloc[0] == pytest.approx(1.0)
    assert table.loc[table["metric"] == "dsc", "mean"].round(4).tolist() == [0.9025, 0.505]


def test_close_methods_overlap_and_nan_cases_are_dropped_for_all():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.9, 30)
    rows = _rows(
        {
            "a": {"liver": list(base + 0.01), "spleen": list(base)},
            "b": {"liver": list(base + rng.normal(0, 0.05, 30)), "spleen": list(base - 0.3)},
            "c": {"liver": [np.nan, *base[1:] - 0.4], "spleen": list(base - 0.5)},
        }
    )
    table = rank_methods(rows, metrics=["dsc"], n_boot=500, seed=3)
    liver = table[table["label_name"] == "liver"].set_index("method")
    assert (liver["n_cases"] == 29).all() and (liver["n_dropped"] == 1).all()
    assert liver.loc["c", "rank"] == 3 and liver.loc["c", "rank_ci_low"] == 3
    # a and b are within noise of each other on the liver: both intervals span 1..2
    assert liver.loc["a", "rank_ci_low"] == 1 and liver.loc["a", "rank_ci_high"] == 2
    assert liver.loc["b", "rank_ci_low"] == 1 and liver.loc["b", "rank_ci_high"] == 2
    assert 0 < liver.loc["a", "share_first"] < 1
    assert liver.loc["a", "share_first"] + liver.loc["b", "share_first"] == pytest.approx(1.0)
    overall = table[table["label_name"] == ALL_CLASSES].set_index("method")
    assert list(overall.sort_values("rank").index) == ["a", "b", "c"]
    assert (overall["n_cases"] == 30).all()  # c0 of c has a NaN in one class: mean of the other
    again = rank_methods(rows, metrics=["dsc"], n_boot=500, seed=3)
    pd.testing.assert_frame_equal(table, again)  # seeded


def test_ties_take_the_best_rank():
    full, boot = bootstrap_ranks(
        np.array([[0.5, 0.5, 0.1], [0.7, 0.7, 0.2]]), higher_is_better=True, n_boot=50, seed=0
    )
    assert full.tolist() == [1, 1, 3]
    assert (boot[:, 0] == 1).all() and (boot[:, 2] == 3).all()


def test_ranking_figure_draws_every_class(tmp_path):
    rows = _rows(
        {
            "a": {"liver": [0.9, 0.8, 0.85], "spleen": [0.7, 0.75, 0.72]},
            "b": {"liver": [0.6, 0.65, 0.9], "spleen": [0.8, 0.7, 0.74]},
        }
    )
    out = tmp_path / "ranking_d.png"
    plot_ranking(rows, dataset="d", n_boot=100, out_png=out)
    image = np.asarray(Image.open(out).convert("L"))
    assert image.shape[1] > 3 * image.shape[0] / 2  # three panels side by side
    assert image.std() > 10  # not blank
    with pytest.raises(ValueError, match="no metric rows for dataset 'x'"):
        plot_ranking(rows, dataset="x", out_png=tmp_path / "x.png")
