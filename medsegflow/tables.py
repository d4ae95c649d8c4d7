"""Result tables: collect per-case metric rows, summarise them, compare methods.

Inputs are the per-method CSVs written by the metrics step,
``results/metrics/{dataset}/{method}.csv``: one row per (case, class) with the columns
in :data:`ROW_COLUMNS`. Metric values may be NaN where a metric is undefined (the
metrics module's empty-mask rule, e.g. ``hd95_mm`` when one mask is empty). NaN values
are never averaged silently: :func:`summarise` leaves them out and counts them in
``n_excluded``; :func:`compare_methods` drops the pairs and counts them in ``n_dropped``.

Outputs (``results/tables/``): ``all.csv`` (:func:`collect_metrics`), ``summary.csv``
(:func:`summarise`) and ``stats.csv`` (:func:`compare_methods`), each written with
:func:`write_csv_atomic`.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from medsegflow.io import write_csv_atomic as write_csv_atomic  # the one CSV writer
from medsegflow.metrics import METRIC_DEFINITIONS, METRIC_NAMES

log = logging.getLogger(__name__)

METRICS: tuple[str, ...] = METRIC_NAMES
ROW_COLUMNS: tuple[str, ...] = (
    "dataset",
    "method",
    "case_id",
    "split",
    "label",
    "label_name",
    *METRICS,
    "gt_empty",
    "pred_empty",
    "gt_voxels",
    "pred_voxels",
)
SUMMARY_COLUMNS: tuple[str, ...] = (
    "dataset",
    "method",
    "label_name",
    "metric",
    "mean",
    "std",
    "median",
    "ci_low",
    "ci_high",
    "n",
    "n_excluded",
    "unit",
    "definition",
)
DISTANCE_METRICS = ("nsd", "hd95_mm", "assd_mm")
"""Metrics measured with the spacing: pixel-based where ``distance_unit`` is "px"."""
STATS_COLUMNS: tuple[str, ...] = (
    "dataset",
    "label_name",
    "metric",
    "method_a",
    "method_b",
    "n_pairs",
    "n_dropped",
    "mean_diff",
    "p_value",
    "p_holm",
)
_STR_COLUMNS = ("dataset", "method", "case_id", "split", "label_name")
_BOOL_COLUMNS = ("gt_empty", "pred_empty")
_INT_COLUMNS = ("label", "gt_voxels", "pred_voxels")
_SORT_KEYS = ["dataset", "method", "case_id", "label"]


def _require_columns(df: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing required column(s) {missing}")


def _coerce_bool(series: pd.Series, where: str) -> pd.Series:
    if series.dtype == bool:
        return series
    text = series.astype(str).str.strip().str.lower()
    bad = sorted(set(text[~text.isin(["true", "false"])]))
    if bad:
        raise ValueError(
            f"{where}: column {series.name!r} has non-boolean value(s) {bad[:5]}; "
            "expected True/False"
        )
    return text.eq("true")


def _read_metric_csv(path: str | os.PathLike) -> pd.DataFrame:
    where = os.fspath(path)
    try:
        df = pd.read_csv(path, dtype={c: str for c in _STR_COLUMNS}, keep_default_na=True)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"{where}: cannot read metric table: {err}") from None
    _require_columns(df, ROW_COLUMNS, where)
    for col in _BOOL_COLUMNS:
        df[col] = _coerce_bool(df[col], where)
    for col in _INT_COLUMNS:
        values = pd.to_numeric(df[col], errors="coerce")
        if values.isna().any() or (values % 1 != 0).any():
            raise ValueError(
                f"{where}: column {col!r} must hold integers, got "
                f"{df.loc[values.isna() | (values % 1 != 0), col].iloc[0]!r}"
            )
        df[col] = values.astype(np.int64)
    for col in METRICS:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            raise ValueError(
                f"{where}: column {col!r} has non-numeric value {df.loc[bad, col].iloc[0]!r}"
            )
        df[col] = values.astype(np.float64)
    if df[list(_STR_COLUMNS)].isna().any().any():
        col = df[list(_STR_COLUMNS)].isna().any().idxmax()
        raise ValueError(f"{where}: column {col!r} has empty value(s)")
    extra = [c for c in df.columns if c not in ROW_COLUMNS]
    return df[list(ROW_COLUMNS) + extra]


def collect_metrics(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate per-method metric CSVs into the long table (``all.csv``).

    Each file must hold every column in :data:`ROW_COLUMNS` (extra columns are kept
    after them). Dtypes are fixed: ``dataset, method, case_id, split, label_name`` are
    strings (``case_id`` keeps leading zeros), ``label, gt_voxels, pred_voxels`` int64,
    ``gt_empty, pred_empty`` bool, metrics float64 (NaN where undefined). Rows are sorted
    by ``dataset, method, case_id, label``.

    Raises ValueError naming the file when a column is missing or holds bad values, and
    naming the key when a (dataset, method, case_id, label) row appears twice.
    """
    if not paths:
        raise ValueError("collect_metrics: no metric CSV paths given")
    frames = [_read_metric_csv(p) for p in paths]
    rows = pd.concat(frames, ignore_index=True)
    dup = rows.duplicated(subset=_SORT_KEYS, keep=False)
    if dup.any():
        key = rows.loc[dup, _SORT_KEYS].iloc[0].to_dict()
        raise ValueError(f"duplicate metric row {key} across the {len(paths)} metric CSV(s)")
    rows = rows.sort_values(_SORT_KEYS, kind="stable", ignore_index=True)
    log.info("collected %d metric rows from %d file(s)", len(rows), len(paths))
    return rows


