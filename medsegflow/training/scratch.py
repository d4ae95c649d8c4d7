"""The ``scratch`` and ``finetune`` training recipes: a SAM-family network trained from a
random start (the demo SAM) or from a base model's weights, on the train split of
preprocessed datasets, with box prompts (MedSAM-style jitter).

Every training sample is drawn as one (slice, label) pair from a foreground slice of a
train case (each dataset with equal probability): the binary mask of that label is a
target, and its box, enlarged by MedSAM-style random jitter, is the prompt. The other
labels on the same slice are decoded against the same image embedding as further
targets (SAM's one-image, many-prompts decoding), which multiplies the supervision per
image-encoder pass at little cost. The image and its boxes go through the model's own
input recipe, as in the embedding stage (:func:`~medsegflow.models.sam_encode.model_input`).
Slices are flipped and zoomed at random
(:func:`~medsegflow.training.pairs.augment_slice`). The image encoder and the mask
decoder are trained with AdamW (weight decay 0.01, linear warm-up then cosine decay of
``lr``); the prompt encoder is frozen.

The loss is computed on the decoder's low-resolution logits upsampled to the padded
input square (``image_size``) against the target resized to the same frame:

- Dice + binary cross-entropy of the single-mask output (token 0, ``multimask=False``);
- plus the smallest Dice + BCE among the 3 multimask outputs (SAM's rule);
- plus the mean squared error of the predicted IoU of all 4 masks against their true IoU,
  so that ``multimask=True`` prediction picks a good mask.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from medsegflow.models.sam_archs import arch_spec, build_sam
from medsegflow.models.sam_encode import model_input
from medsegflow.prompts.boxes import box_from_mask, jitter_box
from medsegflow.training.pairs import TrainingPairs, augment_slice
from medsegflow.training.recipe import TrainedModel
from medsegflow.training.schedule import lr_factor

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

log = logging.getLogger(__name__)


def _make_batch(
    pairs: TrainingPairs,
    *,
    model: Sam,
    settings: Mapping[str, Any],
    rng: np.random.Generator,
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """One batch of ``B`` slices: images ``(B, 3, S, S)``; per slice, ``(K_i, 4)`` XYXY
    boxes in the model frame; soft targets ``(sum K_i, 1, S, S)`` in [0, 1] (zero in the
    padding), in the order of the boxes."""
    import torch
    import torch.nn.functional as F

    size = int(model.image_encoder.img_size)
    recipe = model.input_recipe
    images, boxes, targets = [], [], []
    for _ in range(int(settings["batch_size"])):
        image_yx, masks_kyx = augment_slice(*pairs.sample(rng), rng=rng)
        shape_yx = image_yx.shape
        xyxy = np.stack(
            [
                jitter_box(
                    box_from_mask(mask_yx),
                    image_shape_yx=shape_yx,
                    max_shift_1024=float(settings["jitter"]),
                    rng=rng,
                )
                for mask_yx in masks_kyx
            ]
        )
        images.append(image_yx)
        boxes.append(torch.as_tensor(recipe.map_boxes(xyxy, shape_yx), dtype=torch.float32))
        h, w = recipe.input_size(shape_yx)
        target = torch.as_tensor(masks_kyx, dtype=torch.float32)[:, None]
        target = F.interpolate(target, (h, w), mode="bilinear", align_corners=False)
        targets.append(F.pad(target, (0, size - w, 0, size - h)))
    batch = model_input(images, model=model, device=torch.device("cpu"))
    return batch, boxes, torch.cat(targets)


def _dice_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-mask soft Dice + BCE: ``logits`` ``(N, K, S, S)``, ``target`` ``(N, 1, S, S)``
    -> ``(N, K)``."""
    import torch.nn.functional as F

    target = target.expand_as(logits)
    prob = logits.sigmoid()
    inter = (prob * target).sum((-1, -2))
    dice = 1 - (2 * inter + 1) / (prob.sum((-1, -2)) + target.sum((-1, -2)) + 1)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((-1, -2))
    return dice + bce


