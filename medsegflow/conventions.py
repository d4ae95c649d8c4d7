"""Convention replay: score saved predictions the way each seed paper's evaluation code does.

MedSegFlow's tables use one convention (:func:`medsegflow.metrics.compute_metrics`). This module
re-scores the same predictions under each paper's rule so a method can be set next to the
number its authors' evaluation script would print. Each convention is one *case function* plus
one *aggregation*, registered in :data:`CONVENTIONS` with the quirks it replays
(:attr:`Convention.quirks`). ``docs/metrics.md`` describes every convention and the
conformance test that shows it.

Case functions all take ``(pred_zyx, gt_zyx, spacing_zyx, classes, prob_zyx=None,
cache=None)`` for one case and return a :data:`CaseResult`: ``{label: {"dsc", "iou", "nsd",
"hd95", "counted", "error"}}`` for every value in ``classes`` and every label the convention
itself scores. Metrics a convention does not compute are NaN. ``counted`` says whether the
convention's own averaging uses that label for that case. ``error`` is ``""``, or the name of
the exception the official code raises on this input (e.g. ``"AssertionError"``); the metrics
it would have produced are then NaN, and the aggregation reports the error (:data:`Aggregate`
``"error"``).

- ``pred_zyx``, ``gt_zyx``: integer label volumes ``(Z, Y, X)`` on the same grid (MedCLIP-SAMv2
  alone resizes a prediction of another in-plane size, as its script does). A 2D image is a
  ``(1, H, W)`` volume (:func:`is_2d_case`).
- ``spacing_zyx``: voxel size in mm in array order.
- ``classes``: the dataset's label values (nonzero ints).
- ``cache``: the case's :class:`medsegflow.metrics.SurfaceCache`: conventions (and
  :func:`medsegflow.metrics.compute_metrics`) given the same one and the same arrays compute
  each label's masks, surfaces and distances once. The values do not depend on it.
- ``prob_zyx``: soft outputs, only used by Med-SA: a float array ``(C, Z, Y, X)`` (channel ``i``
  is ``classes[i]`` when ``C == len(classes)``, channel ``c`` is class ``c`` when
  ``C > max(classes)``, i.e. background first) or a dict ``{class_value: (Z, Y, X) array}``.

Surface Dice is DeepMind's surfel algorithm (:func:`medsegflow.metrics.surfel_surface_dice`)
applied to the arrays as the official script holds them: the CVPR24 and MedCLIP-SAMv2 scripts
see a 2D image as a one-voxel slab with unit spacing, so the slab's flat faces count as surface.
HD95 is medpy's (:func:`medsegflow.metrics.hd95`). Overlap counts (Dice, IoU, Med-SA's
smoothing constants) are computed here.

Aggregations take a sequence of :data:`CaseResult` (one per case) and return an
:data:`Aggregate`: ``{"overall": {metric: value}, "per_class": {class: {metric: value}},
"n_cases": int, "n_excluded": int, "error": str}`` (``n_excluded``: averaging units the
convention leaves out, see each function).

This module is pure: no I/O, no global state besides the registry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np

from medsegflow.metrics import MaskPair, SurfaceCache, surfel_surface_dice

NAN = math.nan

#: The per-label metrics every case function reports (NaN where undefined).
CASE_METRICS: tuple[str, ...] = ("dsc", "iou", "nsd", "hd95")

#: Columns of the long table a pipeline stage writes (see :func:`long_table_rows`).
LONG_TABLE_COLUMNS: tuple[str, ...] = (
    "dataset",
    "method",
    "case_id",
    "label",
    "label_name",
    "convention",
    "dsc",
    "nsd",
    "hd95",
    "error",
)

ClassScores = dict[str, float | bool | str]
CaseResult = dict[int, ClassScores]
Aggregate = dict[str, object]
SoftOutputs = np.ndarray | Mapping[int, np.ndarray]
SpacingOrder = Literal["xyz", "zyx"]

#: Med-SA's validation thresholds (``function.py`` ``validation_sam``).
MEDSA_THRESHOLDS: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
#: Med-SA smoothing constants (``utils.py``: ``iou`` SMOOTH and ``DiceCoeff`` eps).
MEDSA_IOU_SMOOTH = 1e-6
MEDSA_DICE_EPS = 1e-4
#: MedCLIP-SAMv2 binarisation threshold (``cv2.threshold(mask, 200, 255, THRESH_BINARY)``).
MEDCLIP_BINARY_THRESHOLD = 200
#: The CVPR 2024 / 2025 challenges: NSD tolerance and the DSC gate of NSD.
CVPR_NSD_TOLERANCE = 2.0
CVPR_NSD_MIN_DSC = 0.2
#: CVPR 2025: the AUC runs over the last 5 steps (the clicks), the box step excluded.
CVPR25_AUC_STEPS = 5


class ConventionUndefinedError(ValueError):
    """The convention's own code fails on this input (e.g. MedCLIP-SAMv2's assert).

    ``official_error`` names the exception the official code raises."""

    def __init__(self, message: str, official_error: str) -> None:
        super().__init__(message)
        self.official_error = official_error


# --- shared helpers ---------------------------------------------------------------------------


def _scores(
    dsc: float = NAN,
    iou: float = NAN,
    nsd: float = NAN,
    hd95: float = NAN,
    *,
    counted: bool = True,
    error: str = "",
) -> ClassScores:
    return {
        "dsc": float(dsc),
        "iou": float(iou),
        "nsd": float(nsd),
        "hd95": float(hd95),
        "counted": bool(counted),
        "error": str(error),
    }


def _as_labels(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"conventions: {name} dtype {array.dtype} is not an integer label dtype")
    return array


def _check_case(
    pred_zyx: np.ndarray,
    gt_zyx: np.ndarray,
    spacing_zyx: Sequence[float],
    classes: Sequence[int],
    *,
    same_grid: bool = True,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], list[int]]:
    """Validate one case; return (pred, gt, spacing, classes) in canonical form."""
    pred = _as_labels(pred_zyx, "pred_zyx")
    gt = _as_labels(gt_zyx, "gt_zyx")
    if gt.ndim != 3 or pred.ndim != 3:
        raise ValueError(
            f"conventions: expected (Z, Y, X) volumes, got pred {pred.shape}, gt {gt.shape}"
        )
    if same_grid and pred.shape != gt.shape:
        raise ValueError(f"conventions: pred shape {pred.shape} != gt shape {gt.shape}")
    spacing = tuple(float(s) for s in spacing_zyx)
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"conventions: spacing_zyx {spacing} must be 3 positive values (mm)")
    labels: list[int] = []
    for value in classes:
        if isinstance(value, bool) or not float(value).is_integer() or int(value) <= 0:
            raise ValueError(f"conventions: class {value!r} is not a positive integer")
        labels.append(int(value))
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"conventions: classes {list(classes)} must be non-empty and unique")
    return pred, gt, spacing, labels  # type: ignore[return-value]


def is_2d_case(gt_zyx: np.ndarray) -> bool:
    """A case is 2D when its volume has one slice (a 2D image stored as ``(1, H, W)``)."""
    return int(np.asarray(gt_zyx).shape[0]) == 1


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else NAN


def _metric_values(results: Sequence[CaseResult], label: int, metric: str) -> list[float]:
    return [float(r[label][metric]) for r in results if label in r and r[label]["counted"]]


def _labels_of(results: Sequence[CaseResult]) -> list[int]:
    return sorted({label for result in results for label in result})


def _errors_of(results: Sequence[CaseResult]) -> str:
    """``"Name"`` or ``"Name1, Name2"``: the official errors recorded in ``results``."""
    names = sorted({str(s["error"]) for r in results for s in r.values() if s["error"]})
    return ", ".join(names)


def _values_present(labels: np.ndarray) -> list[int]:
    """The sorted values of an integer label array (``np.unique``; by testing the values
    between the extremes when they are few, by counting when they are small non-negative
    integers)."""
    low, high = int(labels.min()), int(labels.max())
    if high - low <= 8:
        between = [v for v in range(low + 1, high) if (labels == v).any()]
        return [low, *between, high] if high > low else [low]
    if low >= 0 and high < 2**16:
        counts = np.bincount(labels.ravel().astype(np.intp, copy=False), minlength=high + 1)
        return [int(v) for v in np.flatnonzero(counts)]
    return [int(v) for v in np.unique(labels)]


def _deepmind_dice(pair: MaskPair) -> float:
    """DeepMind ``compute_dice_coefficient``: 2|G∩P| / (|G| + |P|), NaN when both are empty."""
    volume_sum = pair.n_gt + pair.n_pred
    if volume_sum == 0:
        return NAN
    return 2 * pair.tp / volume_sum


def _plain_dice(pred_mask: np.ndarray, gt_mask: np.ndarray) -> float:
    """2|G∩P| / (|G| + |P|) for masks that are not both empty."""
    return _deepmind_dice(MaskPair(pred_mask, gt_mask))


def _pairs(cache: SurfaceCache | None) -> SurfaceCache:
    """``cache``, or a new one for this call only."""
    return cache if cache is not None else SurfaceCache()


def _as_fed(spacing_zyx: tuple[float, ...], spacing_order: SpacingOrder) -> tuple[float, ...]:
    """The spacing the CVPR scripts pass on: the npz entry, written by the challenge's
    preprocessing in SimpleITK order (x, y, z) (``spacing_order="xyz"``, the official feed),
    or in array order (``"zyx"``)."""
    if spacing_order not in ("xyz", "zyx"):
        raise ValueError(f"conventions: spacing_order {spacing_order!r} is not 'xyz' or 'zyx'")
    return tuple(spacing_zyx[::-1]) if spacing_order == "xyz" else tuple(spacing_zyx)


# --- SAMed --------------------------------------------------------------------------------------


def samed_case(
    pred_zyx: np.ndarray,
    gt_zyx: np.ndarray,
    spacing_zyx: Sequence[float],
    classes: Sequence[int],
    prob_zyx: SoftOutputs | None = None,
    *,
    cache: SurfaceCache | None = None,
) -> CaseResult:
    """SAMed ``calculate_metric_percase`` for every class of ``classes`` (their loop runs
    over ``1..num_classes``, so a class absent from both masks is scored too):

    - both non-empty: DSC = medpy ``dc``, HD95 = medpy ``hd95`` without voxelspacing, i.e. in
      voxels (:func:`medsegflow.metrics.hd95` with unit spacing, equal to medpy 0.5.2);
    - prediction non-empty, GT empty: DSC = 1, HD95 = 0;
    - prediction empty (GT empty or not): DSC = 0, HD95 = 0.

    ``spacing_zyx`` and ``prob_zyx`` are not used; NSD and IoU are NaN; every class counts.
    A 2D image (``(1, H, W)``) gets 2D distances, as medpy on SAMed's 2D arrays.
    """
    del prob_zyx
    pred, gt, _, labels = _check_case(pred_zyx, gt_zyx, spacing_zyx, classes)
    pairs = _pairs(cache)
    out: CaseResult = {}
    for label in labels:
        pair = pairs.pair(pred, gt, label)
        has_pred, has_gt = pair.n_pred > 0, pair.n_gt > 0
        if has_pred and has_gt:
            distance = pair.hd95((1.0, 1.0, 1.0))
            out[label] = _scores(dsc=_deepmind_dice(pair), hd95=distance)
        elif has_pred:  # prediction present, GT empty
            out[label] = _scores(dsc=1.0, hd95=0.0)
        else:  # prediction empty
            out[label] = _scores(dsc=0.0, hd95=0.0)
    return out


def samed_case_summary(result: CaseResult) -> dict[str, float]:
    """What SAMed's ``test.py`` logs per case: the mean over classes of ``dsc`` and ``hd95``."""
    return {m: float(np.mean([s[m] for s in result.values()])) for m in ("dsc", "hd95")}


