"""Decoupled Hard-Negative Noise-Contrastive Estimation (DHN-NCE), MedCLIP-SAM(v2).

Koleilat et al., "MedCLIP-SAM" (MICCAI 2024) and "MedCLIP-SAMv2" (2024) fine-tune
BiomedCLIP with this loss: InfoNCE with the positive pair removed from the denominator
(decoupled contrastive learning, Yeh et al. 2022) and the negatives re-weighted towards
the hard ones (HN-NCE, Radenovic et al. 2023).

For a batch of ``B`` pairs with L2-normalised image features ``I`` and text features
``T`` and temperature ``tau``, let ``s_ij = I_i . T_j / tau``. Image to text::

    L_v2t = -1/B sum_i [ s_ii - log( alpha exp(s_ii) + sum_{j != i} w_ij exp(s_ij) ) ]
    w_ij  = (B - 1) exp(beta1 s_ij) / sum_{k != i} exp(beta1 s_ik)

Text to image is the same on the transposed similarities with ``beta2``, and the loss is
``L_v2t + L_t2v``. The weights of a row average to 1, so ``beta1 = beta2 = 0`` gives
uniform weights (all 1) and, with ``alpha = 0``, the decoupled contrastive loss (DCL);
``alpha = 1`` with ``beta = 0`` gives InfoNCE in each direction (CLIP's loss is the mean
of the two directions, this is their sum).

Choices where the sources leave room (written from the papers' equations, not code):

- the hard-negative weights use the tempered similarity ``beta * I.T / tau``, as the
  equations write ``exp(beta V_i^T T_j / tau)``; the authors' released code normalises
  the weights by a sum without ``beta``, which the equations do not;
- the weights are part of the computation graph (not detached): the equations give no
  stop-gradient;
- mean over the batch, directions summed (the equations' ``1/B`` and ``L_v2t + L_t2v``);
- extension, off by default: ``groups`` marks pairs whose captions are identical (same
  group id); they are not negatives of each other (the count of negatives of row ``i``
  replaces ``B - 1``). Without repeated groups the loss is exactly the paper's. Rows
  left without any negative do not count in the mean.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEFAULTS = {"temperature": 0.6, "alpha": 0.0, "beta1": 0.15, "beta2": 0.15}
"""MedCLIP-SAMv2's fine-tuning settings."""


def _one_direction(
    sim: torch.Tensor, negative: torch.Tensor, *, alpha: float, beta: float
) -> torch.Tensor:
    """Mean over rows of ``log(alpha e^{s_ii} + sum_j w_ij e^{s_ij}) - s_ii``."""
    import torch

    positive = sim.diagonal()
    n_negative = negative.sum(dim=1)
    kept = n_negative > 0
    # rows without negatives get a finite stand-in (excluded from the mean below)
    negative = negative | ~kept[:, None]
    masked = sim.masked_fill(~negative, float("-inf"))
    # log w_ij = log(n_i) + log softmax_j(beta s_ij) over the negatives (mask after scaling:
    # beta = 0 would turn -inf into nan)
    hardness = torch.log_softmax((beta * sim).masked_fill(~negative, float("-inf")), dim=1)
    log_weights = torch.log(n_negative.clamp(min=1).to(sim.dtype))[:, None] + hardness
    log_denominator = torch.logsumexp(log_weights + masked, dim=1)
    if alpha > 0:
        log_denominator = torch.logaddexp(log_denominator, math.log(alpha) + positive)
    per_row = log_denominator - positive
    if not bool(kept.any()):
        return sim.sum() * 0.0
    return per_row[kept].mean()


def dhn_nce_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    *,
    temperature: float = DEFAULTS["temperature"],
    alpha: float = DEFAULTS["alpha"],
    beta1: float = DEFAULTS["beta1"],
    beta2: float = DEFAULTS["beta2"],
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """DHN-NCE of a batch (module docstring), a scalar tensor.

    Args:
        image_features, text_features: ``(B, D)`` float, pair ``i`` in row ``i``; they are
            L2-normalised here.
        temperature: ``tau`` > 0.
        alpha: weight of the positive in the denominator (0: fully decoupled).
        beta1, beta2: hardness of the image-to-text and text-to-image negatives.
        groups: optional ``(B,)`` integer ids; pairs sharing an id are not negatives of
            each other (identical captions).
    """
    import torch
    import torch.nn.functional as F

    if image_features.ndim != 2 or image_features.shape != text_features.shape:
        raise ValueError(
            f"features must both be (B, D), got {tuple(image_features.shape)} and "
            f"{tuple(text_features.shape)}"
        )
    if temperature <= 0 or alpha < 0:
        raise ValueError(f"temperature {temperature} must be > 0 and alpha {alpha} >= 0")
    image = F.normalize(image_features, dim=-1)
    text = F.normalize(text_features, dim=-1)
    sim = image @ text.T / temperature
    size = sim.shape[0]
    if groups is None:
        negative = ~torch.eye(size, dtype=torch.bool, device=sim.device)
    else:
        groups = torch.as_tensor(groups, device=sim.device)
        if groups.shape != (size,):
            raise ValueError(f"groups must have shape ({size},), got {tuple(groups.shape)}")
        negative = groups[:, None] != groups[None, :]
    image_to_text = _one_direction(sim, negative, alpha=alpha, beta=beta1)
    text_to_image = _one_direction(sim.T, negative.T, alpha=alpha, beta=beta2)
    return image_to_text + text_to_image
