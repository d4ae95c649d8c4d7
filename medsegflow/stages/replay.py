"""Convention replay of one method's predictions, and the table of every convention.

The score stage feeds every case it scores to a :class:`ConventionReplay`, which re-scores
it under each configured paper convention (:data:`medsegflow.conventions.CONVENTIONS`)
and aggregates as that paper did. ``results/metrics/{dataset}/{method}_conventions.csv``
holds the aggregated rows of one method (:data:`REPLAY_COLUMNS`; ``label_name``
:data:`ALL_CLASSES` is the convention's own overall number).

:func:`conventions_table` joins them with MedSegFlow's own numbers from ``summary.csv``
(convention ``medsegflow``: the mean over cases per class, NaN left out, and for
:data:`ALL_CLASSES` the mean of the class means) into ``results/tables/conventions.csv``,
whose ``quirks`` column names what makes each convention's numbers differ
(:attr:`medsegflow.conventions.Convention.quirks`). ``error`` names the exception the
official code raises on these predictions (e.g. MedCLIP-SAMv2's ``AssertionError`` on two
empty masks); the convention's numbers are then NaN, as the official run prints none.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from medsegflow.conventions import CONVENTIONS, CaseResult, SoftOutputs
from medsegflow.errors import ConfigError
from medsegflow.metrics import SurfaceCache
from medsegflow.ranking import ALL_CLASSES
from medsegflow.tables import write_csv_atomic

OWN = "medsegflow"
REPLAY_COLUMNS: tuple[str, ...] = (
    "dataset",
    "method",
    "label",
    "label_name",
    "convention",
    "dsc",
    "nsd",
    "hd95",
    "n_cases",
    "n_excluded",
    "error",
)
"""``hd95`` is in the convention's unit (SAMed: voxels); NaN where it defines none."""
TABLE_COLUMNS: tuple[str, ...] = (*REPLAY_COLUMNS, "quirks")
"""``conventions.csv``: :data:`REPLAY_COLUMNS` and the convention's named quirks."""
OWN_QUIRKS = (
    "MedSegFlow: every label of the label map per case; empty-mask rule of medsegflow.metrics; "
    "NSD = DeepMind surfel surface Dice with the physical spacing, 2D images scored in 2D"
)
_METRICS = ("dsc", "nsd", "hd95")


def check_conventions(names: Sequence[str], *, key: str = "metrics.conventions") -> list[str]:
    """``names`` if each is a registered convention; :class:`ConfigError` naming ``key``."""
    unknown = [n for n in names if n not in CONVENTIONS]
    if unknown:
        raise ConfigError(f"{key}: unknown conventions {unknown}; known: {sorted(CONVENTIONS)}")
    return list(names)


class ConventionReplay:
    """Per-case results of every convention for one (dataset, method), then their rows."""

    def __init__(self, names: Sequence[str], label_names: Mapping[int, str]) -> None:
        self.names = check_conventions(names)
        self.label_names = {int(v): str(n) for v, n in label_names.items() if int(v) != 0}
        self.classes = sorted(self.label_names)
        self.results: dict[str, list[CaseResult]] = {n: [] for n in self.names}

    def add(
        self,
        pred_zyx: np.ndarray,
        gt_zyx: np.ndarray,
        spacing_zyx: Sequence[float],
        prob_zyx: SoftOutputs | None = None,
        cache: SurfaceCache | None = None,
    ) -> None:
        """Score one case under every convention (``prob_zyx``: soft outputs, for Med-SA:
        ``{label: (Z, Y, X) probabilities}`` or ``(C, Z, Y, X)``, see
        :func:`medsegflow.conventions.medsa_case`). ``cache``: the case's
        :class:`~medsegflow.metrics.SurfaceCache`, shared by the conventions (and by the
        stage's :func:`~medsegflow.metrics.compute_metrics` of the same arrays); a new one
        per call without it."""
        cache = cache if cache is not None else SurfaceCache()
        for name in self.names:
            case = CONVENTIONS[name].case
            self.results[name].append(
                case(
                    pred_zyx,
                    gt_zyx,
                    tuple(spacing_zyx),
                    self.classes,
                    prob_zyx=prob_zyx,
                    cache=cache,
                )
            )

    def rows(self, *, dataset: str, method: str) -> pd.DataFrame:
        """:data:`REPLAY_COLUMNS`: per class and overall, for every convention."""
        records = []
        for name in self.names:
            if not self.results[name]:
                continue
            agg = CONVENTIONS[name].aggregate(self.results[name])
            common = {
                "dataset": dataset,
                "method": method,
                "convention": name,
                "n_cases": int(agg["n_cases"]),
                "n_excluded": int(agg["n_excluded"]),
                "error": str(agg.get("error", "")),
            }
            for label in self.classes:
                scores = agg["per_class"].get(label, {})
                records.append(
                    {
                        **common,
                        "label": label,
                        "label_name": self.label_names[label],
                        **{m: float(scores.get(m, np.nan)) for m in _METRICS},
                    }
                )
            overall = agg["overall"]
            records.append(
                {
                    **common,
                    "label": 0,
                    "label_name": ALL_CLASSES,
                    **{m: float(overall.get(m, np.nan)) for m in _METRICS},
                }
            )
        return pd.DataFrame.from_records(records, columns=list(REPLAY_COLUMNS))


