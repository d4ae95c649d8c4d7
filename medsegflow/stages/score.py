"""Score one method's predictions on one dataset with the project's one metric implementation."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from medsegflow.datasets.canonical import read_cases, read_label_map
from medsegflow.errors import InputError
from medsegflow.io import read_volume
from medsegflow.manifests import read_table
from medsegflow.metrics import SurfaceCache, compute_metrics
from medsegflow.prediction.cases import probabilities_path, read_probabilities
from medsegflow.stages.replay import ConventionReplay
from medsegflow.tables import ROW_COLUMNS, write_csv_atomic

log = logging.getLogger(__name__)


def reference_labels_dir(preprocessed_manifest: str | os.PathLike, reference: str) -> Path:
    """Folder of the reference labels: cleaned (preprocessed) or canonical (adapter output)."""
    pre_dir = Path(preprocessed_manifest).parent
    if reference == "cleaned":
        return pre_dir / "labels"
    if reference == "canonical":
        return pre_dir.parent.parent / "data" / pre_dir.name / "labels"
    raise ValueError(f"metrics.reference: unknown reference '{reference}'")


def distance_units(preprocessed_manifest: str | os.PathLike) -> dict[str, str]:
    """``{case_id: "mm" | "px"}``: "px" where the adapter could not know the spacing.

    Read from the canonical ``cases.tsv`` (column ``spacing_known``); the 1 mm written for
    such cases makes ``nsd``, ``hd95_mm`` and ``assd_mm`` pixel (voxel) distances.
    """
    pre_dir = Path(preprocessed_manifest).parent
    data_dir = pre_dir.parent.parent / "data" / pre_dir.name
    if not (data_dir / "cases.tsv").is_file():
        return {}
    cases = read_cases(data_dir)
    return {
        row.case_id: "mm" if row.spacing_known else "px" for row in cases.itertuples(index=False)
    }


def input_warnings(preprocessed_manifest: str | os.PathLike) -> dict[str, str]:
    """``{case_id: warnings}`` of the cases written all the same despite suspect input (a
    constant image of a dataset with ``allow_constant_images``), from ``cases.tsv``."""
    pre_dir = Path(preprocessed_manifest).parent
    data_dir = pre_dir.parent.parent / "data" / pre_dir.name
    if not (data_dir / "cases.tsv").is_file():
        return {}
    cases = read_cases(data_dir)
    return {row.case_id: row.warnings for row in cases.itertuples(index=False) if row.warnings}


def _read_prediction(path: Path, gt, *, label_map: Mapping[str, int]) -> np.ndarray:
    """The prediction array, checked against the reference grid and the label map."""
    pred = read_volume(path)
    if pred.array_zyx.shape != gt.array_zyx.shape:
        raise InputError(
            f"{path}: prediction shape (z,y,x)={pred.array_zyx.shape} differs "
            f"from the reference label shape {gt.array_zyx.shape}"
        )
    if not pred.geometry.matches(gt.geometry):
        raise InputError(
            f"{path}: prediction geometry (spacing {pred.geometry.spacing_xyz}, "
            f"origin {pred.geometry.origin_xyz}) differs from the reference label's "
            f"(spacing {gt.geometry.spacing_xyz}, origin {gt.geometry.origin_xyz})"
        )
    unknown = sorted(set(np.unique(pred.array_zyx).tolist()) - set(label_map.values()))
    if unknown:
        raise InputError(
            f"{path}: prediction has label values {unknown} that are not in the "
            f"label map {dict(label_map)}"
        )
    return pred.array_zyx


def _read_soft_outputs(
    pred_dir: Path, case_id: str, shape_zyx: tuple[int, ...], *, label_map: Mapping[str, int]
) -> dict[int, np.ndarray] | None:
    """``{label: (Z, Y, X) probabilities}`` of ``{case_id}_probs.npz`` in ``pred_dir``, or
    None without one; :class:`InputError` naming it unless it has every foreground label."""
    path = probabilities_path(pred_dir, case_id)
    if not path.is_file():
        return None
    probs = read_probabilities(path, shape_zyx)
    missing = sorted(v for v in label_map.values() if v != 0 and v not in probs)
    if missing:
        raise InputError(f"{path}: no probabilities for labels {missing} of the label map")
    return probs


def score_case(
    *,
    pred_zyx: np.ndarray,
    gt,
    label_map: Mapping[str, int],
    nsd_tolerance_mm: float,
    cache: SurfaceCache | None = None,
) -> list[dict[str, Any]]:
    """Metric rows (one per foreground class of the label map) for one case; ``cache``: the
    case's :class:`~medsegflow.metrics.SurfaceCache`, shared with its convention replay."""
    names = {value: name for name, value in label_map.items() if value != 0}
    results = compute_metrics(
        pred_zyx,
        gt.array_zyx,
        gt.spacing_zyx,
        nsd_tolerance_mm,
        labels=sorted(names),
        cache=cache,
    )
    return [
        {"label": value, "label_name": names[value], **results[value]} for value in sorted(names)
    ]


