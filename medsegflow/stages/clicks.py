"""Score every step of an interactive method: ``results/metrics/{dataset}/{method}_clicks.csv``.

The per-click label volumes of :mod:`medsegflow.interactive` are scored with the score
stage's own per-case function (:func:`medsegflow.stages.score.score_case`), so each click's
DSC and NSD are the numbers the method would get if it stopped there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from medsegflow.datasets.canonical import read_label_map
from medsegflow.errors import InputError
from medsegflow.interactive import CLICK_COLUMNS, click_volumes_path, read_click_volumes
from medsegflow.io import read_volume
from medsegflow.manifests import read_table
from medsegflow.stages.score import distance_units, reference_labels_dir, score_case


def score_clicks(
    *,
    predictions_manifest: str | os.PathLike,
    preprocessed_manifest: str | os.PathLike,
    dataset: str,
    method: str,
    nsd_tolerance_mm: float,
    reference: str = "cleaned",
) -> pd.DataFrame:
    """:data:`CLICK_COLUMNS` rows of every predicted case, one per class and click."""
    pred_dir = Path(predictions_manifest).parent
    ref_dir = reference_labels_dir(preprocessed_manifest, reference)
    label_map = read_label_map(Path(preprocessed_manifest).parent)
    units = distance_units(preprocessed_manifest)
    cases = read_table(predictions_manifest, columns=("case_id",))
    records = []
    for case_id in cases["case_id"]:
        gt = read_volume(ref_dir / f"{case_id}.nii.gz")
        path = click_volumes_path(pred_dir, case_id)
        if not path.is_file():
            raise InputError(f"{path}: no per-click predictions of case {case_id}")
        volumes, _, first = read_click_volumes(path, gt.array_zyx.shape)
        for k, pred_zyx in enumerate(volumes):
            for row in score_case(
                pred_zyx=pred_zyx, gt=gt, label_map=label_map, nsd_tolerance_mm=nsd_tolerance_mm
            ):
                records.append(
                    {
                        "dataset": dataset,
                        "method": method,
                        "case_id": case_id,
                        "label": row["label"],
                        "label_name": row["label_name"],
                        "click": first + k,
                        "dsc": row["dsc"],
                        "nsd": row["nsd"],
                        "distance_unit": units.get(case_id, "mm"),
                        "gt_empty": row["gt_empty"],
                    }
                )
    return pd.DataFrame.from_records(records, columns=list(CLICK_COLUMNS))
