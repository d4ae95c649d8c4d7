"""Prompt sampling for one object or a whole label volume, pure numpy.

A prompt for one object is a box, points, or both (``PromptSpec.type``):

- box: the object's tight box with MedSAM-style jitter (:func:`~.boxes.jitter_box`);
- points: ``n_positive`` points inside the object eroded by ``erosion_px`` and
  ``n_negative`` points in the ring ``ring_px`` around it (:mod:`.points`);
- box3d: one box per 3D object (LiteMedSAM's 3D protocol, :mod:`.propagation`): its 2D
  box over all its slices, jittered like a 2D box, and its z range; the prompt sits on
  the object's key slice (``key_slice``: its middle slice, LiteMedSAM's, or the slice
  where the reference object is largest, MedSAM2's), from which a model propagates it up
  and down.

An "object" is the union of a label's pixels on a slice (``components: union``, MedSAM's
protocol) or each of its 8-connected components (``components: each``); for box3d, the
union of the label's voxels or each of its 26-connected 3D components. Every object
gets ``repeats`` independent draws (for voting over jittered prompts). Coordinates are
pixel indices of the slice, x = column, boxes ``XYXY`` inclusive, points
``[x, y, label]`` with label 1 = positive, 0 = negative.

Random draws for one object come in the order box (4 integers), positives, negatives,
repeat after repeat, object after object, so a box-only, union, single-repeat spec draws
exactly what :func:`~.boxes.gt_box_prompts` draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from medsegflow.components import components_largest_first
from medsegflow.prompts.boxes import box_from_mask, jitter_box, slice_objects
from medsegflow.prompts.points import connected_components, negative_points, positive_points
from medsegflow.prompts.propagation import box_3d_from_mask

PROMPT_TYPES = ("box", "points", "box_points", "box3d")
COMPONENT_MODES = ("union", "each")
KEY_SLICES = ("middle", "largest")
"""How a box3d prompt's key slice is chosen: the middle of the object's z extent, or the
slice with the most reference voxels of the object (both from the reference: oracles)."""
UNION = -1
"""``component`` of a prompt made for the union of all components."""


@dataclass(frozen=True)
class PromptSpec:
    """How to draw a prompt; the keys of a ``prompts:`` config entry besides ``source``
    (``medsegflow/schemas/common.schema.yaml`` documents them and holds their defaults)."""

    type: str
    jitter: float
    n_positive: int
    n_negative: int
    erosion_px: float
    ring_px: tuple[float, float]
    components: str
    repeats: int
    key_slice: str = "middle"

    def __post_init__(self) -> None:
        if self.type not in PROMPT_TYPES:
            raise ValueError(f"type {self.type!r} is not one of {PROMPT_TYPES}")
        if self.key_slice not in KEY_SLICES:
            raise ValueError(f"key_slice {self.key_slice!r} is not one of {KEY_SLICES}")
        if self.key_slice != "middle" and self.type != "box3d":
            raise ValueError(f"key_slice {self.key_slice} applies to box3d prompts only")
        if self.components not in COMPONENT_MODES:
            raise ValueError(f"components {self.components!r} is not one of {COMPONENT_MODES}")
        if self.repeats < 1 or self.n_positive < 0 or self.n_negative < 0:
            raise ValueError("repeats must be >= 1, n_positive and n_negative >= 0")
        if self.type == "points" and self.n_positive + self.n_negative == 0:
            raise ValueError("type 'points' needs n_positive + n_negative >= 1")
        if len(self.ring_px) != 2 or not 0 <= self.ring_px[0] <= self.ring_px[1]:
            raise ValueError(
                f"ring_px {list(self.ring_px)} must be [inner, outer], 0 <= inner <= outer"
            )
        if self.jitter < 0 or self.erosion_px < 0:
            raise ValueError("jitter and erosion_px must be >= 0")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PromptSpec:
        """A spec from a complete prompt config (extra keys such as ``source`` are ignored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in config.items() if k in known}
        if "ring_px" in values:
            values["ring_px"] = tuple(float(v) for v in values["ring_px"])
        return cls(**values)

    @property
    def has_box(self) -> bool:
        return self.type in ("box", "box_points", "box3d")

    @property
    def has_points(self) -> bool:
        return self.type in ("points", "box_points")


@dataclass(frozen=True)
class ObjectPrompt:
    """One drawn prompt for one object of one slice (or, box3d, of a z range).

    Attributes:
        component: index of the object among the slice's components of its label
            (largest first, see :func:`~.points.connected_components`), or
            :data:`UNION` (-1) for the union of all of them.
        repeat: 0..repeats-1.
        box_xyxy: float64 ``(4,)`` ``[x_min, y_min, x_max, y_max]``, or None.
        points_xyl: int64 ``(N, 3)`` ``[x, y, label]`` rows, positives first (N may be 0).
    """

    component: int
    repeat: int
    box_xyxy: np.ndarray | None
    points_xyl: np.ndarray
    z_range: tuple[int, int] | None = None
    """Inclusive ``(z_min, z_max)`` of a box3d prompt; None for a prompt of one slice."""


