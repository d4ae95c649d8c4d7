"""Painting per-slice object masks into a label volume of the image's shape.

Objects are painted largest first, so smaller objects painted later win where masks
overlap (a lesion inside its organ). :func:`paint_probabilities` stacks the objects'
probability maps per label instead, for conventions that score soft outputs (Med-SA).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medsegflow.errors import InputError
from medsegflow.manifests import BOX_COLUMNS

BoxSegmenter = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``segment(image_yx uint8 (H, W), box_xyxy float64 (4,)) -> bool (H, W) mask``."""


@dataclass(frozen=True)
class ObjectMask:
    """One predicted object: bool ``(H, W)`` mask of slice ``z`` painted with ``label``.

    ``area`` orders the painting (largest first, so smaller objects painted later win
    where masks overlap, e.g. a lesion inside its organ): the prompt box's area for
    box-prompted families, the mask's pixel count otherwise. ``prob_yx`` is the object's
    float ``(H, W)`` foreground probability (SAM: sigmoid of the logits, the mean over the
    voted repeats), for :func:`paint_probabilities`; None when not kept.
    """

    z: int
    label: int
    mask_yx: np.ndarray
    area: float
    prob_yx: np.ndarray | None = None


def paint_objects(shape_zyx: tuple[int, int, int], objects: Iterable[ObjectMask]) -> np.ndarray:
    """Label volume of ``shape_zyx`` with every object painted, largest ``area`` first.

    Returns:
        ``(Z, Y, X)`` uint8 labels (uint16 for label values above 255), 0 = background.
    """
    objects = list(objects)
    top = max((o.label for o in objects), default=0)
    label_zyx = np.zeros(shape_zyx, dtype=np.uint8 if top < 256 else np.uint16)
    for i in np.argsort([-o.area for o in objects], kind="stable"):
        obj = objects[i]
        label_zyx[obj.z][obj.mask_yx] = obj.label
    return label_zyx


def mean_probability(probs_ryx: np.ndarray) -> np.ndarray:
    """float16 ``(H, W)``: the mean of ``R`` repeats' probability maps ``(R, H, W)`` of one
    object, the map the ``average`` vote thresholds at 0.5 (float64 mean, as there)."""
    return np.asarray(probs_ryx).mean(axis=0, dtype=np.float64).astype(np.float16)


def paint_probabilities(
    shape_zyx: tuple[int, int, int], objects: Iterable[ObjectMask], labels: Sequence[int]
) -> np.ndarray:
    """Per-label foreground probabilities of ``objects``, one channel per ``labels`` value.

    Channel ``c`` of slice ``z`` is the maximum over the objects of label ``labels[c]`` on
    ``z`` of their ``prob_yx`` (an object without one counts its mask as 0/1), 0 where no
    object of that label was decoded. Unlike :func:`paint_objects`, labels do not compete:
    each channel is its own label's. Raises :class:`ValueError` for an object whose label is
    not in ``labels`` or whose map is not of the slice shape.

    Returns:
        float16 ``(C, Z, Y, X)``, ``C = len(labels)``.
    """
    channel = {int(v): c for c, v in enumerate(labels)}
    probs_czyx = np.zeros((len(channel), *shape_zyx), dtype=np.float16)
    for obj in objects:
        if obj.label not in channel:
            raise ValueError(f"object of label {obj.label} on slice {obj.z}: not in {list(labels)}")
        soft_yx = obj.mask_yx if obj.prob_yx is None else obj.prob_yx
        if soft_yx.shape != tuple(shape_zyx[1:]):
            raise ValueError(
                f"object of label {obj.label} on slice {obj.z}: map shape {soft_yx.shape}, "
                f"the slices are {tuple(shape_zyx[1:])}"
            )
        out_yx = probs_czyx[channel[obj.label], obj.z]
        np.maximum(out_yx, soft_yx.astype(np.float16), out=out_yx)
    return probs_czyx


def box_rows(prompts: pd.DataFrame) -> pd.DataFrame:
    """The prompt rows with a box (all four coordinates finite) for one slice: the boxes a
    per-slice method segments (a box3d prompt over several slices is not one of them)."""
    finite = np.isfinite(prompts[list(BOX_COLUMNS)].to_numpy(dtype=np.float64)).all(axis=1)
    return prompts[finite & (prompts["z_min"] == prompts["z_max"]).to_numpy()]


def paint_box_predictions(
    image_zyx: np.ndarray, prompts: pd.DataFrame, *, segment: BoxSegmenter, source: str = "prompts"
) -> np.ndarray:
    """Label volume from one case's box prompts, each segmented on its slice.

    Every prompt row (columns ``z, label, x_min, y_min, x_max, y_max``; XYXY pixel
    coordinates of slice z) is segmented with ``segment`` and painted with the row's
    label value by :func:`paint_objects`, larger boxes first. ``source`` names the prompt
    file in errors.

    Returns:
        ``(Z, Y, X)`` uint8 labels (uint16 for label values above 255), 0 = background.
    """
    labels = prompts["label"].to_numpy(dtype=np.int64)
    boxes = prompts[list(BOX_COLUMNS)].to_numpy(dtype=np.float64)
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    objects = []
    for i, z in enumerate(prompts["z"].to_numpy(dtype=np.int64)):
        where = f"{source}: row for case {prompts['case_id'].iloc[i]}, z {z}"
        if not 0 <= z < image_zyx.shape[0]:
            raise InputError(f"{where}: z is outside the image's {image_zyx.shape[0]} slices")
        try:
            mask_yx = segment(image_zyx[z], boxes[i])
        except ValueError as err:
            raise InputError(f"{where}, label {labels[i]}: {err}") from None
        objects.append(ObjectMask(int(z), int(labels[i]), mask_yx, float(area[i])))
    return paint_objects(image_zyx.shape, objects)
