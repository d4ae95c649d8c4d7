"""The ``sam3d`` family's predictor: every object of every case by the interactive protocol.

For each case of the job: the canonical image (original intensities, original geometry;
SAM-Med3D z-normalises each crop over its foreground itself) and the cleaned reference
(the simulated user's target; the score stage's reference by default) are resampled once
to the 1.5 mm model frame (:func:`medsegflow.sam3d.preprocess.to_model_grid`). Each label
value present is one object: a first click on it (its distance-transform centre, or a
seeded random voxel), the 128^3 crop centred on that click, the crop encoded once, then
``clicks.n - 1`` corrective clicks, each at the centre of the largest error inside the
crop, with the previous low-resolution logits as the mask prompt
(:func:`medsegflow.sam3d.infer.segment_object`). The masks are pasted back and resampled to
the original grid and painted in ascending label order.

With ``windows: {enabled: true}``, an object whose 3D box (the reference's bounding box,
as a box prompt gives it) exceeds one crop on some axis gets its final mask, after the
clicks, from sliding crops over that box with all of its clicks
(:func:`medsegflow.sam3d.windows.window_final`); its masks after the earlier clicks stay
the single crop's, and objects that fit are unchanged
(:func:`medsegflow.sam3d.infer.segment_labels`). The cost is logged per object and per
case, and the table :func:`predict_sam3d` returns has ``n_windows`` (crops run) and
``window_seconds`` per case; ``manifest.tsv`` has the shared columns only (the case's
``seconds`` include the windows).

The 1.5 mm grid follows ``resample_grid`` (:mod:`medsegflow.sam3d.preprocess`: torchio's
own, as installed, or torchio < 0.20.11's); the job logs the torchio version and the grid
rule, and the table :func:`predict_sam3d` returns has them per case (``torchio``,
``grid_rule``). ``precision`` (default float32, as the official script) is the encoder's
and decoder's.

Written: ``{case_id}.nii.gz``, the labels after the last click (scored like any method),
and ``clicks/{case_id}.npz``, the labels after every click with the clicks in original
voxel indices (:mod:`medsegflow.interactive`). Random draws use
``case_rng(seed, case_id, "clicks3d", method)``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medsegflow.datasets.canonical import image_path, label_path
from medsegflow.errors import InputError
from medsegflow.interactive import click_volumes_path, write_click_volumes
from medsegflow.io import Volume, read_volume
from medsegflow.prediction.cases import predict_cases
from medsegflow.seeding import case_rng

if TYPE_CHECKING:
    from medsegflow.prediction.job import PredictJob

log = logging.getLogger(__name__)


def _clicks_table(results: dict[int, Any]) -> pd.DataFrame:
    rows = []
    for label, result in results.items():
        for number, (zyx, ijkl) in enumerate(
            zip(result.clicks_zyx, result.clicks_ijk, strict=True), start=1
        ):
            z, y, x = np.rint(zyx).astype(np.int64)
            rows.append(
                {"label": label, "click": number, "z": z, "y": y, "x": x, "positive": ijkl[3]}
            )
    return pd.DataFrame(rows)


def segment_case3d(
    model: Any,
    image: Volume,
    label: Volume,
    *,
    clicks: dict[str, Any],
    rng: np.random.Generator,
    oracle_gt_centre: bool,
    device: str | None,
    window_overlap: float | None = None,
    resample_grid: str = "torchio",
    precision: str = "fp32",
) -> tuple[np.ndarray, pd.DataFrame, dict[str, float]]:
    """``(labels after each click (K, Z, Y, X), clicks table, cost)`` of one case.

    ``cost``: seconds ``encode`` (the first crops), ``total`` and ``windows`` (the sliding
    crops, 0 without), and ``n_windows``, the sliding crops run. ``window_overlap``: see
    :func:`medsegflow.sam3d.infer.segment_labels` (None: one crop per object)."""
    from medsegflow.sam3d.infer import segment_labels

    painted, results = segment_labels(
        model,
        image,
        label,
        n_clicks=int(clicks["n"]),
        mode=clicks["mode"],
        first_mode=clicks["first"],
        rng=rng,
        device=device,
        oracle_gt_centre=oracle_gt_centre,
        window_overlap=window_overlap,
        resample_grid=resample_grid,
        precision=precision,
    )
    cost = {
        "encode": sum(r.seconds["encode"] for r in results.values()),
        "total": sum(r.seconds["total"] for r in results.values()),
        "windows": sum(r.seconds.get("windows", 0.0) for r in results.values()),
        "n_windows": sum(r.windows.n_run for r in results.values() if r.windows is not None),
    }
    return np.stack(painted), _clicks_table(results), cost


def predict_sam3d(job: PredictJob) -> pd.DataFrame:
    """The family predictor (``family: sam3d``); ``job.inputs``: ``preprocessed``, ``data``
    (the canonical ``cases.tsv``) and ``checkpoint``. Returns the manifest with more
    columns per case: ``n_windows`` (sliding crops run), ``window_seconds``, ``torchio``
    (its version) and ``grid_rule`` (the 1.5 mm grid: ``floor_centred`` or
    ``ceil_corner``)."""
    from medsegflow.sam3d.model import load_checkpoint
    from medsegflow.sam3d.preprocess import grid_provenance

    job.require("data", "checkpoint", family="sam3d")
    spec = job.method
    model = load_checkpoint(job.inputs["checkpoint"], spec["spec"], device=job.device)
    oracle = spec["crop_centre"] == "gt_centre"
    if oracle:
        log.warning(
            "%s: crops centred on the reference's centre (crop_centre: gt_centre), the "
            "official validation script's oracle",
            job.method_name,
        )
    data_dir = Path(job.inputs["data"]).parent
    device = job.device or spec.get("device")
    windows = spec["windows"]
    overlap = float(windows["min_overlap"]) if windows["enabled"] else None
    window_cost: dict[str, tuple[int, float]] = {}
    resampling = grid_provenance(spec.get("resample_grid", "torchio"))
    precision = spec.get("precision", "fp32")
    log.info(
        "%s: torchio %s, resample_grid %s: the 1.5 mm grid is %s (floor_centred: torchio "
        ">= 0.20.11; ceil_corner: torchio < 0.20.11, the official script's original); "
        "precision %s",
        job.method_name,
        resampling["torchio"],
        resampling["resample_grid"],
        resampling["grid_rule"],
        precision,
    )

    def segment(case: dict[str, Any], _preprocessed: Volume) -> tuple[np.ndarray, int]:
        case_id = case["case_id"]
        image = read_volume(image_path(data_dir, case_id))
        label = read_volume(label_path(job.preprocessed_dir, case_id))
        if label.array_zyx.shape != image.array_zyx.shape:
            raise InputError(
                f"{label_path(job.preprocessed_dir, case_id)}: shape {label.array_zyx.shape} "
                f"differs from the image's {image.array_zyx.shape}"
            )
        if image.array_zyx.ndim != 3 or min(image.array_zyx.shape) < 2:
            raise InputError(
                f"{image_path(data_dir, case_id)}: SAM-Med3D needs a 3D image, got shape "
                f"{image.array_zyx.shape}"
            )
        start = time.perf_counter()
        volumes, clicks, cost = segment_case3d(
            model,
            image,
            label,
            clicks=spec["clicks"],
            rng=case_rng(job.seed, case_id, "clicks3d", job.method_name),
            oracle_gt_centre=oracle,
            device=device,
            window_overlap=overlap,
            resample_grid=resampling["resample_grid"],
            precision=precision,
        )
        window_cost[case_id] = (int(cost["n_windows"]), round(float(cost["windows"]), 3))
        write_click_volumes(
            click_volumes_path(job.out_dir, case_id), volumes, clicks, first_click=1
        )
        log.info(
            "%s: %d objects x %d clicks in %.1f s (encoder %.1f s; %d sliding windows, %.1f s)",
            case_id,
            clicks["label"].nunique() if len(clicks) else 0,
            len(volumes),
            time.perf_counter() - start,
            cost["encode"],
            cost["n_windows"],
            cost["windows"],
        )
        return volumes[-1], len(clicks)

    manifest = predict_cases(job, segment=segment, desc=f"{job.method_name} (3D clicks)")
    ids = manifest["case_id"].astype(str)
    return manifest.assign(
        n_windows=[window_cost[c][0] for c in ids],
        window_seconds=[window_cost[c][1] for c in ids],
        torchio=resampling["torchio"],
        grid_rule=resampling["grid_rule"],
    )