def sample_prompt(
    object_yx: np.ndarray,
    *,
    spec: PromptSpec,
    rng: np.random.Generator,
    allowed_yx: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray]:
    """One draw for one object: ``(box_xyxy or None, points_xyl)``.

    ``allowed_yx`` restricts negative points (default: anywhere off the object), e.g. to
    the background of the whole label when the object is one of its components.
    """
    box = None
    if spec.has_box:
        box = jitter_box(
            box_from_mask(object_yx),
            image_shape_yx=object_yx.shape,
            max_shift_1024=spec.jitter,
            rng=rng,
        )
    parts = [np.zeros((0, 3), dtype=np.int64)]
    if spec.has_points:
        pos = positive_points(object_yx, n=spec.n_positive, erosion_px=spec.erosion_px, rng=rng)
        neg = negative_points(
            object_yx, n=spec.n_negative, ring_px=spec.ring_px, rng=rng, allowed_yx=allowed_yx
        )
        parts += [np.column_stack([pos, np.ones(len(pos), np.int64)])]
        parts += [np.column_stack([neg, np.zeros(len(neg), np.int64)])]
    return box, np.concatenate(parts).astype(np.int64)


def mask_prompts(
    mask_yx: np.ndarray, *, spec: PromptSpec, rng: np.random.Generator, k: int | None = None
) -> list[ObjectPrompt]:
    """Prompts for the objects of one 2D mask (all components, or the ``k`` largest).

    With ``components: union`` one object is the union of the (top-``k``) components;
    with ``each`` every one of them is an object, largest first. Each object gets
    ``spec.repeats`` draws. An empty mask gives no prompt.
    """
    mask_yx = np.asarray(mask_yx).astype(bool)
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k is None and spec.components == "union":
        targets = [(UNION, mask_yx)] if mask_yx.any() else []
    else:
        parts = connected_components(mask_yx)[:k]
        if spec.components == "union":
            targets = [(UNION, np.logical_or.reduce(parts))] if parts else []
        else:
            targets = list(enumerate(parts))
    allowed = ~mask_yx if spec.components == "each" else None
    out = []
    for component, object_yx in targets:
        for repeat in range(spec.repeats):
            box, points = sample_prompt(object_yx, spec=spec, rng=rng, allowed_yx=allowed)
            out.append(ObjectPrompt(component, repeat, box, points))
    return out


def gt_prompts(
    label_zyx: np.ndarray,
    *,
    label_values: Sequence[int],
    spec: PromptSpec,
    rng: np.random.Generator,
) -> list[tuple[int, int, ObjectPrompt]]:
    """Oracle prompts for every (slice, label) of a label volume: ``(z, label, prompt)``.

    Objects come in the order of :func:`~.boxes.slice_objects` (z, then
    ``label_values``), then component, then repeat. A box3d spec gives one prompt per 3D
    object (:func:`volume_prompts`) on the object's middle slice, in label order.
    """
    if spec.type == "box3d":
        return volume_prompts(label_zyx, label_values=label_values, spec=spec, rng=rng)
    out = []
    for z, value, mask_yx in slice_objects(label_zyx, label_values=label_values):
        out.extend((z, value, p) for p in mask_prompts(mask_yx, spec=spec, rng=rng))
    return out


def key_slice(object_zyx: np.ndarray, rule: str = "middle") -> int:
    """The key slice of a 3D object (bool ``(Z, Y, X)``, not empty): ``middle``, the middle
    of its z extent ``z_min + (z_max - z_min) // 2``; ``largest``, the slice with the most
    of its voxels (the lowest such z on a tie). Both read the reference: an oracle."""
    counts = np.asarray(object_zyx, bool).reshape(len(object_zyx), -1).sum(axis=1)
    present = np.flatnonzero(counts)
    if not present.size:
        raise ValueError("key_slice: the object is empty")
    if rule == "middle":
        return int(present[0] + (present[-1] - present[0]) // 2)
    if rule == "largest":
        return int(np.argmax(counts))
    raise ValueError(f"key_slice {rule!r} is not one of {KEY_SLICES}")


def volume_prompts(
    label_zyx: np.ndarray,
    *,
    label_values: Sequence[int],
    spec: PromptSpec,
    rng: np.random.Generator,
) -> list[tuple[int, int, ObjectPrompt]]:
    """box3d prompts: ``(z_key, label, prompt)`` for every 3D object of every label.

    An object is a label's voxels (``components: union``) or each of its 26-connected
    components, largest first (``each``). Its prompt is its 2D box over all its slices
    (:func:`~.propagation.box_3d_from_mask`) with MedSAM-style jitter, and its inclusive z
    range; it sits on its key slice (:func:`key_slice`, ``spec.key_slice``): the middle
    slice ``z_min + (z_max - z_min) // 2`` (LiteMedSAM's) or the largest one.
    """
    out = []
    for value in label_values:
        mask_zyx = np.asarray(label_zyx) == value
        if not mask_zyx.any():
            continue
        if spec.components == "union":
            objects = [(UNION, mask_zyx)]
        else:
            objects = list(enumerate(components_largest_first(mask_zyx)))
        for component, object_zyx in objects:
            box, (z_min, z_max) = box_3d_from_mask(object_zyx)
            for repeat in range(spec.repeats):
                jittered = jitter_box(
                    box, image_shape_yx=mask_zyx.shape[1:], max_shift_1024=spec.jitter, rng=rng
                )
                prompt = ObjectPrompt(
                    component, repeat, jittered, np.zeros((0, 3), np.int64), (z_min, z_max)
                )
                out.append((key_slice(object_zyx, spec.key_slice), int(value), prompt))
    return out
