from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from medsegflow.stages.score import distance_units
from medsegflow.tables import (
    METRICS,
    ROW_COLUMNS,
    STATS_COLUMNS,
    SUMMARY_COLUMNS,
    bootstrap_mean_ci,
    collect_metrics,
    compare_methods,
    holm,
    mark_smoke_tests,
    summarise,
    write_csv_atomic,
)


def make_rows(
    dsc_by_method: dict[str, list[float]], *, dataset: str = "ct", label_name: str = "liver"
) -> pd.DataFrame:
    """Per-case rows with the given DSC per method (case i gets case_id f"{i:03d}")."""
    records = []
    for method, values in dsc_by_method.items():
        for i, dsc in enumerate(values):
            record = dict.fromkeys(METRICS, 0.5)
            record.update(
                dataset=dataset,
                method=method,
                case_id=f"{i:03d}",
                split="test",
                label=1,
                label_name=label_name,
                dsc=dsc,
                gt_empty=False,
                pred_empty=False,
                gt_voxels=10,
                pred_voxels=9,
            )
            records.append(record)
    return pd.DataFrame.from_records(records, columns=list(ROW_COLUMNS))


def row_for(summary: pd.DataFrame, *, method: str = "a", metric: str = "dsc") -> pd.Series:
    hit = summary[(summary["method"] == method) & (summary["metric"] == metric)]
    assert len(hit) == 1
    return hit.iloc[0]


# --------------------------------------------------------------------------- summarise


def test_summarise_exact_statistics_and_nan_counts():
    rows = make_rows({"a": [0.2, 0.4, 0.6, np.nan]})
    summary = summarise(rows, n_boot=200)
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    assert len(summary) == len(METRICS)
    dsc = row_for(summary)
    assert dsc["mean"] == pytest.approx(0.4)
    assert dsc["median"] == pytest.approx(0.4)
    assert dsc["std"] == pytest.approx(0.2)  # ddof=1: sqrt((0.04 + 0 + 0.04) / 2)
    assert (dsc["n"], dsc["n_excluded"]) == (3, 1)
    assert 0.2 <= dsc["ci_low"] <= dsc["mean"] <= dsc["ci_high"] <= 0.6


def test_summary_unit_flags_pixel_distances(tmp_path):
    rows = make_rows({"a": [0.2, 0.4, 0.6], "b": [0.1, 0.2, 0.3]})
    rows["distance_unit"] = ["px"] * 3 + ["mm", "px", "mm"]
    summary = summarise(rows, n_boot=10)
    assert row_for(summary, method="a", metric="hd95_mm")["unit"] == "px"
    assert row_for(summary, method="a", metric="nsd")["unit"] == "px"
    assert row_for(summary, method="b", metric="assd_mm")["unit"] == "mixed"
    assert row_for(summary, method="a", metric="dsc")["unit"] == ""
    without = summarise(rows.drop(columns="distance_unit"), n_boot=10)
    assert row_for(without, metric="hd95_mm")["unit"] == "mm"  # tables written before the column
    # the score stage takes the unit from the canonical cases.tsv of the dataset
    data, pre = tmp_path / "data" / "ds", tmp_path / "preprocessed" / "ds"
    data.mkdir(parents=True)
    pre.mkdir(parents=True)
    pd.DataFrame(
        {
            "case_id": ["001", "002"],
            "split": "test",
            "modality": "US",
            "spacing_xyz_mm": "1,1,1",
            "size_xyz": "4,4,1",
            "caption": "",
            "spacing_known": [True, False],
        }
    ).to_csv(data / "cases.tsv", sep="\t", index=False)
    assert distance_units(pre / "manifest.tsv") == {"001": "mm", "002": "px"}


def test_summarise_all_nan_and_single_value():
    rows = pd.concat([make_rows({"a": [np.nan, np.nan]}), make_rows({"b": [0.7]})])
    summary = summarise(rows, n_boot=50)
    empty = row_for(summary, method="a")
    assert (empty["n"], empty["n_excluded"]) == (0, 2)
    assert all(math.isnan(empty[c]) for c in ("mean", "std", "median", "ci_low", "ci_high"))
    single = row_for(summary, method="b")
    assert single["mean"] == pytest.approx(0.7)
    assert math.isnan(single["std"])
    assert (single["ci_low"], single["ci_high"]) == (pytest.approx(0.7), pytest.approx(0.7))


