"""Ranking stability: each method's rank per dataset with a bootstrap interval over cases.

As challengeR (Wiesenfarth et al., Sci Rep 2021) does for "aggregate then rank": the
methods are ranked by their mean over cases; the cases are resampled with replacement
``n_boot`` times (one generator seeded with the config ``seed``) and the methods re-ranked
on each resample. A method whose interval spans several ranks is not reliably better or
worse than its neighbours on these cases.

Each ranking is over the cases every method of the dataset scored (finite values only;
``n_dropped`` counts the others), so all methods are ranked on the same cases. Rankings
are made per class and for the case-level mean over classes (``label_name`` "all
classes", left out when a dataset has one class). Ties get the best rank of the tie
("min", as challengeR's default). DSC, NSD and the overlap metrics rank higher-is-better;
``hd95_mm`` and ``assd_mm`` lower-is-better.

``ranking.csv`` columns (:data:`RANKING_COLUMNS`): dataset, label_name, metric, method,
mean, rank (on all cases), rank_median, rank_ci_low, rank_ci_high (the ``confidence``
percentile interval of the bootstrap ranks), share_first (share of resamples ranking the
method first), kendall_tau (median Kendall tau between the full ranking and the resampled
ones, one value per group: 1 means every resample kept the order), n_cases, n_dropped,
n_boot.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, rankdata

log = logging.getLogger(__name__)

ALL_CLASSES = "all classes"
LOWER_IS_BETTER = frozenset({"hd95_mm", "assd_mm"})
RANKING_COLUMNS: tuple[str, ...] = (
    "dataset",
    "label_name",
    "metric",
    "method",
    "mean",
    "rank",
    "rank_median",
    "rank_ci_low",
    "rank_ci_high",
    "share_first",
    "kendall_tau",
    "n_cases",
    "n_dropped",
    "n_boot",
)
_CHUNK = 200  # resamples per vectorised step (bounds memory: chunk x cases x methods)


def ranking_groups(rows: pd.DataFrame) -> list[str]:
    """The classes of one dataset's rows, after :data:`ALL_CLASSES` when there are several."""
    if "label" in rows.columns:
        rows = rows.sort_values("label", kind="stable")
    classes = list(dict.fromkeys(rows["label_name"]))
    return classes if len(classes) == 1 else [ALL_CLASSES, *classes]


def score_matrix(
    rows: pd.DataFrame, *, dataset: str, label_name: str, metric: str
) -> tuple[pd.DataFrame, int]:
    """``(cases x methods matrix of complete cases, number of cases dropped)``.

    ``label_name`` :data:`ALL_CLASSES` takes each case's mean over its classes (NaN values
    left out of that mean) before ranking.
    """
    sub = rows[rows["dataset"] == dataset]
    if label_name != ALL_CLASSES:
        sub = sub[sub["label_name"] == label_name]
    wide = sub.pivot_table(
        index="case_id", columns="method", values=metric, aggfunc="mean", dropna=False
    )
    methods = list(dict.fromkeys(sub["method"]))
    wide = wide.reindex(columns=methods)
    complete = wide.dropna(axis=0, how="any")
    return complete, int(len(wide) - len(complete))


def bootstrap_ranks(
    scores: np.ndarray, *, higher_is_better: bool, n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(ranks on all cases (M,), ranks of each resample (n_boot, M))`` of a cases x M matrix."""
    scores = np.asarray(scores, dtype=np.float64)
    sign = -1.0 if higher_is_better else 1.0
    full = rankdata(sign * scores.mean(axis=0), method="min")
    rng = np.random.default_rng(seed)
    n = scores.shape[0]
    boot = np.empty((n_boot, scores.shape[1]), dtype=np.int64)
    for start in range(0, n_boot, _CHUNK):
        size = min(_CHUNK, n_boot - start)
        means = scores[rng.integers(0, n, size=(size, n))].mean(axis=1)
        boot[start : start + size] = rankdata(sign * means, method="min", axis=1)
    return full.astype(np.int64), boot


def _median_tau(full: np.ndarray, boot: np.ndarray) -> float:
    if full.size < 2:
        return float("nan")
    taus = []
    for ranks in boot:
        tau = kendalltau(full, ranks).statistic
        taus.append(1.0 if np.isnan(tau) and np.array_equal(full, ranks) else tau)
    return float(np.nanmedian(taus)) if taus else float("nan")


def rank_group(
    rows: pd.DataFrame,
    *,
    dataset: str,
    label_name: str,
    metric: str,
    n_boot: int,
    seed: int,
    confidence: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ranking rows of one (dataset, class, metric) group, sorted by rank, and its
    bootstrap ranks (one row per resample, one column per method)."""
    matrix, n_dropped = score_matrix(rows, dataset=dataset, label_name=label_name, metric=metric)
    methods = list(matrix.columns)
    if matrix.empty or not methods:
        return pd.DataFrame(columns=list(RANKING_COLUMNS)), pd.DataFrame(columns=methods)
    full, boot = bootstrap_ranks(
        matrix.to_numpy(),
        higher_is_better=metric not in LOWER_IS_BETTER,
        n_boot=n_boot,
        seed=seed,
    )
    alpha = (1.0 - confidence) / 2
    low, median, high = np.quantile(boot, [alpha, 0.5, 1 - alpha], axis=0, method="nearest")
    tau = _median_tau(full, boot)
    means = matrix.mean(axis=0)
    table = pd.DataFrame(
        {
            "dataset": dataset,
            "label_name": label_name,
            "metric": metric,
            "method": methods,
            "mean": means.to_numpy(),
            "rank": full,
            "rank_median": median,
            "rank_ci_low": low,
            "rank_ci_high": high,
            "share_first": (boot == 1).mean(axis=0),
            "kendall_tau": tau,
            "n_cases": len(matrix),
            "n_dropped": n_dropped,
            "n_boot": n_boot,
        },
        columns=list(RANKING_COLUMNS),
    )
    ranked = table.sort_values(["rank", "method"], kind="stable", ignore_index=True)
    return ranked, pd.DataFrame(boot, columns=methods)


def rank_methods(
    rows: pd.DataFrame,
    *,
    metrics: Sequence[str] = ("dsc",),
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """:data:`RANKING_COLUMNS` for every dataset, class (and all classes) and metric."""
    frames = []
    for dataset in dict.fromkeys(rows["dataset"]):
        labels = ranking_groups(rows[rows["dataset"] == dataset])
        for metric in metrics:
            for label_name in labels:
                table, _ = rank_group(
                    rows,
                    dataset=dataset,
                    label_name=label_name,
                    metric=metric,
                    n_boot=n_boot,
                    seed=seed,
                    confidence=confidence,
                )
                frames.append(table)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    out = out.reindex(columns=list(RANKING_COLUMNS))
    log.info(
        "ranked methods of %d datasets on %s with %d resamples",
        rows["dataset"].nunique(),
        ", ".join(metrics),
        n_boot,
    )
    return out
