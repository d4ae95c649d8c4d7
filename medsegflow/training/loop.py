"""The optimisation loop shared by the SAM-family training recipes.

One iteration: draw a batch, compute the recipe's loss, step the optimiser and the
learning-rate schedule. Training runs on CUDA when a GPU is present, else on the CPU
(``settings["threads"]`` torch threads), with the autocast of ``settings["precision"]``
(:mod:`medsegflow.precision`; ``auto``: bfloat16 on CUDA or on a CPU with native bfloat16,
float32 otherwise).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from medsegflow.threads import limit_threads

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

StepLoss = Callable[[np.random.Generator, "torch.device"], "torch.Tensor"]
"""``loss(rng, device)``: the loss of one freshly drawn batch."""


def trainable(model: nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def fit(
    model: nn.Module,
    *,
    settings: Mapping[str, Any],
    loss: StepLoss,
    seed: int,
    optimizer: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
    lr_factor: Callable[[int, int], float],
) -> list[dict[str, float]]:
    """Train ``model``'s parameters that require grad for ``settings["iterations"]``.

    Args:
        settings: the complete ``train:`` block (``iterations``, ``threads``).
        loss: the recipe's loss of one batch.
        seed: seeds the batches (``numpy.random.default_rng``).
        optimizer: builds the optimiser from the trainable parameters.
        lr_factor: ``(step, n_iter) -> multiplier`` of the optimiser's learning rate.

    Returns:
        One ``{"iteration", "loss", "seconds"}`` row per iteration; ``model`` is left in
        eval mode on the CPU.
    """
    import torch

    from medsegflow.models.sam_loader import autocast, select_device

    limit_threads(int(settings["threads"]))
    precision = str(settings.get("precision", "auto"))
    device = select_device("auto")
    model.to(device).train()
    params = trainable(model)
    if not params:
        raise ValueError("the recipe left no parameter to train")
    opt = optimizer(params)
    n_iter = int(settings["iterations"])
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_factor(i, n_iter))
    rng = np.random.default_rng(int(seed))
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    n_trainable = sum(p.numel() for p in params)
    log.info("training %d parameters on %s for %d iterations", n_trainable, device, n_iter)
    for iteration in tqdm(range(1, n_iter + 1), desc="train", unit="it"):
        with autocast(device, precision):
            value = loss(rng, device)
        opt.zero_grad(set_to_none=True)
        value.float().backward()
        opt.step()
        schedule.step()
        history.append(
            {
                "iteration": iteration,
                "loss": float(value.detach()),
                "seconds": round(time.perf_counter() - start, 3),
            }
        )
        if iteration == 1 or iteration % max(1, n_iter // 20) == 0 or iteration == n_iter:
            log.info("iteration %d/%d: loss %.4f", iteration, n_iter, history[-1]["loss"])
    model.to("cpu").eval()
    return history