def test_bootstrap_ci_of_constant_column_is_the_constant():
    low, high = bootstrap_mean_ci(np.full(17, 0.1), n_boot=300, seed=3)
    assert (low, high) == (0.1, 0.1)
    summary = summarise(make_rows({"a": [0.1] * 17}), n_boot=300)
    dsc = row_for(summary)
    assert (dsc["mean"], dsc["ci_low"], dsc["ci_high"], dsc["std"]) == (0.1, 0.1, 0.1, 0.0)


def test_ci_contains_mean_and_shrinks_with_more_cases():
    rng = np.random.default_rng(42)
    small = rng.normal(0.7, 0.1, 10)
    large = rng.normal(0.7, 0.1, 400)
    low_s, high_s = bootstrap_mean_ci(small, n_boot=1000, seed=0)
    low_l, high_l = bootstrap_mean_ci(large, n_boot=1000, seed=0)
    assert low_s < small.mean() < high_s
    assert low_l < large.mean() < high_l
    assert (high_l - low_l) < 0.5 * (high_s - low_s)
    # A 95% interval of the mean of N(0.7, 0.1) with 400 cases is about +-1.96 * 0.005.
    assert (high_l - low_l) == pytest.approx(2 * 1.96 * 0.1 / 20, rel=0.2)


def test_bootstrap_is_seeded():
    values = np.random.default_rng(0).uniform(size=30)
    assert bootstrap_mean_ci(values, seed=5) == bootstrap_mean_ci(values, seed=5)
    assert bootstrap_mean_ci(values, seed=5) != bootstrap_mean_ci(values, seed=6)
    rows = make_rows({"a": list(values)})
    pd.testing.assert_frame_equal(summarise(rows, seed=1), summarise(rows, seed=1))


def test_summarise_rejects_bad_arguments():
    rows = make_rows({"a": [0.5]})
    with pytest.raises(ValueError, match="confidence"):
        summarise(rows, confidence=1.5)
    with pytest.raises(ValueError, match="nsd"):
        summarise(rows.drop(columns=["nsd"]))


# --------------------------------------------------------------------------- compare_methods


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.2, np.nan, 0.9]), [0.4, np.nan, 0.9])
    np.testing.assert_allclose(holm([0.6, 0.5]), [1.0, 1.0])


def test_compare_methods_one_method_always_better():
    rng = np.random.default_rng(7)
    base = rng.uniform(0.4, 0.8, 15)
    rows = make_rows({"good": list(base + 0.1 + rng.uniform(0, 0.05, 15)), "bad": list(base)})
    stats = compare_methods(rows, metrics=("dsc",))
    assert list(stats.columns) == list(STATS_COLUMNS)
    (rec,) = stats.itertuples(index=False)
    assert (rec.method_a, rec.method_b, rec.n_pairs, rec.n_dropped) == ("good", "bad", 15, 0)
    assert 0.1 < rec.mean_diff < 0.15
    assert rec.p_value == pytest.approx(2 / 2**15)  # exact test, all 15 differences positive
    flipped = compare_methods(rows, metrics=("dsc",), reference="good").iloc[0]
    assert (flipped["method_a"], flipped["method_b"]) == ("bad", "good")
    assert flipped["mean_diff"] == pytest.approx(-rec.mean_diff)


def test_compare_methods_exact_p_values_and_holm_family():
    ref = np.array([0.50, 0.52, 0.54, 0.56, 0.58])
    steps = np.array([0.01, 0.02, 0.03, 0.04, 0.05])
    signs = {"m1": [1, 1, 1, 1, 1], "m2": [-1, 1, 1, 1, 1], "m3": [-1, -1, 1, 1, 1]}
    methods = {"ref": list(ref), **{m: list(ref + steps * np.array(s)) for m, s in signs.items()}}
    stats = compare_methods(make_rows(methods), metrics=("dsc",), reference="ref")
    assert list(stats["method_b"]) == ["ref"] * 3
    # Exact two-sided p = 2 * #{rank subsets with sum <= W-} / 2**5 for W- = 0, 1, 3.
    np.testing.assert_allclose(stats["p_value"], [2 / 32, 4 / 32, 10 / 32])
    np.testing.assert_allclose(stats["p_holm"], [3 * 2 / 32, 2 * 4 / 32, 10 / 32])


