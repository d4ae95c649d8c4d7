"""Train the demo SAM offline on the train split of preprocessed datasets (MedSAM's recipe).

Every training sample is drawn as one (slice, label) pair from a foreground slice of a
train case (each dataset with equal probability): the binary mask of that label is a
target, and its box, enlarged by MedSAM-style random jitter, is the prompt. The other
labels on the same slice are decoded against the same image embedding as further
targets (SAM's one-image, many-prompts decoding), which multiplies the supervision per
image-encoder pass at little cost. The image goes through the exact preprocessing of the
embedding stage (:func:`~medsegflow.models.sam_embed.grey_to_rgb_resized`,
``Sam.preprocess``); the box through the same ``ResizeLongestSide``. Slices are flipped
and zoomed at random
(:func:`~medsegflow.models.sam_train_data.augment_slice`). The image encoder and the mask
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
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medsegflow.errors import ConfigError
from medsegflow.io import atomic_path
from medsegflow.models.sam_cache import resize_transform
from medsegflow.models.sam_embed import grey_to_rgb_resized, model_input
from medsegflow.models.sam_loader import ARCH_FILE, DEMO_ARCH, build_sam, write_arch_json
from medsegflow.models.sam_train_data import TrainingPairs, augment_slice, load_training_pairs
from medsegflow.prompts.boxes import box_from_mask, jitter_box

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

log = logging.getLogger(__name__)

HISTORY_FILE = "train_log.csv"


def train_settings(train: Mapping[str, Any]) -> dict[str, Any]:
    """``train`` with the defaults of the config schema's ``sam_models.<name>.train`` block
    filled in; :class:`ConfigError` naming an unknown key."""
    from medsegflow.config import load_schema

    keys = load_schema()["$defs"]["sam_model"]["properties"]["train"]["properties"]
    unknown = sorted(set(train) - set(keys))
    if unknown:
        raise ConfigError(
            f"sam_models.<model>.train: unknown keys {unknown}; allowed: {sorted(keys)}"
        )
    return {**{k: spec.get("default") for k, spec in keys.items()}, **dict(train)}


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

    size = int(settings["image_size"])
    transform = resize_transform(size)
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
        images.append(grey_to_rgb_resized(image_yx, image_size=size))
        boxes.append(torch.as_tensor(transform.apply_boxes(xyxy, shape_yx), dtype=torch.float32))
        h, w = transform.get_preprocess_shape(*shape_yx, size)
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


def lr_factor(step: int, n_iter: int) -> float:
    """Learning-rate multiplier at ``step`` (0-based) of ``n_iter``: linear warm-up over the
    first 5% of the iterations, then cosine decay towards 0 at the end."""
    warmup = max(1, n_iter // 20)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, n_iter - warmup)))


def _build_trainable(settings: Mapping[str, Any], seed: int) -> Sam:
    import torch

    torch.manual_seed(int(seed))
    model = build_sam({**DEMO_ARCH, "img_size": int(settings["image_size"])}).train()
    for param in model.prompt_encoder.parameters():
        param.requires_grad_(False)
    return model


def train_demo_sam(
    *,
    preprocessed_dirs: Sequence[str | os.PathLike],
    out_checkpoint: str | os.PathLike,
    train: Mapping[str, Any],
    seed: int,
) -> dict[str, Any]:
    """Train the demo SAM on the train split of ``preprocessed_dirs``; save it.

    Writes, atomically, in the checkpoint's folder: ``sam.json`` (architecture),
    ``train_log.csv`` (``iteration, loss, seconds``) and, last, ``out_checkpoint``
    (``sam.pth``: a plain ``state_dict()``, the official key layout, loadable with
    ``load_sam_model(path, arch="demo")``).

    Args:
        preprocessed_dirs: preprocessed datasets; their train cases' foreground slices
            are sampled, each dataset with equal probability.
        out_checkpoint: path of ``sam.pth``.
        train: the ``sam_models.<name>.train`` block (see :func:`train_settings`).
        seed: seeds the initialisation (``torch.manual_seed``) and the sampling
            (``numpy.random.default_rng``): same seed and threads, same weights.

    Returns:
        Statistics: iterations, seconds, n_parameters, samples per dataset, mean loss of
        the first and last 10% of the iterations.
    """
    import torch

    settings = train_settings(train)
    torch.set_num_threads(int(settings["threads"]))
    pairs = load_training_pairs(preprocessed_dirs)
    model = _build_trainable(settings, seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=float(settings["lr"]), weight_decay=0.01)
    rng = np.random.default_rng(int(seed))
    n_iter = int(settings["iterations"])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(i, n_iter))
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    for iteration in range(1, n_iter + 1):
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
    return _save(model, history=history, pairs=pairs, out_checkpoint=Path(out_checkpoint))


def _save(
    model: Sam, *, history: list[dict[str, float]], pairs: TrainingPairs, out_checkpoint: Path
) -> dict[str, Any]:
    """Write sam.json, train_log.csv, then sam.pth; return the statistics."""
    import torch

    model.eval()
    write_arch_json(out_checkpoint.parent / ARCH_FILE, _arch_of(model))
    table = pd.DataFrame(history, columns=["iteration", "loss", "seconds"])
    with atomic_path(out_checkpoint.parent / HISTORY_FILE) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out_checkpoint) as tmp:
        torch.save(model.state_dict(), tmp)
    tenth = max(1, len(table) // 10)
    stats = {
        "iterations": len(table),
        "seconds": float(table["seconds"].iloc[-1]) if len(table) else 0.0,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "samples": pairs.counts(),
        "loss_first": float(table["loss"].iloc[:tenth].mean()),
        "loss_last": float(table["loss"].iloc[-tenth:].mean()),
    }
    log.info("saved %s: %s", out_checkpoint, stats)
    return stats


def _arch_of(model: Sam) -> dict[str, Any]:
    """The demo architecture with the input size the model was built for."""
    return {**DEMO_ARCH, "img_size": int(model.image_encoder.img_size)}