def samed_aggregate(results: Sequence[CaseResult]) -> Aggregate:
    """SAMed ``test.py``: per class, the mean over all test volumes; overall, the mean of the
    per-class means. Nothing is excluded. Metrics: ``dsc`` and ``hd95`` (voxels)."""
    per_class: dict[int, dict[str, float]] = {}
    for label in _labels_of(results):
        per_class[label] = {
            m: float(np.mean([float(r[label][m]) for r in results if label in r]))
            for m in ("dsc", "hd95")
        }
        per_class[label].update(iou=NAN, nsd=NAN)
    overall = {
        m: float(np.mean([v[m] for v in per_class.values()])) if per_class else NAN
        for m in ("dsc", "hd95")
    }
    overall.update(iou=NAN, nsd=NAN)
    return {
        "overall": overall,
        "per_class": per_class,
        "n_cases": len(results),
        "n_excluded": 0,
        "error": "",
    }


# --- CVPR 2024 (MedSAM / LiteMedSAM) and CVPR 2025 (interactive SegFM) challenges --------------


def _cvpr_case(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: tuple[float, ...],
    labels: list[int],
    scored: list[int],
    *,
    nsd_error: str = "",
    cache: SurfaceCache | None = None,
) -> CaseResult:
    """DSC of every ``scored`` label, NSD@2 of all of them when their mean DSC > 0.2 (NaN
    otherwise: not computed); other labels of ``labels`` are not counted."""
    pairs = _pairs(cache)
    dsc = {label: _deepmind_dice(pairs.pair(pred, gt, label)) for label in scored}
    case_dsc = float(np.mean(list(dsc.values()))) if dsc else NAN
    gate = case_dsc > CVPR_NSD_MIN_DSC  # False for NaN, as their ``if dsc > 0.2``
    out: CaseResult = {}
    for label in sorted(set(labels) | set(scored)):
        if label not in dsc:
            out[label] = _scores(counted=False)
        elif gate and nsd_error:
            out[label] = _scores(dsc=dsc[label], error=nsd_error)
        elif gate:
            nsd = pairs.pair(pred, gt, label).surface_dice(spacing, CVPR_NSD_TOLERANCE)
            out[label] = _scores(dsc=dsc[label], nsd=nsd)
        else:
            out[label] = _scores(dsc=dsc[label])
    return out


