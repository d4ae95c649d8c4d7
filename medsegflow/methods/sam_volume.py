"""3D box propagation for 2D SAM-family models (LiteMedSAM's official 3D protocol).

A ``box3d`` prompt (``prompts.tsv`` rows with ``z_min < z_max``) is one box per 3D object.
Its middle slice (the row's ``z``) is decoded with the box; then each next slice, up and
then down, with the box of its neighbour's prediction widened by LiteMedSAM's fixed 3
pixels at the 256 scale (``3 * max(H, W) / 256`` original pixels), falling back to the
middle box when the neighbour came back empty, within the box's z range
(:func:`medsegflow.prompts.propagation.propagate_box_3d`). Every slice is decoded from its
cached embedding, by the model's own recipe. Repeated draws of one object are voted
slice by slice over the repeats that reached the slice. Oracle clicks are not part of
this protocol here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from medsegflow.manifests import BOX_COLUMNS
from medsegflow.models.sam_decode import SamPrompt, decode_prompts
from medsegflow.prediction.painting import ObjectMask
from medsegflow.prompts.propagation import litemedsam_margin_px, propagate_box_3d
from medsegflow.prompts.voting import vote

if TYPE_CHECKING:
    import pandas as pd
    from segment_anything.modeling import Sam

    from medsegflow.models.sam_cache import CaseEmbeddings

NO_POINTS = np.zeros((0, 3), dtype=np.int64)


def volume_rows(prompts: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``prompts`` that cover several slices (box3d prompts)."""
    return prompts[prompts["z_min"] < prompts["z_max"]]


def propagate_row(
    model: Sam,
    cached: CaseEmbeddings,
    row: Mapping[str, Any],
    *,
    multimask: bool,
    n_z: int,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``z -> (bool mask, float32 probabilities)`` (each ``(H, W)``) of one box3d prompt
    row, propagated from its middle slice ``z``."""
    sizes = (cached.original_size, cached.input_size)
    probs: dict[int, np.ndarray] = {}

    def segment(z: int, box_xyxy: np.ndarray) -> np.ndarray:
        decoded = decode_prompts(
            model,
            cached.embeddings[cached.index_of(z)],
            [SamPrompt(np.asarray(box_xyxy, dtype=np.float64), NO_POINTS)],
            original_size=sizes[0],
            input_size=sizes[1],
            multimask=multimask,
            batch_size=1,
        )
        probs[z] = decoded.probs_pyx[0]
        return decoded.masks_pyx[0]

    box = np.array([row[c] for c in BOX_COLUMNS], dtype=np.float64)
    masks = propagate_box_3d(
        segment,
        box_xyxy=box,
        z_range=(int(row["z_min"]), int(row["z_max"])),
        shape_zyx=(n_z, *cached.original_size),
        margin_px=litemedsam_margin_px(cached.original_size),
    )
    return {z: (mask, probs[z]) for z, mask in masks.items()}


def propagated_objects(
    model: Sam,
    cached: CaseEmbeddings,
    rows: pd.DataFrame,
    *,
    multimask: bool,
    voting: str,
    n_z: int,
) -> list[ObjectMask]:
    """Per-slice object masks of a case's box3d rows: each object's repeats propagated,
    then voted per slice by ``voting``."""
    objects = []
    for _, group in rows.groupby("prompt_id", sort=False):
        runs = [
            propagate_row(model, cached, row, multimask=multimask, n_z=n_z)
            for row in group.to_dict("records")
        ]
        label = int(group["label"].iloc[0])
        for z in sorted({z for run in runs for z in run}):
            masks = np.stack([run[z][0] for run in runs if z in run])
            probs = np.stack([run[z][1] for run in runs if z in run])
            mask_yx = vote(voting, masks_ryx=masks, probs_ryx=probs)
            objects.append(ObjectMask(z, label, mask_yx, float(mask_yx.sum())))
    return objects
