"""How well saliency maps localise their target: pixel ROC AUC against the reference label.

The AUC of one slice is the probability that a pixel of the target label scores higher
than a pixel outside it (ties count half): 0.5 is chance, 1 is perfect ranking. It
needs no threshold, so it separates "the map does not point at the target" from "the
post-processing chose a bad threshold". Computed per target (case, slice, label) of a
saliency folder (``targets.tsv``) against the cleaned label of the preprocessed dataset.

The background is everything else on the slice, air outside the body included: on CT a
map that only separates body from air already scores well above 0.5, so compare AUCs
between maps of one dataset rather than with 0.5 alone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from medsegflow.datasets.canonical import label_path
from medsegflow.io import read_volume
from medsegflow.saliency.maps import read_saliency_map, read_saliency_targets

LOCALISATION_COLUMNS = ("case_id", "split", "z", "label", "n_target", "n_background", "auc")


def pixel_auc(scores: np.ndarray, target: np.ndarray) -> float:
    """ROC AUC of ``scores`` for the boolean ``target`` (same shape); NaN when either
    class is empty. Mann-Whitney U over average ranks, so ties count half."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    target = np.asarray(target, dtype=bool).ravel()
    if scores.shape != target.shape:
        raise ValueError(f"scores {scores.shape} and target {target.shape} differ in size")
    n_pos = int(target.sum())
    n_neg = target.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    u = ranks[target].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def saliency_localisation(
    saliency_dir: str | os.PathLike,
    preprocessed_dir: str | os.PathLike,
    *,
    splits: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per saliency target (``LOCALISATION_COLUMNS``) of ``splits`` (all when
    None): the target's pixel counts on its slice and the map's pixel AUC there."""
    targets = read_saliency_targets(saliency_dir)
    if splits is not None:
        targets = targets[targets["split"].isin(list(splits))]
    rows = []
    for case_id, group in targets.groupby("case_id", sort=True):
        label_zyx = read_volume(label_path(preprocessed_dir, str(case_id))).array_zyx
        for row in group.itertuples(index=False):
            z, value = int(row.z), int(row.label)
            saliency = read_saliency_map(saliency_dir, str(case_id), value).array_zyx[z]
            target = label_zyx[z] == value
            rows.append(
                {
                    "case_id": str(case_id),
                    "split": row.split,
                    "z": z,
                    "label": value,
                    "n_target": int(target.sum()),
                    "n_background": int(target.size - target.sum()),
                    "auc": pixel_auc(saliency, target),
                }
            )
    return pd.DataFrame(rows, columns=list(LOCALISATION_COLUMNS))


def localisation_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per label: number of targets with both classes, mean and median AUC, and the
    share of targets ranked better than chance (AUC > 0.5)."""
    scored = table.dropna(subset=["auc"])
    return (
        scored.groupby("label")["auc"]
        .agg(
            n="count", mean_auc="mean", median_auc="median", above_chance=lambda a: (a > 0.5).mean()
        )
        .reset_index()
    )