def _cvpr_case_summary(result: CaseResult) -> dict[str, float | str]:
    counted = [scores for scores in result.values() if scores["counted"]]
    with np.errstate(all="ignore"):
        case_dsc = float(np.mean([s["dsc"] for s in counted])) if counted else NAN
    if not case_dsc > CVPR_NSD_MIN_DSC:
        return {"dsc": case_dsc, "nsd": 0.0, "error": ""}
    error = ", ".join(sorted({str(s["error"]) for s in counted if s["error"]}))
    if error:
        return {"dsc": case_dsc, "nsd": NAN, "error": error}
    return {"dsc": case_dsc, "nsd": float(np.mean([s["nsd"] for s in counted])), "error": ""}


def medsam_case(
    pred_zyx: np.ndarray,
    gt_zyx: np.ndarray,
    spacing_zyx: Sequence[float],
    classes: Sequence[int],
    prob_zyx: SoftOutputs | None = None,
    *,
    spacing_order: SpacingOrder = "xyz",
    cache: SurfaceCache | None = None,
) -> CaseResult:
    """The CVPR 2024 challenge (MedSAM / LiteMedSAM) ``evaluation/compute_metrics.py``.

    - Labels ``1 .. max(gt)`` are scored (``counted``), whether present or not; labels above
      ``max(gt)`` are ignored (not counted, NaN).
    - DSC per label: both masks empty -> NaN; else 2|G∩P| / (|G| + |P|).
    - NSD at 2 of every scored label, only when the case DSC (mean over the scored labels,
      NaN propagating) is > 0.2; otherwise NaN here (not computed) and the case NSD is 0.0
      (:func:`medsam_case_summary`).
    - 3D: the DeepMind surface Dice with the npz spacing, which the challenge's preprocessing
      wrote in (x, y, z) order for (z, y, x) arrays: ``spacing_order="xyz"`` (default, the
      official feed) passes ``spacing_zyx[::-1]``; ``"zyx"`` the spacing in array order.
    - 2D (:func:`is_2d_case`): the image as a one-voxel slab with spacing (1, 1, 1), so the
      slab's flat faces count as surface.

    HD95 and IoU are not computed (NaN). ``prob_zyx`` is ignored.
    """
    del prob_zyx
    pred, gt, spacing, labels = _check_case(pred_zyx, gt_zyx, spacing_zyx, classes)
    fed = (1.0, 1.0, 1.0) if is_2d_case(gt) else _as_fed(spacing, spacing_order)
    return _cvpr_case(pred, gt, fed, labels, list(range(1, int(gt.max()) + 1)), cache=cache)


def medsam_case_summary(result: CaseResult) -> dict[str, float | str]:
    """The one row per case the CVPR24 script writes: ``dsc`` = mean over the counted labels
    (NaN propagating; NaN when there are none), ``nsd`` = 0.0 unless that DSC > 0.2, else the
    mean NSD over the counted labels. The CSV keeps ``round(value, 4)`` of both."""
    return _cvpr_case_summary(result)


def _summaries_aggregate(
    results: Sequence[CaseResult], summarise: Callable[[CaseResult], dict[str, float | str]]
) -> Aggregate:
    summaries = [summarise(r) for r in results]
    error = ", ".join(sorted({str(s["error"]) for s in summaries if s["error"]}))
    overall = {
        "dsc": NAN if error else _nanmean([float(s["dsc"]) for s in summaries]),
        "nsd": NAN if error else _nanmean([float(s["nsd"]) for s in summaries]),
        "iou": NAN,
        "hd95": NAN,
    }
    per_class = {
        label: {
            "dsc": _nanmean(_metric_values(results, label, "dsc")),
            "nsd": _nanmean(_metric_values(results, label, "nsd")),
            "iou": NAN,
            "hd95": NAN,
        }
        for label in _labels_of(results)
    }
    return {
        "overall": overall,
        "per_class": per_class,
        "n_cases": len(results),
        "n_excluded": sum(1 for s in summaries if math.isnan(float(s["dsc"]))),
        "error": error,
    }


def medsam_aggregate(results: Sequence[CaseResult]) -> Aggregate:
    """The CVPR24 script prints no dataset aggregate. This is the mean over cases of its
    per-case values (:func:`medsam_case_summary`) skipping NaN (pandas ``DataFrame.mean``):
    a case with a NaN DSC is left out of the DSC mean (``n_excluded``) while its NSD (0.0)
    counts. ``per_class``: the NaN-skipping mean of each counted label's values."""
    return _summaries_aggregate(results, medsam_case_summary)


