"""SAM without text guidance (``family: sam_auto``): automatic masks, one chosen per slice.

The baseline that asks what SAM finds with no prompt from text or labels. For every slice
to segment, from the case's cached image embedding
(``results/embeddings/{dataset}/{model}/{case_id}.npz``):

1. **Candidates** (SAM's automatic mask generator, ``SamAutomaticMaskGenerator`` with one
   crop layer): a regular grid of ``points_per_side`` x ``points_per_side`` single
   positive points (SAM's ``build_point_grid`` scaled to the slice, continuous
   coordinates), decoded in batches of ``batch_size`` points with multimask output by
   :meth:`~medsegflow.promptable.interface.PromptableModel.decode`; all 3 outputs of every point are
   candidates, as in SAM's generator. Masks are kept when their
   predicted IoU is ``> pred_iou_thresh`` and their stability score is
   ``>= stability_score_thresh`` (SAM's comparisons). The stability score is SAM's
   ``calculate_stability_score``: the IoU of the mask logits (original slice frame)
   thresholded at ``mask_threshold + 1`` and ``mask_threshold - 1``. Empty masks are
   dropped, then greedy box non-maximum suppression at ``box_nms_thresh`` (boxes of the
   masks, scored by predicted IoU) removes duplicates.

   Differences from SAM: box IoU counts pixels (inclusive corners, ``x_max - x_min + 1``)
   where torchvision uses ``x_max - x_min``. No crop layers and no small-region
   post-processing (SAM's defaults).

2. **Choice** (:func:`choose_mask`; there is no text and no label to say which candidate is
   the target): among candidates whose area is between ``min_area_frac`` and
   ``max_area_frac`` of the slice (inclusive) and that touch at most one of the four image
   borders, the one with the highest predicted IoU; ties go to the higher stability
   score, then to the larger area, then to the earlier candidate (grid point, then output
   index). No such candidate: the
   slice stays empty.

Slices: the embedded slices of each case. For a 3D case (more than one slice) only those
where the target label is present in the cleaned reference label are segmented (oracle
slice presence, the rule of the text-driven family with ``slice_mode: labelled``); the
others stay background. A 2D case's single slice is always segmented.

Target label: the method's ``label`` (a name of the dataset's ``labels.json``), by
default the dataset's only foreground label; the chosen mask is painted with its value.
Predictions are written in the original image geometry (the preprocessed image's), then
``manifest.tsv`` with ``n_prompts`` = the number of grid points decoded for the case.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from medsegflow.datasets.canonical import label_path, read_label_map
from medsegflow.errors import ConfigError
from medsegflow.io import Volume
from medsegflow.models.sam_cache import CaseEmbeddings
from medsegflow.prediction.cases import predict_cases, read_label_volume
from medsegflow.prediction.job import PredictJob
from medsegflow.prediction.painting import ObjectMask, paint_objects
from medsegflow.promptable.interface import Prompt2D, PromptableModel
from medsegflow.promptable.predict2d import load_cached_model, load_checked_embeddings
from medsegflow.prompts.boxes import box_from_mask

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

STABILITY_OFFSET = 1.0
"""SAM's ``stability_score_offset``: logits are thresholded at ``mask_threshold -/+ 1``."""


@dataclass(frozen=True)
class SamAutoConfig:
    """A ``family: sam_auto`` method's settings (``schemas/families/sam_auto.schema.yaml``)."""

    points_per_side: int
    pred_iou_thresh: float
    stability_score_thresh: float
    box_nms_thresh: float
    min_area_frac: float
    max_area_frac: float
    label: str | None
    batch_size: int


def parse_sam_auto_config(method: Mapping[str, Any], method_name: str) -> SamAutoConfig:
    """The settings of a complete ``sam_auto`` method (schema defaults filled in, see
    :func:`medsegflow.families.complete_method`); :class:`ConfigError` naming
    ``methods.<method_name>.min_area_frac`` when it exceeds ``max_area_frac``."""
    config = SamAutoConfig(**{f.name: method[f.name] for f in fields(SamAutoConfig)})
    if config.min_area_frac > config.max_area_frac:
        raise ConfigError(
            f"methods.{method_name}.min_area_frac: {config.min_area_frac} is above "
            f"max_area_frac {config.max_area_frac}"
        )
    return config


def target_label(
    label_map: Mapping[str, int], label: str | None, *, method_name: str, source: str
) -> int:
    """The label value to paint: ``label``'s value, or the only foreground label's.

    :class:`ConfigError` naming ``methods.<method_name>.label`` for an unknown name, or
    when ``label`` is unset and the dataset (``source``: its ``labels.json``) has several
    foreground labels or none.
    """
    key = f"methods.{method_name}.label"
    foreground = {name: int(v) for name, v in label_map.items() if int(v) != 0}
    if label is not None:
        if label not in foreground:
            raise ConfigError(
                f"{key}: '{label}' is not a foreground label of {source} "
                f"(has: {', '.join(foreground) or 'none'})"
            )
        return foreground[label]
    if len(foreground) != 1:
        raise ConfigError(
            f"{key}: required, {source} has {len(foreground)} foreground labels "
            f"({', '.join(foreground) or 'none'}); name the one to segment"
        )
    return next(iter(foreground.values()))


