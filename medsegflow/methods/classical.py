"""Classical baselines inside a box prompt: Otsu thresholding and 1-D k-means.

These run on one ``uint8`` axial slice (a preprocessed image) and one ``XYXY`` box in
pixel coordinates of that slice (x = column, inclusive corners), with no learned
weights and no knowledge of the target label. They give the floor that SAM-family
models must beat with the same box.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from medsegflow.components import largest_component
from medsegflow.errors import ConfigError
from medsegflow.prediction.cases import CaseInput, predict_prompted_cases
from medsegflow.prediction.job import PredictJob
from medsegflow.prediction.painting import box_rows, paint_box_predictions
from medsegflow.preprocess.clustering import kmeans_1d, kmeans_assign, otsu_threshold

if TYPE_CHECKING:
    import pandas as pd

ALGORITHMS = ("otsu", "kmeans")
POLARITIES = ("auto", "bright", "dark")


def _intensity_classes(
    crop_yx: np.ndarray, *, algorithm: str, n_clusters: int
) -> tuple[np.ndarray, int]:
    """Class index per pixel, ordered by intensity (0 = darkest), and the number of classes."""
    if algorithm == "otsu":
        return (crop_yx > otsu_threshold(crop_yx)).astype(np.intp), 2
    if algorithm == "kmeans":
        centres = kmeans_1d(crop_yx, n_clusters=n_clusters)
        return kmeans_assign(crop_yx.astype(np.float64), centres), n_clusters
    raise ValueError(f"algorithm '{algorithm}' is not one of {ALGORITHMS}")


def _choose_class(classes_yx: np.ndarray, n_classes: int, *, polarity: str) -> int:
    """The foreground class: brightest, darkest, or the one concentrated in the centre."""
    present = np.bincount(classes_yx.ravel(), minlength=n_classes) > 0
    if polarity == "bright":
        return int(np.flatnonzero(present)[-1])
    if polarity == "dark":
        return int(np.flatnonzero(present)[0])
    if polarity != "auto":
        raise ValueError(f"polarity '{polarity}' is not one of {POLARITIES}")
    height, width = classes_yx.shape
    dy, dx = height // 4, width // 4
    centre = np.zeros(classes_yx.shape, dtype=bool)
    centre[dy : height - dy, dx : width - dx] = True
    centre_share = np.bincount(classes_yx[centre], minlength=n_classes) / centre.sum()
    ring_share = np.bincount(classes_yx[~centre], minlength=n_classes) / max(
        int((~centre).sum()), 1
    )
    score = np.where(present, centre_share - ring_share, -np.inf)
    return int(np.argmax(score))


def _largest_component(mask_yx: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a 2D mask (empty stays empty)."""
    return largest_component(mask_yx)


def _box_slices(box_xyxy: np.ndarray, shape_yx: tuple[int, int]) -> tuple[slice, slice]:
    """Row and column slices of the pixels covered by a (float) box, clipped to the image."""
    box = np.asarray(box_xyxy, dtype=np.float64)
    if box.shape != (4,) or not np.isfinite(box).all():
        raise ValueError(f"box must be 4 finite numbers [x_min, y_min, x_max, y_max], got {box}")
    height, width = shape_yx
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), width - 1), min(int(np.ceil(box[3])), height - 1)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"box {box.tolist()} covers no pixel of the {shape_yx} (H, W) image")
    return slice(y0, y1 + 1), slice(x0, x1 + 1)


