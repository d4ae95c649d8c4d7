"""Prompted training batches of SAM-family recipes, and decoding them.

Every sample is one (slice, label) pair from a foreground slice of a train case
(:class:`~medsegflow.training.pairs.TrainingPairs`); the other labels on the same slice
are further targets decoded against the same image embedding (SAM's one-image,
many-prompts decoding). Each target gets a prompt:

- ``box``: its box, enlarged by MedSAM-style random jitter (``0..J`` px per side at the
  1024 scale);
- ``points``: one positive click drawn uniformly inside it (Med-SA's ``random_click``;
  given to the prompt encoder as ``(x, y)``, where Med-SA's code passes ``(row, column)``).

Images, boxes and points go through the model's own input recipe, as in the embedding
stage (:func:`~medsegflow.models.sam_encode.model_input`). Targets are in the padded input
square (``image_size``), zero in the padding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medsegflow.models.sam_encode import model_input
from medsegflow.prompts.boxes import box_from_mask, jitter_box
from medsegflow.training.pairs import TrainingPairs, augment_slice

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

PROMPT_KINDS = ("box", "points")


def targets_in_input_frame(masks_kyx: np.ndarray, *, model: Sam) -> torch.Tensor:
    """``(K, H, W)`` bool masks -> ``(K, 1, S, S)`` float targets in the padded input frame."""
    import torch
    import torch.nn.functional as F

    size = int(model.image_encoder.img_size)
    h, w = model.input_recipe.input_size(masks_kyx.shape[1:])
    target = torch.as_tensor(masks_kyx, dtype=torch.float32)[:, None]
    target = F.interpolate(target, (h, w), mode="bilinear", align_corners=False)
    return F.pad(target, (0, size - w, 0, size - h))


def prompt_for_masks(
    masks_kyx: np.ndarray, *, kind: str, model: Sam, jitter: float, rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    """One prompt per mask of ``(K, H, W)``, in the model frame: ``{"boxes": (K, 4)}``
    (jittered by ``0..jitter`` px per side) or ``{"points": (K, 1, 2), "labels": (K, 1)}``."""
    import torch

    recipe, shape_yx = model.input_recipe, masks_kyx.shape[1:]
    if kind == "box":
        xyxy = np.stack(
            [
                jitter_box(
                    box_from_mask(m), image_shape_yx=shape_yx, max_shift_1024=jitter, rng=rng
                )
                for m in masks_kyx
            ]
        )
        return {"boxes": torch.as_tensor(recipe.map_boxes(xyxy, shape_yx), dtype=torch.float32)}
    if kind != "points":
        raise ValueError(f"prompt {kind!r} is not one of {PROMPT_KINDS}")
    clicks = []
    for mask_yx in masks_kyx:
        ys, xs = np.nonzero(mask_yx)
        i = int(rng.integers(len(ys)))
        clicks.append([[float(xs[i]), float(ys[i])]])
    coords = torch.as_tensor(recipe.map_points(np.asarray(clicks), shape_yx), dtype=torch.float32)
    return {"points": coords, "labels": torch.ones(coords.shape[:2], dtype=torch.int64)}


def prompted_batch(
    pairs: TrainingPairs,
    *,
    model: Sam,
    settings: Mapping[str, Any],
    rng: np.random.Generator,
    prompt: str = "box",
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]], torch.Tensor]:
    """One batch of ``settings["batch_size"]`` slices: images ``(B, 3, S, S)``; per slice,
    its prompts (``{"boxes": (K_i, 4)}`` or ``{"points": (K_i, 1, 2), "labels": (K_i, 1)}``,
    model frame); targets ``(sum K_i, 1, S, S)`` in [0, 1], in the order of the prompts."""
    import torch

    images, prompts, targets = [], [], []
    for _ in range(int(settings["batch_size"])):
        image_yx, masks_kyx = augment_slice(*pairs.sample(rng), rng=rng)
        images.append(image_yx)
        prompts.append(
            prompt_for_masks(
                masks_kyx, kind=prompt, model=model, jitter=float(settings["jitter"]), rng=rng
            )
        )
        targets.append(targets_in_input_frame(masks_kyx, model=model))
    batch = model_input(images, model=model, device=torch.device("cpu"))
    return batch, prompts, torch.cat(targets)


def decode_all_masks(
    model: Sam, embeddings: torch.Tensor, prompts: Sequence[Mapping[str, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """All mask outputs of the decoder for every prompt of every image.

    Args:
        embeddings: ``(B, C, h, w)`` image embeddings.
        prompts: per image, ``{"boxes": (K_i, 4)}`` or ``{"points", "labels"}``, model
            frame (a bare ``(K_i, 4)`` tensor is taken as boxes).

    Returns:
        low-resolution logits ``(sum K_i, M, 4h, 4w)`` (token 0 = the single-mask output,
        1.. = the multimask outputs) and the predicted IoU ``(sum K_i, M)``.
    """
    import torch

    image_pe = model.prompt_encoder.get_dense_pe()
    device = embeddings.device
    masks, iou = [], []
    for i, prompt in enumerate(prompts):  # one image, K prompts: SAM's decoding
        if isinstance(prompt, torch.Tensor):
            prompt = {"boxes": prompt}
        points = None
        if "points" in prompt:
            points = (prompt["points"].to(device), prompt["labels"].to(device))
        boxes = prompt["boxes"].to(device) if "boxes" in prompt else None
        sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=None)
        m, q = model.mask_decoder.predict_masks(embeddings[i : i + 1], image_pe, sparse, dense)
        masks.append(m)
        iou.append(q)
    return torch.cat(masks), torch.cat(iou)