# --- pure helpers (no torch) ------------------------------------------------------------


def grid_points(points_per_side: int, shape_yx: tuple[int, int]) -> np.ndarray:
    """SAM's point grid on a slice: float64 ``(n * n, 2)`` ``[x, y]``, rows then columns.

    ``build_point_grid(n)`` (cell centres ``(i + 0.5) / n`` of the unit square, x varying
    fastest) scaled by ``(W, H)``, as the generator scales it to the image.
    """
    n = int(points_per_side)
    if n < 1:
        raise ValueError(f"points_per_side must be >= 1, got {n}")
    height, width = shape_yx
    side = (np.arange(n) + 0.5) / n
    ys, xs = np.meshgrid(side, side, indexing="ij")
    return np.stack([xs.ravel() * width, ys.ravel() * height], axis=1)


def stability_scores(logits_pyx: np.ndarray, threshold: float, offset: float = STABILITY_OFFSET):
    """SAM's stability score of each mask: ``|logits > t + o| / |logits > t - o|``.

    Returns float64 ``(P,)``; 0 where the lower threshold leaves no pixel.
    """
    logits = np.asarray(logits_pyx)
    inner = (logits > threshold + offset).reshape(len(logits), -1).sum(axis=1)
    outer = (logits > threshold - offset).reshape(len(logits), -1).sum(axis=1)
    return np.where(outer > 0, inner / np.maximum(outer, 1), 0.0)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one inclusive ``XYXY`` pixel box with each of ``boxes`` ``(N, 4)``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0 + 1, 0, None) * np.clip(y1 - y0 + 1, 0, None)

    def area(b: np.ndarray) -> np.ndarray:
        return (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)

    return inter / (area(np.asarray(box, dtype=np.float64)) + area(boxes) - inter)


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, highest score first.

    A box is dropped when its IoU (:func:`box_iou`) with a kept, higher-scored box is
    ``> iou_thresh`` (torchvision's rule); equal scores keep the earlier box first.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep: list[int] = []
    for i in order:
        if not keep or not (box_iou(boxes[i], boxes[keep]) > iou_thresh).any():
            keep.append(int(i))
    return np.array(keep, dtype=np.int64)


@dataclass(frozen=True)
class MaskCandidate:
    """One automatic mask: bool ``(H, W)`` mask, SAM's predicted IoU, stability score."""

    mask_yx: np.ndarray
    pred_iou: float
    stability: float

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask_yx))


def borders_touched(mask_yx: np.ndarray) -> int:
    """How many of the 4 image borders (top, bottom, left, right) the mask has pixels on."""
    mask_yx = np.asarray(mask_yx, dtype=bool)
    return (
        int(mask_yx[0].any())
        + int(mask_yx[-1].any())
        + int(mask_yx[:, 0].any())
        + int(mask_yx[:, -1].any())
    )


def choose_mask(
    candidates: Sequence[MaskCandidate],
    shape_yx: tuple[int, int],
    *,
    min_area_frac: float,
    max_area_frac: float,
) -> int | None:
    """Index of the candidate taken as the target, or None (the module docstring's rule).

    Eligible: ``min_area_frac <= area / (H * W) <= max_area_frac`` and at most one image
    border touched. Among them: highest ``pred_iou``, then highest ``stability``, then
    largest area, then the earliest in ``candidates``.
    """
    n_pixels = float(shape_yx[0] * shape_yx[1])
    best, best_key = None, None
    for i, candidate in enumerate(candidates):
        area = candidate.area
        if not min_area_frac <= area / n_pixels <= max_area_frac:
            continue
        if borders_touched(candidate.mask_yx) > 1:
            continue
        key = (float(candidate.pred_iou), float(candidate.stability), area)
        if best_key is None or key > best_key:
            best, best_key = i, key
    return best


# --- decoding ---------------------------------------------------------------------------


