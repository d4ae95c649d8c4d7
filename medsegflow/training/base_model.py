"""The start of every recipe that fine-tunes: the base model, as the loader of official
checkpoints builds it (its architecture, and any modules its model card lists)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segment_anything.modeling import Sam


def load_base(
    base: Mapping[str, Any] | None, *, arch: str, recipe: str
) -> tuple[Sam, dict[str, Any], list[dict[str, Any]]]:
    """``(model, spec, modules)`` of ``base`` (``{"model", "checkpoint"}``) on the CPU;
    ``ValueError`` naming ``recipe`` without one."""
    from medsegflow.models.sam_loader import load_sam_model, model_architecture

    if base is None:
        raise ValueError(f"the {recipe} recipe needs a base model")
    model, _ = load_sam_model(base["checkpoint"], arch=arch, device="cpu")
    spec, modules = model_architecture(base["checkpoint"], arch=arch)
    return model, spec, modules


def freeze_all_but(model: Sam, keep) -> int:
    """Freeze every parameter whose name ``keep(name)`` rejects; returns the number of
    trainable parameters left."""
    kept = 0
    for name, param in model.named_parameters():
        param.requires_grad_(bool(keep(name)))
        kept += param.numel() if param.requires_grad else 0
    return kept