def score_predictions(
    *,
    dataset: str,
    method: str,
    predictions_manifest: str | os.PathLike,
    preprocessed_manifest: str | os.PathLike,
    metrics: Mapping[str, Any],
    out_csv: str | os.PathLike,
    conventions_csv: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Score every case of ``metrics['splits']``; write one row per case and class.

    With ``conventions_csv``, every case is also re-scored under each convention of
    ``metrics['conventions']`` (:class:`~medsegflow.stages.replay.ConventionReplay`) and
    their aggregated rows are written there. A case's soft outputs
    (``{case_id}_probs.npz`` beside its prediction, written by predictors with
    ``save_probabilities``) are passed on to the conventions that score them (Med-SA);
    without the file those conventions give NaN for the case. A probability file that is
    unreadable, lacks a foreground class or is not on the prediction's grid stops the job
    with an :class:`InputError` naming it.

    A case of those splits without a prediction, or a prediction on the wrong grid or
    with unknown labels, stops the job with an :class:`InputError` naming the file; the
    CSV is written atomically only when every case is scored.
    """
    cases = read_table(preprocessed_manifest, columns=("case_id", "split"))
    cases = cases[cases["split"].isin(metrics["splits"])]
    predicted = read_table(predictions_manifest, columns=("case_id",))
    missing = sorted(set(cases["case_id"]) - set(predicted["case_id"]))
    if missing:
        raise InputError(
            f"{predictions_manifest}: no prediction for cases {missing} of splits "
            f"{list(metrics['splits'])}"
        )
    label_map = read_label_map(Path(preprocessed_manifest).parent)
    units = distance_units(preprocessed_manifest)
    warnings = input_warnings(preprocessed_manifest)
    ref_dir = reference_labels_dir(preprocessed_manifest, metrics["reference"])
    pred_dir = Path(predictions_manifest).parent
    names = {value: name for name, value in label_map.items()}
    replay = ConventionReplay(metrics.get("conventions", []), names) if conventions_csv else None
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for case in tqdm(cases.itertuples(), total=len(cases), desc=f"score {dataset}/{method}"):
        gt = read_volume(ref_dir / f"{case.case_id}.nii.gz")
        pred = _read_prediction(pred_dir / f"{case.case_id}.nii.gz", gt, label_map=label_map)
        cache = SurfaceCache()  # each label's surfaces, once for the metrics and the replays
        if replay is not None:
            probs = _read_soft_outputs(pred_dir, case.case_id, pred.shape, label_map=label_map)
        scored = score_case(
            pred_zyx=pred,
            gt=gt,
            label_map=label_map,
            nsd_tolerance_mm=metrics["nsd_tolerance_mm"],
            cache=cache,
        )
        if replay is not None:  # after the metrics: SAMed's HD95 reuses their distances
            replay.add(pred, gt.array_zyx, gt.spacing_zyx, prob_zyx=probs, cache=cache)
        for row in scored:
            rows.append(
                {
                    "dataset": dataset,
                    "method": method,
                    "case_id": case.case_id,
                    "split": case.split,
                    **row,
                    "distance_unit": units.get(case.case_id, "mm"),
                    "input_warnings": warnings.get(case.case_id, ""),
                }
            )
    table = pd.DataFrame(rows, columns=[*ROW_COLUMNS, "distance_unit", "input_warnings"])
    if replay is not None:
        write_csv_atomic(replay.rows(dataset=dataset, method=method), conventions_csv)
    write_csv_atomic(table, out_csv)
    mean_dsc = table.groupby("label_name")["dsc"].mean().round(3).to_dict() if rows else {}
    log.info(
        "scored %d cases x %d classes of %s/%s against %s labels in %.1f s; mean DSC %s",
        len(cases),
        len(label_map) - 1,
        dataset,
        method,
        metrics["reference"],
        time.perf_counter() - start,
        mean_dsc,
    )
    return table