def automatic_masks(
    model: PromptableModel,
    features: Mapping[str, np.ndarray],
    *,
    sizes: tuple[tuple[int, int], tuple[int, int]],
    config: SamAutoConfig,
) -> list[MaskCandidate]:
    """SAM's automatic candidates of one slice (step 1 of the module docstring), in
    non-maximum-suppression order (highest predicted IoU first)."""
    original_size, input_size = sizes
    points = grid_points(config.points_per_side, original_size)
    candidates: list[MaskCandidate] = []
    for start in range(0, len(points), config.batch_size):
        chunk = points[start : start + config.batch_size]
        prompts = [Prompt2D(None, np.array([[x, y, 1.0]])) for x, y in chunk]
        decoded = model.decode(
            features,
            prompts,
            original_size=original_size,
            input_size=input_size,
            multimask=True,
            batch_size=config.batch_size,
            all_masks=True,
        )
        keep = decoded.iou_p > config.pred_iou_thresh
        stability = stability_scores(decoded.logits_pyx, decoded.threshold)
        keep &= stability >= config.stability_score_thresh
        for i in np.flatnonzero(keep):
            mask_yx = decoded.logits_pyx[i] > decoded.threshold
            if mask_yx.any():
                candidates.append(
                    MaskCandidate(mask_yx, float(decoded.iou_p[i]), float(stability[i]))
                )
    if not candidates:
        return []
    boxes = np.stack([box_from_mask(c.mask_yx) for c in candidates])
    kept = box_nms(boxes, [c.pred_iou for c in candidates], config.box_nms_thresh)
    return [candidates[i] for i in kept]


def target_slices(cached: CaseEmbeddings, label_zyx: np.ndarray | None, value: int) -> list[int]:
    """Slices to segment: the embedded ones, for 3D only where ``value`` is in the label."""
    z = sorted(int(v) for v in cached.z)
    if label_zyx is None:
        return z
    return [k for k in z if (label_zyx[k] == value).any()]


def segment_auto_case(
    image: Volume,
    *,
    case_id: str,
    model: PromptableModel,
    config: SamAutoConfig,
    label_value: int,
    embeddings_dir: str | os.PathLike,
    label_file: str | os.PathLike,
) -> tuple[np.ndarray, int]:
    """Label volume of one case and the number of grid points decoded."""
    shape_zyx = image.array_zyx.shape
    cached = load_checked_embeddings(embeddings_dir, case_id, model=model, shape_zyx=shape_zyx)
    label_zyx = read_label_volume(label_file, shape_zyx) if shape_zyx[0] > 1 else None
    slices = target_slices(cached, label_zyx, label_value)
    objects = []
    for z in slices:
        candidates = automatic_masks(
            model,
            cached.features(z),
            sizes=(cached.original_size, cached.input_size),
            config=config,
        )
        chosen = choose_mask(
            candidates,
            cached.original_size,
            min_area_frac=config.min_area_frac,
            max_area_frac=config.max_area_frac,
        )
        log.debug("%s z=%d: %d candidates, chosen %s", case_id, z, len(candidates), chosen)
        if chosen is not None:
            mask_yx = candidates[chosen].mask_yx
            objects.append(ObjectMask(z, label_value, mask_yx, float(mask_yx.sum())))
    n_points = len(slices) * config.points_per_side**2
    return paint_objects(shape_zyx, objects), n_points


def predict_sam_auto_cases(
    job: PredictJob,
    *,
    model: PromptableModel,
    config: SamAutoConfig,
    label_value: int,
    embeddings_dir: str | os.PathLike,
) -> pd.DataFrame:
    """Segment every case of ``job``; write ``out_dir/{case_id}.nii.gz`` (the preprocessed
    image's geometry, which is the original one), then the manifest
    (:func:`~medsegflow.prediction.cases.predict_cases`)."""

    def segment(case: dict[str, Any], image: Volume) -> tuple[np.ndarray, int]:
        return segment_auto_case(
            image,
            case_id=case["case_id"],
            model=model,
            config=config,
            label_value=label_value,
            embeddings_dir=embeddings_dir,
            label_file=label_path(job.preprocessed_dir, case["case_id"]),
        )

    return predict_cases(job, segment=segment, desc="sam_auto")


def predict_sam_auto(job: PredictJob) -> pd.DataFrame:
    """The family predictor (``family: sam_auto``).

    ``job.inputs``: ``preprocessed`` (manifest), ``embeddings`` (the cache's manifest;
    ``model.json`` beside it gives the arch) and ``checkpoint`` (loaded with
    :func:`medsegflow.models.sam_loader.load_sam_model`, as the SAM family does). Runs on
    ``job.device`` (default: CUDA when available), with autocast on GPU.
    """
    config = parse_sam_auto_config(job.method, job.method_name)
    job.require("embeddings", "checkpoint", family="sam_auto")
    label_value = target_label(
        read_label_map(job.preprocessed_dir),
        config.label,
        method_name=job.method_name,
        source=str(job.preprocessed_dir / "labels.json"),
    )
    loaded = load_cached_model(job.inputs, device=job.device)
    log.info("%s: %s, label %d, %s", job.method_name, loaded.model.describe(), label_value, config)
    return predict_sam_auto_cases(
        job,
        model=loaded.model,
        config=config,
        label_value=label_value,
        embeddings_dir=loaded.embeddings_dir,
    )
