"""The model card of a SAM-family model trained by the pipeline: ``model.json`` beside its
weights (``results/models/{model}/sam.pth``).

It records what the loader needs to rebuild the network before loading the weights
strictly, and where the model came from::

    {"format": "medsegflow-sam-model/1",
     "model": "<sam_models key>",
     "arch": "<vit_b | ... | demo>",            the base architecture and its input recipe
     "spec": {...},                             its complete hyper-parameters
     "modules": [{"kind": ..., ...}, ...],      modules the recipe added (LoRA, adapters)
     "recipe": {"recipe": "<name>", ...},       the complete train: block
     "base": null | {"model": ..., "checkpoint": ..., "arch": ...},
     "training": {"iterations": ..., "seconds": ..., "n_parameters": ..., ...},
     "classes": null | ["<label name of output channel 1>", ...]}   semantic models
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medsegflow.errors import InputError
from medsegflow.io import write_text

CARD_FORMAT = "medsegflow-sam-model/1"
CARD_FILE = "model.json"
CARD_KEYS = ("format", "model", "arch", "spec", "modules", "recipe", "base", "training")


def card_path(weights: str | os.PathLike) -> Path:
    """The card of a weights file: ``model.json`` in the same folder."""
    return Path(weights).parent / CARD_FILE


def write_card(
    weights: str | os.PathLike,
    *,
    model: str,
    arch: str,
    spec: Mapping[str, Any],
    modules: Sequence[Mapping[str, Any]],
    recipe: Mapping[str, Any],
    base: Mapping[str, Any] | None,
    training: Mapping[str, Any],
    classes: Sequence[str] | None = None,
) -> Path:
    """Write the card of ``weights`` atomically; returns its path."""
    card = {
        "format": CARD_FORMAT,
        "model": model,
        "arch": arch,
        "spec": dict(spec),
        "modules": [dict(m) for m in modules],
        "recipe": dict(recipe),
        "base": dict(base) if base is not None else None,
        "training": dict(training),
        "classes": list(classes) if classes is not None else None,
    }
    path = card_path(weights)
    write_text(path, json.dumps(card, indent=2, default=str) + "\n")
    return path


def read_card(weights: str | os.PathLike) -> dict[str, Any] | None:
    """The card of ``weights``, or None when the folder holds no pipeline model card.

    A ``model.json`` without the card's ``format`` (some other file) is no card.
    :class:`InputError` names a card that cannot be read or lacks a key.
    """
    path = card_path(weights)
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read the model card ({err})") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        return None
    missing = [k for k in CARD_KEYS if k not in card]
    if missing:
        raise InputError(f"{path}: model card lacks {missing}")
    return card
