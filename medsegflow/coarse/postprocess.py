"""Saliency map -> coarse mask for one slice, pure numpy/scipy (+ pydensecrf for ``crf``).

MedCLIP-SAMv2 (``postprocessing/postprocess_saliency_maps.py`` of HealthX-Lab/MedCLIP-SAMv2)
turns a text-driven saliency map (float in [0, 1]) into a binary coarse mask, keeps the
largest connected component(s), and draws SAM prompts from it. :func:`coarse_mask` does
one slice with one of four ``method`` values:

- ``kmeans``: 2-cluster k-means on the saliency values; foreground is the cluster with the
  brighter centroid (MedCLIP-SAMv2's rule). Deterministic: the 1-D k-means of the classical
  baselines (:func:`~medsegflow.preprocess.clustering.kmeans_1d`, fixed quantile and min/max
  starts) replaces scikit-learn's ``KMeans(random_state=10)``, and the map is clustered at
  its own resolution (MedCLIP-SAMv2 first resizes it to 256 x 256, nearest neighbour). A
  constant map has no brighter cluster and gives an empty mask.
- ``crf``: a fully connected CRF (pydensecrf's ``DenseCRF2D``) with 2 labels. The unary is
  MedCLIP-SAMv2's: with ``p`` the saliency clipped to [0, 1],
  ``U_fg = -log(p + epsilon) / (tau * sigmoid(p))`` and
  ``U_bg = -log(1 - p + epsilon) / (tau * sigmoid(1 - p))``. Pairwise terms: a Gaussian
  kernel (``sxy_gaussian``, ``compat_gaussian``) and a bilateral kernel on the grey image
  replicated to 3 channels, as MedCLIP-SAMv2 reads it (``sxy_bilateral``, ``srgb``,
  ``compat_bilateral``); ``iterations`` mean-field steps; foreground where its marginal
  is the larger (ties: background). Defaults are MedCLIP-SAMv2's (gaussian sxy 5 /
  compat 3, bilateral sxy 5 / srgb 3 / compat 5, tau 1.05, epsilon 1e-8, 1 iteration).
- ``threshold``: ``saliency >= threshold`` (default 0.5; MedCLIP-SAMv2's thresholding
  script uses ``> 0.3``).
- ``morphology``: ``threshold``, then a binary opening with a disk of ``open_radius`` px,
  a closing with a disk of ``close_radius`` px (0: skip), and hole filling. The image is
  edge-padded during both, so objects touching the border are not eaten.

Every method then fills holes (``fill_holes``), drops 8-connected components smaller than
``min_area`` px and keeps the ``top_k`` largest remaining ones (MedCLIP-SAMv2's
``--num-contours``, default 1; 0 keeps all; equal sizes keep raster order of their first
pixel). An empty result is valid: the caller logs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from medsegflow.components import keep_largest
from medsegflow.preprocess.clustering import kmeans_1d, kmeans_assign
from medsegflow.schema import complete

METHODS = ("kmeans", "crf", "threshold", "morphology")


@dataclass(frozen=True)
class CoarseConfig:
    """How to turn a saliency map into a coarse mask (a ``coarse:`` config block).

    Parameters of the other methods are accepted and ignored, so an ablation grid over
    ``method`` can share one block.
    """

    method: str
    threshold: float
    open_radius: int
    close_radius: int
    sxy_gaussian: float
    compat_gaussian: float
    sxy_bilateral: float
    srgb: float
    compat_bilateral: float
    iterations: int
    tau: float
    epsilon: float
    fill_holes: bool
    top_k: int
    min_area: int


COARSE_SCHEMA = "families/text_sam.schema.yaml#/properties/coarse"


def parse_coarse_config(config: Mapping[str, Any] | None, key_prefix: str) -> CoarseConfig:
    """A ``coarse:`` mapping completed by its schema (:data:`COARSE_SCHEMA`, which holds
    the defaults) as a :class:`CoarseConfig`; :class:`ConfigError` naming
    ``<key_prefix>.<key>`` for an unknown key or a bad value."""
    return CoarseConfig(**complete(config or {}, COARSE_SCHEMA, key=key_prefix))


def disk(radius: int) -> np.ndarray:
    """Bool ``(2r+1, 2r+1)`` disk: the pixels within ``radius`` of the centre."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return yy**2 + xx**2 <= radius**2