def decode_all_masks(
    model: Sam, embeddings: torch.Tensor, boxes: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """All 4 mask outputs of the decoder for every box of every image.

    Args:
        embeddings: ``(B, C, h, w)`` image embeddings.
        boxes: per image, ``(K_i, 4)`` XYXY boxes in the model's input frame.

    Returns:
        low-resolution logits ``(sum K_i, 4, 4h, 4w)`` (token 0 = the single-mask output,
        1..3 = the multimask outputs) and the predicted IoU ``(sum K_i, 4)``, in the
        order of the boxes.
    """
    import torch

    image_pe = model.prompt_encoder.get_dense_pe()
    masks, iou = [], []
    for i, boxes_k4 in enumerate(boxes):  # one image, K prompts: SAM's decoding
        sparse, dense = model.prompt_encoder(points=None, boxes=boxes_k4, masks=None)
        m, q = model.mask_decoder.predict_masks(embeddings[i : i + 1], image_pe, sparse, dense)
        masks.append(m)
        iou.append(q)
    return torch.cat(masks), torch.cat(iou)


def _loss(
    model: Sam, images: torch.Tensor, boxes: Sequence[torch.Tensor], targets: torch.Tensor
) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    low_res, iou_pred = decode_all_masks(model, model.image_encoder(images), boxes)
    logits = F.interpolate(low_res, targets.shape[-2:], mode="bilinear", align_corners=False)
    per_mask = _dice_bce(logits, targets)
    with torch.no_grad():
        hard, truth = logits > 0, targets > 0.5
        inter = (hard & truth).sum((-1, -2)).float()
        union = (hard | truth).sum((-1, -2)).float()
        iou_true = inter / union.clamp(min=1)
    mask_loss = per_mask[:, 0] + per_mask[:, 1:].min(dim=1).values
    return (mask_loss + ((iou_pred - iou_true) ** 2).mean(dim=1)).mean()


def _freeze_prompt_encoder(model: Sam) -> Sam:
    for param in model.prompt_encoder.parameters():
        param.requires_grad_(False)
    return model.train()


def train_from_scratch(
    *,
    arch: str,
    settings: Mapping[str, Any],
    pairs: TrainingPairs,
    seed: int,
    base: Mapping[str, Any] | None = None,
) -> TrainedModel:
    """The ``scratch`` recipe: train image encoder and mask decoder from a random start.

    Args:
        arch: the network (``demo``: the small one at ``settings["image_size"]``).
        settings: the complete ``train:`` block (``sam_models.schema.yaml``).
        pairs: the training (slice, label) pairs.
        seed: seeds the initialisation (``torch.manual_seed``) and the sampling
            (``numpy.random.default_rng``): same seed and threads, same weights.
        base: must be None (the recipe starts from no weights).
    """
    import torch

    if base is not None:
        raise ValueError("the scratch recipe starts from no base model")
    spec = arch_spec(arch) if arch != "demo" else arch_spec({"img_size": settings["image_size"]})
    torch.manual_seed(int(seed))
    model = _freeze_prompt_encoder(build_sam(spec))
    return TrainedModel(model, spec, [], _train(model, settings=settings, pairs=pairs, seed=seed))


def finetune_from_base(
    *,
    arch: str,
    settings: Mapping[str, Any],
    pairs: TrainingPairs,
    seed: int,
    base: Mapping[str, Any] | None = None,
) -> TrainedModel:
    """The ``finetune`` recipe: the base model's weights, then the image encoder and mask
    decoder trained on (all parameters but the prompt encoder's) with the same loss and
    box prompts as the scratch recipe.

    Args:
        base: ``{"model", "checkpoint"}`` of the base (official weights, a packaged model
            or a model trained here), loaded by the loader of official checkpoints with
            its architecture and any modules its card lists, which the result keeps.
    """
    import torch

    from medsegflow.models.sam_loader import load_sam_model, model_architecture

    if base is None:
        raise ValueError("the finetune recipe needs a base model")
    torch.manual_seed(int(seed))
    model, _ = load_sam_model(base["checkpoint"], arch=arch, device="cpu")
    spec, modules = model_architecture(base["checkpoint"], arch=arch)
    model = _freeze_prompt_encoder(model)
    history = _train(model, settings=settings, pairs=pairs, seed=seed)
    return TrainedModel(model, spec, modules, history)


def _train(
    model: Sam, *, settings: Mapping[str, Any], pairs: TrainingPairs, seed: int
) -> list[dict[str, float]]:
    """The loop of both recipes: AdamW on the trainable parameters, warm-up then cosine
    decay of ``lr``, box prompts with jitter; leaves ``model`` in eval mode."""
    import torch

    torch.set_num_threads(int(settings["threads"]))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=float(settings["lr"]), weight_decay=0.01)
    rng = np.random.default_rng(int(seed))
    n_iter = int(settings["iterations"])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(i, n_iter))
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    for iteration in tqdm(range(1, n_iter + 1), desc="train", unit="it"):
        images, boxes, targets = _make_batch(pairs, model=model, settings=settings, rng=rng)
        loss = _loss(model, images, boxes, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        history.append(
            {
                "iteration": iteration,
                "loss": float(loss.detach()),
                "seconds": round(time.perf_counter() - start, 3),
            }
        )
        if iteration == 1 or iteration % max(1, n_iter // 20) == 0 or iteration == n_iter:
            log.info("iteration %d/%d: loss %.4f", iteration, n_iter, history[-1]["loss"])
    model.eval()
    return history
