"""The check on val of a model the training stage trained: its DSC on the val split.

After a recipe has run, the trained model segments the val split's foreground slices
(at most ``max_slices`` of them, taken dataset by dataset in case and slice order) and
the DSC of each target is measured in the model's input frame (the padded square the
decoder predicts in, padding left out):

- promptable models get one prompt per target, as in training but without jitter: the
  tight box, or one click drawn inside the target with a fixed seed;
- semantic models (a card with ``classes``) predict every class at once; each class
  present on a slice is one target.

The mean goes into the model card (``training.val_dsc``, with ``val_targets``) and the
log, so a run that diverged is visible before any test job runs. It selects nothing:
the weights are those of the last iteration.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from medsegflow.models.sam_encode import model_input
from medsegflow.training.batches import (
    decode_all_masks,
    prompt_for_masks,
    targets_in_input_frame,
)
from medsegflow.training.pairs import TrainingPairs

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

MAX_SLICES = 32


def val_slices(pairs: TrainingPairs, max_slices: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(image_yx, label_yx)`` of the first ``max_slices`` foreground val slices."""
    n = 0
    for data in pairs.datasets:
        for index in sorted(set(int(i) for i in data.pairs[:, 0])):
            if n >= max_slices:
                return
            n += 1
            yield data.images[index], data.labels[index]


def dice(pred: torch.Tensor, target: torch.Tensor) -> list[float]:
    """Per-target DSC of ``(K, ...)`` boolean masks (1 when both are empty)."""
    inter = (pred & target).flatten(1).sum(1).float()
    total = (pred.flatten(1).sum(1) + target.flatten(1).sum(1)).float()
    return [1.0 if t == 0 else float(2 * i / t) for i, t in zip(inter, total, strict=True)]


def validate(
    model: Sam,
    pairs: TrainingPairs,
    *,
    prompt: str,
    channel_values: Sequence[int] | None,
    seed: int,
    precision: str = "auto",
    max_slices: int = MAX_SLICES,
) -> dict[str, float | int]:
    """``{"val_dsc", "val_targets"}`` of ``model`` on ``pairs`` (module docstring).

    Args:
        prompt: ``box`` or ``points`` (promptable models).
        channel_values: semantic models: the label value of output channel 1, 2, ...;
            None for a promptable model.
        precision: the recipe's ``precision`` (CUDA when present, bf16 autocast there).

    The model is left in eval mode on the CPU.
    """
    import torch
    import torch.nn.functional as F

    from medsegflow.models.sam_loader import autocast, select_device
    from medsegflow.models.semantic_sam import decode_semantic

    rng = np.random.default_rng(seed)
    device = select_device("auto")
    model.to(device)
    size = int(model.image_encoder.img_size)
    channel_of = {int(v): c for c, v in enumerate(channel_values or (), start=1)}
    scores: list[float] = []
    model.eval()
    for image_yx, label_yx in val_slices(pairs, max_slices):
        values = [int(v) for v in np.unique(label_yx) if v != 0]
        if channel_values is not None:
            values = [v for v in values if v in channel_of]
            if not values:
                continue
        masks_kyx = np.stack([label_yx == v for v in values])
        h, w = model.input_recipe.input_size(label_yx.shape)
        with torch.inference_mode(), autocast(device, precision):
            embedding = model.image_encoder(model_input([image_yx], model=model, device=device))
            if channel_values is None:
                prompts = prompt_for_masks(masks_kyx, kind=prompt, model=model, jitter=0, rng=rng)
                logits = decode_all_masks(model, embedding, [prompts])[0][:, :1]
                pred = F.interpolate(logits.float(), (size, size), mode="bilinear") > 0
            else:
                logits = decode_semantic(model, embedding).float()
                channels = F.interpolate(logits, (size, size), mode="bilinear").argmax(1)
                pred = torch.stack([channels[0] == channel_of[v] for v in values])[:, None]
            target = targets_in_input_frame(masks_kyx, model=model).to(device) > 0.5
        scores += dice(pred[..., :h, :w], target[..., :h, :w])
    model.to("cpu")
    mean = float(np.mean(scores)) if scores else float("nan")
    return {"val_dsc": mean, "val_targets": len(scores)}
