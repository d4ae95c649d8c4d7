"""Label cleaning: drop small connected components, per label value (MedSAM's recipe).

For every label value separately:

1. 3D: connected components of the value's mask (26-connectivity, ``cc3d``) with fewer
   than ``min_voxels_3d`` voxels are set to background;
2. 2D: then, in every axial slice, components (8-connectivity) with fewer than
   ``min_pixels_2d`` pixels are set to background.

A one-slice volume (a 2D image) gets only the 2D rule: a 3D threshold of 1000 voxels
would delete ordinary 2D lesions. A threshold of 0 disables its rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cc3d
import numpy as np
from scipy import ndimage

# In-plane 8-connectivity for a zyx volume: neighbours only within the same z slice.
_IN_PLANE_8 = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_8[1] = True


@dataclass
class LabelCleaning:
    """What cleaning removed for one label value."""

    n_components_removed_3d: int = 0
    n_components_removed_2d: int = 0
    voxels_removed: int = 0

    def add(self, other: LabelCleaning) -> None:
        """Add ``other``'s counts to these (for totals over cases)."""
        self.n_components_removed_3d += other.n_components_removed_3d
        self.n_components_removed_2d += other.n_components_removed_2d
        self.voxels_removed += other.voxels_removed


@dataclass
class CleaningReport(LabelCleaning):
    """What cleaning removed in one volume: totals and ``per_label`` (label value -> counts).

    ``per_label`` has an entry for every non-zero label value present before cleaning.
    """

    per_label: dict[int, LabelCleaning] = field(default_factory=dict)


def _drop_small(components: np.ndarray, n_components: int, min_size: int) -> tuple[np.ndarray, int]:
    """Boolean mask of voxels in components smaller than ``min_size``, and how many those are.

    ``components`` holds component ids ``1..n_components`` (0 = background).
    """
    sizes = np.bincount(components.ravel(), minlength=n_components + 1)
    small = sizes < min_size
    small[0] = False
    return small[components], int(small.sum())


def clean_label(
    label_zyx: np.ndarray, *, min_voxels_3d: int = 1000, min_pixels_2d: int = 100
) -> tuple[np.ndarray, CleaningReport]:
    """Remove small connected components from an integer label volume.

    Args:
        label_zyx: ``(Z, Y, X)`` integer labels, 0 = background. Not modified.
        min_voxels_3d: 3D components (26-connectivity) with fewer voxels are removed;
            0 disables the rule. Ignored when ``Z == 1``.
        min_pixels_2d: per-slice components (8-connectivity) with fewer pixels are
            removed; 0 disables the rule.

    Returns:
        The cleaned labels (same shape and dtype) and a :class:`CleaningReport`.
    """
    label_zyx = np.asarray(label_zyx)
    if label_zyx.ndim != 3:
        raise ValueError(f"clean_label expects a (Z, Y, X) volume, got shape {label_zyx.shape}")
    for name, value in (("min_voxels_3d", min_voxels_3d), ("min_pixels_2d", min_pixels_2d)):
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    use_3d = min_voxels_3d > 0 and label_zyx.shape[0] > 1
    cleaned = label_zyx.copy()
    report = CleaningReport()
    for value in (int(v) for v in np.unique(label_zyx) if v != 0):
        counts = LabelCleaning()
        mask = cleaned == value
        if use_3d:
            components, n = cc3d.connected_components(mask, connectivity=26, return_N=True)
            drop, counts.n_components_removed_3d = _drop_small(components, n, min_voxels_3d)
            cleaned[drop] = 0
            mask &= ~drop
            counts.voxels_removed += int(drop.sum())
        if min_pixels_2d > 0:
            components, n = ndimage.label(mask, structure=_IN_PLANE_8)
            drop, counts.n_components_removed_2d = _drop_small(components, n, min_pixels_2d)
            cleaned[drop] = 0
            counts.voxels_removed += int(drop.sum())
        report.per_label[value] = counts
        report.add(counts)
    return cleaned, report
