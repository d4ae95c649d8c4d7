"""A small SAM-Med3D training loop (the ``tiny`` spec from scratch, for the offline demo).

Follows uni-medical/SAM-Med3D ``train.py@0616e6c2`` (``BaseTrainer``) where it can:

- the image is encoded once per sample and the prompt encoder / decoder run once per
  simulated click, each click fed **the previous low-resolution logits** as the mask
  prompt (``interaction``), starting from zeros of ``size // 4``;
- the loss is MONAI's ``DiceCELoss(sigmoid=True, squared_pred=True, reduction='mean')``
  (soft Dice with squared terms in the denominator, smoothing 1e-5, plus binary
  cross-entropy on the logits for one channel), on the upsampled logits against the
  cropped object, **summed over the clicks**; re-implemented in :func:`dice_ce_loss`
  (MONAI is not a dependency);
- AdamW with weight decay 0.1 and betas (0.9, 0.999);
- the crop is centred on a random voxel of the object (the data loader's ``pcc`` option:
  "crop from random click point") and the first click is that voxel; later clicks are
  drawn in the error (:mod:`medsegflow.prompts.clicks`, ``"random"`` in the largest error
  component; the official ``get_next_click3D_torch_2`` draws from the whole error).

Deviations, for a few CPU minutes from random weights: 1-``max_clicks`` clicks per sample
(official: 11 per step, one of them mask-only); every click so far is given
(the official ``--multi_click``; the default feeds only the newest); one learning rate for
all parts (official: 0.1x for the prompt encoder and decoder of a SAM-initialised model);
the fed-back logits are detached; no random flips or gradient accumulation. A sample is a
random training case and a random label value (the object) present in it. Seeded: a numpy
Generator from ``seed`` drives the sampling and ``torch.manual_seed(seed)`` the weights.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medsegflow.io import Volume
from medsegflow.prompts import clicks as click_rules
from medsegflow.sam3d.model import build_sam3d, count_parameters, get_spec
from medsegflow.sam3d.preprocess import ModelGrid, crop_box, extract, prepare_crop, to_model_grid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; ``max_seconds`` stops early (then not reproducible in length)."""

    spec: str | Mapping[str, Any] = "tiny"
    iterations: int = 700
    batch_size: int = 2
    max_clicks: int = 5
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup: int = 20
    max_seconds: float | None = None
    log_every: int = 25
    resample_grid: str = "torchio"


def dice_ce_loss(logits, target):
    """MONAI ``DiceCELoss(sigmoid=True, squared_pred=True, reduction='mean')`` for one
    channel: ``(B, 1, D, H, W)`` float logits and 0/1 targets; a scalar tensor."""
    import torch
    import torch.nn.functional as F

    dims = tuple(range(2, logits.ndim))
    prob = torch.sigmoid(logits)
    intersection = (prob * target).sum(dims)
    denominator = (prob**2).sum(dims) + (target**2).sum(dims)
    dice = 1.0 - (2.0 * intersection + 1e-5) / (denominator + 1e-5)
    return dice.mean() + F.binary_cross_entropy_with_logits(logits, target)


