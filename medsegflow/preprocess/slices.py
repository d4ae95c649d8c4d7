"""Slice selection: the axial slices a 2D method is run on and scored on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SliceChoice:
    """One selected axial slice: index ``z`` (array axis 0), its foreground pixel count,
    and ``kind`` ``"foreground"`` (any label > 0) or ``"empty"``."""

    z: int
    n_foreground: int
    kind: str


def select_slices(
    label_zyx: np.ndarray, *, n_empty: int, rng: np.random.Generator
) -> list[SliceChoice]:
    """Every slice with foreground plus up to ``n_empty`` random empty slices, sorted by z.

    Empty slices (all background) are drawn without replacement with ``rng``; fewer are
    returned when the volume has fewer. A one-slice volume (a 2D image) always yields its
    single slice, of kind ``"empty"`` if it has no foreground.

    Args:
        label_zyx: ``(Z, Y, X)`` integer labels, 0 = background.
        n_empty: number of empty slices wanted, >= 0.
        rng: the generator for the empty-slice draw.
    """
    label_zyx = np.asarray(label_zyx)
    if label_zyx.ndim != 3:
        raise ValueError(f"select_slices expects a (Z, Y, X) volume, got shape {label_zyx.shape}")
    if int(n_empty) != n_empty or n_empty < 0:
        raise ValueError(f"n_empty must be a non-negative integer, got {n_empty!r}")
    n_fg_z = np.count_nonzero(label_zyx.reshape(label_zyx.shape[0], -1), axis=1)
    chosen = [int(z) for z in np.flatnonzero(n_fg_z)]
    empty_z = np.flatnonzero(n_fg_z == 0)
    n_draw = min(int(n_empty), empty_z.size)
    if label_zyx.shape[0] == 1 and not chosen:
        n_draw = 1
    if n_draw:
        chosen += [int(z) for z in rng.choice(empty_z, size=n_draw, replace=False)]
    return [
        SliceChoice(z=z, n_foreground=int(n_fg_z[z]), kind="foreground" if n_fg_z[z] else "empty")
        for z in sorted(chosen)
    ]
