"""Classical baselines inside a box prompt: Otsu thresholding and 1-D k-means.

These run on one ``uint8`` axial slice (a preprocessed image) and one ``XYXY`` box in
pixel coordinates of that slice (x = column, inclusive corners), with no learned
weights and no knowledge of the target label. They give the floor that SAM-family
models must beat with the same box.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from medsegflow.errors import ConfigError
from medsegflow.methods.box_prompted import check_method_keys, predict_box_prompts

if TYPE_CHECKING:
    import pandas as pd

ALGORITHMS = ("otsu", "kmeans")
POLARITIES = ("auto", "bright", "dark")
CONFIG_KEYS = (
    "family",
    "algorithm",
    "prompts",
    "n_clusters",
    "polarity",
    "keep_largest",
    "fill_holes",
    "smoothing_sigma",
)
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def otsu_threshold(values: np.ndarray) -> int:
    """Otsu's threshold of ``uint8`` values, from their 256-bin histogram.

    Returns the integer ``t`` that maximises the between-class variance of the classes
    ``values <= t`` (dark) and ``values > t`` (bright). When several consecutive ``t``
    tie (an empty gap between two modes), the middle of that run is returned. With a
    single distinct value, that value is returned (everything is dark).
    """
    values = np.asarray(values)
    if values.dtype != np.uint8:
        raise ValueError(f"otsu_threshold expects uint8 values, got {values.dtype}")
    if values.size == 0:
        raise ValueError("otsu_threshold: no values")
    p = np.bincount(values.ravel(), minlength=256).astype(np.float64) / values.size
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    denom = omega * (1.0 - omega)
    valid = denom > 1e-12
    sigma_b = np.zeros(256)
    sigma_b[valid] = (mu[-1] * omega[valid] - mu[valid]) ** 2 / denom[valid]
    if not valid.any():
        return int(values.max())
    best = np.flatnonzero(sigma_b >= sigma_b.max() * (1.0 - 1e-9))
    run_end = best[0]
    while run_end + 1 in best:
        run_end += 1
    return int((best[0] + run_end) // 2)


def kmeans_1d(
    values: np.ndarray, *, n_clusters: int, max_iter: int = 100, tol: float = 1e-6
) -> np.ndarray:
    """Lloyd's k-means on scalar values; returns the cluster centres, sorted ascending.

    Deterministic, without random (k-means++) seeding: Lloyd's iterations run from two
    fixed starts, the quantiles ``(i + 0.5) / n_clusters`` of the values and
    ``n_clusters`` evenly spaced values over ``[min, max]``, each until no centre moves
    more than ``tol`` (or ``max_iter``); the result with the lower within-cluster sum of
    squares wins. (Quantile starts alone fail on unbalanced clusters, e.g. a small bright
    lesion, where two starts fall in the dominant background.) A cluster that becomes
    empty keeps its centre. Works on the distinct values with their counts, so a
    ``uint8`` image costs at most 256 points per iteration.

    Args:
        values: any shape, numeric.
        n_clusters: >= 2.

    Returns:
        float64 ``(n_clusters,)`` centres.
    """
    if n_clusters < 2:
        raise ValueError(f"kmeans_1d: n_clusters must be >= 2, got {n_clusters}")
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("kmeans_1d: no values")
    points, counts = np.unique(values, return_counts=True)
    starts = (
        np.quantile(values, (np.arange(n_clusters) + 0.5) / n_clusters),
        np.linspace(points[0], points[-1], n_clusters + 2)[1:-1],
    )
    best, best_sse = starts[0], np.inf
    for start in starts:
        centres = _lloyd(points, counts, start, max_iter=max_iter, tol=tol)
        sse = float((counts * (points - centres[kmeans_assign(points, centres)]) ** 2).sum())
        if sse < best_sse - 1e-12:
            best, best_sse = centres, sse
    return best


def _lloyd(
    points: np.ndarray, counts: np.ndarray, centres: np.ndarray, *, max_iter: int, tol: float
) -> np.ndarray:
    """Weighted 1-D Lloyd iterations from sorted ``centres``."""
    n_clusters = centres.size
    for _ in range(max_iter):
        assign = kmeans_assign(points, centres)
        weight = np.bincount(assign, weights=counts, minlength=n_clusters)
        total = np.bincount(assign, weights=points * counts, minlength=n_clusters)
        updated = np.sort(np.where(weight > 0, total / np.maximum(weight, 1e-300), centres))
        moved = np.abs(updated - centres).max()
        centres = updated
        if moved <= tol:
            break
    return centres


def kmeans_assign(values: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted ``centres`` for every value (ties go up)."""
    edges = (centres[:-1] + centres[1:]) / 2.0
    return np.searchsorted(edges, values, side="right")


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
    components, n = ndimage.label(mask_yx, structure=_EIGHT_CONNECTED)
    if n <= 1:
        return mask_yx
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


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
    n_clusters: int = 2,
    polarity: str = "auto",
    keep_largest: bool = True,
    fill_holes: bool = True,
    smoothing_sigma: float = 1.0,
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
    """A validated ``classical`` method config (see :func:`parse_classical_config`)."""

    algorithm: str
    n_clusters: int = 2
    polarity: str = "auto"
    keep_largest: bool = True
    fill_holes: bool = True
    smoothing_sigma: float = 1.0


