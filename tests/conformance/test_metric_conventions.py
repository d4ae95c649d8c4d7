"""Conformance of the metric conventions and the main NSD with the official evaluation codes.

The golden values are ``../shared/conformance/metrics/expected_<convention>.csv``: what the
official scripts printed for the 27 cases and 2 click sequences of that folder (its README
describes every quirk). Every row must be reproduced within 1e-6; ``nan`` and
``error:<Type>`` must match exactly. Rows the official code does not produce must be NaN
(absent) here too.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path

import numpy as np
import pytest

from medsegflow import conventions as cv
from medsegflow.metrics import compute_metrics, surfel_surface_dice

TOLERANCE = 1e-6
Rows = dict[tuple[str, str, str], object]


@pytest.fixture(scope="module")
def metrics_root(conformance_root: Path) -> Path:
    root = conformance_root / "metrics"
    if not (root / "cases.csv").is_file():
        pytest.fail(f"metric fixtures not found at {root}")
    return root


@cache
def _case(root: Path, name: str) -> dict:
    with np.load(root / "cases" / f"{name}.npz", allow_pickle=False) as data:
        case = {key: data[key] for key in data.files}
    two_d = str(case["axis_order"]) == "yx"
    case["two_d"] = two_d
    case["dataset"] = str(case["dataset"])
    case["classes"] = [int(c) for c in case["classes"]]
    case["gt_zyx"] = case["gt"][None] if two_d else case["gt"]
    case["pred_zyx"] = case["pred"][None] if two_d else case["pred"]
    case["spacing_zyx"] = (
        (1.0, *map(float, case["spacing_yx"])) if two_d else tuple(map(float, case["spacing_zyx"]))
    )
    return case


def _case_names(root: Path) -> list[str]:
    with open(root / "cases.csv", newline="") as handle:
        return [row["case"] for row in csv.DictReader(handle)]


def _expected(root: Path, name: str) -> dict[tuple[str, str, str], str]:
    with open(root / f"expected_{name}.csv", newline="") as handle:
        return {(r["case"], r["class"], r["metric"]): r["value"] for r in csv.DictReader(handle)}


def _matches(expected: str, ours: object) -> bool:
    if expected.startswith("error:") or isinstance(ours, str):
        return isinstance(ours, str) and ours == expected
    if isinstance(ours, tuple):
        values = [float(v) for v in expected.split()]
        return len(values) == len(ours) and all(
            abs(a - b) <= TOLERANCE for a, b in zip(values, ours, strict=True)
        )
    value, ours = float(expected), float(ours)
    if math.isnan(value) or math.isnan(ours):
        return math.isnan(value) and math.isnan(ours)
    return abs(value - ours) <= TOLERANCE


def _compare(expected: dict[tuple[str, str, str], str], ours: Rows) -> None:
    """Every expected row matches; every row of ours that the fixture lacks is NaN."""
    problems = []
    for key, value in expected.items():
        if key not in ours:
            problems.append(f"{key}: expected {value}, not produced")
        elif not _matches(value, ours[key]):
            problems.append(f"{key}: expected {value}, got {ours[key]!r}")
    for key, value in ours.items():
        if key not in expected and not (isinstance(value, float) and math.isnan(value)):
            problems.append(f"{key}: produced {value!r}, the official code gives no value")
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems[:40])


def _value(scores: dict, metric: str) -> object:
    """A per-class value as the fixture records it (``error:<Type>`` where it raised)."""
    return f"error:{scores['error']}" if scores["error"] else float(scores[metric])


def _per_case(
    root: Path, select: Callable[[dict], bool], rows: Callable[[str, dict], Rows]
) -> Rows:
    ours: Rows = {}
    for name in _case_names(root):
        case = _case(root, name)
        if select(case):
            ours.update(rows(name, case))
    return ours


# --- CVPR 2024 ------------------------------------------------------------------------------------


def _challenge_rows(name: str, case: dict, *, challenge: str) -> Rows:
    """Per-case rows of the CVPR 2024 (``medsam``) or 2025 (``cvpr25``) script, with the
    spacing as the npz stores it and, for volumes, as it would be read in (z, y, x) order.
    CVPR24 also prints 4-digit CSV values; CVPR25 records an error as ``error:<type>``."""
    case_fn = getattr(cv, f"{challenge}_case")
    summary_fn = getattr(cv, f"{challenge}_case_summary")
    out: Rows = {}
    orders = ("xyz",) if case["two_d"] else ("xyz", "zyx")
    for order in orders:
        suffix = "" if order == "xyz" else "_if_spacing_zyx"
        result = case_fn(
            case["pred_zyx"],
            case["gt_zyx"],
            case["spacing_zyx"],
            case["classes"],
            spacing_order=order,
        )
        summary = summary_fn(result)
        if order == "xyz":
            out[(name, "all", "dsc")] = summary["dsc"]
        if challenge == "medsam":
            if order == "xyz":
                out[(name, "all", "dsc_csv")] = round(float(summary["dsc"]), 4)
            out[(name, "all", f"nsd{suffix}")] = summary["nsd"]
            out[(name, "all", f"nsd_csv{suffix}")] = round(float(summary["nsd"]), 4)
        else:
            nsd = f"error:{summary['error']}" if summary["error"] else summary["nsd"]
            out[(name, "all", f"nsd{suffix}")] = nsd
        for label, scores in result.items():
            if not scores["counted"]:
                continue
            if order == "xyz":
                out[(name, str(label), "dsc")] = scores["dsc"]
            out[(name, str(label), f"nsd{suffix}")] = scores["nsd"]
    return out


def test_cvpr24_reproduces_every_case(metrics_root: Path) -> None:
    ours = _per_case(metrics_root, lambda case: True, partial(_challenge_rows, challenge="medsam"))
    _compare(_expected(metrics_root, "cvpr24"), ours)


# --- CVPR 2025 ------------------------------------------------------------------------------------


def _sequence_rows(root: Path) -> Rows:
    out: Rows = {}
    for path in sorted((root / "sequences").glob("*.npz")):
        with np.load(path, allow_pickle=False) as data:
            gt, preds = data["gt"], data["preds"]
            spacing, has_bbox = tuple(map(float, data["spacing_zyx"])), bool(data["has_bbox"])
        for order, suffix in (("xyz", ""), ("zyx", "_if_spacing_zyx")):
            row = cv.cvpr25_sequence(
                list(preds), gt, spacing, has_bbox=has_bbox, spacing_order=order
            )
            for key, value in row.items():
                if order == "xyz" or key.startswith("NSD"):
                    out[(path.stem, "all", f"{key}{suffix}")] = value
    return out


def test_cvpr25_reproduces_every_case_and_click_sequence(metrics_root: Path) -> None:
    ours = _per_case(metrics_root, lambda case: True, partial(_challenge_rows, challenge="cvpr25"))
    ours.update(_sequence_rows(metrics_root))
    _compare(_expected(metrics_root, "cvpr25"), ours)


def test_cvpr25_auc_is_a_trapezoid_over_the_5_clicks_only() -> None:
    assert cv.cvpr25_auc([0.9, 0.0, 1.0, 1.0, 1.0, 1.0]) == 3.5  # the box step (0.9) is left out
    assert cv.cvpr25_auc([1.0] * 6) == 4.0


# --- SAM-Med3D ------------------------------------------------------------------------------------


def test_sammed3d_reproduces_every_case_and_dataset_aggregate(metrics_root: Path) -> None:
    ours: Rows = {}
    by_dataset: dict[str, list] = {}
    for name in _case_names(metrics_root):
        case = _case(metrics_root, name)
        if case["two_d"]:
            continue
        args = (case["pred_zyx"], case["gt_zyx"], case["spacing_zyx"], case["classes"])
        default = cv.CONVENTIONS["sam_med3d"].case(*args)
        explicit = cv.sammed3d_case(*args, label_set="classes")
        by_dataset.setdefault(case["dataset"], []).append(default)
        for result, suffix in ((default, ""), (explicit, "_classes_arg")):
            ours[(name, "all", f"n_classes{suffix}")] = len(result)
            for label, scores in result.items():
                ours[(name, str(label), f"dsc{suffix}")] = scores["dsc"]
                ours[(name, str(label), f"nsd{suffix}")] = scores["nsd"]
    for dataset, results in by_dataset.items():
        agg = cv.sammed3d_aggregate(results)
        key = f"@{dataset}"
        ours[(key, "all", "files_processed")] = agg["n_cases"]
        ours[(key, "all", "files_with_warning_or_error")] = agg["n_excluded"]
        for label, values in agg["per_class"].items():
            for metric in ("dsc", "nsd"):
                ours[(key, str(label), f"{metric}_mean")] = values[metric]
                ours[(key, str(label), f"{metric}_std")] = values[f"{metric}_std"]
            ours[(key, str(label), "count")] = values["count"]
        for metric in ("dsc", "nsd"):
            ours[(key, "all", f"{metric}_overall_mean")] = agg["overall"][metric]
            ours[(key, "all", f"{metric}_overall_std")] = agg["overall"][f"{metric}_std"]
    _compare(_expected(metrics_root, "sammed3d"), ours)


# --- MedCLIP-SAMv2 --------------------------------------------------------------------------------


def test_medclip_reproduces_every_image_and_the_printed_averages(metrics_root: Path) -> None:
    ours: Rows = {}
    results = {}
    for name in _case_names(metrics_root):
        case = _case(metrics_root, name)
        if case["dataset"] != "2d_binary":
            continue
        seg_u8 = case["pred_u8"][None] if "pred_u8" in case else None
        result = cv.medclip_case(
            case["pred_zyx"], case["gt_zyx"], case["spacing_zyx"], [1], seg_u8=seg_u8
        )
        results[name] = result
        try:
            rounded = cv.medclip_case_summary(result)
            exact = cv.medclip_case_summary(result, decimals=None)
        except cv.ConventionUndefinedError as err:
            for metric in ("dsc", "nsd"):
                ours[(name, "all", f"{metric}_rounded")] = f"error:{err.official_error}"
            continue
        for metric in ("dsc", "nsd"):
            ours[(name, "all", metric)] = exact[metric]
            ours[(name, "all", f"{metric}_rounded")] = rounded[metric]
    folders = {
        "@2d_binary": list(results.values()),
        "@2d_binary_without_both_empty": [r for n, r in results.items() if n != "both_empty_2d"],
    }
    for key, folder in folders.items():
        ours[(key, "all", "n_files")] = len(folder)
        for script, prefix in (("eval", ""), ("nnunetv2", "nnunetv2_eval_")):
            agg = cv.medclip_aggregate(folder, script=script)
            for metric in ("dsc", "nsd"):
                value = f"error:{agg['error']}" if agg["error"] else agg["overall"][metric]
                ours[(key, "all", f"{prefix}average_{metric}_printed")] = value
    _compare(_expected(metrics_root, "medclipsamv2"), ours)


# --- SAMed ----------------------------------------------------------------------------------------


def test_samed_reproduces_every_case_and_the_replicated_means(metrics_root: Path) -> None:
    ours: Rows = {}
    by_dataset: dict[str, list] = {}
    for name in _case_names(metrics_root):
        case = _case(metrics_root, name)
        result = cv.samed_case(
            case["pred_zyx"], case["gt_zyx"], case["spacing_zyx"], case["classes"]
        )
        by_dataset.setdefault(case["dataset"], []).append(result)
        for label, scores in result.items():
            ours[(name, str(label), "dice")] = scores["dsc"]
            ours[(name, str(label), "hd95_voxels")] = scores["hd95"]
        summary = cv.samed_case_summary(result)
        ours[(name, "all", "mean_dice_replicated")] = summary["dsc"]
        ours[(name, "all", "mean_hd95_voxels_replicated")] = summary["hd95"]
    for dataset, results in by_dataset.items():
        agg = cv.samed_aggregate(results)
        key = f"@{dataset}"
        ours[(key, "all", "n_cases")] = agg["n_cases"]
        for label, values in [*agg["per_class"].items(), ("all", agg["overall"])]:
            ours[(key, str(label), "mean_dice_replicated")] = values["dsc"]
            ours[(key, str(label), "mean_hd95_voxels_replicated")] = values["hd95"]
    _compare(_expected(metrics_root, "samed"), ours)


# --- Med-SA ---------------------------------------------------------------------------------------


def test_medsa_reproduces_every_case_and_the_replicated_means(metrics_root: Path) -> None:
    ours: Rows = {}
    by_dataset: dict[str, list] = {}
    for name in _case_names(metrics_root):
        case = _case(metrics_root, name)
        prob = case["prob"][None] if case["two_d"] else case["prob"]
        if len(case["classes"]) == 1:
            prob = prob[None]
        result = cv.medsa_case(
            case["pred_zyx"],
            case["gt_zyx"],
            case["spacing_zyx"],
            case["classes"],
            prob.reshape(len(case["classes"]), *case["gt_zyx"].shape),
            soft_kind="logit",
        )
        by_dataset.setdefault(case["dataset"], []).append(result)
        ours[(name, "all", "batch_size")] = case["gt_zyx"].shape[0]
        for label, scores in result.items():
            ours[(name, str(label), "iou")] = _value(scores, "iou")
            ours[(name, str(label), "dice")] = _value(scores, "dsc")
        error = cv._errors_of([result])
        ours[(name, "all", "eval_seg_tuple")] = (
            f"error:{error}" if error else cv.medsa_eval_seg_tuple(result)
        )
    for dataset, results in by_dataset.items():
        agg = cv.medsa_aggregate(results)
        key = f"@{dataset}"
        ours[(key, "all", "n_cases")] = agg["n_cases"]
        if agg["error"]:
            ours[(key, "all", "mean_eval_seg_tuple_replicated")] = f"error:{agg['error']}"
            continue
        per_class = agg["per_class"]
        ours[(key, "all", "mean_eval_seg_tuple_replicated")] = tuple(
            per_class[c]["iou"] for c in sorted(per_class)
        ) + tuple(per_class[c]["dsc"] for c in sorted(per_class))
        for label, values in per_class.items():
            ours[(key, str(label), "mean_iou_replicated")] = values["iou"]
            ours[(key, str(label), "mean_dice_replicated")] = values["dsc"]
    _compare(_expected(metrics_root, "medsa"), ours)


# --- the main table: DeepMind surface Dice, medpy HD95 / ASSD -----------------------------------


def test_main_metrics_equal_deepmind_nsd_and_medpy(metrics_root: Path) -> None:
    """``compute_metrics`` (2D images scored in 2D, physical spacing) against the reference
    run of DeepMind surface-distance 0.1 and medpy 0.5.2. Where a mask is empty the reference
    gives NaN / raises; MedSegFlow's documented empty-mask rule applies instead (checked)."""
    expected = _expected(metrics_root, "reference")
    ours: Rows = {}
    for name in _case_names(metrics_root):
        case = _case(metrics_root, name)
        spacing = case["spacing_zyx"]
        for tau, metric, unit in ((1.0, "sd_nsd_1mm", spacing), (2.0, "sd_nsd_2mm", spacing)):
            results = compute_metrics(
                case["pred_zyx"], case["gt_zyx"], unit, tau, labels=case["classes"]
            )
            for label, r in results.items():
                key = (name, str(label), metric)
                if r["gt_empty"] or r["pred_empty"]:
                    both = r["gt_empty"] and r["pred_empty"]
                    assert r["nsd"] == (1.0 if both else 0.0), key  # the documented rule
                    ours[key] = math.nan if both else 0.0  # the reference's 0/0
                    continue
                ours[key] = r["nsd"]
                ours[(name, str(label), "medpy_dc")] = r["dsc"]
                ours[(name, str(label), "sd_dice")] = r["dsc"]
                ours[(name, str(label), "medpy_hd95")] = r["hd95_mm"]
                ours[(name, str(label), "medpy_assd")] = r["assd_mm"]
        unit = (1.0, 1.0, 1.0)
        for label in case["classes"]:
            gt, pred = case["gt_zyx"] == label, case["pred_zyx"] == label
            if case["two_d"]:
                gt, pred = gt[0], pred[0]
            ours[(name, str(label), "sd_nsd_2px")] = surfel_surface_dice(
                pred, gt, unit[: gt.ndim], 2.0
            )
    checked = {k: v for k, v in expected.items() if k in ours}
    skipped = {k: v for k, v in expected.items() if k not in ours}
    # rows left out: dice / HD95 / ASSD of empty masks (NaN or medpy's RuntimeError)
    assert all(v in ("nan", "error:RuntimeError", "0.0") for v in skipped.values()), skipped
    _compare(checked, ours)
