"""Peak GPU memory of a job, for the cost table (``gpu_mem_mb`` in the manifests).

Reads torch's CUDA allocator statistics only when torch is already imported and a GPU is
present; on the CPU the value is NaN (the cost table then shows no GPU memory). The peak
is reset per case so each manifest row holds that case's peak.
"""

from __future__ import annotations

import math
import sys


def _cuda():
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda


def reset_gpu_peak() -> None:
    """Start a new peak (no-op without a GPU)."""
    cuda = _cuda()
    if cuda is not None:
        cuda.reset_peak_memory_stats()


def gpu_peak_mb() -> float:
    """Peak memory torch allocated on the current GPU since the last reset, MiB; NaN on CPU."""
    cuda = _cuda()
    return math.nan if cuda is None else round(cuda.max_memory_allocated() / 2**20, 1)