def parse_classical_config(method: Mapping[str, Any], method_name: str) -> ClassicalConfig:
    """Check a classical method's config; raise :class:`ConfigError` naming
    ``methods.<method_name>.<key>`` for an unknown key or a bad value."""
    key = check_method_keys(method, method_name, allowed=CONFIG_KEYS, family="classical")
    if not isinstance(method.get("prompts", ""), str):
        raise ConfigError(f"{key('prompts')}: {method['prompts']!r} must be a prompt set name")
    algorithm = method.get("algorithm")
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"{key('algorithm')}: {algorithm!r} is not one of {ALGORITHMS}")
    n_clusters = method.get("n_clusters", 2)
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or n_clusters < 2:
        raise ConfigError(f"{key('n_clusters')}: {n_clusters!r} must be an integer >= 2")
    if algorithm == "otsu" and n_clusters != 2:
        raise ConfigError(
            f"{key('n_clusters')}: Otsu splits into 2 classes; use "
            f"algorithm 'kmeans' for {n_clusters} clusters"
        )
    polarity = method.get("polarity", "auto")
    if polarity not in POLARITIES:
        raise ConfigError(f"{key('polarity')}: {polarity!r} is not one of {POLARITIES}")
    flags = {name: method.get(name, True) for name in ("keep_largest", "fill_holes")}
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ConfigError(f"{key(name)}: {value!r} must be true or false")
    sigma = method.get("smoothing_sigma", 1.0)
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or sigma < 0:
        raise ConfigError(f"{key('smoothing_sigma')}: {sigma!r} must be a number >= 0")
    return ClassicalConfig(
        algorithm=algorithm,
        n_clusters=n_clusters,
        polarity=polarity,
        smoothing_sigma=float(sigma),
        **flags,
    )


def predict_classical(
    *,
    method: Mapping[str, Any],
    method_name: str,
    inputs: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    splits: Sequence[str],
) -> pd.DataFrame:
    """Run :func:`segment_in_box` on every box prompt of the cases in ``splits``.

    Reads preprocessed ``uint8`` images, writes one label volume per case in the original
    image geometry and then ``manifest.tsv``; see
    :func:`medsegflow.methods.box_prompted.predict_box_prompts`.
    """
    config = parse_classical_config(method, method_name)
    preprocessed_dir = Path(inputs["preprocessed"]).parent
    prompts_path = inputs.get("prompts")
    if prompts_path is None:
        raise ConfigError(
            f"methods.{method_name}.prompts: the classical family needs a box prompt set"
        )
    segment = functools.partial(
        segment_in_box,
        algorithm=config.algorithm,
        n_clusters=config.n_clusters,
        polarity=config.polarity,
        keep_largest=config.keep_largest,
        fill_holes=config.fill_holes,
        smoothing_sigma=config.smoothing_sigma,
    )
    return predict_box_prompts(
        segment=segment,
        preprocessed_dir=preprocessed_dir,
        prompts_path=prompts_path,
        out_dir=out_dir,
        splits=splits,
    )