def _morph(operation, mask_yx: np.ndarray, radius: int) -> np.ndarray:
    """Binary opening/closing with a disk, the image edge-padded by ``radius``."""
    if radius <= 0:
        return mask_yx
    padded = np.pad(mask_yx, radius, mode="edge")
    out = operation(padded, structure=disk(radius))
    return out[radius:-radius, radius:-radius]


def kmeans_foreground(saliency_yx: np.ndarray) -> np.ndarray:
    """Pixels of the brighter of 2 k-means clusters of the saliency values."""
    values = saliency_yx.astype(np.float64)
    centres = kmeans_1d(values, n_clusters=2)
    if not centres[1] > centres[0]:
        return np.zeros(saliency_yx.shape, dtype=bool)
    return kmeans_assign(values, centres) == 1


def crf_foreground(saliency_yx: np.ndarray, image_yx: np.ndarray, config: CoarseConfig):
    """Dense-CRF foreground (see the module docstring for the energy)."""
    import pydensecrf.densecrf as dcrf

    height, width = saliency_yx.shape
    p = np.clip(saliency_yx.astype(np.float64), 0.0, 1.0)

    def sigmoid(x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-x))

    fg = -np.log(p + config.epsilon) / (config.tau * sigmoid(p))
    bg = -np.log(1.0 - p + config.epsilon) / (config.tau * sigmoid(1.0 - p))
    unary = np.ascontiguousarray(np.stack([bg.ravel(), fg.ravel()]).astype(np.float32))
    crf = dcrf.DenseCRF2D(width, height, 2)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=config.sxy_gaussian, compat=config.compat_gaussian)
    rgb = np.ascontiguousarray(np.repeat(image_yx.astype(np.uint8)[..., None], 3, axis=2))
    crf.addPairwiseBilateral(
        sxy=config.sxy_bilateral, srgb=config.srgb, rgbim=rgb, compat=config.compat_bilateral
    )
    q = np.asarray(crf.inference(config.iterations)).reshape(2, height, width)
    return q[1] > q[0]


def keep_components(mask_yx: np.ndarray, *, top_k: int, min_area: int) -> np.ndarray:
    """The ``top_k`` largest 8-connected components of at least ``min_area`` px (0: all).

    Equal sizes keep the raster order of their first pixel, as
    :func:`~medsegflow.prompts.points.connected_components` orders them.
    """
    return keep_largest(mask_yx, top_k=top_k, min_size=min_area)


def coarse_mask(saliency_yx: np.ndarray, image_yx: np.ndarray, config: CoarseConfig) -> np.ndarray:
    """Coarse mask of one slice from its saliency map (and, for ``crf``, its image).

    Args:
        saliency_yx: float ``(H, W)`` saliency in [0, 1].
        image_yx: uint8 ``(H, W)`` preprocessed slice (used by ``crf`` only).
        config: the post-processing, see the module docstring.

    Returns:
        bool ``(H, W)``; all False when nothing survives.
    """
    saliency_yx = np.asarray(saliency_yx)
    if saliency_yx.ndim != 2:
        raise ValueError(f"saliency must be an (H, W) map, got shape {saliency_yx.shape}")
    if np.asarray(image_yx).shape != saliency_yx.shape:
        raise ValueError(
            f"image shape {np.asarray(image_yx).shape} differs from the saliency's "
            f"{saliency_yx.shape}"
        )
    if config.method == "kmeans":
        mask = kmeans_foreground(saliency_yx)
    elif config.method == "crf":
        mask = crf_foreground(saliency_yx, np.asarray(image_yx), config)
    elif config.method in ("threshold", "morphology"):
        mask = saliency_yx >= config.threshold
        if config.method == "morphology":
            mask = _morph(ndimage.binary_opening, mask, config.open_radius)
            mask = _morph(ndimage.binary_closing, mask, config.close_radius)
            mask = ndimage.binary_fill_holes(mask)
    else:
        raise ValueError(f"method {config.method!r} is not one of {METHODS}")
    if config.fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    return keep_components(mask, top_k=config.top_k, min_area=config.min_area)