def cvpr25_case(
    pred_zyx: np.ndarray,
    gt_zyx: np.ndarray,
    spacing_zyx: Sequence[float],
    classes: Sequence[int],
    prob_zyx: SoftOutputs | None = None,
    *,
    spacing_order: SpacingOrder = "xyz",
    cache: SurfaceCache | None = None,
) -> CaseResult:
    """One step of the CVPR 2025 interactive challenge (``CVPR25_iter_eval.py``
    ``compute_multi_class_dsc`` / ``compute_multi_class_nsd``).

    - Labels: the sorted values of ``gt`` minus the smallest (assumed background): labels
      absent from the GT are not scored, labels only in the prediction are ignored.
    - DSC and NSD at 2 mm as in :func:`medsam_case` (NSD only when the mean DSC > 0.2, the
      spacing as the npz stores it, ``spacing_order``).
    - A 2D case: the official NSD code is 3D-only and raises ``IndexError`` on a 2D array
      when the DSC gate passes (``error``); below the gate the case NSD is 0.0.
    """
    del prob_zyx
    pred, gt, spacing, labels = _check_case(pred_zyx, gt_zyx, spacing_zyx, classes)
    scored = _values_present(gt)[1:]
    if is_2d_case(gt):
        return _cvpr_case(pred, gt, spacing, labels, scored, nsd_error="IndexError", cache=cache)
    return _cvpr_case(pred, gt, _as_fed(spacing, spacing_order), labels, scored, cache=cache)


def cvpr25_case_summary(result: CaseResult) -> dict[str, float | str]:
    """A step's DSC and NSD as the CVPR25 script records them (as :func:`medsam_case_summary`,
    over the labels present in the GT)."""
    return _cvpr_case_summary(result)


def cvpr25_auc(step_values: Sequence[float]) -> float:
    """CVPR25 ``DSC_AUC`` / ``NSD_AUC``: ``scipy.integrate.cumulative_trapezoid(values[-5:],
    x=0..4)[-1]`` over the last :data:`CVPR25_AUC_STEPS` values (the 5 click steps; the box
    step before them is excluded), i.e. 0.5 s1 + s2 + s3 + s4 + 0.5 s5, at most 4. Fewer
    values: the same trapezoid over those given (NaN for none, 0.0 for one)."""
    values = np.asarray(step_values, dtype=np.float64)[-CVPR25_AUC_STEPS:]
    if values.size == 0:
        return NAN
    if values.size == 1:
        return 0.0
    return float(np.cumsum((values[1:] + values[:-1]) / 2.0)[-1])


def cvpr25_sequence(
    preds_kzyx: Sequence[np.ndarray],
    gt_zyx: np.ndarray,
    spacing_zyx: Sequence[float],
    *,
    has_bbox: bool = True,
    spacing_order: SpacingOrder = "xyz",
) -> dict[str, float | int | str]:
    """The per-case row of ``CVPR25_iter_eval.py`` for one interactive sequence.

    ``preds_kzyx``: the prediction after each step, step 1 the box and the next ones one click
    each (the challenge: 1 + 5). Returns ``num_class`` (labels in the GT), ``DSC_k`` /
    ``NSD_k`` per step (:func:`cvpr25_case_summary`), ``DSC_AUC`` / ``NSD_AUC``
    (:func:`cvpr25_auc`) and ``DSC_Final`` / ``NSD_Final`` (the last step). Without a box
    (``has_bbox`` False) step 1 is recorded as DSC = NSD = 0 without scoring it. A step's
    official error (``error:<Name>``) replaces its NSD and the NSD AUC/final.
    """
    gt = _as_labels(gt_zyx, "gt_zyx")
    present = _values_present(gt)
    classes = present[1:] or [1]
    row: dict[str, float | int | str] = {"num_class": len(present) - 1}
    dscs: list[float] = []
    nsds: list[float] = []
    error = ""
    for step, pred in enumerate(preds_kzyx, start=1):
        if step == 1 and not has_bbox:
            dsc, nsd = 0.0, 0.0
        else:
            summary = cvpr25_case_summary(
                cvpr25_case(pred, gt, spacing_zyx, classes, spacing_order=spacing_order)
            )
            dsc, nsd = float(summary["dsc"]), float(summary["nsd"])
            error = error or str(summary["error"])
        dscs.append(dsc)
        nsds.append(nsd)
        row[f"DSC_{step}"] = dsc
        row[f"NSD_{step}"] = f"error:{summary['error']}" if math.isnan(nsd) and error else nsd
    row["DSC_AUC"] = cvpr25_auc(dscs)
    row["NSD_AUC"] = f"error:{error}" if error else cvpr25_auc(nsds)
    row["DSC_Final"] = dscs[-1] if dscs else NAN
    row["NSD_Final"] = f"error:{error}" if error else (nsds[-1] if nsds else NAN)
    return row


def cvpr25_aggregate(results: Sequence[CaseResult]) -> Aggregate:
    """The CVPR25 script writes one row per case and no dataset aggregate. This is the mean
    over cases of the per-case values (:func:`cvpr25_case_summary`) skipping NaN; an official
    error (NSD of a 2D case) is reported as ``error`` with NaN values."""
    return _summaries_aggregate(results, cvpr25_case_summary)


# --- SAM-Med3D ----------------------------------------------------------------------------------

SAMMED3D_NSD_TOLERANCE = 1.0
SAMMED3D_LEGACY_CLICKS = 5


def sammed3d_case(
    pred_zyx: np.ndarray,
    gt_zyx: np.ndarray,
    spacing_zyx: Sequence[float],
    classes: Sequence[int],
    prob_zyx: SoftOutputs | None = None,
    *,
    label_set: Literal["gt", "classes"] = "classes",
    cache: SurfaceCache | None = None,
) -> CaseResult:
    """SAM-Med3D ``utils/metric_utils.py`` ``compute_metrics``, per class:

    - both empty: DSC = NSD = NaN (``counted`` False);
    - GT empty, prediction non-empty: DSC = NSD = 0;
    - otherwise DSC = 2|G∩P| / (|G| + |P|) and the DeepMind surface Dice at 1 mm with the
      NIfTI spacing (an empty prediction gives 0).

    ``label_set="classes"`` scores ``classes`` (their ``--classes``);
    ``label_set="gt"`` scores the nonzero labels present in the GT, their default: a GT with no
    label gives an empty result, which :func:`sammed3d_aggregate` drops. IoU (|G∩P| / |G∪P|,
    same empty rules) is the legacy ``validation.py`` one used by
    :func:`sammed3d_best_of_clicks`. HD95 is not computed (NaN); ``prob_zyx`` is ignored.
    The volume is scored as the 3D array it is (a one-slice volume is a slab).
    """
    del prob_zyx
    if label_set not in ("gt", "classes"):
        raise ValueError(f"sammed3d_case: label_set {label_set!r} is not 'gt' or 'classes'")
    pred, gt, spacing, labels = _check_case(pred_zyx, gt_zyx, spacing_zyx, classes)
    if label_set == "gt":
        labels = [v for v in _values_present(gt) if v != 0]
    pairs = _pairs(cache)
    out: CaseResult = {}
    for label in labels:
        pair = pairs.pair(pred, gt, label)
        has_pred, has_gt = pair.n_pred > 0, pair.n_gt > 0
        if not has_gt and not has_pred:
            out[label] = _scores(counted=False)
        elif not has_gt:
            out[label] = _scores(dsc=0.0, iou=0.0, nsd=0.0)
        else:
            inter = pair.tp
            union = pair.n_pred + pair.n_gt - inter
            nsd = pair.surface_dice(spacing, SAMMED3D_NSD_TOLERANCE)
            out[label] = _scores(dsc=_deepmind_dice(pair), iou=inter / union, nsd=nsd)
    return out


