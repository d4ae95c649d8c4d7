"""3D box propagation for 2D promptable models (LiteMedSAM's official 3D protocol).

Everything here goes through :class:`~medsegflow.promptable.interface.PromptableModel`
(:meth:`~PromptableModel.decode` of a slice's cached features,
:meth:`~PromptableModel.propagation_box_rule`, :meth:`~PromptableModel.box_to_original`);
a model whose native prompts include ``"key_slice_box"`` propagates a box3d row itself
(:meth:`~PromptableModel.propagate_from_key_slice`, :func:`propagate_row`).

A ``box3d`` prompt (``prompts.tsv`` rows with ``z_min < z_max``) is one box per 3D object.
Its middle slice (the row's ``z``) is decoded with the box; then each next slice, up and
then down, with the box of its neighbour's prediction widened by LiteMedSAM's fixed 3
pixels at the 256 scale, falling back to the middle box when the neighbour came back
empty, within the box's z range (:func:`medsegflow.prompts.propagation.propagate_box_3d`).
The neighbour's box follows ``box_rule`` (:data:`PROPAGATION_BOXES`, the method's
``propagation_box``): ``resized``, LiteMedSAM's official rule, measures it on the mask
resized into the model's input frame and widens it by 3 pixels there
(:func:`~medsegflow.prompts.propagation.box_from_mask_resized`); ``original`` measures it
on the full-resolution mask and widens it by ``3 * max(H, W) / 256`` original pixels;
``auto`` is the model's :meth:`~PromptableModel.propagation_box_rule` (``resized`` for
LiteMedSAM's recipe, ``original`` otherwise). Every slice is decoded from its cached
features, by the model's own recipe. Repeated
draws of one object are voted slice by slice over the repeats that reached the slice.
The 2D oracle clicks (``clicks.rounds``) are not part of this protocol.

Corrective 3D clicks (``clicks3d``, :func:`corrective_clicks`; the CVPR 2025 interactive
protocol for 2D models): after the propagation (step 0), each step gives every object one
click, :func:`medsegflow.prompts.clicks.next_click_index` on the case's original voxel grid
between the object's voted 3D mask and its reference (:func:`object_reference`), and
re-decodes only the clicked slice ``z``: each repeat with the box it had there (the 3D
box's own on the middle slice, the neighbour's widened box elsewhere), every click of the
object on ``z`` so far as points, and (``mask_input``) that repeat's previous low-res
logits of ``z`` as SAM's mask input, with one output mask as in
:func:`medsegflow.promptable.predict2d.refine_with_clicks`. The neighbours are not
propagated again. An object that matches its reference gets no more clicks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medsegflow.components import label_by_size
from medsegflow.interactive import CLICK_TABLE_COLUMNS
from medsegflow.manifests import BOX_COLUMNS
from medsegflow.models.sam_cache import CaseEmbeddings
from medsegflow.prediction.painting import ObjectMask, mean_probability
from medsegflow.promptable.interface import Prompt2D, PromptableModel
from medsegflow.prompts.clicks import next_click_index
from medsegflow.prompts.propagation import (
    box_from_mask_resized,
    litemedsam_margin_px,
    propagate_box_3d,
)
from medsegflow.prompts.voting import vote

NO_POINTS = np.zeros((0, 3), dtype=np.int64)

PROPAGATION_BOXES = ("auto", "resized", "original")
"""How the box of a propagated slice is taken from its neighbour's mask (module docstring)."""


def resolve_box_rule(box_rule: str, model: PromptableModel) -> str:
    """``resized`` or ``original``: ``auto`` is the model's
    :meth:`~PromptableModel.propagation_box_rule`."""
    if box_rule not in PROPAGATION_BOXES:
        raise ValueError(f"propagation box {box_rule!r} is not one of {PROPAGATION_BOXES}")
    if box_rule == "auto":
        return model.propagation_box_rule()
    return box_rule


