"""Bounding-box prompts from ground-truth masks, with MedSAM-style random jitter.

Every box is a float64 array ``[x_min, y_min, x_max, y_max]`` (``XYXY``) in pixel
coordinates of the slice: x is the column index, y the row index, and the max corner is
the last pixel inside the object (inclusive), as in MedSAM's preprocessing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

SAM_LONG_SIDE = 1024
"""SAM resizes an image's longest side to this many pixels; jitter is given at that scale."""


@dataclass(frozen=True)
class BoxPrompt:
    """One box prompt: axial slice ``z`` (array axis 0), the ``label`` value it targets, and
    the ``XYXY`` box in pixel coordinates of that slice (x = column, inclusive)."""

    z: int
    label: int
    x_min: float
    y_min: float
    x_max: float
    y_max: float

    @property
    def box_xyxy(self) -> np.ndarray:
        """The box as a float64 array ``[x_min, y_min, x_max, y_max]``."""
        return np.array([self.x_min, self.y_min, self.x_max, self.y_max], dtype=np.float64)


def box_from_mask(mask_yx: np.ndarray) -> np.ndarray:
    """Tight bounding box of a 2D mask.

    Args:
        mask_yx: ``(H, W)`` mask, non-zero = object.

    Returns:
        float64 ``[x_min, y_min, x_max, y_max]``: inclusive pixel indices, x = column.

    Raises:
        ValueError: when the mask is not 2D or has no non-zero pixel.
    """
    mask_yx = np.asarray(mask_yx)
    if mask_yx.ndim != 2:
        raise ValueError(f"box_from_mask expects an (H, W) mask, got shape {mask_yx.shape}")
    rows = np.flatnonzero(mask_yx.any(axis=1))
    cols = np.flatnonzero(mask_yx.any(axis=0))
    if rows.size == 0:
        raise ValueError(f"box_from_mask: the {mask_yx.shape} mask is empty, it has no box")
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float64)


def jitter_box(
    box_xyxy: np.ndarray,
    *,
    image_shape_yx: tuple[int, int],
    max_shift_1024: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Enlarge a box by a random outward shift of each side (MedSAM's box perturbation).

    Each of the four sides moves outward by its own random integer ``k`` drawn uniformly
    from ``0..floor(max_shift_1024)``, counted in pixels of SAM's 1024 input, i.e.
    ``k * max(H, W) / 1024`` pixels of this slice. The box is then clipped to the image:
    x to ``[0, W - 1]``, y to ``[0, H - 1]``. Sides never move inward.

    Args:
        box_xyxy: ``[x_min, y_min, x_max, y_max]`` in pixel coordinates (x = column).
        image_shape_yx: ``(H, W)`` of the slice.
        max_shift_1024: largest shift per side at the 1024 scale, >= 0 (0: no jitter).
        rng: draws 4 integers, in the order x_min, y_min, x_max, y_max.

    Returns:
        float64 ``[x_min, y_min, x_max, y_max]``.
    """
    box = np.asarray(box_xyxy, dtype=np.float64)
    if box.shape != (4,):
        raise ValueError(f"box must be [x_min, y_min, x_max, y_max], got shape {box.shape}")
    if not max_shift_1024 >= 0:
        raise ValueError(f"max_shift_1024 must be >= 0, got {max_shift_1024}")
    height, width = (int(s) for s in image_shape_yx)
    scale = max(height, width) / SAM_LONG_SIDE
    shifts = rng.integers(0, int(np.floor(max_shift_1024)) + 1, size=4) * scale
    out = box + shifts * np.array([-1.0, -1.0, 1.0, 1.0])
    out[[0, 2]] = np.clip(out[[0, 2]], 0.0, width - 1)
    out[[1, 3]] = np.clip(out[[1, 3]], 0.0, height - 1)
    return out


def slice_objects(
    label_zyx: np.ndarray, *, label_values: Sequence[int]
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Every (slice, label) present in a label volume: ``(z, value, mask_yx)``.

    Slices come in z order and, within a slice, labels in the order of ``label_values``;
    labels absent from a slice are skipped. ``mask_yx`` is the bool ``(H, W)`` mask of
    all of that label's pixels in slice ``z`` (the union of its components).

    Args:
        label_zyx: ``(Z, Y, X)`` integer labels.
        label_values: the label values to visit (0 is not a valid target).
    """
    label_zyx = np.asarray(label_zyx)
    if label_zyx.ndim != 3:
        raise ValueError(f"expected a (Z, Y, X) label volume, got shape {label_zyx.shape}")
    if any(int(v) == 0 for v in label_values):
        raise ValueError(f"label_values {list(label_values)} must not contain background 0")
    for z in np.flatnonzero(label_zyx.reshape(label_zyx.shape[0], -1).any(axis=1)):
        slice_yx = label_zyx[z]
        present = set(np.unique(slice_yx).tolist())
        for value in label_values:
            if int(value) in present:
                yield int(z), int(value), slice_yx == value


def gt_box_prompts(
    label_zyx: np.ndarray,
    *,
    label_values: Sequence[int],
    max_shift_1024: float,
    rng: np.random.Generator,
) -> list[BoxPrompt]:
    """One jittered box per (slice, label): the box of all of that label's pixels in the slice.

    This is MedSAM's evaluation protocol: the box covers the union of the label's
    components in the slice. Objects come in the order of :func:`slice_objects`; the rng
    draws follow that order, so the result is deterministic for a given generator state.
    (:func:`medsegflow.prompts.sampling.gt_prompts` with type ``box``, components
    ``union`` and one repeat draws exactly the same boxes.)

    Args:
        label_zyx: ``(Z, Y, X)`` integer labels.
        label_values: the label values to prompt for (0 is not a valid target).
        max_shift_1024: jitter, see :func:`jitter_box`.
        rng: generator for the jitter.
    """
    prompts: list[BoxPrompt] = []
    for z, value, mask_yx in slice_objects(label_zyx, label_values=label_values):
        box = jitter_box(
            box_from_mask(mask_yx),
            image_shape_yx=mask_yx.shape,
            max_shift_1024=max_shift_1024,
            rng=rng,
        )
        prompts.append(BoxPrompt(z, value, *(float(c) for c in box)))
    return prompts