def sammed3d_aggregate(results: Sequence[CaseResult]) -> Aggregate:
    """SAM-Med3D ``utils/compute_dataset_metrics.py``: files with no scored label (a GT with no
    label under its default label set) are dropped with a warning (``n_excluded``); per class,
    ``np.nanmean`` (and ``std``: ``np.nanstd``, ddof 0; ``count``: files scoring the class)
    over the files; overall, the mean (and std) of *all* non-NaN (file, class) values pooled
    together, not the mean of the per-class means."""
    kept = [r for r in results if r]
    per_class: dict[int, dict[str, float]] = {}
    pooled: dict[str, list[float]] = {m: [] for m in CASE_METRICS}
    for label in _labels_of(kept):
        per_class[label] = {}
        for metric in CASE_METRICS:
            values = [float(r[label][metric]) for r in kept if label in r]
            finite = [v for v in values if not math.isnan(v)]
            per_class[label][metric] = float(np.mean(finite)) if finite else NAN
            per_class[label][f"{metric}_std"] = float(np.std(finite)) if finite else NAN
            pooled[metric].extend(finite)
        per_class[label]["count"] = float(sum(1 for r in kept if label in r))
    overall: dict[str, float] = {}
    for metric, values in pooled.items():
        overall[metric] = float(np.mean(values)) if values else NAN
        overall[f"{metric}_std"] = float(np.std(values)) if values else NAN
    return {
        "overall": overall,
        "per_class": per_class,
        "n_cases": len(kept),
        "n_excluded": len(results) - len(kept),
        "error": "",
    }


def sammed3d_best_of_clicks(
    click_results: Sequence[CaseResult], n_clicks: int = SAMMED3D_LEGACY_CLICKS
) -> CaseResult:
    """Legacy SAM-Med3D ``validation.py``: the best of the per-click results of one case.

    ``num_clicks`` defaults to 5; per case it keeps ``max(dice_list)`` and, separately,
    ``max(iou_list)`` (the two maxima may come from different clicks); the reported score is
    the plain mean of those maxima over cases.

    ``click_results``: the case results (e.g. from :func:`sammed3d_case`) after click 1, 2, ...
    in order; the first ``n_clicks`` are used. Per class: ``dsc`` and ``iou`` are the maxima
    over those clicks ignoring NaN (NaN only if every click is NaN). Their Python ``max`` over a
    list with NaN depends on where the NaN sits; that quirk is not reproduced. The legacy
    script also rounded each click's Dice to 4 decimals before the max; not reproduced. NSD and
    HD95 were not computed by the legacy script (NaN).

    Raises:
        ValueError: fewer than ``n_clicks`` results, or the clicks disagree on the classes.
    """
    if n_clicks < 1 or len(click_results) < n_clicks:
        raise ValueError(
            f"sammed3d_best_of_clicks: need {n_clicks} click results, got {len(click_results)}"
        )
    used = list(click_results[:n_clicks])
    labels = list(used[0])
    if any(list(r) != labels for r in used):
        raise ValueError("sammed3d_best_of_clicks: click results have different classes")
    out: CaseResult = {}
    for label in labels:
        best = {}
        for metric in ("dsc", "iou"):
            values = [float(r[label][metric]) for r in used if not math.isnan(r[label][metric])]
            best[metric] = max(values) if values else NAN
        out[label] = _scores(dsc=best["dsc"], iou=best["iou"], counted=not math.isnan(best["dsc"]))
    return out


# --- Med-SA (Medical SAM Adapter) ---------------------------------------------------------------


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def _soft_maps(
    prob_zyx: SoftOutputs, labels: Sequence[int], shape: tuple[int, ...]
) -> dict[int, np.ndarray]:
    """Map each class to its soft (Z, Y, X) float map; see the module docstring."""
    if isinstance(prob_zyx, Mapping):
        missing = [label for label in labels if label not in prob_zyx]
        if missing:
            raise ValueError(f"conventions: prob_zyx has no map for classes {missing}")
        maps = {label: np.asarray(prob_zyx[label], dtype=np.float64) for label in labels}
    else:
        array = np.asarray(prob_zyx, dtype=np.float64)
        if array.ndim != 4:
            raise ValueError(f"conventions: prob_zyx must be (C, Z, Y, X), got {array.shape}")
        if array.shape[0] == len(labels):
            maps = {label: array[i] for i, label in enumerate(labels)}
        elif array.shape[0] > max(labels):
            maps = {label: array[label] for label in labels}
        else:
            raise ValueError(
                f"conventions: prob_zyx has {array.shape[0]} channels; expected "
                f"{len(labels)} (one per class) or more than {max(labels)} (background first)"
            )
    for label, soft in maps.items():
        if soft.shape != shape:
            raise ValueError(
                f"conventions: prob map of class {label} has shape {soft.shape}, expected {shape}"
            )
    return maps


