"""The numeric precision of SAM-family encoders and training steps, chosen per machine.

``precision`` (``sam_models.<name>.precision``, a ``train:`` block's ``precision``,
``sam_semantic``'s ``precision``) is one of :data:`PRECISIONS`:

- ``auto`` (the default) is decided at run time: bfloat16 autocast on CUDA (float16 where
  the GPU has no bfloat16), bfloat16 on a CPU with native bfloat16 instructions
  (:func:`cpu_has_native_bf16`), float32 on any other CPU;
- ``fp32`` never casts;
- ``bf16`` is bfloat16 autocast on any device.

``embed_batch_size: auto`` (slices per encoder call, :func:`encoder_batch_size`) is decided
by the device in the same way.

bfloat16 pays only where the hardware computes it: on a CPU without ``avx512_bf16``/AMX it
is emulated and slower than float32. ``benchmarks/bench_encoder_precision.py`` measures both
on the current machine; the timings measured so far are in docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16")
RESOLVED = ("fp32", "bf16", "fp16")
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
"""CPU feature names of native bfloat16 arithmetic: x86 ``flags`` (AVX512-BF16, AMX-BF16)
and the aarch64 ``Features`` entry ``bf16`` (Arm v8.6 BF16) in ``/proc/cpuinfo``."""
CPUINFO = Path("/proc/cpuinfo")


def cpuinfo_flags(text: str) -> frozenset[str]:
    """The feature names of a ``/proc/cpuinfo`` text (its ``flags`` / ``Features`` lines)."""
    found: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            found.update(value.split())
    return frozenset(found)


@functools.cache
def cpu_has_native_bf16(cpuinfo: str | os.PathLike = CPUINFO) -> bool:
    """True when the CPU computes bfloat16 natively (:data:`CPU_BF16_FLAGS` in
    ``cpuinfo``); False when the file cannot be read (a system without ``/proc``)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return bool(cpuinfo_flags(text) & CPU_BF16_FLAGS)


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """What ``precision`` means on ``device``: ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    Raises ``ValueError`` when ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    if precision != "auto":
        return precision
    kind = getattr(device, "type", None) or str(device).split(":")[0]
    if kind == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if kind == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def autocast(
    device: torch.device | str, precision: str = "auto"
) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (:func:`resolve_precision`):
    none for float32, else ``torch.autocast`` to bfloat16 or float16."""
    import torch

    chosen = resolve_precision(precision, device)
    if chosen == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if chosen == "bf16" else torch.float16
    return torch.autocast(torch.device(device).type, dtype=dtype)


AUTO_BATCH = {"cpu": 1, "cuda": 4}  # slices per encoder call for a batch size of auto


def encoder_batch_size(batch_size: int | str, device: torch.device | str | None) -> int:
    """Slices per image-encoder call: ``auto`` is 1 on the CPU, where one slice per call was
    faster per slice than batches (one 256 x 256 slice's activations already exceed the
    caches; docs/benchmarks.md), and 4 on CUDA (:data:`AUTO_BATCH`); a number stays."""
    if batch_size != "auto":
        return int(batch_size)
    import torch

    if device in (None, "auto"):
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        kind = torch.device(device).type
    return AUTO_BATCH.get(kind, 1)