def own_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """MedSegFlow's own numbers from ``summary.csv`` in :data:`REPLAY_COLUMNS`."""
    metric_of = {"dsc": "dsc", "nsd": "nsd", "hd95": "hd95_mm"}
    records = []
    for (dataset, method), group in summary.groupby(["dataset", "method"], sort=False):
        classes = list(dict.fromkeys(group["label_name"]))
        per_class = {}
        for label_name in classes:
            sub = group[group["label_name"] == label_name].set_index("metric")
            per_class[label_name] = {
                m: float(sub.loc[col, "mean"]) if col in sub.index else np.nan
                for m, col in metric_of.items()
            }
            n = int(sub.loc["dsc", "n"]) if "dsc" in sub.index else 0
            excluded = int(sub.loc["dsc", "n_excluded"]) if "dsc" in sub.index else 0
            per_class[label_name]["n"] = (n, excluded)
        for index, label_name in enumerate(classes, start=1):
            n, excluded = per_class[label_name].pop("n")
            records.append(
                {
                    "dataset": dataset,
                    "method": method,
                    "label": index,
                    "label_name": label_name,
                    "convention": OWN,
                    **per_class[label_name],
                    "n_cases": n,
                    "n_excluded": excluded,
                    "error": "",
                }
            )
        means = {m: np.nanmean([per_class[c][m] for c in classes]) for m in _METRICS}
        records.append(
            {
                "dataset": dataset,
                "method": method,
                "label": 0,
                "label_name": ALL_CLASSES,
                "convention": OWN,
                **{m: float(v) for m, v in means.items()},
                "n_cases": max((r["n_cases"] for r in records[-len(classes) :]), default=0),
                "n_excluded": 0,
                "error": "",
            }
        )
    return pd.DataFrame.from_records(records, columns=list(REPLAY_COLUMNS))


def conventions_table(
    replay_csvs: Sequence[str | os.PathLike], summary: pd.DataFrame
) -> pd.DataFrame:
    """``conventions.csv``: MedSegFlow's own rows, then every replayed convention's."""
    frames = [own_rows(summary)]
    frames += [
        pd.read_csv(p, dtype={"label_name": str, "error": str}, keep_default_na=False)
        for p in replay_csvs
    ]
    table = pd.concat(frames, ignore_index=True).reindex(columns=list(REPLAY_COLUMNS))
    for column in ("dsc", "nsd", "hd95"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    table["error"] = table["error"].fillna("")
    quirks = {name: "; ".join(c.quirks) for name, c in CONVENTIONS.items()} | {OWN: OWN_QUIRKS}
    table["quirks"] = table["convention"].map(quirks).fillna("")
    order = {name: i for i, name in enumerate([OWN, *CONVENTIONS])}
    table["_order"] = table["convention"].map(order)
    table = table.sort_values(["dataset", "method", "_order", "label"], kind="stable")
    return table.drop(columns="_order").reset_index(drop=True)


def write_conventions_table(
    replay_csvs: Sequence[str | os.PathLike], summary_csv: str | os.PathLike, out_csv
) -> pd.DataFrame:
    table = conventions_table(replay_csvs, pd.read_csv(summary_csv))
    write_csv_atomic(table, out_csv)
    return table
