"""Keep freed memory inside the process (glibc malloc) for torch's CPU work.

glibc's malloc serves a large block with its own ``mmap`` and gives it back with ``munmap``
when it is freed (the *mmap threshold*), and returns the free top of its heap to the
system (the *trim threshold*). torch's CPU kernels allocate and free tensors of tens of
MB at every layer, so each layer maps fresh pages and faults them in again. Raising both
thresholds to :data:`THRESHOLD_BYTES` keeps that memory in the process for reuse.
``benchmarks/bench_allocator.py`` measures the effect against glibc's defaults in the same
run (see docs/benchmarks.md); the cost is a higher resident size, since freed memory is
kept.

:func:`keep_freed_memory` applies the setting to the calling process (``mallopt``) and to
the processes it starts (``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``, which
glibc reads at start-up). Thresholds the user set in the environment are kept; set
``MEDSEGFLOW_MALLOC=default`` to keep glibc's defaults. Where the C library is not glibc
(macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

THRESHOLD_BYTES = 1 << 30
"""Blocks up to 1 GiB come from the heap and stay there when freed."""
ENV_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
OPT_OUT = "MEDSEGFLOW_MALLOC"
"""``MEDSEGFLOW_MALLOC=default`` keeps glibc's thresholds."""
_MALLOPT_PARAMS = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_MMAP_THRESHOLD_": -3}  # malloc.h


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (module docstring) for this process and its
    children, unless ``MEDSEGFLOW_MALLOC=default``. Returns True when this process took
    the setting."""
    if os.environ.get(OPT_OUT, "").strip().lower() == "default":
        return False
    libc = _glibc()
    if libc is None:
        return False
    applied = True
    for name in ENV_VARIABLES:
        value = os.environ.setdefault(name, str(THRESHOLD_BYTES))
        try:
            applied &= bool(libc.mallopt(_MALLOPT_PARAMS[name], int(value)))
        except ValueError:  # a user's value that is not a number: glibc ignores it too
            applied = False
    return applied