def test_compare_methods_drops_and_counts_nan_pairs():
    rows = make_rows({"a": [0.9, 0.8, np.nan, 0.7, 0.6], "b": [0.5, 0.4, 0.3, 0.2, 0.1]})
    rows = rows[~((rows["method"] == "a") & (rows["case_id"] == "004"))]  # missing row
    rec = compare_methods(rows, metrics=("dsc",)).iloc[0]
    assert (rec["n_pairs"], rec["n_dropped"]) == (3, 2)
    assert rec["mean_diff"] == pytest.approx((0.4 + 0.4 + 0.5) / 3)  # cases 000, 001, 003


def test_compare_methods_undefined_tests_give_nan():
    same = compare_methods(
        make_rows({"a": [0.5, 0.6, 0.7], "b": [0.5, 0.6, 0.7]}), metrics=("dsc",)
    ).iloc[0]
    assert same["n_pairs"] == 3 and same["mean_diff"] == 0.0
    assert math.isnan(same["p_value"]) and math.isnan(same["p_holm"])
    one = compare_methods(make_rows({"a": [0.9, np.nan], "b": [0.1, 0.2]}), metrics=("dsc",)).iloc[
        0
    ]
    assert one["n_pairs"] == 1 and math.isnan(one["p_value"])


def test_compare_methods_unknown_reference():
    with pytest.raises(ValueError, match="'nnunet'"):
        compare_methods(make_rows({"a": [0.5], "b": [0.4]}), reference="nnunet")


# --------------------------------------------------------------------------- collect / write


def test_collect_metrics_round_trip_sorted_and_typed(tmp_path):
    first = make_rows({"sam": [0.5, np.nan]}, dataset="us")
    second = make_rows({"nnunet": [0.9, 0.8]}, dataset="ct")
    paths = [tmp_path / "us_sam.csv", tmp_path / "ct_nnunet.csv"]
    write_csv_atomic(first, paths[0])
    write_csv_atomic(second, paths[1])
    rows = collect_metrics(paths)
    assert list(rows.columns) == list(ROW_COLUMNS)
    assert list(rows["dataset"]) == ["ct", "ct", "us", "us"]
    assert list(rows["case_id"]) == ["000", "001", "000", "001"]
    assert rows["gt_empty"].dtype == bool and rows["label"].dtype == np.int64
    assert math.isnan(rows["dsc"].iloc[3])
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_collect_metrics_names_file_and_missing_columns(tmp_path):
    good, bad = tmp_path / "good.csv", tmp_path / "broken_method.csv"
    make_rows({"a": [0.5]}).to_csv(good, index=False)
    make_rows({"b": [0.5]}).drop(columns=["hd95_mm", "split"]).to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"broken_method\.csv.*'split'.*'hd95_mm'"):
        collect_metrics([good, bad])


def test_collect_metrics_rejects_duplicates_and_bad_booleans(tmp_path):
    path = tmp_path / "m.csv"
    make_rows({"a": [0.5]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="duplicate"):
        collect_metrics([path, path])
    rows = make_rows({"a": [0.5]})
    rows["gt_empty"] = "maybe"
    rows.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"m\.csv.*gt_empty"):
        collect_metrics([path])


def test_smoke_test_rows_are_flagged_from_the_method_config():
    summary = summarise(make_rows({"a": [0.2, 0.4], "b": [0.5, 0.7]}), n_boot=100)
    methods = {"a": {"family": "nnunet", "smoke_test": True}, "b": {"family": "sam"}}
    marked = mark_smoke_tests(summary, methods)
    columns = list(SUMMARY_COLUMNS)
    assert list(marked.columns) == [*columns[:2], "smoke_test", *columns[2:]]
    assert marked.loc[marked["method"] == "a", "smoke_test"].all()
    assert not marked.loc[marked["method"] == "b", "smoke_test"].any()
    again = mark_smoke_tests(marked, {"b": {"smoke_test": True}})  # replaced, not added
    assert list(again.columns) == list(marked.columns)
    assert again.loc[again["method"] == "b", "smoke_test"].all()


@pytest.mark.parametrize(
    "method",
    [
        {"family": "classical", "algorithm": "otsu", "prompts": "p"},
        {"family": "sam", "model": "m", "prompts": "p"},
        {"family": "nnunet"},
    ],
)
def test_methods_take_the_smoke_test_flag(method):
    from medsegflow.errors import ConfigError
    from medsegflow.families.registry import complete_method

    assert complete_method(method, "m")["smoke_test"] is False
    assert complete_method({**method, "smoke_test": True}, "m")["smoke_test"] is True
    with pytest.raises(ConfigError, match=r"methods\.m\.smoke_test"):
        complete_method({**method, "smoke_test": "yes"}, "m")
