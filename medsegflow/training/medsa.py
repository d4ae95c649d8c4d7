"""The ``medsa`` recipe: Med-SA's adapters on a frozen base model, trained alone.

On a ViT base (SAM, MedSAM, demo) the model becomes Med-SA's own network
(:mod:`medsegflow.models.medsa_arch`, the architecture of an official ``train.py``
checkpoint imported with ``format: medsa``, so both go through the same code): its encoder
with an ``AdapterBlock`` per block, its decoder wiring and its input recipe (``medsa``:
square resize, [0, 1], no pixel mean/std; ``click_order``), the base's weights carried over
under Med-SA's key names (``rel_h``/``rel_w``, ``mlp.layers.0.0``/``mlp.fc``; the official
loader matches by name and leaves those at their initialisation). On LiteMedSAM's TinyViT,
which Med-SA's code does not have, the adapters are inserted into the base's blocks.
With hyper-prompting, every mask-decoder layer also gets the paper's adapters
(:mod:`medsegflow.models.sam_adapters`); every other parameter is frozen (the paper; the
authors' code also trains the mask decoder: ``train_decoder: true``). ``Depth_Adapter``
(the 3D branch) stays frozen and unused. One
click (uniform inside the target, as Med-SA's ``random_click``) or one box per target.
Loss, as MedicineToken/Medical-SAM-Adapter ``function.train_sam`` for 2D data:
``BCEWithLogitsLoss(pos_weight=2)`` on the single-mask output; Adam, lr 1e-4 (the
code's ``StepLR`` halving every 10 epochs becomes the pipeline's warm-up and cosine
decay over the iterations).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from medsegflow.models.sam_adapters import is_adapter_parameter
from medsegflow.models.sam_modules import apply_modules
from medsegflow.training.base_model import freeze_all_but, load_base
from medsegflow.training.loop import fit
from medsegflow.training.medsam import single_mask_loss
from medsegflow.training.pairs import TrainingPairs
from medsegflow.training.recipe import TrainedModel
from medsegflow.training.schedule import lr_factor

if TYPE_CHECKING:
    from segment_anything.modeling import Sam


def medsa_module(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The card entry of the adapters a ``medsa`` recipe adds."""
    return {
        "kind": "medsa_adapters",
        "ratio": float(settings["ratio"]),
        "activation": str(settings["activation"]),
        "scale": float(settings["scale"]),
        "decoder": bool(settings["decoder_adapters"]),
    }


def medsa_from_base(
    model: Sam, spec: Mapping[str, Any], modules: list, settings: Mapping[str, Any]
) -> tuple[Sam, dict[str, Any]]:
    """Med-SA's network on a ViT base's dims and weights (module docstring): ``(model,
    spec)``; a Med-SA base is returned as it is, a TinyViT base is not converted."""
    from medsegflow.models.medsa_arch import medsa_state_from_sam
    from medsegflow.models.sam_archs import build_sam, medsa_spec

    if spec["encoder"] != "vit":
        return model, dict(spec)
    if modules:
        raise ValueError("the medsa recipe needs a base without added modules (LoRA, adapters)")
    new_spec = medsa_spec(
        spec,
        adapter_ratio=float(settings["ratio"]),
        adapter_activation=str(settings["activation"]),
        adapter_scale=float(settings["scale"]),
        click_order=str(settings["click_order"]),
    )
    medsa = build_sam(new_spec)
    result = medsa.load_state_dict(medsa_state_from_sam(model.state_dict()), strict=False)
    missing = [k for k in result.missing_keys if not is_adapter_parameter(k)]
    if missing or result.unexpected_keys:
        raise ValueError(f"base -> Med-SA: {missing[:3]} missing, {result.unexpected_keys[:3]}")
    return medsa.eval(), new_spec


def is_trained_adapter(name: str) -> bool:
    """An adapter the recipe trains (not the unused 3D ``Depth_Adapter``)."""
    return is_adapter_parameter(name) and ".Depth_Adapter." not in name


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
    model, spec = medsa_from_base(model, spec, modules, settings)
    module = medsa_module(settings)
    apply_modules(model, [module], source="the medsa recipe")
    train_decoder = bool(settings["train_decoder"])
    freeze_all_but(
        model,
        lambda name: (
            is_trained_adapter(name) or (train_decoder and name.startswith("mask_decoder."))
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
