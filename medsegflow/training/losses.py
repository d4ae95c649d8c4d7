"""Losses of the SAM-family training recipes, each as its authors' training script defines it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def soft_dice_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-mask soft Dice (smooth 1) + BCE: ``logits`` ``(N, K, S, S)``, ``target``
    ``(N, 1, S, S)`` -> ``(N, K)`` (the scratch and finetune recipes)."""
    import torch.nn.functional as F

    target = target.expand_as(logits)
    prob = logits.sigmoid()
    inter = (prob * target).sum((-1, -2))
    dice = 1 - (2 * inter + 1) / (prob.sum((-1, -2)) + target.sum((-1, -2)) + 1)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((-1, -2))
    return dice + bce


def medsam_dice_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MedSAM's ``DiceLoss(sigmoid=True, squared_pred=True, reduction="mean")`` +
    ``BCEWithLogitsLoss()`` (bowang-lab/MedSAM ``train_one_gpu.py``; MONAI's Dice: per
    mask, squared denominators, smooth 1e-5): ``(N, 1, S, S)`` each -> scalar."""
    import torch.nn.functional as F

    prob = logits.sigmoid()
    inter = (prob * target).sum((-1, -2))
    denom = (prob * prob).sum((-1, -2)) + (target * target).sum((-1, -2))
    dice = 1 - (2 * inter + 1e-5) / (denom + 1e-5)
    return dice.mean() + F.binary_cross_entropy_with_logits(logits, target)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of ``logits > 0`` with ``target > 0.5`` per mask: ``(N, K, S, S)`` -> ``(N, K)``."""
    hard, truth = logits > 0, (target > 0.5).expand_as(logits)
    inter = (hard & truth).sum((-1, -2)).float()
    return inter / (hard | truth).sum((-1, -2)).float().clamp(min=1)


def samed_dice_ce(
    logits: torch.Tensor, labels: torch.Tensor, *, dice_weight: float
) -> torch.Tensor:
    """SAMed's ``(1 - w) * CE + w * Dice`` (hitachinsk/SAMed ``trainer.calc_loss`` and
    ``utils.DiceLoss``): softmax Dice per channel over the whole batch, squared
    denominators, smooth 1e-5, averaged over every channel including background.

    Args:
        logits: ``(B, C, h, w)`` (channel 0 background).
        labels: ``(B, h, w)`` int64 channel indices.
        dice_weight: ``w`` (SAMed: 0.8).
    """
    import torch
    import torch.nn.functional as F

    n_channels = logits.shape[1]
    ce = F.cross_entropy(logits, labels)
    prob = torch.softmax(logits, dim=1)
    one_hot = F.one_hot(labels, n_channels).permute(0, 3, 1, 2).float()
    inter = (prob * one_hot).sum((0, 2, 3))
    denom = (prob * prob).sum((0, 2, 3)) + one_hot.sum((0, 2, 3))
    dice = (1 - (2 * inter + 1e-5) / (denom + 1e-5)).mean()
    return (1 - dice_weight) * ce + dice_weight * dice
