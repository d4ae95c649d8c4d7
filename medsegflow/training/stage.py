"""The training stage of SAM-family models: ``results/models/{model}/``.

One job per ``sam_models`` entry with a ``train:`` recipe (``rules/train.smk``)::

    sam.pth         the trained state dict, official key layout (the job's file target)
    model.json      its model card: arch and hyper-parameters, the recipe's modules, the
                    complete recipe, the base model and training statistics
                    (:mod:`medsegflow.models.model_card`)
    train_log.csv   iteration, loss, seconds

A recipe (:data:`RECIPES`) trains from scratch (``scratch``) or from the weights of the
entry's ``base`` model. Loading the result goes through the loader of official weights
(:func:`medsegflow.models.sam_loader.load_sam_model`): build the architecture, add the
recipe's modules, load the weights strictly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medsegflow.errors import ConfigError
from medsegflow.io import write_csv_atomic
from medsegflow.models.sam_loader import save_sam_model
from medsegflow.schema import complete
from medsegflow.training.imported import import_checkpoint
from medsegflow.training.medsa import train_medsa
from medsegflow.training.medsam import train_medsam
from medsegflow.training.pairs import TrainingPairs, load_training_pairs, load_validation_pairs
from medsegflow.training.recipe import TrainedModel
from medsegflow.training.samed import train_samed
from medsegflow.training.scratch import finetune_from_base, train_from_scratch
from medsegflow.training.validation import validate

log = logging.getLogger(__name__)

Recipe = Callable[..., TrainedModel]
"""``recipe(*, arch, settings, pairs, seed, base) -> TrainedModel``."""

RECIPES: dict[str, Recipe] = {
    "scratch": train_from_scratch,
    "finetune": finetune_from_base,
    "medsam": train_medsam,
    "samed": train_samed,
    "medsa": train_medsa,
    "import": import_checkpoint,
}
"""Every training recipe by its ``train.recipe`` name (``sam_models.schema.yaml``):
``scratch`` and ``finetune`` (:mod:`~medsegflow.training.scratch`), ``medsam``
(:mod:`~medsegflow.training.medsam`), ``samed`` (:mod:`~medsegflow.training.samed`),
``medsa`` (:mod:`~medsegflow.training.medsa`) and ``import``, which loads a released
checkpoint in its authors' layout instead of training (:mod:`~medsegflow.training.imported`)."""
NO_BASE = ("scratch",)
BASE_OPTIONAL = ("import",)

TRAIN_SCHEMA = "sam_models.schema.yaml#/$defs/sam_train"
HISTORY_COLUMNS = ("iteration", "loss", "seconds")


def complete_recipe(train: Mapping[str, Any], *, model: str) -> dict[str, Any]:
    """The ``train:`` block of ``sam_models.<model>`` completed by its schema (defaults)."""
    return complete(dict(train), TRAIN_SCHEMA, key=f"sam_models.{model}.train")


