"""The interactive protocol's outputs: the prediction after every click, scored per click.

The CVPR 2025 interactive 3D challenge (``CVPR25_iter_eval.py``) scores an initial box and
then 5 corrective clicks, each at the EDT maximum of the largest error component
(:mod:`medsegflow.prompts.clicks`), with DSC and NSD after every step and the area under
each curve. Here:

- an interactive prediction job writes, beside its final label volume, every step's label
  volume: ``{predictions}/clicks/{case_id}.npz`` (:func:`write_click_volumes`), with the
  clicks themselves (``z, y, x`` original voxel indices, positive or negative, per label)
  so that what the simulated user did is saved like every other prompt;
- :func:`medsegflow.stages.clicks.score_clicks` scores each step with the project's one
  metric implementation (:func:`medsegflow.stages.score.score_case`) into
  ``results/metrics/{dataset}/{method}_clicks.csv`` (:data:`CLICK_COLUMNS`): one row per
  (case, class, click), ``click`` counting from 1 (a method whose first step is a box has
  it as click 0), with ``gt_empty`` of the class;
- :func:`clicks_tables` applies the challenge's rules and averages over cases:
  the NSD of a step is 0 when that step's DSC, the mean over the classes present in the
  reference, is <= 0.2 (:data:`medsegflow.conventions.CVPR_NSD_MIN_DSC`; classes absent
  from the reference are not scored); curves per (dataset, method, class, click)
  (``results/tables/clicks.csv``); per case the challenge's ``DSC_AUC`` / ``NSD_AUC``, the
  trapezoid over the last 5 click steps only, the box step (click 0) excluded, at most 4
  (:func:`medsegflow.conventions.cvpr25_auc`), averaged over cases
  (``results/tables/clicks_auc.csv``, :data:`AUC_COLUMNS`).
"""

from __future__ import annotations

import logging
import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medsegflow.errors import InputError
from medsegflow.io import atomic_path

log = logging.getLogger(__name__)

CLICKS_DIR = "clicks"
CLICK_TABLE_COLUMNS = ("label", "click", "z", "y", "x", "positive")
"""The clicks of one case: per label value, click number (1-based) and original voxel."""
CLICK_COLUMNS = (
    "dataset",
    "method",
    "case_id",
    "label",
    "label_name",
    "click",
    "dsc",
    "nsd",
    "distance_unit",
    "gt_empty",
)
CURVE_COLUMNS = ("dataset", "method", "label_name", "click", "dsc", "nsd", "n_cases")
AUC_COLUMNS = (
    "dataset",
    "method",
    "label_name",
    "n_clicks",
    "dsc_auc",
    "nsd_auc",
    "dsc_first",
    "dsc_final",
    "nsd_final",
    "n_cases",
)
ALL_CLASSES = "all classes"


def click_volumes_path(out_dir: str | os.PathLike, case_id: str) -> Path:
    return Path(out_dir) / CLICKS_DIR / f"{case_id}.npz"


def write_click_volumes(
    path: str | os.PathLike, labels_kzyx: np.ndarray, clicks: pd.DataFrame, *, first_click: int
) -> None:
    """Save the label volume after each step (``(K, Z, Y, X)`` integers, step ``k`` is click
    ``first_click + k``) and the clicks table (:data:`CLICK_TABLE_COLUMNS`), atomically."""
    labels_kzyx = np.asarray(labels_kzyx)
    if labels_kzyx.ndim != 4 or not np.issubdtype(labels_kzyx.dtype, np.integer):
        raise ValueError(
            f"{path}: need integer (K, Z, Y, X) label volumes, got {labels_kzyx.shape}"
        )
    table = clicks.reindex(columns=list(CLICK_TABLE_COLUMNS)).to_numpy(dtype=np.int64)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(
            handle, labels=labels_kzyx, clicks=table, first_click=np.int64(first_click)
        )


def read_click_volumes(
    path: str | os.PathLike, shape_zyx: tuple[int, ...]
) -> tuple[np.ndarray, pd.DataFrame, int]:
    """``(labels (K, Z, Y, X), clicks table, first click number)`` of a
    :func:`write_click_volumes` file; :class:`InputError` naming it when unreadable or not
    of the prediction's ``shape_zyx``."""
    try:
        if not zipfile.is_zipfile(path):
            raise ValueError("not an .npz archive")
        with np.load(path, allow_pickle=False) as data:
            labels, table, first = data["labels"], data["clicks"], int(data["first_click"])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise InputError(f"{path}: unreadable click file ({err})") from None
    if labels.ndim != 4 or labels.shape[1:] != tuple(shape_zyx) or not len(labels):
        raise InputError(
            f"{path}: per-click labels of shape {labels.shape}, expected (K, Z, Y, X) with "
            f"(Z, Y, X) = {tuple(shape_zyx)}, the prediction's shape"
        )
    clicks = pd.DataFrame(table.reshape(-1, len(CLICK_TABLE_COLUMNS)), columns=CLICK_TABLE_COLUMNS)
    return labels, clicks, first