def _sample(
    grids: Sequence[ModelGrid], size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random object's normalised crop, its cropped mask and the first click (crop frame)."""
    grid = grids[int(rng.integers(len(grids)))]
    values = [int(v) for v in np.unique(grid.label_ijk) if v != 0]
    value = values[int(rng.integers(len(values)))]
    object_ijk = grid.label_ijk == value
    first = click_rules.first_click(object_ijk, mode="random", rng=rng)
    box = crop_box(first[:3], size)
    click = np.r_[box.to_crop(first[None, :3])[0], 1.0]
    return prepare_crop(grid, box), extract(object_ijk, box, fill=False), click


def _next_clicks(pred, gt_crops, previous, rng) -> np.ndarray:
    """One new click per sample ``(B, 4)``; a sample without error repeats its last one."""
    rows = []
    for b in range(len(gt_crops)):
        click = click_rules.next_click_index(pred[b], gt_crops[b], mode="random", rng=rng)
        rows.append(previous[b] if click is None else click.astype(np.float64))
    return np.asarray(rows)


def _interaction(model, batch, rng, max_clicks: int, device):
    """Summed loss over 1..max_clicks clicks of one batch, and the mean loss per click."""
    import torch
    import torch.nn.functional as F

    images, gts, firsts = batch
    x = torch.from_numpy(np.stack(images)[:, None]).to(device)
    target = torch.from_numpy(np.stack(gts)[:, None].astype(np.float32)).to(device)
    size = x.shape[-1]
    embedding = model.image_encoder(x)
    low_res = torch.zeros((len(images), 1) + (size // 4,) * 3, device=device)
    points = [np.asarray(firsts)]
    total, pred = 0.0, None
    n_clicks = int(rng.integers(1, max_clicks + 1))
    for _ in range(n_clicks):
        if pred is not None:
            points.append(_next_clicks(pred, gts, points[-1], rng))
        stacked = np.stack(points, axis=1)
        coords = torch.from_numpy(stacked[..., :3].astype(np.float32)).to(device)
        tags = torch.from_numpy(stacked[..., 3].astype(np.int64)).to(device)
        sparse, dense = model.prompt_encoder(points=[coords, tags], boxes=None, masks=low_res)
        new_low_res, _ = model.mask_decoder(
            image_embeddings=embedding,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        logits = F.interpolate(new_low_res, size=(size,) * 3, mode="trilinear", align_corners=False)
        total = total + dice_ce_loss(logits, target)
        pred = (logits.detach()[:, 0] > 0).cpu().numpy()
        low_res = new_low_res.detach()
    return total, float(total.detach()) / n_clicks


def train_sam3d(
    cases: Sequence[tuple[Volume, Volume]],
    *,
    seed: int,
    config: TrainConfig | None = None,
    device: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train a SAM-Med3D network of ``config.spec`` on ``(image, label)`` volume pairs
    (integer labels; each non-zero value is an object). Returns the model (eval mode) and
    ``{iterations, seconds, loss_first, loss_last, n_parameters, n_trainable, ...}``
    (losses: mean per click over the first / last ``log_every`` iterations; ``history``:
    the loss per click of every iteration)."""
    import torch

    from medsegflow.models.sam_loader import select_device

    config = config or TrainConfig()
    spec = get_spec(config.spec)
    if not cases:
        raise ValueError("train_sam3d: no training cases")
    started = time.perf_counter()
    grids = [
        to_model_grid(image, label=label, resample_grid=config.resample_grid)
        for image, label in cases
    ]
    grids = [g for g in grids if g.label_ijk is not None and g.label_ijk.any()]
    if not grids:
        raise ValueError("train_sam3d: every training label is empty at the model spacing")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    chosen = select_device(device)
    model = build_sam3d(spec).to(chosen).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, betas=(0.9, 0.999), weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda i: (
            min(1.0, (i + 1) / max(1, config.warmup))
            * 0.5
            * (1 + math.cos(math.pi * min(i, config.iterations) / config.iterations))
        ),
    )
    losses: list[float] = []
    for iteration in range(config.iterations):
        samples = [_sample(grids, spec.image_size, rng) for _ in range(config.batch_size)]
        batch = tuple(list(part) for part in zip(*samples, strict=True))
        loss, per_click = _interaction(model, batch, rng, config.max_clicks, chosen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(per_click)
        if (iteration + 1) % config.log_every == 0:
            recent = np.mean(losses[-config.log_every :])
            log.info("iteration %d: loss per click %.4f", iteration + 1, recent)
        if config.max_seconds is not None and time.perf_counter() - started > config.max_seconds:
            log.info("stopping at %d iterations: max_seconds reached", iteration + 1)
            break
    window = max(1, min(config.log_every, len(losses) // 2))
    n_all, n_trainable = count_parameters(model)
    return model.eval(), {
        "iterations": len(losses),
        "seconds": time.perf_counter() - started,
        "loss_first": float(np.mean(losses[:window])),
        "loss_last": float(np.mean(losses[-window:])),
        "n_parameters": n_all,
        "n_trainable": n_trainable,
        "spec": spec.name,
        "config": asdict(config),
        "history": losses,
    }
