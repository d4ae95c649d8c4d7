"""Combine the masks of repeated (jittered) prompts for one object into one mask.

Three rules, for ``R`` predictions of the same object on one ``(H, W)`` slice:

- ``average``: mean of the per-prompt foreground probabilities (sigmoid of SAM's
  logits), foreground where the mean is > 0.5;
- ``majority``: foreground where more than half of the binary masks say so (a tie is
  background);
- ``staple``: Warfield's STAPLE estimate of the true segmentation from the binary masks
  (SimpleITK's ``STAPLEImageFilter``), foreground where its probability is >= 0.5.

With one prediction every rule returns its mask. STAPLE is the one exception to
"only :mod:`medsegflow.io` touches SimpleITK": it is an algorithm, not I/O, and is
imported lazily inside :func:`staple_vote`.
"""

from __future__ import annotations

import numpy as np

VOTING_RULES = ("average", "majority", "staple")


def _stack(masks_ryx: np.ndarray, name: str) -> np.ndarray:
    masks_ryx = np.asarray(masks_ryx)
    if masks_ryx.ndim != 3 or masks_ryx.shape[0] == 0:
        raise ValueError(f"{name} must be (R, H, W) with R >= 1, got shape {masks_ryx.shape}")
    return masks_ryx


def average_vote(probs_ryx: np.ndarray) -> np.ndarray:
    """bool ``(H, W)``: mean of ``R`` probability maps (float, 0..1) > 0.5."""
    probs_ryx = _stack(probs_ryx, "probs_ryx")
    return probs_ryx.mean(axis=0, dtype=np.float64) > 0.5


def majority_vote(masks_ryx: np.ndarray) -> np.ndarray:
    """bool ``(H, W)``: more than half of ``R`` binary masks are foreground."""
    masks_ryx = _stack(masks_ryx, "masks_ryx").astype(bool)
    return 2 * masks_ryx.sum(axis=0) > masks_ryx.shape[0]


def staple_vote(masks_ryx: np.ndarray) -> np.ndarray:
    """bool ``(H, W)``: STAPLE consensus probability >= 0.5.

    When all masks are identical (STAPLE is undefined then: all empty or all full gives
    NaN) that mask is returned; pixels where STAPLE still yields NaN take the majority.
    """
    masks_ryx = _stack(masks_ryx, "masks_ryx").astype(bool)
    if (masks_ryx == masks_ryx[0]).all():
        return masks_ryx[0].copy()
    import SimpleITK as sitk

    staple = sitk.STAPLEImageFilter()
    staple.SetForegroundValue(1)
    images = [sitk.GetImageFromArray(m.astype(np.uint8)) for m in masks_ryx]
    prob_yx = sitk.GetArrayFromImage(staple.Execute(images))
    out = prob_yx >= 0.5
    undefined = ~np.isfinite(prob_yx)
    out[undefined] = majority_vote(masks_ryx)[undefined]
    return out


def vote(rule: str, *, masks_ryx: np.ndarray, probs_ryx: np.ndarray | None = None) -> np.ndarray:
    """Combine ``R`` predictions of one object with ``rule`` (see :data:`VOTING_RULES`).

    Args:
        rule: ``"average"`` (needs ``probs_ryx``), ``"majority"`` or ``"staple"``.
        masks_ryx: bool ``(R, H, W)`` binary masks.
        probs_ryx: float ``(R, H, W)`` foreground probabilities, for ``average``.

    Returns:
        bool ``(H, W)``.
    """
    if rule == "average":
        if probs_ryx is None:
            raise ValueError("voting 'average' needs the probability maps")
        return average_vote(probs_ryx)
    if rule == "majority":
        return majority_vote(masks_ryx)
    if rule == "staple":
        return staple_vote(masks_ryx)
    raise ValueError(f"voting rule {rule!r} is not one of {VOTING_RULES}")
