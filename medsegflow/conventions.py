"""Convention replay: score saved predictions the way each seed paper's own evaluation code does.

MedSegFlow's tables use one convention (:func:`medsegflow.metrics.compute_metrics`). This module
re-scores the same predictions under each paper's rule so a method can be compared with the
number its authors would have printed. Each convention is one *case function* plus one
*aggregation*, registered in :data:`CONVENTIONS`.

Case functions all take ``(pred_zyx, gt_zyx, spacing_zyx, classes, prob_zyx=None)`` for one
case and return a :data:`CaseResult`: ``{class_value: {"dsc", "iou", "nsd", "hd95", "counted"}}``
with one entry per value in ``classes``. Metrics a convention does not define are NaN.
``counted`` says whether the convention's own averaging uses that label for that case (e.g.
SAM-Med3D leaves both-empty labels out, MedSAM only looks at labels ``1..max(gt)``).

- ``pred_zyx``, ``gt_zyx``: integer label volumes ``(Z, Y, X)`` on the same grid (MedCLIP-SAMv2
  alone resizes a prediction of another in-plane size, as its script does). A 2D image is a
  ``(1, H, W)`` volume.
- ``spacing_zyx``: voxel size in mm. Conventions that work in voxels/pixels ignore it.
- ``classes``: the label values to score (nonzero ints). Pass the dataset's full class list.
- ``prob_zyx``: soft outputs, only used by Med-SA: a float array ``(C, Z, Y, X)`` (channel ``i``
  is ``classes[i]`` when ``C == len(classes)``, channel ``c`` is class ``c`` when
  ``C > max(classes)``, i.e. background first) or a dict ``{class_value: (Z, Y, X) array}``.

**2D vs 3D.** A case is 2D when its volume has a single slice (``gt_zyx.shape[0] == 1``), else
3D. Only MedSAM's rule depends on it (2 px with unit spacing in 2D, 2 mm in 3D).

**One distance implementation.** Every surface metric here comes from
:func:`medsegflow.metrics.compute_metrics` (medpy 0.5.2 surfaces; unit spacing gives voxel
distances; ``nsd_tolerance_mm`` sets the tolerance). This module only overrides the empty-mask,
label-set, thresholding and averaging rules. Known consequence: MedSAM, SAM-Med3D and
MedCLIP-SAMv2 compute NSD with DeepMind's ``surface_distance`` code, which weights each surface
element by its area (marching-cubes surfels on the voxel-corner grid); ``compute_metrics`` counts
surface voxels (MONAI ``compute_surface_dice``). The empty-mask values (0, NaN) are identical;
non-trivial NSD values can differ slightly from what the authors' scripts would print.

Overlap counts (Dice/IoU with Med-SA's smoothing constants) are plain voxel counts, not
distance code, and are computed here.

Aggregations take a sequence of :data:`CaseResult` (one per case) and return an
:data:`Aggregate`: ``{"overall": {metric: value}, "per_class": {class: {metric: value}},
"n_cases": int, "n_excluded": int}`` (``n_excluded``: averaging units the convention leaves
out, see each function).

This module is pure: no I/O, no global state besides the registry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np

from medsegflow.metrics import compute_metrics

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
)

ClassScores = dict[str, float | bool]
CaseResult = dict[int, ClassScores]
Aggregate = dict[str, object]
SoftOutputs = np.ndarray | Mapping[int, np.ndarray]

#: Med-SA's validation thresholds (``function.py`` ``validation_sam``).
MEDSA_THRESHOLDS: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
#: Med-SA smoothing constants (``utils.py``: ``iou`` SMOOTH and ``DiceCoeff`` eps).
MEDSA_IOU_SMOOTH = 1e-6
MEDSA_DICE_EPS = 1e-4
#: MedCLIP-SAMv2 binarisation threshold (``cv2.threshold(mask, 200, 255, THRESH_BINARY)``).
MEDCLIP_BINARY_THRESHOLD = 200


class ConventionUndefinedError(ValueError):
    """The convention's own code fails on this input (e.g. MedCLIP-SAMv2's assert)."""


# --- shared helpers ---------------------------------------------------------------------------


def _scores(
    dsc: float = NAN,
    iou: float = NAN,
    nsd: float = NAN,
    hd95: float = NAN,
    *,
    counted: bool = True,
) -> ClassScores:
    return {
        "dsc": float(dsc),
        "iou": float(iou),
        "nsd": float(nsd),
        "hd95": float(hd95),
        "counted": bool(counted),
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


# --- SAMed --------------------------------------------------------------------------------------


def samed_case(
    pred_zyx: np.ndarray,
    gt_zyx: np.ndarray,
    spacing_zyx: Sequence[float],
    classes: Sequence[int],
    prob_zyx: SoftOutputs | None = None,
) -> CaseResult:
    """SAMed (Zhang & Liu 2023) per-volume rule, ``calculate_metric_percase``.

    Source: hitachinsk/SAMed ``utils.py`` (``calculate_metric_percase``, ``test_single_volume``)
    at commit f3c4b4440854815476dbfcb5c40df30eed886529; averaging in ``test.py`` ``inference``
    at commit 5c500ceeb6d3e39151999e938594e7182b6b6114.

    Per class ``c`` of ``classes`` (their loop is ``1..num_classes``), on ``pred == c`` vs
    ``gt == c``:

    - both non-empty: DSC = medpy ``dc``, HD95 = medpy ``hd95`` called *without* voxelspacing,
      i.e. in voxels (here: ``compute_metrics`` with unit spacing, which matches medpy 0.5.2);
    - prediction non-empty, GT empty: DSC = 1, HD95 = 0 (sic, as in their code);
    - prediction empty (GT empty or not): DSC = 0, HD95 = 0.

    ``spacing_zyx`` is ignored (SAMed never passes spacing). SAMed defines no NSD and no IoU
    (NaN). Every class counts. 2D images (``(1, H, W)``) get 2D distances, as SAMed's 2D branch
    calls medpy on 2D arrays. ``prob_zyx`` is ignored.
    """
    del prob_zyx
    pred, gt, _, labels = _check_case(pred_zyx, gt_zyx, spacing_zyx, classes)
    base = compute_metrics(pred, gt, (1.0, 1.0, 1.0), labels=labels)
    out: CaseResult = {}
    for label in labels:
        r = base[label]
        if not r["pred_empty"] and not r["gt_empty"]:
            out[label] = _scores(dsc=r["dsc"], hd95=r["hd95_mm"])
        elif not r["pred_empty"]:  # prediction present, GT empty
            out[label] = _scores(dsc=1.0, hd95=0.0)
        else:  # prediction empty
            out[label] = _scores(dsc=0.0, hd95=0.0)
    return out


def samed_aggregate(results: Sequence[CaseResult]) -> Aggregate:
    """SAMed ``test.py``: per class, the mean over all test volumes (sum / number of volumes);
    overall, the mean of the per-class means (``np.mean(metric_list, axis=0)``). Nothing is
    excluded (every value is defined). Metrics: ``dsc`` and ``hd95`` (voxels)."""
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
    return {"overall": overall, "per_class": per_class, "n_cases": len(results), "n_excluded": 0}


# --- MedSAM / LiteMedSAM, CVPR 2024 challenge ---------------------------------------------------

MEDSAM_NSD_TOLERANCE = 2.0
MEDSAM_NSD_MIN_DSC = 0.2


def medsam_case(
    pred_zyx: np.ndarray,
    gt_zyx: np.ndarray,
    spacing_zyx: Sequence[float],
    classes: Sequence[int],
    prob_zyx: SoftOutputs | None = None,
) -> CaseResult:
    """MedSAM / LiteMedSAM CVPR 2024 challenge rule (``compute_metrics.py``).

    Source: bowang-lab/MedSAM ``evaluation/compute_metrics.py`` at commit
    b042d247f92105d4b03372b18230aa08560959e7 (the CVPR24 "SAM on laptop" evaluation script; the
    same script is in automl/CVPR24-MedSAM-on-Laptop ``evaluation/compute_metrics.py`` at
    4c8f433311bec24952211bda09a4482d064b6764). Its helpers: bowang-lab/MedSAM
    ``utils/SurfaceDice.py`` at 8432244ac07be6baba120dcb786e8a694c188eb9. No file named
    ``CVPR24_compute_metrics.py`` was found in the searchable index.

    What the code does (and where it differs from the brief's table):

    - Label set: ``range(1, gt.max() + 1)``, every integer up to the largest GT label, *not*
      "the labels present": a label in that range absent from the GT but predicted scores
      DSC 0; labels above ``gt.max()`` are never looked at (a prediction of them costs
      nothing). Here: classes ``c <= max(gt)`` are ``counted``; others get NaN, not counted.
    - DSC (``compute_dice_coefficient``): both empty -> NaN; one empty -> 0.
    - The case DSC is ``np.mean`` over the label set, so one both-empty label inside the
      range makes the case DSC NaN (NaN propagates).
    - NSD is gated on the *case* mean DSC, not per label: if case DSC > 0.2 every label's
      NSD is computed, else (including a NaN case DSC) the case NSD is 0.0. Here the
      per-label NSD is set to 0.0 for every counted label when the gate fails.
    - NSD tolerance 2.0: in mm with the case spacing for 3D cases, with spacing
      ``[1, 1, 1]`` (so 2 px) for 2D cases (their switch is the file-name prefix "3D"; here
      :func:`is_2d_case`). One empty mask gives NSD 0 (DeepMind surface Dice with an empty
      surface).
    - NSD values come from ``compute_metrics`` (voxel-count surface Dice); the authors use
      surfel-area weighting (see the module docstring).

    HD95 and IoU are not computed by this convention (NaN). ``prob_zyx`` is ignored.
    """
    del prob_zyx
    pred, gt, spacing, labels = _check_case(pred_zyx, gt_zyx, spacing_zyx, classes)
    if is_2d_case(gt):
        spacing = (1.0, 1.0, 1.0)
    base = compute_metrics(pred, gt, spacing, MEDSAM_NSD_TOLERANCE, labels=labels)
    gt_max = int(gt.max())
    in_range = [label for label in labels if label <= gt_max]
    dsc: dict[int, float] = {}
    for label in in_range:
        r = base[label]
        dsc[label] = NAN if (r["gt_empty"] and r["pred_empty"]) else float(r["dsc"])
    case_dsc = float(np.mean([dsc[label] for label in in_range])) if in_range else NAN
    gate = case_dsc > MEDSAM_NSD_MIN_DSC  # False for NaN, as in their ``if dsc > 0.2``
    out: CaseResult = {}
    for label in labels:
        if label not in dsc:
            out[label] = _scores(counted=False)
            continue
        r = base[label]
        if not gate:
            nsd = 0.0
        elif r["gt_empty"] and r["pred_empty"]:
            nsd = NAN  # unreachable: a both-empty label makes the case DSC NaN
        else:
            nsd = float(r["nsd"])  # 0.0 when one mask is empty
        out[label] = _scores(dsc=dsc[label], nsd=nsd)
    return out


def medsam_case_summary(result: CaseResult) -> dict[str, float]:
    """The one-row-per-case values the MedSAM script writes: ``dsc`` = mean over the counted
    labels (NaN-propagating ``np.mean``; NaN when none), ``nsd`` = 0.0 unless that DSC > 0.2,
    else the mean NSD over the counted labels."""
    counted = [scores for scores in result.values() if scores["counted"]]
    case_dsc = float(np.mean([s["dsc"] for s in counted])) if counted else NAN
    if not case_dsc > MEDSAM_NSD_MIN_DSC:
        return {"dsc": case_dsc, "nsd": 0.0}
    return {"dsc": case_dsc, "nsd": float(np.mean([s["nsd"] for s in counted]))}


def medsam_aggregate(results: Sequence[CaseResult]) -> Aggregate:
    """MedSAM CVPR24: one value per case (:func:`medsam_case_summary`), then the mean over
    cases skipping NaN (pandas ``DataFrame.mean``, as the challenge summaries do). A case with
    a NaN DSC is excluded from the DSC mean but its NSD (0.0) still counts, as in their code.
    ``n_excluded`` = cases with a NaN DSC. ``per_class`` (informational; their script reports
    per case / modality) is the NaN-skipping mean of each counted label's values."""
    summaries = [medsam_case_summary(r) for r in results]
    overall = {
        "dsc": _nanmean([s["dsc"] for s in summaries]),
        "nsd": _nanmean([s["nsd"] for s in summaries]),
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
    n_excluded = sum(1 for s in summaries if math.isnan(s["dsc"]))
    return {
        "overall": overall,
        "per_class": per_class,
        "n_cases": len(results),
        "n_excluded": n_excluded,
    }


# --- SAM-Med3D ----------------------------------------------------------------------------------

SAMMED3D_NSD_TOLERANCE = 1.0
SAMMED3D_LEGACY_CLICKS = 5


def sammed3d_case(
    pred_zyx: np.ndarray,
    gt_zyx: np.ndarray,
    spacing_zyx: Sequence[float],
    classes: Sequence[int],
    prob_zyx: SoftOutputs | None = None,
) -> CaseResult:
    """SAM-Med3D per-class rule (``utils/metric_utils.py`` ``compute_metrics``).

    Source: uni-medical/SAM-Med3D ``utils/metric_utils.py`` at commit
    69c3aced2db6032f028250cdddd9e06d78fd7127 (the same rules in ``utils/val_utils.py`` at
    f8f2251bc5b5a9e0269868112d6017f0006c91e8).

    Per class ``c``:

    - both empty: DSC = NaN, NSD = NaN (left out of every mean; ``counted`` False);
    - GT empty, prediction non-empty: DSC = 0, NSD = 0;
    - prediction empty, GT non-empty: DSC = 0 (formula) and NSD = 0 (empty surface);
    - otherwise DSC = 2|A∩B| / (|A| + |B|), NSD at tolerance 1.0 mm with the NIfTI spacing.

    Their label set is ``classes`` when ``--classes`` is passed, else the nonzero labels
    present in each GT file (then classes missing from the GT are not scored at all); this
    function scores the given ``classes``, i.e. the ``--classes`` behaviour. IoU is the
    legacy ``validation.py`` ``compute_iou`` (|A∩B| / |A∪B|) under the same empty rules, used
    by :func:`sammed3d_best_of_clicks`. HD95 is not defined (NaN). NSD values come from
    ``compute_metrics`` (voxel counts; the authors use DeepMind's surfel areas).
    ``prob_zyx`` is ignored.
    """
    del prob_zyx
    pred, gt, spacing, labels = _check_case(pred_zyx, gt_zyx, spacing_zyx, classes)
    base = compute_metrics(pred, gt, spacing, SAMMED3D_NSD_TOLERANCE, labels=labels)
    out: CaseResult = {}
    for label in labels:
        r = base[label]
        if r["gt_empty"] and r["pred_empty"]:
            out[label] = _scores(counted=False)
        elif r["gt_empty"] or r["pred_empty"]:
            out[label] = _scores(dsc=0.0, iou=0.0, nsd=0.0)
        else:
            out[label] = _scores(dsc=r["dsc"], iou=r["iou"], nsd=r["nsd"])
    return out


def sammed3d_aggregate(results: Sequence[CaseResult]) -> Aggregate:
    """SAM-Med3D ``utils/compute_dataset_metrics.py`` (commit
    69c3aced2db6032f028250cdddd9e06d78fd7127): per class, ``np.nanmean`` over files; overall,
    the mean of *all* non-NaN (file, class) values pooled together — not the mean of the
    per-class means. ``n_excluded`` = (case, class) DSC values that are NaN."""
    per_class: dict[int, dict[str, float]] = {}
    pooled: dict[str, list[float]] = {m: [] for m in CASE_METRICS}
    n_excluded = 0
    for label in _labels_of(results):
        per_class[label] = {}
        for metric in CASE_METRICS:
            values = [float(r[label][metric]) for r in results if label in r]
            per_class[label][metric] = _nanmean(values)
            pooled[metric].extend(v for v in values if not math.isnan(v))
            if metric == "dsc":
                n_excluded += sum(1 for v in values if math.isnan(v))
    overall = {m: float(np.mean(v)) if v else NAN for m, v in pooled.items()}
    return {
        "overall": overall,
        "per_class": per_class,
        "n_cases": len(results),
        "n_excluded": n_excluded,
    }


def sammed3d_best_of_clicks(
    click_results: Sequence[CaseResult], n_clicks: int = SAMMED3D_LEGACY_CLICKS
) -> CaseResult:
    """Legacy SAM-Med3D ``validation.py``: the best of the per-click results of one case.

    Source: uni-medical/SAM-Med3D ``validation.py`` at commit
    10761d1dfad11fd054f19d3b26f0b7ae5602c272: ``num_clicks`` defaults to 5; per case it keeps
    ``max(dice_list)`` and, separately, ``max(iou_list)`` (the two maxima may come from
    different clicks); the reported score is the plain mean of those maxima over cases.

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
) -> CaseResult:
    """Med-SA threshold-averaged Dice and IoU (``eval_seg``).

    Source: MedicineToken/Medical-SAM-Adapter ``function.py`` ``validation_sam`` at commit
    1888b84d1b7f7e47fe4b7a5ce2d2673bebcce20c (``threshold = (0.1, 0.3, 0.5, 0.7, 0.9)``,
    ``temp = eval_seg(pred, masks, threshold)``, mean over validation batches) and ``utils.py``
    ``eval_seg`` / ``iou`` / ``DiceCoeff`` / ``dice_coeff`` at commit
    154edb72da1c3f3b956e6a4db1833b2f778a252b.

    What the code does:

    - ``pred`` is the raw mask-decoder output, i.e. *logits* (no sigmoid before ``eval_seg``);
      each threshold t gives the mask ``pred > t``; the GT is thresholded the same way
      (a no-op on a 0/1 mask). With ``soft_kind="probability"`` (the default: ``prob_zyx``
      holds sigmoid probabilities) the logit threshold t is applied as ``prob > sigmoid(t)``,
      which selects the same pixels; ``soft_kind="logit"`` applies t to ``prob_zyx`` directly.
      Softmax probabilities are not sigmoids of a binary logit, so the mapping is then only
      an approximation of their rule.
    - Per 2D image: IoU = (|A∩B| + 1e-6) / (|A∪B| + 1e-6); Dice = (2|A∩B| + 1e-4) /
      (|A| + |B| + 1e-4). So both empty gives 1, and one empty mask gives a tiny positive
      value (e.g. 1e-4 / (n + 1e-4)), not 0.
    - Each channel is scored on its own (their 2-channel disc/cup branch); the values are
      averaged over the five thresholds and over the images of a batch. 3D volumes are
      evaluated slice by slice (``rearrange 'b c h w d -> (b d) c h w'``): the case value here
      is the mean over all Z slices, empty-empty slices scoring 1.

    Without ``prob_zyx`` the convention is undefined: DSC and IoU are NaN (``counted`` False).
    NSD and HD95 are not defined (NaN). ``spacing_zyx`` and ``pred_zyx`` (beyond shape checks)
    are not used. Arithmetic is float64 (theirs float32).
    """
    pred, gt, _, labels = _check_case(pred_zyx, gt_zyx, spacing_zyx, classes)
    del pred
    if soft_kind not in ("probability", "logit"):
        raise ValueError(f"medsa_case: soft_kind {soft_kind!r} is not 'probability' or 'logit'")
    if prob_zyx is None:
        return {label: _scores(counted=False) for label in labels}
    maps = _soft_maps(prob_zyx, labels, gt.shape)
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


def medsa_aggregate(results: Sequence[CaseResult]) -> Aggregate:
    """Med-SA ``validation_sam``: per channel (class), the mean over validation images
    (sum of batch means / number of batches; equal to the per-image mean with batch size 1).
    ``overall`` is the mean of the per-class means (their code reports channels separately;
    this overall value is our summary). Cases without soft outputs (NaN) are excluded and
    counted in ``n_excluded``."""
    per_class: dict[int, dict[str, float]] = {}
    n_excluded = 0
    for label in _labels_of(results):
        values = {m: _metric_values(results, label, m) for m in ("dsc", "iou")}
        per_class[label] = {m: _nanmean(v) for m, v in values.items()}
        per_class[label].update(nsd=NAN, hd95=NAN)
        n_excluded += sum(1 for r in results if label in r and not r[label]["counted"])
    overall = {m: _nanmean([v[m] for v in per_class.values()]) for m in ("dsc", "iou")}
    overall.update(nsd=NAN, hd95=NAN)
    return {
        "overall": overall,
        "per_class": per_class,
        "n_cases": len(results),
        "n_excluded": n_excluded,
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
    both_empty: Literal["raise", "nan"] = "raise",
) -> CaseResult:
    """MedCLIP-SAMv2 evaluation (``evaluation/eval.py``).

    Source: HealthX-Lab/MedCLIP-SAMv2 ``evaluation/eval.py`` at commits
    331ac3e35ef48503542d8f2bdcb0019bf83a0428 (DSC, IoU, NSD) and
    935e9d633bd4c58dd3d121fc03fadfd204b27c77 (DSC, NSD; same rules). Its ``SurfaceDice.py``
    is not stored as source in the index (only ``.pyc``); it is assumed to be the DeepMind /
    MedSAM ``SurfaceDice.py``.

    What the code does, per image:

    - the predicted mask image is resized to the GT size with ``cv2.INTER_NEAREST``; both are
      binarised with ``cv2.threshold(., 200, 255, THRESH_BINARY)`` (value > 200 ->
      foreground). Here each class ``c`` is scored one-vs-rest as the 0/255 image of
      ``label == c`` (for such images the threshold keeps exactly the class pixels); a
      prediction of another in-plane size is resized to the GT grid first
      (:func:`medclip_resize_nearest`). Use :func:`medclip_png_masks` for raw 8-bit images.
    - labels = the union of the foreground values of GT and prediction;
      ``assert len(labels) > 0``: GT and prediction both empty is an error. Here: raise
      :class:`ConventionUndefinedError` (``both_empty="raise"``, their behaviour) or record
      NaN and leave the class out of the image mean (``both_empty="nan"``, which is their
      union-of-labels rule when several classes are scored).
    - GT empty, prediction non-empty: DSC = IoU = NSD = 0.
    - prediction empty, GT non-empty: their general branch, DSC = 0, IoU = 0, NSD = 0.
    - otherwise DSC, IoU = |A∩B| / |A∪B| and NSD at tolerance 2 with spacing ``[1, 1, 1]``
      (2 px; ``spacing_zyx`` is ignored).

    The script is 2D; a 3D case (Z > 1) is scored as one volume with unit spacing (2 voxels).
    HD95 is not defined (NaN). ``prob_zyx`` is ignored (their inputs are saved mask images).
    NSD values come from ``compute_metrics`` (voxel counts; theirs surfel areas).
    """
    del prob_zyx
    if both_empty not in ("raise", "nan"):
        raise ValueError(f"medclip_case: both_empty {both_empty!r} is not 'raise' or 'nan'")
    pred, gt, _, labels = _check_case(pred_zyx, gt_zyx, spacing_zyx, classes, same_grid=False)
    if pred.shape != gt.shape:
        if pred.shape[0] != gt.shape[0]:
            raise ValueError(f"medclip_case: pred has {pred.shape[0]} slices, gt has {gt.shape[0]}")
        pred = medclip_resize_nearest(pred, gt.shape[1:])
    out: CaseResult = {}
    for label in labels:
        seg_mask = medclip_binarise(np.where(pred == label, 255, 0).astype(np.uint8))
        gt_mask = medclip_binarise(np.where(gt == label, 255, 0).astype(np.uint8))
        has_seg, has_gt = bool(seg_mask.any()), bool(gt_mask.any())
        if not has_seg and not has_gt:
            if both_empty == "raise":
                raise ConventionUndefinedError(
                    f"MedCLIP-SAMv2: class {label} is empty in both GT and prediction; "
                    "their eval.py asserts at least one foreground label per image"
                )
            out[label] = _scores(counted=False)
        elif not has_gt:
            out[label] = _scores(dsc=0.0, iou=0.0, nsd=0.0)
        else:
            r = compute_metrics(seg_mask, gt_mask, (1.0, 1.0, 1.0), MEDCLIP_NSD_TOLERANCE_PX)[1]
            out[label] = _scores(dsc=r["dsc"], iou=r["iou"], nsd=r["nsd"])
    return out


def medclip_aggregate(results: Sequence[CaseResult], *, decimals: int | None = 4) -> Aggregate:
    """MedCLIP-SAMv2 ``eval.py``: per image, the mean over its scored labels (``DSC_arr``
    etc.), rounded to 4 decimals as their CSV (``round(DSC, 4)``); then the plain mean over
    images (``dataframe['DSC'].mean()``). Images with no scored label (their assert) are
    excluded and counted in ``n_excluded``. ``per_class`` (informational) is the mean over
    images of each counted label's unrounded value."""
    per_image: dict[str, list[float]] = {"dsc": [], "iou": [], "nsd": []}
    n_excluded = 0
    for result in results:
        counted = [s for s in result.values() if s["counted"]]
        if not counted:
            n_excluded += 1
            continue
        for metric, values in per_image.items():
            value = float(np.mean([s[metric] for s in counted]))
            values.append(round(value, decimals) if decimals is not None else value)
    overall = {m: float(np.mean(v)) if v else NAN for m, v in per_image.items()}
    overall["hd95"] = NAN
    per_class = {
        label: {m: _nanmean(_metric_values(results, label, m)) for m in ("dsc", "iou", "nsd")}
        | {"hd95": NAN}
        for label in _labels_of(results)
    }
    return {
        "overall": overall,
        "per_class": per_class,
        "n_cases": len(results),
        "n_excluded": n_excluded,
    }


# --- registry -----------------------------------------------------------------------------------

CaseFunction = Callable[..., CaseResult]
AggregateFunction = Callable[[Sequence[CaseResult]], Aggregate]


@dataclass(frozen=True)
class Convention:
    """One paper's evaluation convention.

    ``case(pred_zyx, gt_zyx, spacing_zyx, classes, prob_zyx=None) -> CaseResult`` scores one
    case; ``aggregate(list_of_case_results) -> Aggregate`` reproduces the paper's averaging.
    """

    name: str
    case: CaseFunction
    aggregate: AggregateFunction
    description: str
    citation: str


CONVENTIONS: dict[str, Convention] = {
    "samed": Convention(
        name="samed",
        case=samed_case,
        aggregate=samed_aggregate,
        description=(
            "SAMed: DSC 1 if only the prediction is present, 0 if the prediction is empty; "
            "HD95 in voxels (0 when a mask is empty); mean over volumes per class."
        ),
        citation=(
            "hitachinsk/SAMed utils.py@f3c4b4440854815476dbfcb5c40df30eed886529 "
            "(calculate_metric_percase); test.py@5c500ceeb6d3e39151999e938594e7182b6b6114"
        ),
    ),
    "medsam_cvpr24": Convention(
        name="medsam_cvpr24",
        case=medsam_case,
        aggregate=medsam_aggregate,
        description=(
            "MedSAM/LiteMedSAM CVPR24: labels 1..max(GT), both-empty DSC NaN; NSD 2 mm (3D) / "
            "2 px (2D), 0 when the case mean DSC <= 0.2; NaN-skipping mean over cases."
        ),
        citation=(
            "bowang-lab/MedSAM evaluation/compute_metrics.py@"
            "b042d247f92105d4b03372b18230aa08560959e7; "
            "utils/SurfaceDice.py@8432244ac07be6baba120dcb786e8a694c188eb9"
        ),
    ),
    "sam_med3d": Convention(
        name="sam_med3d",
        case=sammed3d_case,
        aggregate=sammed3d_aggregate,
        description=(
            "SAM-Med3D: both-empty NaN (excluded), GT-empty with prediction 0; NSD at 1 mm; "
            "per-class nanmean, overall mean of pooled values (best-of-5: see helper)."
        ),
        citation=(
            "uni-medical/SAM-Med3D utils/metric_utils.py@"
            "69c3aced2db6032f028250cdddd9e06d78fd7127; utils/compute_dataset_metrics.py@"
            "69c3aced2db6032f028250cdddd9e06d78fd7127; "
            "validation.py@10761d1dfad11fd054f19d3b26f0b7ae5602c272"
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
            "MedicineToken/Medical-SAM-Adapter function.py@"
            "1888b84d1b7f7e47fe4b7a5ce2d2673bebcce20c (validation_sam); "
            "utils.py@154edb72da1c3f3b956e6a4db1833b2f778a252b (eval_seg)"
        ),
    ),
    "medclip_samv2": Convention(
        name="medclip_samv2",
        case=partial(medclip_case, both_empty="nan"),
        aggregate=medclip_aggregate,
        description=(
            "MedCLIP-SAMv2: nearest resize to GT, binarise > 200, GT-empty with prediction 0, "
            "NSD 2 px; both-empty asserts in their code (NaN here); per-image means."
        ),
        citation=(
            "HealthX-Lab/MedCLIP-SAMv2 evaluation/eval.py@"
            "331ac3e35ef48503542d8f2bdcb0019bf83a0428 and @"
            "935e9d633bd4c58dd3d121fc03fadfd204b27c77"
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
        }
        for label, scores in sorted(result.items())
    ]
