"""The short-schedule nnU-Net trainer: a subclass whose schedule comes from the method config.

nnU-Net's CLI finds trainers by class name inside its own package. MedSegFlow does not:
:func:`schedule_trainer` imports the configured base class from an explicit table
(:data:`BASE_TRAINERS`) and returns a subclass that sets ``num_epochs``,
``num_iterations_per_epoch`` and ``num_val_iterations_per_epoch``; the training stage
constructs it directly and calls ``run_training()``, and prediction builds the network
with the same class, so no name lookup happens anywhere.
"""

from __future__ import annotations

import importlib
from typing import Any

from medsegflow.errors import ConfigError

_VARIANTS = "nnunetv2.training.nnUNetTrainer.variants"
BASE_TRAINERS: dict[str, str] = {
    "nnUNetTrainer": "nnunetv2.training.nnUNetTrainer.nnUNetTrainer",
    "nnUNetTrainerNoMirroring": f"{_VARIANTS}.data_augmentation.nnUNetTrainerNoMirroring",
    "nnUNetTrainerNoDA": f"{_VARIANTS}.data_augmentation.nnUNetTrainerNoDA",
    "nnUNetTrainerDA5": f"{_VARIANTS}.data_augmentation.nnUNetTrainerDA5",
    "nnUNetTrainerNoDeepSupervision": (
        f"{_VARIANTS}.network_architecture.nnUNetTrainerNoDeepSupervision"
    ),
    "nnUNetTrainerCosAnneal": f"{_VARIANTS}.lr_schedule.nnUNetTrainerCosAnneal",
}
"""Supported base trainers: class name -> module that defines it."""


def base_trainer(name: str, *, key: str = "trainer") -> type:
    """The nnU-Net trainer class ``name`` from :data:`BASE_TRAINERS`; ConfigError naming ``key``."""
    if name not in BASE_TRAINERS:
        known = ", ".join(sorted(BASE_TRAINERS))
        raise ConfigError(f"{key}: unknown nnU-Net trainer '{name}'; supported: {known}")
    return getattr(importlib.import_module(BASE_TRAINERS[name]), name)


def schedule_trainer(
    base: str = "nnUNetTrainer",
    *,
    epochs: int,
    iterations_per_epoch: int,
    val_iterations: int,
    key: str = "trainer",
) -> type:
    """A subclass of trainer ``base`` named ``MedSegFlow_<base>`` with this schedule.

    Constructed like any nnU-Net trainer: ``cls(plans=..., configuration=..., fold=...,
    dataset_json=..., device=...)``; ``plans`` needs ``continue_training`` (nnU-Net pops it).
    """
    for name, value in (
        ("epochs", epochs),
        ("iterations_per_epoch", iterations_per_epoch),
        ("val_iterations", val_iterations),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}: {value!r} must be an integer >= 1")
    parent = base_trainer(base, key=key)
    schedule = {
        "num_epochs": epochs,
        "num_iterations_per_epoch": iterations_per_epoch,
        "num_val_iterations_per_epoch": val_iterations,
    }

    def __init__(self, plans: dict, configuration: str, fold: Any, dataset_json: dict, device: Any):
        parent.__init__(self, plans, configuration, fold, dataset_json, device)
        for attribute, value in schedule.items():
            setattr(self, attribute, value)

    name = f"MedSegFlow_{base}"
    return type(name, (parent,), {"__init__": __init__, "schedule": dict(schedule)})
