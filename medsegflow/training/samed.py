"""The ``samed`` recipe: SAMed's LoRA fine-tuning into a semantic, prompt-free SAM.

As hitachinsk/SAMed ``train.py``/``trainer.py`` @ f3c4b44 train it on Synapse: the base
SAM becomes a semantic SAM (:mod:`medsegflow.models.semantic_sam`: one decoder output per
class plus background, SAMed's input recipe), LoRA of rank ``r`` (default 4) goes on the
query and value rows of every image-encoder attention (``decoder_lora`` adds SAMed_s's
LoRA in the mask decoder; ``lora_layers``, SAMed's ``lora_layer``, limits the encoder's
LoRA to those blocks), the rest of the image encoder is frozen, and the prompt
encoder and mask decoder are trained (SAMed_s: the decoder's transformer only through its
LoRA). No prompt: the decoder's default embeddings. Loss ``0.2 * CE + 0.8 * Dice``
(softmax, every channel) on the low-resolution logits against the label map; AdamW
(betas 0.9, 0.999, weight decay 0.1), learning rate 0.005 warmed up linearly over
``warmup`` iterations, then ``(1 - t / T) ** 0.9``. Slices are flipped and rotated by
multiples of 90 degrees at random (SAMed's ``RandomGenerator`` also rotates by
-20..20 degrees). Training uses one dataset: the model's classes are its labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medsegflow.errors import ConfigError
from medsegflow.models.sam_modules import apply_modules
from medsegflow.models.semantic_sam import decode_semantic, semantic_from_base, semantic_spec
from medsegflow.training.base_model import freeze_all_but, load_base
from medsegflow.training.loop import fit
from medsegflow.training.losses import samed_dice_ce
from medsegflow.training.pairs import TrainingPairs
from medsegflow.training.recipe import TrainedModel

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam


def resolve_classes(pairs: TrainingPairs, classes: Sequence[str] | None) -> list[str]:
    """The label names of the output channels 1, 2, ...: ``classes``, or every
    non-background label of the one training dataset in increasing value."""
    if len(pairs.datasets) != 1:
        names = [d.name for d in pairs.datasets]
        raise ConfigError(
            f"train.datasets: the samed recipe trains a semantic model of one dataset, got {names}"
        )
    label_map = pairs.datasets[0].label_map
    if classes is None:
        return [n for n, v in sorted(label_map.items(), key=lambda kv: kv[1]) if v != 0]
    unknown = [c for c in classes if c not in label_map or label_map[c] == 0]
    if unknown:
        raise ConfigError(
            f"train.classes: {unknown} are not labels of {pairs.datasets[0].name} "
            f"({', '.join(label_map)})"
        )
    return list(classes)


def lora_module(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The card entry of SAMed's LoRA; ``layers`` only when ``lora_layers`` chooses blocks."""
    targets = ["encoder_qv"] + (["decoder_qv"] if settings["decoder_lora"] else [])
    rank = int(settings["rank"])
    module = {
        "kind": "lora",
        "rank": rank,
        "alpha": float(settings["alpha"] or rank),
        "targets": targets,
    }
    if settings.get("lora_layers") is not None:
        module["layers"] = sorted({int(i) for i in settings["lora_layers"]})
    return module


def samed_trainable(name: str, *, decoder_lora: bool) -> bool:
    """SAMed trains LoRA, the prompt encoder and the mask decoder (SAMed_s: not the
    decoder transformer's own weights)."""
    if ".lora." in name:
        return True
    if name.startswith("prompt_encoder."):
        return True
    if name.startswith("mask_decoder."):
        return not (decoder_lora and name.startswith("mask_decoder.transformer."))
    return False


