"""Intensity clustering of pixel values, pure numpy: Otsu's threshold and 1-D k-means.

Shared by the classical baselines inside a box (:mod:`medsegflow.methods.classical`) and
the k-means coarse masks of the text-driven path (:mod:`medsegflow.coarse.postprocess`).
"""

from __future__ import annotations

import numpy as np


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