def segment_in_box(
    image_yx: np.ndarray,
    box_xyxy: np.ndarray,
    *,
    algorithm: str,
    n_clusters: int,
    polarity: str,
    keep_largest: bool,
    fill_holes: bool,
    smoothing_sigma: float,
) -> np.ndarray:
    """Segment the object in a box by intensity alone.

    1. The box is widened to whole pixels (floor of the min corner, ceil of the max
       corner) and clipped to the image; only the pixels inside are used, smoothed with
       a Gaussian of ``smoothing_sigma`` pixels (0 = off) so that speckle and noise do
       not join the object to the background through single pixels.
    2. Their intensities are split into classes ordered dark to bright: ``"otsu"`` gives
       two (:func:`otsu_threshold` on the box's 256-bin histogram), ``"kmeans"`` gives
       ``n_clusters`` (:func:`kmeans_1d`; ``n_clusters`` is ignored by Otsu).
    3. The foreground class: ``"bright"`` the brightest non-empty class, ``"dark"`` the
       darkest; ``"auto"`` the class with the largest ``centre share - ring share``,
       where the centre is the inner half of the box in each direction (rows
       ``h//4 .. h - h//4``, columns likewise) and the ring is the rest of the box. An
       object prompted by its box fills the box's centre, so its class is over-represented
       there, whatever its polarity. Ties go to the darker class; a constant box is a
       single class, so the whole box is returned.
    4. Optionally only the largest 8-connected component is kept, then holes are filled
       (``scipy.ndimage.binary_fill_holes``).

    Args:
        image_yx: ``(H, W)`` ``uint8`` slice.
        box_xyxy: ``[x_min, y_min, x_max, y_max]`` in pixel coordinates (x = column).

    Returns:
        ``(H, W)`` bool mask, False outside the box.
    """
    image_yx = np.asarray(image_yx)
    if image_yx.ndim != 2 or image_yx.dtype != np.uint8:
        raise ValueError(
            f"segment_in_box expects an (H, W) uint8 image, got shape "
            f"{image_yx.shape} dtype {image_yx.dtype}"
        )
    rows, cols = _box_slices(box_xyxy, image_yx.shape)
    crop_yx = image_yx[rows, cols]
    if smoothing_sigma > 0:
        smooth = ndimage.gaussian_filter(crop_yx.astype(np.float32), sigma=smoothing_sigma)
        crop_yx = np.clip(np.rint(smooth), 0, 255).astype(np.uint8)
    classes_yx, n_classes = _intensity_classes(crop_yx, algorithm=algorithm, n_clusters=n_clusters)
    mask_yx = classes_yx == _choose_class(classes_yx, n_classes, polarity=polarity)
    if keep_largest:
        mask_yx = _largest_component(mask_yx)
    if fill_holes:
        mask_yx = ndimage.binary_fill_holes(mask_yx)
    out_yx = np.zeros(image_yx.shape, dtype=bool)
    out_yx[rows, cols] = mask_yx
    return out_yx


@dataclass(frozen=True)
class ClassicalConfig:
    """A ``classical`` method's settings (``medsegflow/schemas/families/classical.schema.yaml``)."""

    algorithm: str
    n_clusters: int
    polarity: str
    keep_largest: bool
    fill_holes: bool
    smoothing_sigma: float


def parse_classical_config(method: Mapping[str, Any], method_name: str) -> ClassicalConfig:
    """The settings of a complete classical method (schema defaults filled in, see
    :func:`medsegflow.families.complete_method`); :class:`ConfigError` naming
    ``methods.<method_name>.n_clusters`` for Otsu with other than 2 classes."""
    if method["algorithm"] == "otsu" and method["n_clusters"] != 2:
        raise ConfigError(
            f"methods.{method_name}.n_clusters: Otsu splits into 2 classes; use "
            f"algorithm 'kmeans' for {method['n_clusters']} clusters"
        )
    return ClassicalConfig(**{f.name: method[f.name] for f in fields(ClassicalConfig)})


def predict_classical(job: PredictJob) -> pd.DataFrame:
    """The family predictor: :func:`segment_in_box` on every box prompt of every case.

    Reads preprocessed ``uint8`` images and the job's ``prompts`` (rows without a box are
    ignored), paints each case with
    :func:`~medsegflow.prediction.painting.paint_box_predictions` and writes it in the
    original image geometry, then the manifest.
    """
    config = parse_classical_config(job.method, job.method_name)
    job.require("prompts", family="classical")
    segment = functools.partial(segment_in_box, **asdict(config))

    def segment_case(case: CaseInput) -> np.ndarray:
        return paint_box_predictions(
            case.image.array_zyx, case.prompts, segment=segment, source=case.source
        )

    return predict_prompted_cases(job, segment_case=segment_case, select=box_rows)