def medsa_case(
    pred_zyx: np.ndarray,
    gt_zyx: np.ndarray,
    spacing_zyx: Sequence[float],
    classes: Sequence[int],
    prob_zyx: SoftOutputs | None = None,
    *,
    soft_kind: Literal["probability", "logit"] = "probability",
    cache: SurfaceCache | None = None,
) -> CaseResult:
    """Med-SA ``utils.py`` ``eval_seg`` with ``function.py`` ``validation_sam``'s thresholds.

    - Each threshold t of :data:`MEDSA_THRESHOLDS` binarises the soft output (``> t``) and the
      GT the same way. Their ``pred`` is the mask decoder's raw *logits*:
      ``soft_kind="logit"`` applies t to ``prob_zyx`` as given (the official feed);
      ``soft_kind="probability"`` (MedSegFlow's saved sigmoid probabilities) applies
      ``prob > sigmoid(t)``, which selects the pixels ``logit > t``.
    - Per 2D image: IoU = (|A∩B| + 1e-6) / (|A∪B| + 1e-6); Dice = (2|A∩B| + 1e-4) /
      (|A| + |B| + 1e-4): both empty gives 1, one empty mask a tiny positive value.
    - A volume is a batch of its Z slices (the ``-thd`` path folds depth into the batch):
      the case value is the mean over slices (both-empty slices score 1), then over the
      thresholds.
    - One channel per class: with 1 or 2 classes each channel is scored on its own; with
      more than 2 the official class loop crashes (``AttributeError``, ``error``).

    Without ``prob_zyx`` DSC and IoU are NaN (``counted`` False). NSD and HD95 are NaN.
    ``spacing_zyx`` and ``pred_zyx`` (beyond shape checks) are not used. Float64 arithmetic
    (theirs float32 torch: differences below 1e-6).
    """
    pred, gt, _, labels = _check_case(pred_zyx, gt_zyx, spacing_zyx, classes)
    del pred, cache
    if soft_kind not in ("probability", "logit"):
        raise ValueError(f"medsa_case: soft_kind {soft_kind!r} is not 'probability' or 'logit'")
    if prob_zyx is None:
        return {label: _scores(counted=False) for label in labels}
    maps = _soft_maps(prob_zyx, labels, gt.shape)
    if len(labels) > 2:
        return {label: _scores(error="AttributeError") for label in labels}
    cuts = [_sigmoid(t) if soft_kind == "probability" else t for t in MEDSA_THRESHOLDS]
    out: CaseResult = {}
    for label in labels:
        truth = gt == label
        n_truth = truth.sum(axis=(1, 2)).astype(np.float64)
        dice_per_cut, iou_per_cut = [], []
        for cut in cuts:
            mask = maps[label] > cut
            inter = (mask & truth).sum(axis=(1, 2)).astype(np.float64)
            n_mask = mask.sum(axis=(1, 2)).astype(np.float64)
            union = n_mask + n_truth - inter
            dice_per_cut.append(
                np.mean((2.0 * inter + MEDSA_DICE_EPS) / (n_mask + n_truth + MEDSA_DICE_EPS))
            )
            iou_per_cut.append(np.mean((inter + MEDSA_IOU_SMOOTH) / (union + MEDSA_IOU_SMOOTH)))
        out[label] = _scores(dsc=np.mean(dice_per_cut), iou=np.mean(iou_per_cut))
    return out


def medsa_eval_seg_tuple(result: CaseResult) -> tuple[float, ...]:
    """``eval_seg``'s return value for one case: ``(iou, dice)`` for one class,
    ``(iou_1, iou_2, dice_1, dice_2)`` for two (in class order)."""
    labels = sorted(result)
    return tuple(float(result[c]["iou"]) for c in labels) + tuple(
        float(result[c]["dsc"]) for c in labels
    )


def medsa_aggregate(results: Sequence[CaseResult]) -> Aggregate:
    """Med-SA ``validation_sam``: per channel (class), the sum of the per-case values divided
    by the number of cases (one case per batch). ``overall``: the mean of the per-class means
    (their code reports channels separately). Cases without soft outputs are excluded and
    counted in ``n_excluded``; a case on which ``eval_seg`` crashes crashes the run
    (``error``, NaN values)."""
    error = _errors_of(results)
    per_class: dict[int, dict[str, float]] = {}
    n_excluded = 0
    for label in _labels_of(results):
        values = {m: _metric_values(results, label, m) for m in ("dsc", "iou")}
        per_class[label] = {m: NAN if error else _nanmean(v) for m, v in values.items()}
        per_class[label].update(nsd=NAN, hd95=NAN)
        n_excluded += sum(1 for r in results if label in r and not r[label]["counted"])
    overall = {m: _nanmean([v[m] for v in per_class.values()]) for m in ("dsc", "iou")}
    overall.update(nsd=NAN, hd95=NAN)
    return {
        "overall": overall,
        "per_class": per_class,
        "n_cases": len(results),
        "n_excluded": n_excluded,
        "error": error,
    }


# --- MedCLIP-SAMv2 ------------------------------------------------------------------------------

MEDCLIP_NSD_TOLERANCE_PX = 2.0


def _nearest_index(src: int, dst: int) -> np.ndarray:
    """Source index of each destination index, as OpenCV ``resizeNN``: ``floor(d * ifx)``
    with ``ifx = 1 / (dst / src)`` computed in double precision, clamped to ``src - 1``."""
    ifx = 1.0 / (dst / src)
    index = np.floor(np.arange(dst, dtype=np.float64) * ifx).astype(np.intp)
    return np.minimum(index, src - 1)


