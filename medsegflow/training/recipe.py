"""What a training recipe returns: the trained network, what it was built from, its history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segment_anything.modeling import Sam


@dataclass
class TrainedModel:
    """A recipe's result.

    Attributes:
        model: the trained network, in eval mode.
        spec: the hyper-parameters of its base architecture (the card's ``spec``).
        modules: the modules the recipe added to it (the card's ``modules``).
        history: one ``{"iteration", "loss", "seconds"}`` row per iteration.
        classes: for a semantic model, the label names of its output channels 1, 2, ...
            (channel 0 is background); None for a prompted model.
    """

    model: Sam
    spec: dict[str, Any]
    modules: list[dict[str, Any]]
    history: list[dict[str, float]]
    classes: list[str] | None = None
