"""Checking a checkpoint's state dict against the model it should load into."""

from __future__ import annotations

from collections.abc import Mapping
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