def train_sam_model(
    *,
    model: str,
    arch: str,
    train: Mapping[str, Any],
    preprocessed_dirs: Sequence[str | os.PathLike],
    out_weights: str | os.PathLike,
    seed: int,
    base: Mapping[str, Any] | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train ``sam_models.<model>`` with its recipe; write weights, card and history.

    Args:
        model: the ``sam_models`` key (named in the card).
        arch: its architecture (its own ``arch``, or its base model's).
        train: its ``train:`` block (completed here from the schema).
        preprocessed_dirs: the preprocessed datasets whose train split is sampled.
        out_weights: ``results/models/{model}/sam.pth``; the card and ``train_log.csv``
            go beside it.
        seed: the config's seed.
        base: ``{"model", "checkpoint"}`` of the base model the recipe starts from.
        checkpoint: the released file of the ``import`` recipe.

    Returns:
        The training statistics also written to the card.
    """
    settings = complete_recipe(train, model=model)
    recipe = RECIPES.get(settings["recipe"])
    if recipe is None:
        raise ConfigError(
            f"sam_models.{model}.train.recipe: '{settings['recipe']}' is not one of "
            f"{', '.join(RECIPES)}"
        )
    name = settings["recipe"]
    if name not in BASE_OPTIONAL and (base is None) != (name in NO_BASE):
        raise ConfigError(
            f"sam_models.{model}.base: the {name} recipe "
            + ("starts from no base" if base is not None else "needs a base model")
        )
    if name == "import":
        trained = recipe(arch=arch, settings=settings, base=base, checkpoint=checkpoint)
        pairs = None
    else:
        pairs = load_training_pairs(preprocessed_dirs)
        trained = recipe(arch=arch, settings=settings, pairs=pairs, seed=seed, base=base)
    stats = _statistics(trained, pairs)
    if pairs is not None:
        stats["precision"] = _chosen_precision(settings)
        stats.update(_validation(trained, preprocessed_dirs, settings, seed=seed))
    out_weights = Path(out_weights)
    history = pd.DataFrame(trained.history, columns=list(HISTORY_COLUMNS))
    write_csv_atomic(history, out_weights.parent / "train_log.csv", float_format=None)
    save_sam_model(
        trained.model,
        out_weights,
        model_name=model,
        arch=arch,
        spec=trained.spec,
        recipe=settings,
        base=dict(base) if base is not None else None,
        modules=trained.modules,
        training=stats,
        classes=trained.classes,
    )
    log.info("trained sam_models.%s with recipe %s: %s", model, settings["recipe"], stats)
    return stats


def _chosen_precision(settings: Mapping[str, Any]) -> str:
    """What the block's ``precision`` meant on this machine (``fp32``, ``bf16`` or
    ``fp16``), for the model card: training runs on CUDA when present, else the CPU."""
    from medsegflow.models.sam_loader import select_device
    from medsegflow.precision import resolve_precision

    return resolve_precision(str(settings.get("precision", "auto")), select_device("auto"))


def _validation(
    trained: TrainedModel,
    preprocessed_dirs: Sequence[str | os.PathLike],
    settings: Mapping[str, Any],
    *,
    seed: int,
) -> dict[str, Any]:
    """DSC of the trained model on the val split (:mod:`~medsegflow.training.validation`)."""
    max_slices = int(settings.get("val_slices", 32))
    if max_slices == 0:
        return {"val_dsc": None, "val_targets": 0}
    val = load_validation_pairs(preprocessed_dirs)
    if val is None:
        log.warning("no val case with foreground: the trained model is not checked on val")
        return {"val_dsc": None, "val_targets": 0}
    channel_values = None
    if trained.classes is not None:
        label_map = val.datasets[0].label_map
        channel_values = [label_map[c] for c in trained.classes]
    result = validate(
        trained.model,
        val,
        prompt=str(settings.get("prompt", "box")),
        channel_values=channel_values,
        seed=seed,
        precision=str(settings.get("precision", "auto")),
        max_slices=max_slices,
    )
    log.info("val: DSC %.4f over %d targets", result["val_dsc"], result["val_targets"])
    return result


def _statistics(trained: TrainedModel, pairs: TrainingPairs | None) -> dict[str, Any]:
    history = trained.history
    tenth = max(1, len(history) // 10)
    losses = [row["loss"] for row in history]
    params = list(trained.model.parameters())
    return {
        "iterations": len(history),
        "seconds": float(history[-1]["seconds"]) if history else 0.0,
        "n_parameters": sum(p.numel() for p in params),
        "n_trainable": sum(p.numel() for p in params if p.requires_grad),
        "samples": pairs.counts() if pairs is not None else {},
        "loss_first": float(sum(losses[:tenth]) / max(1, len(losses[:tenth]))),
        "loss_last": float(sum(losses[-tenth:]) / max(1, len(losses[-tenth:]))),
    }
