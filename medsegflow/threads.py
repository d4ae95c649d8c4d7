"""Keep a job to its declared threads.

torch and the BLAS libraries start one thread per core by default; two single-thread jobs
that Snakemake runs side by side on 2 cores would then run 4 busy threads. A job calls
:func:`limit_threads` with its ``threads:`` before its model is loaded.
"""

from __future__ import annotations

import os
import sys

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_threads(threads: int) -> None:
    """Set the thread variables (unless the user set them) and torch's intra-op threads
    (when torch is already imported; otherwise it reads ``OMP_NUM_THREADS`` itself)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