def bootstrap_mean_ci(
    values: np.ndarray, *, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (1D, finite).

    Draws an ``(n_boot, n)`` matrix of case indices with replacement from
    ``np.random.default_rng(seed)`` and takes the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` quantiles of the ``n_boot`` resampled means. A fresh
    generator per call makes each CI depend only on its own values and the seed.
    Returns ``(nan, nan)`` for an empty array; a constant array gives ``(c, c)``.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_boot, values.size))
    shift = np.median(values)  # averaging deviations keeps a constant column exactly constant
    means = shift + (values - shift)[idx].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    # Resampled means of a constant column can differ from it by rounding; clip to the range.
    return float(max(low, values.min())), float(min(high, values.max()))


def _summarise_values(values: np.ndarray, *, n_boot: int, seed: int, confidence: float) -> dict:
    finite = values[~np.isnan(values)]
    n = finite.size
    ci_low, ci_high = bootstrap_mean_ci(finite, n_boot=n_boot, seed=seed, confidence=confidence)
    median = float(np.median(finite)) if n else np.nan
    deviations = finite - median  # same shift as the bootstrap: a constant gives std 0 exactly
    return {
        "mean": median + float(deviations.mean()) if n else np.nan,
        "std": float(deviations.std(ddof=1)) if n >= 2 else np.nan,
        "median": median,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "n": n,
        "n_excluded": int(values.size - n),
    }


def summarise(
    rows: pd.DataFrame,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    metrics: Sequence[str] = METRICS,
) -> pd.DataFrame:
    """Summarise per-case rows: one row per (dataset, method, label_name, metric).

    ``rows`` needs ``dataset, method, label_name`` and the ``metrics`` columns (as from
    :func:`collect_metrics`). Returns :data:`SUMMARY_COLUMNS`: ``n`` counts the cases
    used and ``n_excluded`` the NaN values left out (never averaged). ``std`` uses
    ``ddof=1`` and is NaN when ``n < 2``; ``ci_low, ci_high`` are the percentile bootstrap
    CI of the mean over cases (see :func:`bootstrap_mean_ci`, same seed for every group).
    ``unit`` is "mm" or "px" for the :data:`DISTANCE_METRICS` (from the rows'
    ``distance_unit``: "px" where the dataset's format stores no spacing; "mixed" when a
    group holds both) and "" for the others. ``definition`` states what the metric is
    (:data:`medsegflow.metrics.METRIC_DEFINITIONS`; NSD: DeepMind's surfel surface Dice).
    When every value is NaN, ``n == 0`` and all statistics are NaN. Groups keep the input
    order of datasets and methods, classes by ``label`` when present, metrics in the order
    given.
    """
    if n_boot < 1:
        raise ValueError(f"summarise: n_boot must be >= 1, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"summarise: confidence must be in (0, 1), got {confidence}")
    _require_columns(rows, ["dataset", "method", "label_name", *metrics], "summarise input")
    ordered = (
        rows.sort_values(["dataset", "method", "label"], kind="stable")
        if "label" in rows.columns
        else rows
    )
    records = []
    for (dataset, method, label_name), group in ordered.groupby(
        ["dataset", "method", "label_name"], sort=False
    ):
        for metric in metrics:
            values = group[metric].to_numpy(dtype=np.float64)
            stats = _summarise_values(values, n_boot=n_boot, seed=seed, confidence=confidence)
            records.append(
                {
                    "dataset": dataset,
                    "method": method,
                    "label_name": label_name,
                    "metric": metric,
                    **stats,
                    "unit": _distance_unit(group) if metric in DISTANCE_METRICS else "",
                    "definition": METRIC_DEFINITIONS.get(metric, ""),
                }
            )
    summary = pd.DataFrame.from_records(records, columns=list(SUMMARY_COLUMNS))
    return summary.astype({"n": np.int64, "n_excluded": np.int64})


def mark_smoke_tests(
    summary: pd.DataFrame, methods: Mapping[str, Mapping[str, Any]]
) -> pd.DataFrame:
    """``summary`` with a boolean ``smoke_test`` column after ``method``: True for the
    methods whose config says ``smoke_test: true`` (a row that shows the pipeline runs,
    not what the method can do)."""
    flagged = {name for name, spec in methods.items() if spec.get("smoke_test")}
    out = summary.drop(columns=["smoke_test"], errors="ignore")
    out.insert(list(out.columns).index("method") + 1, "smoke_test", out["method"].isin(flagged))
    return out


def _distance_unit(group: pd.DataFrame) -> str:
    """ "mm"; "px" when every case's spacing was unknown; "mixed" when only some were."""
    if "distance_unit" not in group.columns:
        return "mm"
    units = set(group["distance_unit"].fillna("mm").astype(str))
    return units.pop() if len(units) == 1 else "mixed"


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values; NaN entries stay NaN and do not count in ``m``.

    With the ``m`` finite p-values sorted ascending, ``p_holm[(i)] = max_{j <= i}
    min(1, (m - j + 1) * p[(j)])`` (1-based ``j``), returned in the input order.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    m = finite.size
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def _paired_test(a: np.ndarray, b: np.ndarray) -> tuple[int, float, float]:
    """(n_pairs, mean a - b, two-sided Wilcoxon p) over pairs finite in both."""
    keep = ~(np.isnan(a) | np.isnan(b))
    diff = a[keep] - b[keep]
    n_pairs = int(diff.size)
    mean_diff = float(diff.mean()) if n_pairs else np.nan
    if n_pairs < 2 or np.all(diff == 0):
        return n_pairs, mean_diff, np.nan
    return n_pairs, mean_diff, float(wilcoxon(diff, alternative="two-sided").pvalue)


def _method_pairs(methods: list[str], reference: str | None, where: str) -> list[tuple[str, str]]:
    if reference is None:
        return list(itertools.combinations(methods, 2))
    if reference not in methods:
        raise ValueError(
            f"compare_methods: reference method {reference!r} has no rows for "
            f"{where}; methods there: {methods}"
        )
    return [(m, reference) for m in methods if m != reference]


def _compare_family(
    group: pd.DataFrame, metric: str, *, reference: str | None, where: str
) -> list[dict]:
    dup = group.duplicated(subset=["method", "case_id"], keep=False)
    if dup.any():
        row = group.loc[dup, ["method", "case_id"]].iloc[0].to_dict()
        raise ValueError(f"compare_methods: {where} has more than one row for {row}")
    wide = group.pivot(index="case_id", columns="method", values=metric)
    methods = list(dict.fromkeys(group["method"]))
    records = []
    for method_a, method_b in _method_pairs(methods, reference, where):
        a = wide[method_a].to_numpy(dtype=np.float64)
        b = wide[method_b].to_numpy(dtype=np.float64)
        n_pairs, mean_diff, p_value = _paired_test(a, b)
        n_cases = group.loc[group["method"].isin([method_a, method_b]), "case_id"].nunique()
        records.append(
            {
                "method_a": method_a,
                "method_b": method_b,
                "n_pairs": n_pairs,
                "n_dropped": int(n_cases - n_pairs),
                "mean_diff": mean_diff,
                "p_value": p_value,
            }
        )
    adjusted = holm([r["p_value"] for r in records])
    for record, p_holm in zip(records, adjusted, strict=True):
        record["p_holm"] = float(p_holm)
    return records


def compare_methods(
    rows: pd.DataFrame,
    *,
    metrics: Sequence[str] = ("dsc", "nsd"),
    reference: str | None = None,
) -> pd.DataFrame:
    """Paired two-sided Wilcoxon signed-rank tests between methods (``stats.csv``).

    ``rows`` needs ``dataset, method, case_id, label_name`` and the ``metrics`` columns.
    For each (dataset, label_name, metric) family, compares every pair of methods (in
    input order) when ``reference`` is None, else each method against ``reference``
    (``method_b``). Only cases scored by both methods are paired: a case where either
    value is NaN or missing is dropped and counted in ``n_dropped``. ``mean_diff`` is the
    mean of ``a - b`` over the pairs. ``p_value`` is NaN when ``n_pairs < 2`` or every
    difference is zero (the test is undefined). ``p_holm`` is the Holm-Bonferroni
    adjustment within the family (NaN p-values excluded). Returns :data:`STATS_COLUMNS`.
    """
    _require_columns(
        rows, ["dataset", "method", "case_id", "label_name", *metrics], "compare_methods input"
    )
    records = []
    for (dataset, label_name), group in rows.groupby(["dataset", "label_name"], sort=False):
        for metric in metrics:
            where = f"dataset {dataset!r}, label_name {label_name!r}, metric {metric!r}"
            for record in _compare_family(group, metric, reference=reference, where=where):
                records.append(
                    {"dataset": dataset, "label_name": label_name, "metric": metric, **record}
                )
    stats = pd.DataFrame.from_records(records, columns=list(STATS_COLUMNS))
    return stats.astype({"n_pairs": np.int64, "n_dropped": np.int64})