def curve_auc(values: Sequence[float]) -> float:
    """Area under a per-click curve (clicks 1..N in order): the CVPR25 trapezoid with unit
    steps over the last 5 values (:func:`medsegflow.conventions.cvpr25_auc`)."""
    from medsegflow.conventions import cvpr25_auc  # scoring only: prediction jobs skip it

    return cvpr25_auc(values)


_STEP = ["dataset", "method", "case_id", "click"]


def gate_nsd(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with the CVPR25 rule applied: per step (case, click), classes whose reference
    is empty (``gt_empty``, when the column is there) are not scored (dropped), and the NSD
    of every class is 0.0 when the step's DSC, the mean over its scored classes, is <= 0.2
    (NaN included)."""
    if "gt_empty" in rows.columns:
        rows = rows[~rows["gt_empty"].astype(str).str.lower().isin(["true", "1"])]
    step_dsc = rows.groupby(_STEP, sort=False)["dsc"].transform("mean")
    from medsegflow.conventions import CVPR_NSD_MIN_DSC

    return rows.assign(nsd=rows["nsd"].where(step_dsc > CVPR_NSD_MIN_DSC, 0.0))


def _with_all_classes(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` plus, per (case, click), the mean over classes as :data:`ALL_CLASSES`."""
    means = (
        rows.groupby(_STEP, sort=False)[["dsc", "nsd"]]
        .mean()
        .reset_index()
        .assign(label=0, label_name=ALL_CLASSES)
    )
    return pd.concat([rows, means], ignore_index=True)


def clicks_tables(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(curves, auc)`` under the CVPR25 rules (:func:`gate_nsd`): :data:`CURVE_COLUMNS`
    means over cases per click, and :data:`AUC_COLUMNS` means over cases of each case's AUC
    over its click steps (:func:`curve_auc`; NaN values: a class absent from a case,
    skipped). One class gives no "all classes" rows."""
    if not rows.empty:
        rows = gate_nsd(rows)
    if rows.empty:
        return pd.DataFrame(columns=list(CURVE_COLUMNS)), pd.DataFrame(columns=list(AUC_COLUMNS))
    several = rows.groupby(["dataset", "method"])["label_name"].transform("nunique") > 1
    rows = pd.concat([rows[~several], _with_all_classes(rows[several])], ignore_index=True)
    keys = ["dataset", "method", "label_name"]
    curves = (
        rows.groupby([*keys, "click"], sort=False)
        .agg(dsc=("dsc", "mean"), nsd=("nsd", "mean"), n_cases=("case_id", "nunique"))
        .reset_index()
    )
    clicked = rows[rows["click"] >= 1].sort_values("click", kind="stable")
    per_case = []
    for (dataset, method, label_name, case_id), group in clicked.groupby(
        [*keys, "case_id"], sort=False
    ):
        if group["dsc"].isna().all():
            continue
        per_case.append(
            {
                "dataset": dataset,
                "method": method,
                "label_name": label_name,
                "case_id": case_id,
                "n_clicks": len(group),
                "dsc_auc": curve_auc(group["dsc"]),
                "nsd_auc": curve_auc(group["nsd"]),
                "dsc_first": float(group["dsc"].iloc[0]),
                "dsc_final": float(group["dsc"].iloc[-1]),
                "nsd_final": float(group["nsd"].iloc[-1]),
            }
        )
    per_case = pd.DataFrame(per_case)
    if per_case.empty:
        return curves.reindex(columns=list(CURVE_COLUMNS)), pd.DataFrame(columns=list(AUC_COLUMNS))
    auc = (
        per_case.groupby(keys, sort=False)
        .agg(
            n_clicks=("n_clicks", "max"),
            dsc_auc=("dsc_auc", "mean"),
            nsd_auc=("nsd_auc", "mean"),
            dsc_first=("dsc_first", "mean"),
            dsc_final=("dsc_final", "mean"),
            nsd_final=("nsd_final", "mean"),
            n_cases=("case_id", "nunique"),
        )
        .reset_index()
    )
    return curves.reindex(columns=list(CURVE_COLUMNS)), auc.reindex(columns=list(AUC_COLUMNS))


def write_clicks_tables(
    csvs: Sequence[str | os.PathLike], curves_csv: str | os.PathLike, auc_csv: str | os.PathLike
) -> tuple[pd.DataFrame, pd.DataFrame]:
    from medsegflow.tables import write_csv_atomic

    frames = [pd.read_csv(p, dtype={"case_id": str, "label_name": str}) for p in csvs]
    for path, frame in zip(csvs, frames, strict=True):
        missing = set(CLICK_COLUMNS) - set(frame.columns)
        if missing:
            raise InputError(f"{path}: not a per-click metrics file, no columns {sorted(missing)}")
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CLICK_COLUMNS)
    curves, auc = clicks_tables(rows)
    write_csv_atomic(curves, curves_csv)
    write_csv_atomic(auc, auc_csv)
    log.info(
        "clicks tables: %d curve rows, %d AUC rows from %d files", len(curves), len(auc), len(csvs)
    )
    return curves, auc