def medclip_resize_nearest(image: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    """Resize a 2D image (or the last two axes of an array) to ``shape_yx`` like
    ``cv2.resize(..., interpolation=cv2.INTER_NEAREST)``: destination pixel ``d`` reads source
    pixel ``min(floor(d * (1 / (dst / src))), src - 1)`` on each axis (no half-pixel offset;
    the reciprocal is taken as OpenCV does, which matters when ``d * src / dst`` is an integer)."""
    image = np.asarray(image)
    dst_h, dst_w = (int(v) for v in shape_yx)
    if dst_h <= 0 or dst_w <= 0 or image.ndim < 2:
        raise ValueError(f"medclip_resize_nearest: bad target {shape_yx} for {image.shape}")
    src_h, src_w = image.shape[-2:]
    rows = _nearest_index(src_h, dst_h)
    cols = _nearest_index(src_w, dst_w)
    return image[..., rows[:, None], cols[None, :]]


def medclip_binarise(image: np.ndarray) -> np.ndarray:
    """MedCLIP-SAMv2 binarisation of an 8-bit mask image: ``cv2.threshold(img, 200, 255,
    THRESH_BINARY)``, i.e. foreground where the value is strictly above 200."""
    return np.asarray(image) > MEDCLIP_BINARY_THRESHOLD


def medclip_png_masks(seg_png: np.ndarray, gt_png: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Their per-image preprocessing of grayscale mask images: resize the prediction to the
    GT's size (nearest), then binarise both above 200. Returns ``(seg_bool, gt_bool)``."""
    gt_png = np.asarray(gt_png)
    seg = medclip_resize_nearest(seg_png, gt_png.shape[-2:])
    return medclip_binarise(seg), medclip_binarise(gt_png)


def medclip_case(
    pred_zyx: np.ndarray,
    gt_zyx: np.ndarray,
    spacing_zyx: Sequence[float],
    classes: Sequence[int],
    prob_zyx: SoftOutputs | None = None,
    *,
    seg_u8: np.ndarray | None = None,
    cache: SurfaceCache | None = None,
) -> CaseResult:
    """MedCLIP-SAMv2 ``evaluation/eval.py``, per image.

    - The prediction image is resized to the GT size (``cv2.INTER_NEAREST``,
      :func:`medclip_resize_nearest`) and both are binarised above 200
      (:func:`medclip_binarise`). Each class ``c`` is the 0/255 image of ``label == c``; with
      ``seg_u8`` (a saved 8-bit grey prediction image, ``(Z, H, W)``) that image is
      binarised instead, for a single class.
    - Labels: the union of the foreground values of both images; a class absent from both is
      not scored (``counted`` False). When no class is present at all their
      ``assert len(labels) > 0`` fails: every class records ``error`` ``AssertionError``.
    - GT empty, prediction non-empty: DSC = IoU = NSD = 0.
    - Otherwise DSC, IoU = |A∩B| / |A∪B| and the DeepMind surface Dice at 2 of the image as a
      one-voxel slab with spacing (1, 1, 1), no DSC gate (an empty prediction gives 0).

    ``spacing_zyx`` and ``prob_zyx`` are not used; HD95 is NaN. Their script reads 2D PNG
    images: a 3D case (more than one slice) is not scored (NaN, ``counted`` False).
    """
    del prob_zyx, cache  # its masks are binarised images of its own
    pred, gt, _, labels = _check_case(pred_zyx, gt_zyx, spacing_zyx, classes, same_grid=False)
    if not is_2d_case(gt):
        return {label: _scores(counted=False) for label in labels}
    if seg_u8 is not None:
        if len(labels) != 1:
            raise ValueError(f"medclip_case: seg_u8 scores one class, got classes {labels}")
        pred = np.asarray(seg_u8)
    if pred.shape != gt.shape:
        if pred.shape[0] != gt.shape[0]:
            raise ValueError(f"medclip_case: pred has {pred.shape[0]} slices, gt has {gt.shape[0]}")
        pred = medclip_resize_nearest(pred, gt.shape[1:])
    out: CaseResult = {}
    for label in labels:
        seg_image = pred if seg_u8 is not None else np.where(pred == label, 255, 0)
        seg_mask = medclip_binarise(seg_image.astype(np.uint8))
        gt_mask = medclip_binarise(np.where(gt == label, 255, 0).astype(np.uint8))
        has_seg, has_gt = bool(seg_mask.any()), bool(gt_mask.any())
        if not has_seg and not has_gt:
            out[label] = _scores(counted=False)
        elif not has_gt:
            out[label] = _scores(dsc=0.0, iou=0.0, nsd=0.0)
        else:
            inter = int(np.count_nonzero(seg_mask & gt_mask))
            union = int(np.count_nonzero(seg_mask | gt_mask))
            nsd = surfel_surface_dice(seg_mask, gt_mask, (1.0, 1.0, 1.0), MEDCLIP_NSD_TOLERANCE_PX)
            out[label] = _scores(dsc=_plain_dice(seg_mask, gt_mask), iou=inter / union, nsd=nsd)
    if not any(scores["counted"] for scores in out.values()):
        return {label: _scores(error="AssertionError") for label in labels}
    return out


def medclip_case_summary(result: CaseResult, *, decimals: int | None = 4) -> dict[str, float]:
    """What ``eval.py`` keeps per image: the mean over its labels of ``dsc``, ``iou`` and
    ``nsd``, each ``round(value, 4)``. Raises :class:`ConventionUndefinedError` when the
    official code fails on the image."""
    error = _errors_of([result])
    if error:
        raise ConventionUndefinedError(f"MedCLIP-SAMv2 eval.py fails: {error}", error)
    counted = [s for s in result.values() if s["counted"]]
    values = {m: float(np.mean([s[m] for s in counted])) for m in ("dsc", "iou", "nsd")}
    if decimals is None:
        return values
    return {m: round(v, decimals) for m, v in values.items()}


def medclip_aggregate(
    results: Sequence[CaseResult],
    *,
    decimals: int | None = 4,
    script: Literal["eval", "nnunetv2"] = "eval",
) -> Aggregate:
    """MedCLIP-SAMv2 ``evaluation/eval.py`` on a folder: the plain mean over images of the
    per-image values (:func:`medclip_case_summary`, rounded to 4 decimals). One image on which
    the official code fails (two empty masks) stops the whole evaluation: ``error`` names it
    and the overall values are NaN. ``script="nnunetv2"``: the copy in
    ``weak_segmentation/nnunetv2/evaluation/eval.py``, whose never-filled IoU column makes
    pandas raise ``ValueError`` on any folder it gets through. Images with no scored class
    (3D cases) are left out (``n_excluded``). ``per_class`` (informational): the mean over
    images of each label's unrounded value."""
    if script not in ("eval", "nnunetv2"):
        raise ValueError(f"medclip_aggregate: script {script!r} is not 'eval' or 'nnunetv2'")
    error = _errors_of(results)
    scored = [r for r in results if any(s["counted"] or s["error"] for s in r.values())]
    if script == "nnunetv2" and scored and not error:
        error = "ValueError"
    overall = {"dsc": NAN, "iou": NAN, "nsd": NAN, "hd95": NAN}
    if not error and scored:
        summaries = [medclip_case_summary(r, decimals=decimals) for r in scored]
        for metric in ("dsc", "iou", "nsd"):
            overall[metric] = float(np.mean([s[metric] for s in summaries]))
    per_class = {
        label: {m: _nanmean(_metric_values(results, label, m)) for m in ("dsc", "iou", "nsd")}
        | {"hd95": NAN}
        for label in _labels_of(results)
    }
    return {
        "overall": overall,
        "per_class": per_class,
        "n_cases": len(results),
        "n_excluded": len(results) - len(scored),
        "error": error,
    }


# --- registry -----------------------------------------------------------------------------------

CaseFunction = Callable[..., CaseResult]
AggregateFunction = Callable[[Sequence[CaseResult]], Aggregate]


@dataclass(frozen=True)
class Convention:
    """One paper's evaluation convention.

    ``case(pred_zyx, gt_zyx, spacing_zyx, classes, prob_zyx=None) -> CaseResult`` scores one
    case; ``aggregate(list_of_case_results) -> Aggregate`` reproduces the paper's averaging;
    ``quirks`` names what makes its numbers differ from MedSegFlow's own.
    """

    name: str
    case: CaseFunction
    aggregate: AggregateFunction
    description: str
    citation: str
    quirks: tuple[str, ...] = ()


CONVENTIONS: dict[str, Convention] = {
    "samed": Convention(
        name="samed",
        case=samed_case,
        aggregate=samed_aggregate,
        description=(
            "SAMed: DSC 1 if only the prediction is present, 0 if the prediction is empty; "
            "HD95 in voxels (0 when a mask is empty); mean over volumes per class."
        ),
        citation="hitachinsk/SAMed utils.py@e351840481f51d0c7dee50007f29d02197b63d99",
        quirks=(
            "false positive on an empty GT scores Dice 1, HD95 0",
            "empty prediction scores HD95 0",
            "both empty scores Dice 0",
            "HD95 in voxels, spacing ignored",
            "every class 1..num_classes counts, absent ones as 0",
        ),
    ),
    "medsam_cvpr24": Convention(
        name="medsam_cvpr24",
        case=medsam_case,
        aggregate=medsam_aggregate,
        description=(
            "CVPR24 (MedSAM/LiteMedSAM): labels 1..max(GT), both-empty DSC NaN; NSD at 2 "
            "(DeepMind surfels), 0 when the case DSC <= 0.2; NaN-skipping mean over cases."
        ),
        citation=(
            "bowang-lab/MedSAM@b0fab476e54e631dd412b25e0db9fdf2a2b0f54c "
            "evaluation/compute_metrics.py, evaluation/SurfaceDice.py"
        ),
        quirks=(
            "2D scored as a one-voxel slab: flat faces count as surface",
            "3D spacing passed in (x, y, z) order to (z, y, x) arrays",
            "labels 1..max(gt): an absent intermediate label makes the case DSC NaN, NSD 0",
            "NSD 0 when the case DSC <= 0.2",
            "empty GT: DSC NaN, NSD 0",
        ),
    ),
    "cvpr25": Convention(
        name="cvpr25",
        case=cvpr25_case,
        aggregate=cvpr25_aggregate,
        description=(
            "CVPR25 interactive SegFM: labels present in the GT; NSD at 2 mm (DeepMind "
            "surfels), 0 when the case DSC <= 0.2; AUC over the 5 click steps."
        ),
        citation=(
            "JunMa11/CVPR-MedSegFMCompetition@748e862d162e3e3ee8197bd4085b19bbbe0bb8a0 "
            "CVPR25_iter_eval.py, SurfaceDice.py"
        ),
        quirks=(
            "labels absent from the GT are not scored, labels only in the prediction ignored",
            "3D spacing passed as the npz stores it ((x, y, z) from the CVPR24 preprocessing)",
            "NSD 0 when the case DSC <= 0.2",
            "AUC is a trapezoid over the 5 click steps, box step excluded (maximum 4)",
            "2D: the NSD code raises IndexError when the DSC gate passes",
        ),
    ),
    "sam_med3d": Convention(
        name="sam_med3d",
        case=partial(sammed3d_case, label_set="gt"),
        aggregate=sammed3d_aggregate,
        description=(
            "SAM-Med3D: labels present in each GT; files with an empty GT dropped; NSD at "
            "1 mm (DeepMind surfels); per-class nanmean, overall mean of pooled values."
        ),
        citation=(
            "uni-medical/SAM-Med3D@f3de1fa10da98e46f49f176773d2b1e306ba131f "
            "utils/metric_utils.py, utils/compute_dataset_metrics.py"
        ),
        quirks=(
            "files whose GT has no label are dropped from the dataset aggregate",
            "NSD tolerance 1 mm (the challenges use 2)",
            "overall = mean of all (file, class) values pooled",
        ),
    ),
    "med_sa": Convention(
        name="med_sa",
        case=medsa_case,
        aggregate=medsa_aggregate,
        description=(
            "Med-SA: smoothed Dice/IoU averaged over logit thresholds 0.1..0.9 (per slice); "
            "needs soft outputs, NaN without them."
        ),
        citation=(
            "KidsWithTokens/Medical-SAM-Adapter@4dcdc63c65c52e4acda35b96a50ebd8943e16238 "
            "utils.py (eval_seg), function.py (validation_sam)"
        ),
        quirks=(
            "thresholds 0.1..0.9 applied to raw logits, Dice/IoU averaged over them",
            "both empty scores 1; an empty GT with a false positive about 1e-9, not 0",
            "3D: mean over slices, both-empty slices scoring 1",
            "more than 2 classes: eval_seg raises AttributeError",
        ),
    ),
    "medclip_samv2": Convention(
        name="medclip_samv2",
        case=medclip_case,
        aggregate=medclip_aggregate,
        description=(
            "MedCLIP-SAMv2: nearest resize to GT, binarise > 200, GT-empty with prediction 0, "
            "NSD at 2 px (slab, no gate); per-image values rounded to 4 d.p., then the mean."
        ),
        citation=(
            "HealthX-Lab/MedCLIP-SAMv2@07047e3f51e7f112cfeb490698ca60a1867295f2 "
            "evaluation/eval.py, evaluation/SurfaceDice.py"
        ),
        quirks=(
            "two empty masks fail an assert: the whole evaluation stops (AssertionError)",
            "binarised above 200 of 255: soft outputs count only above 0.784",
            "2D scored as a one-voxel slab: flat faces count as surface",
            "per-image values rounded to 4 d.p. before the mean",
        ),
    ),
}


def long_table_rows(
    convention: str,
    result: CaseResult,
    *,
    dataset: str,
    method: str,
    case_id: str,
    label_names: Mapping[int, str] | None = None,
) -> list[dict[str, object]]:
    """Rows for the long table (columns :data:`LONG_TABLE_COLUMNS`), one per class of
    ``result``, in class order. ``label_name`` is ``label_names[label]`` or ``""``."""
    if convention not in CONVENTIONS:
        raise KeyError(f"long_table_rows: unknown convention {convention!r}")
    names = label_names or {}
    return [
        {
            "dataset": dataset,
            "method": method,
            "case_id": case_id,
            "label": int(label),
            "label_name": names.get(label, ""),
            "convention": convention,
            "dsc": float(scores["dsc"]),
            "nsd": float(scores["nsd"]),
            "hd95": float(scores["hd95"]),
            "error": str(scores["error"]),
        }
        for label, scores in sorted(result.items())
    ]
