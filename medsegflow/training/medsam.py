"""The ``medsam`` recipe: MedSAM's full fine-tuning of a base model with box prompts.

As bowang-lab/MedSAM ``train_one_gpu.py`` (main) trains MedSAM: the image encoder and the
mask decoder are trained, the prompt encoder is frozen; one box per target, each side
moved outward by ``0..20`` px (``bbox_shift``; here at the 1024 scale, ``jitter``); the
single-mask output (``multimask_output=False``) upsampled to the input square; loss
``DiceLoss(sigmoid, squared_pred) + BCEWithLogitsLoss``; AdamW, lr 1e-4, weight decay
0.01. LiteMedSAM's script (branch LiteMedSAM, ``train_one_gpu.py``) adds the mean
squared error of the predicted IoU against the true IoU of the mask (``iou_loss: auto``
adds it for the ``lite_medsam`` architecture). The learning rate warms up over the first
5% of the iterations, then decays as a cosine (MedSAM keeps it constant; LiteMedSAM
lowers it on plateaus).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from medsegflow.training.base_model import freeze_all_but, load_base
from medsegflow.training.batches import decode_all_masks, prompted_batch
from medsegflow.training.loop import fit
from medsegflow.training.losses import mask_iou, medsam_dice_bce
from medsegflow.training.pairs import TrainingPairs
from medsegflow.training.recipe import TrainedModel
from medsegflow.training.schedule import lr_factor

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam


def single_mask_loss(
    model: Sam,
    pairs: TrainingPairs,
    settings: Mapping[str, Any],
    *,
    prompt: str,
    iou_loss: bool,
    mask_loss=medsam_dice_bce,
):
    """Loss of one prompted batch on the decoder's single-mask output (token 0)."""

    def loss(rng: np.random.Generator, device: torch.device) -> torch.Tensor:
        import torch.nn.functional as F

        images, prompts, targets = prompted_batch(
            pairs, model=model, settings=settings, rng=rng, prompt=prompt
        )
        images, targets = images.to(device), targets.to(device)
        low_res, iou_pred = decode_all_masks(model, model.image_encoder(images), prompts)
        logits = F.interpolate(
            low_res[:, :1].float(), targets.shape[-2:], mode="bilinear", align_corners=False
        )
        value = mask_loss(logits, targets)
        if iou_loss:
            value = (
                value + ((iou_pred[:, :1].float() - mask_iou(logits.detach(), targets)) ** 2).mean()
            )
        return value

    return loss


def train_medsam(
    *,
    arch: str,
    settings: Mapping[str, Any],
    pairs: TrainingPairs,
    seed: int,
    base: Mapping[str, Any] | None = None,
) -> TrainedModel:
    """Fine-tune ``base`` with MedSAM's recipe (module docstring)."""
    import torch

    torch.manual_seed(int(seed))
    model, spec, modules = load_base(base, arch=arch, recipe="medsam")
    freeze_all_but(model, lambda name: not name.startswith("prompt_encoder."))
    iou_loss = settings["iou_loss"]
    iou_loss = spec["encoder"] == "tiny_vit" if iou_loss == "auto" else bool(iou_loss)
    lr, decay = float(settings["lr"]), float(settings["weight_decay"])
    history = fit(
        model,
        settings=settings,
        loss=single_mask_loss(model, pairs, settings, prompt="box", iou_loss=iou_loss),
        seed=seed,
        optimizer=lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=decay),
        lr_factor=lr_factor,
    )
    return TrainedModel(model, spec, modules, history)
