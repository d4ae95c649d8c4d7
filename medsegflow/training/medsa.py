"""The ``medsa`` recipe: Med-SA's adapters on a frozen base model, trained alone.

Adapters (:mod:`medsegflow.models.sam_adapters`) go into every image-encoder block and,
with hyper-prompting, every mask-decoder layer; every other parameter is frozen (the
paper; the authors' code also trains the mask decoder: ``train_decoder: true``). One
click (uniform inside the target, as Med-SA's ``random_click``) or one box per target.
Loss, as MedicineToken/Medical-SAM-Adapter ``function.train_sam`` for 2D data:
``BCEWithLogitsLoss(pos_weight=2)`` on the single-mask output; Adam, lr 1e-4 (the
code's ``StepLR`` halving every 10 epochs becomes the pipeline's warm-up and cosine
decay over the iterations).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medsegflow.models.sam_adapters import is_adapter_parameter
from medsegflow.models.sam_modules import apply_modules
from medsegflow.training.base_model import freeze_all_but, load_base
from medsegflow.training.loop import fit
from medsegflow.training.medsam import single_mask_loss
from medsegflow.training.pairs import TrainingPairs
from medsegflow.training.recipe import TrainedModel
from medsegflow.training.schedule import lr_factor


def medsa_module(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The card entry of the adapters a ``medsa`` recipe adds."""
    return {
        "kind": "medsa_adapters",
        "ratio": float(settings["ratio"]),
        "activation": str(settings["activation"]),
        "scale": float(settings["scale"]),
        "decoder": bool(settings["decoder_adapters"]),
    }


def _weighted_bce(logits, targets):
    import torch
    import torch.nn.functional as F

    pos_weight = torch.full((1,), 2.0, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)


def train_medsa(
    *,
    arch: str,
    settings: Mapping[str, Any],
    pairs: TrainingPairs,
    seed: int,
    base: Mapping[str, Any] | None = None,
) -> TrainedModel:
    """Add Med-SA adapters to ``base`` and train them (module docstring)."""
    import torch

    torch.manual_seed(int(seed))
    model, spec, modules = load_base(base, arch=arch, recipe="medsa")
    module = medsa_module(settings)
    apply_modules(model, [module], source="the medsa recipe")
    train_decoder = bool(settings["train_decoder"])
    freeze_all_but(
        model,
        lambda name: (
            is_adapter_parameter(name) or (train_decoder and name.startswith("mask_decoder."))
        ),
    )
    lr = float(settings["lr"])
    loss = single_mask_loss(
        model, pairs, settings, prompt=settings["prompt"], iou_loss=False, mask_loss=_weighted_bce
    )
    history = fit(
        model,
        settings=settings,
        loss=loss,
        seed=seed,
        optimizer=lambda params: torch.optim.Adam(params, lr=lr),
        lr_factor=lr_factor,
    )
    return TrainedModel(model, spec, [*modules, module], history)
