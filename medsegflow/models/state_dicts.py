"""Checking a checkpoint's state dict against the model it should load into, and counting
its parameters (the cost table's, :meth:`PromptableModel.count_parameters`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def state_dict_mismatch(
    state: Mapping[str, Any], expected: Mapping[str, Any], *, what: str
) -> str | None:
    """Why ``state`` does not fit ``expected`` (a model's ``state_dict()``), in one line
    naming the first 3 offending keys, or None when every key and shape matches.

    ``what`` names the model in the message: ``not a <what> checkpoint: N missing keys
    (...); M unexpected keys (...)``, or ``shape mismatch for a <what> checkpoint in N
    tensors (file != model): key (file shape) != (model shape), ...``.
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:3])})")
        return f"not a {what} checkpoint: {'; '.join(parts)}"
    wrong = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        shown = ", ".join(
            f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}" for k in wrong[:3]
        )
        return (
            f"shape mismatch for a {what} checkpoint in {len(wrong)} tensors "
            f"(file != model): {shown}"
        )
    return None


def count_parameters(checkpoint: str | Path) -> int | None:
    """Number of values in the tensors of a checkpoint (a state dict, or one under a
    ``model``/``state_dict``/``network_weights``/``model_state_dict`` key); None when the
    file is absent. Tensors are memory-mapped, not read. A tensor saved under several keys
    (nnU-Net's decoder holds a second reference to its encoder) counts once: tensors are
    told apart by their storage, offset, shape and strides."""
    import torch

    path = Path(checkpoint)
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception:  # nnU-Net checkpoints hold plain Python objects besides the weights
        data = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    for key in ("network_weights", "model_state_dict", "state_dict", "model"):
        if isinstance(data, Mapping) and isinstance(data.get(key), Mapping):
            data = data[key]
            break
    if not isinstance(data, Mapping):
        return None
    distinct = {
        (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride()): t
        for t in data.values()
        if isinstance(t, torch.Tensor)
    }
    return int(sum(t.numel() for t in distinct.values()))
