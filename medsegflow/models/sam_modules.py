"""Modules a training recipe adds to a SAM-family network (LoRA, adapters, ...).

A model card lists them (``"modules": [{"kind": ..., ...}]``,
:mod:`medsegflow.models.model_card`); the loader rebuilds the base architecture, applies
them in order with :func:`apply_modules`, then loads the weights strictly, so a trained
model and an official checkpoint go through the same loading code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

ModuleAdder = Callable[["Sam", Mapping[str, Any]], None]
"""``add(model, settings)``: insert one kind of module into ``model`` in place."""


def _lora(model: Sam, settings: Mapping[str, Any]) -> None:
    from medsegflow.models.sam_lora import add_lora

    add_lora(model, settings)


def _medsa_adapters(model: Sam, settings: Mapping[str, Any]) -> None:
    from medsegflow.models.sam_adapters import add_medsa_adapters

    add_medsa_adapters(model, settings)


MODULE_KINDS: dict[str, ModuleAdder] = {"lora": _lora, "medsa_adapters": _medsa_adapters}
"""Every kind of module a recipe can add, by the ``kind`` its card entry names:
``lora`` (SAMed, :mod:`medsegflow.models.sam_lora`) and ``medsa_adapters`` (Med-SA,
:mod:`medsegflow.models.sam_adapters`)."""


def apply_modules(model: Sam, modules: Sequence[Mapping[str, Any]], *, source: str) -> Sam:
    """Add ``modules`` (card entries) to ``model`` in order; ``ValueError`` naming
    ``source`` (the card) for an unknown kind."""
    for entry in modules:
        kind = entry.get("kind")
        if kind not in MODULE_KINDS:
            known = ", ".join(MODULE_KINDS) or "none"
            raise ValueError(f"{source}: unknown module kind {kind!r}; known: {known}")
        MODULE_KINDS[kind](model, entry)
    return model