def _semantic_batch(
    pairs: TrainingPairs, *, model: Sam, values: np.ndarray, batch_size: int, rng
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(B, 3, S, S)`` and channel maps ``(B, 4g, 4g)`` in the low-res frame."""
    import torch
    import torch.nn.functional as F

    from medsegflow.models.sam_encode import model_input

    size = int(model.image_encoder.img_size)
    low = 4 * int(model.prompt_encoder.image_embedding_size[0])
    lookup = np.zeros(int(max(values.max(), 1)) + 1, dtype=np.int64)
    lookup[values] = np.arange(1, len(values) + 1)
    images, targets = [], []
    for _ in range(batch_size):
        image_yx, label_yx = pairs.sample_slice(rng)
        k = int(rng.integers(4))
        image_yx, label_yx = np.rot90(image_yx, k), np.rot90(label_yx, k)
        if rng.random() < 0.5:
            image_yx, label_yx = image_yx[:, ::-1], label_yx[:, ::-1]
        image_yx, label_yx = np.ascontiguousarray(image_yx), np.ascontiguousarray(label_yx)
        channels = np.where(
            label_yx < len(lookup), lookup[np.clip(label_yx, 0, len(lookup) - 1)], 0
        )
        h, w = model.input_recipe.input_size(label_yx.shape)
        target = torch.as_tensor(channels, dtype=torch.float32)[None, None]
        target = F.pad(F.interpolate(target, (h, w), mode="nearest"), (0, size - w, 0, size - h))
        targets.append(F.interpolate(target, (low, low), mode="nearest")[0, 0].long())
        images.append(image_yx)
    return model_input(images, model=model, device=torch.device("cpu")), torch.stack(targets)


def samed_poly_factor(warmup: int, total: int | None = None):
    """SAMed's schedule: linear warm-up to the base rate over ``warmup`` iterations, then
    ``(1 - (t - warmup) / T) ** 0.9`` with ``T = total``, or the number of iterations run
    when None (SAMed decays over 200 epochs and stops after 160)."""

    def factor(step: int, n_iter: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, 1.0 - (step - warmup) / max(1, total or n_iter)) ** 0.9

    return factor


def train_samed(
    *,
    arch: str,
    settings: Mapping[str, Any],
    pairs: TrainingPairs,
    seed: int,
    base: Mapping[str, Any] | None = None,
) -> TrainedModel:
    """SAMed's recipe on ``base`` (module docstring)."""
    import torch

    torch.manual_seed(int(seed))
    base_model, base_spec, base_modules = load_base(base, arch=arch, recipe="samed")
    if base_modules:
        raise ConfigError("base: the samed recipe starts from a model without added modules")
    classes = resolve_classes(pairs, settings["classes"])
    label_map = pairs.datasets[0].label_map
    values = np.asarray([label_map[c] for c in classes], dtype=np.int64)
    spec = semantic_spec(base_spec, n_classes=len(classes), image_size=settings["image_size"])
    model = semantic_from_base(base_model, base_spec, spec)
    del base_model
    module = lora_module(settings)
    apply_modules(model, [module], source="the samed recipe")
    decoder_lora = bool(settings["decoder_lora"])
    freeze_all_but(model, lambda name: samed_trainable(name, decoder_lora=decoder_lora))
    dice_weight, batch_size = float(settings["dice_weight"]), int(settings["batch_size"])

    def loss(rng: np.random.Generator, device: torch.device) -> torch.Tensor:
        images, labels = _semantic_batch(
            pairs, model=model, values=values, batch_size=batch_size, rng=rng
        )
        logits = decode_semantic(model, model.image_encoder(images.to(device)))
        return samed_dice_ce(logits.float(), labels.to(device), dice_weight=dice_weight)

    lr, decay = float(settings["lr"]), float(settings["weight_decay"])
    history = fit(
        model,
        settings=settings,
        loss=loss,
        seed=seed,
        optimizer=lambda params: torch.optim.AdamW(
            params, lr=lr, betas=(0.9, 0.999), weight_decay=decay
        ),
        lr_factor=samed_poly_factor(int(settings["warmup"]), settings["schedule_iterations"]),
    )
    return TrainedModel(model, spec, [module], history, classes=classes)
