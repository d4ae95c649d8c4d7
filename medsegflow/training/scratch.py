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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from medsegflow.models.sam_archs import arch_spec, build_sam
from medsegflow.training.batches import decode_all_masks, prompted_batch
from medsegflow.training.loop import fit
from medsegflow.training.losses import mask_iou, soft_dice_bce
from medsegflow.training.pairs import TrainingPairs
from medsegflow.training.recipe import TrainedModel
from medsegflow.training.schedule import lr_factor

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

log = logging.getLogger(__name__)


def sam_loss(model: Sam, pairs: TrainingPairs, settings: Mapping[str, Any]):
    """The scratch/finetune loss of one box-prompted batch (module docstring)."""

    def loss(rng: np.random.Generator, device: torch.device) -> torch.Tensor:
        import torch.nn.functional as F

        images, prompts, targets = prompted_batch(pairs, model=model, settings=settings, rng=rng)
        images, targets = images.to(device), targets.to(device)
        low_res, iou_pred = decode_all_masks(model, model.image_encoder(images), prompts)
        logits = F.interpolate(
            low_res.float(), targets.shape[-2:], mode="bilinear", align_corners=False
        )
        per_mask = soft_dice_bce(logits, targets)
        iou_true = mask_iou(logits.detach(), targets)
        mask_loss = per_mask[:, 0] + per_mask[:, 1:].min(dim=1).values
        return (mask_loss + ((iou_pred.float() - iou_true) ** 2).mean(dim=1)).mean()

    return loss


def freeze_prompt_encoder(model: Sam) -> Sam:
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
    model = freeze_prompt_encoder(build_sam(spec))
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
    model = freeze_prompt_encoder(model)
    history = _train(model, settings=settings, pairs=pairs, seed=seed)
    return TrainedModel(model, spec, modules, history)


def _train(
    model: Sam, *, settings: Mapping[str, Any], pairs: TrainingPairs, seed: int
) -> list[dict[str, float]]:
    """The loop of both recipes: AdamW (weight decay 0.01) on the trainable parameters,
    warm-up then cosine decay of ``lr``, box prompts with jitter."""
    import torch

    lr = float(settings["lr"])
    return fit(
        model,
        settings=settings,
        loss=sam_loss(model, pairs, settings),
        seed=seed,
        optimizer=lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.01),
        lr_factor=lr_factor,
    )