def volume_rows(prompts: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``prompts`` that cover several slices (box3d prompts)."""
    return prompts[prompts["z_min"] < prompts["z_max"]]


@dataclass(frozen=True)
class SliceDecoding:
    """One repeat's decoding of one slice of a box3d object.

    Attributes:
        box_xyxy: float64 ``(4,)`` the box it was decoded with (original slice frame).
        mask_yx: bool ``(H, W)`` foreground.
        prob_yx: float32 ``(H, W)`` foreground probabilities.
        low_res_1hw: float32 ``(1, 4h, 4w)`` chosen low-res logits (model frame), the mask
            input of a corrective click; None when not kept.
    """

    box_xyxy: np.ndarray
    mask_yx: np.ndarray
    prob_yx: np.ndarray
    low_res_1hw: np.ndarray | None = None


@dataclass
class VolumeObject:
    """One box3d object (``prompt_id``; a one-slice box is one too): its repeats'
    per-slice decodings and its corrective clicks.

    Attributes:
        label, component: of its prompt rows (``component`` -1: the label's union,
            otherwise its 26-connected component of that rank, largest first).
        runs: one ``{z: SliceDecoding}`` per repeat, every slice it visited.
        points_zn3: ``{z: (N, 3) [x, y, label]}`` the corrective clicks on slice ``z``.
    """

    label: int
    component: int
    runs: list[dict[int, SliceDecoding]]
    points_zn3: dict[int, np.ndarray] = field(default_factory=dict)
    _voted: dict[int, tuple[str, bool, ObjectMask]] = field(default_factory=dict, repr=False)

    @property
    def slices(self) -> list[int]:
        """The visited slices, ascending (contiguous: ``z_min .. z_max``)."""
        return sorted({z for run in self.runs for z in run})

    def masks(self, *, voting: str, keep_probs: bool) -> list[ObjectMask]:
        """Per-slice masks, ascending ``z``: the repeats that reached the slice voted by
        ``voting``; with ``keep_probs`` the float16 mean of their probabilities."""
        out = []
        for z in self.slices:
            if self._voted.get(z, (None, None))[:2] != (voting, keep_probs):
                masks = np.stack([run[z].mask_yx for run in self.runs if z in run])
                probs = np.stack([run[z].prob_yx for run in self.runs if z in run])
                mask_yx = vote(voting, masks_ryx=masks, probs_ryx=probs)
                prob_yx = mean_probability(probs) if keep_probs else None
                voted = ObjectMask(z, self.label, mask_yx, float(mask_yx.sum()), prob_yx)
                self._voted[z] = (voting, keep_probs, voted)
            out.append(self._voted[z][2])
        return out

    def redecoded(self, z: int, decodings: list[SliceDecoding]) -> None:
        """Replace slice ``z`` of every repeat that reached it (in ``runs`` order)."""
        reached = [run for run in self.runs if z in run]
        if len(decodings) != len(reached):
            raise ValueError(f"slice {z}: {len(decodings)} decodings for {len(reached)} repeats")
        for run, decoding in zip(reached, decodings, strict=True):
            run[z] = decoding
        self._voted.pop(z, None)


def propagate_row(
    model: PromptableModel,
    cached: CaseEmbeddings,
    row: Mapping[str, Any],
    *,
    multimask: bool,
    n_z: int,
    keep_logits: bool = False,
    box_rule: str = "auto",
    image_zyx: np.ndarray | None = None,
) -> dict[int, SliceDecoding]:
    """``z -> SliceDecoding`` of one box3d prompt row, propagated from its key slice
    ``z``; ``keep_logits`` keeps each slice's low-res logits (for corrective clicks);
    ``box_rule`` one of :data:`PROPAGATION_BOXES` (module docstring). Every
    ``SliceDecoding.box_xyxy`` is in the original frame (with ``resized``, the box whose
    mapping is the model-frame box, :meth:`PromptableModel.box_to_original`).

    A model with ``"key_slice_box"`` among its native prompts propagates the row itself
    (:func:`propagate_by_model`, on ``image_zyx``)."""
    if "key_slice_box" in model.native_prompts:
        return propagate_by_model(model, row, image_zyx=image_zyx)
    sizes = (cached.original_size, cached.input_size)
    decodings: dict[int, SliceDecoding] = {}

    def segment(z: int, box_xyxy: np.ndarray) -> np.ndarray:
        box = np.asarray(box_xyxy, dtype=np.float64)
        decoded = model.decode(
            cached.features(z),
            [Prompt2D(box, NO_POINTS)],
            original_size=sizes[0],
            input_size=sizes[1],
            multimask=multimask,
            batch_size=1,
        )
        low_res = decoded.low_res_pchw[0] if keep_logits else None
        decodings[z] = SliceDecoding(box, decoded.masks_pyx[0], decoded.probs_pyx[0], low_res)
        return decoded.masks_pyx[0]

    neighbour_box = None
    if resolve_box_rule(box_rule, model) == "resized":

        def neighbour_box(mask_yx: np.ndarray) -> np.ndarray | None:
            box_model = box_from_mask_resized(
                mask_yx, input_size=cached.input_size, image_size=cached.image_size
            )
            if box_model is None:
                return None
            return model.box_to_original(box_model, cached.original_size)

    box = np.array([row[c] for c in BOX_COLUMNS], dtype=np.float64)
    masks = propagate_box_3d(
        segment,
        box_xyxy=box,
        z_range=(int(row["z_min"]), int(row["z_max"])),
        shape_zyx=(n_z, *cached.original_size),
        margin_px=litemedsam_margin_px(cached.original_size),
        neighbour_box=neighbour_box,
        z_key=int(row["z"]),
    )
    return {z: decodings[z] for z in masks}


def propagate_by_model(
    model: PromptableModel,
    row: Mapping[str, Any],
    *,
    image_zyx: np.ndarray | None,
) -> dict[int, SliceDecoding]:
    """A box3d row propagated by the model's own protocol
    (:meth:`PromptableModel.propagate_from_key_slice`): its box on its key slice ``z``
    through its z range. Every slice's box is the row's box; its probabilities are the
    mask (0 or 1), and no low-res logits are kept (corrective clicks decode without a
    mask input: ``clicks3d.mask_input: false``)."""
    if image_zyx is None:
        raise ValueError(f"{model.kind}: propagation by the model needs the case's image")
    box = np.array([row[c] for c in BOX_COLUMNS], dtype=np.float64)
    z_range = (int(row["z_min"]), int(row["z_max"]))
    masks = model.propagate_from_key_slice(
        image_zyx, z=int(row["z"]), box_xyxy=box, z_range=z_range
    )
    return {
        int(z): SliceDecoding(box.copy(), np.asarray(m, bool), np.asarray(m, np.float32))
        for z, m in masks.items()
    }


def propagate_objects(
    model: PromptableModel,
    cached: CaseEmbeddings,
    rows: pd.DataFrame,
    *,
    multimask: bool,
    n_z: int,
    keep_logits: bool = False,
    box_rule: str = "auto",
    image_zyx: np.ndarray | None = None,
) -> list[VolumeObject]:
    """Every object (``prompt_id``, in order of first row) of box3d ``rows``, each repeat
    propagated (:func:`propagate_row`, ``box_rule``; ``image_zyx`` for a model that
    propagates itself)."""
    objects = []
    for _, group in rows.groupby("prompt_id", sort=False):
        runs = [
            propagate_row(
                model,
                cached,
                row,
                multimask=multimask,
                n_z=n_z,
                keep_logits=keep_logits,
                box_rule=box_rule,
                image_zyx=image_zyx,
            )
            for row in group.to_dict("records")
        ]
        label, component = int(group["label"].iloc[0]), int(group["component"].iloc[0])
        objects.append(VolumeObject(label, component, runs))
    return objects


def propagated_objects(
    model: PromptableModel,
    cached: CaseEmbeddings,
    rows: pd.DataFrame,
    *,
    multimask: bool,
    voting: str,
    n_z: int,
    keep_probs: bool = False,
    box_rule: str = "auto",
    image_zyx: np.ndarray | None = None,
) -> list[ObjectMask]:
    """Per-slice object masks of a case's box3d rows: each object's repeats propagated
    (``box_rule``; ``image_zyx`` for a model that propagates itself), then voted per slice
    by ``voting``. With ``keep_probs`` each mask keeps the float16 mean of the
    probabilities of the repeats that reached its slice."""
    objects = propagate_objects(
        model,
        cached,
        rows,
        multimask=multimask,
        n_z=n_z,
        box_rule=box_rule,
        image_zyx=image_zyx,
    )
    return [m for obj in objects for m in obj.masks(voting=voting, keep_probs=keep_probs)]


def object_reference(
    label_zyx: np.ndarray, obj: VolumeObject, *, components: dict[int, tuple] | None = None
) -> tuple[int, np.ndarray]:
    """``(z_min, bool (z_max - z_min + 1, Y, X))``: the reference of ``obj`` on its
    visited slices ``z_min .. z_max``.

    It is the object its box3d prompt was made for (``volume_prompts`` of
    :mod:`medsegflow.prompts.sampling`): the label's voxels (``component`` -1) or the
    label's ``component``-th 26-connected component, largest first with stable ties as
    there, cut to the slices the propagation visited, the only slices the object has a box
    on (for prompts made from this reference, the component's own z range). So with
    several objects of one label (``components: each``) each object is corrected toward
    its own component only: the other components are not its misses, and are its false
    positives only where it covers them. ``components`` caches each label's
    ``(labelled volume, component order)`` across objects.
    """
    z_lo, z_hi = obj.slices[0], obj.slices[-1]
    mask_zyx = np.asarray(label_zyx) == obj.label
    if obj.component < 0:
        return z_lo, mask_zyx[z_lo : z_hi + 1]
    cache = {} if components is None else components
    if obj.label not in cache:
        cache[obj.label] = label_by_size(mask_zyx)
    labelled, order = cache[obj.label]
    if obj.component >= len(order):
        return z_lo, np.zeros_like(mask_zyx[z_lo : z_hi + 1])
    return z_lo, labelled[z_lo : z_hi + 1] == order[obj.component]


def _slab(masks: list[ObjectMask], z_lo: int, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    for mask in masks:
        out[mask.z - z_lo] = mask.mask_yx
    return out


def click_slice(
    model: PromptableModel,
    cached: CaseEmbeddings,
    obj: VolumeObject,
    click_zyxl: tuple[int, int, int, int],
    *,
    mask_input: bool,
    batch_size: int,
) -> None:
    """Add one click ``(z, y, x, label)`` to ``obj`` and re-decode its slice ``z``: each
    repeat with its box there, the object's clicks on ``z`` as points and (``mask_input``)
    its previous low-res logits of ``z``, one output mask."""
    z, y, x, positive = (int(v) for v in click_zyxl)
    previous = obj.points_zn3.get(z, NO_POINTS)
    points = np.concatenate([previous, np.array([[x, y, positive]], dtype=np.int64)])
    obj.points_zn3[z] = points
    reached = [run[z] for run in obj.runs if z in run]
    if mask_input and any(d.low_res_1hw is None for d in reached):
        raise ValueError(
            f"slice {z}: no low-res logits kept (propagate with keep_logits; a model that "
            "propagates box3d prompts itself keeps none: set clicks3d.mask_input to false)"
        )
    decoded = model.decode(
        cached.features(z),
        [Prompt2D(d.box_xyxy, points) for d in reached],
        original_size=cached.original_size,
        input_size=cached.input_size,
        multimask=False,
        batch_size=batch_size,
        mask_inputs=np.stack([d.low_res_1hw for d in reached]) if mask_input else None,
    )
    masks, probs, low_res = decoded.masks_pyx, decoded.probs_pyx, decoded.low_res_pchw
    obj.redecoded(
        z,
        [SliceDecoding(d.box_xyxy, masks[i], probs[i], low_res[i]) for i, d in enumerate(reached)],
    )


def corrective_clicks(
    model: PromptableModel,
    cached: CaseEmbeddings,
    objects: list[VolumeObject],
    label_zyx: np.ndarray,
    *,
    n_clicks: int,
    mode: str,
    rng: np.random.Generator,
    mask_input: bool,
    voting: str,
    keep_probs: bool,
    batch_size: int,
) -> tuple[list[list[ObjectMask]], pd.DataFrame]:
    """``n_clicks`` steps of one corrective click per object (module docstring).

    Args:
        objects: propagated with ``keep_logits`` (when ``mask_input``); changed in place.
        label_zyx: the case's cleaned reference labels (the simulated user).
        mode: ``"center"`` or ``"random"`` (:func:`medsegflow.prompts.clicks.next_click_index`;
            ``rng`` draws the random ones, object after object, step after step).

    Returns:
        ``(steps, clicks)``: the objects' per-slice masks after each step (``1 +
        n_clicks`` lists, step 0 the propagation's), and the clicks
        (:data:`~medsegflow.interactive.CLICK_TABLE_COLUMNS`: click number from 1,
        original ``z, y, x`` voxel indices, ``positive`` 1 on a miss, 0 on a false
        positive), one row per object and step that got one.
    """

    def current() -> list[ObjectMask]:
        return [m for obj in objects for m in obj.masks(voting=voting, keep_probs=keep_probs)]

    cache: dict[int, tuple] = {}
    references = [object_reference(label_zyx, obj, components=cache) for obj in objects]
    steps, rows = [current()], []
    for number in range(1, n_clicks + 1):
        for obj, (z_lo, reference) in zip(objects, references, strict=True):
            pred = _slab(obj.masks(voting=voting, keep_probs=keep_probs), z_lo, reference.shape)
            click = next_click_index(pred, reference, mode=mode, rng=rng)
            if click is None:
                continue
            z, y, x, positive = int(click[0]) + z_lo, int(click[1]), int(click[2]), int(click[3])
            zyxl = (z, y, x, positive)
            click_slice(model, cached, obj, zyxl, mask_input=mask_input, batch_size=batch_size)
            rows.append(
                {"label": obj.label, "click": number, "z": z, "y": y, "x": x, "positive": positive}
            )
        steps.append(current())
    return steps, pd.DataFrame(rows, columns=list(CLICK_TABLE_COLUMNS))
