"""Learning-rate schedules shared by the training stages (SAM models, CLIP models)."""

from __future__ import annotations

import math


def lr_factor(step: int, n_iter: int) -> float:
    """Learning-rate multiplier at ``step`` (0-based) of ``n_iter``: linear warm-up over the
    first 5% of the iterations, then cosine decay towards 0 at the end."""
    warmup = max(1, n_iter // 20)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, n_iter - warmup)))
