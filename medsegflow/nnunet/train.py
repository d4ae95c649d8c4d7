"""Train one nnU-Net method on one planned dataset; ``training.json`` is written last.

The trainer is :func:`medsegflow.nnunet.trainer.schedule_trainer`'s subclass of the
configured base, built from the preprocessed folder's ``nnUNetPlans.json`` and
``dataset.json`` and run with ``run_training()`` on the automatically chosen device
(CUDA, else MPS, else CPU). nnU-Net's final validation is not run: with fold ``all`` it
would score training cases; the benchmark scores the test split instead.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medsegflow.errors import ConfigError
from medsegflow.io import write_text
from medsegflow.nnunet.env import (
    nnunet_environment,
    pick_device,
    portable,
    process_output_to_log,
)
from medsegflow.nnunet.plan import read_marker
from medsegflow.nnunet.trainer import schedule_trainer
from medsegflow.schema import complete
from medsegflow.threads import limit_threads

log = logging.getLogger(__name__)

NNUNET_SCHEMA = "families/nnunet.schema.yaml"


def method_settings(method: Mapping[str, Any], method_name: str = "<method>") -> dict[str, Any]:
    """The method's nnU-Net settings, completed by the family schema (nnU-Net's own
    defaults: 1000 epochs of 250 iterations); :class:`ConfigError` naming a bad key."""
    return complete(dict(method), NNUNET_SCHEMA, key=f"methods.{method_name}")


def _check_plan(planned: Mapping[str, Any], settings: Mapping[str, Any], method_name: str) -> None:
    """ConfigError naming the method key when the configuration or fold cannot be trained."""
    configuration, fold = settings["configuration"], settings["fold"]
    if configuration not in planned["configurations"]:
        raise ConfigError(
            f"methods.{method_name}.configuration: nnU-Net planned no '{configuration}' for "
            f"{planned['dataset_name']} (planned: {', '.join(planned['configurations']) or 'none'})"
        )
    if fold != "all" and not 0 <= int(fold) < planned["n_folds"]:
        raise ConfigError(
            f"methods.{method_name}.fold: fold {fold} does not exist for "
            f"{planned['dataset_name']}, which has {planned['n_training']} training cases and "
            f"{planned['n_folds']} folds; use fold all"
        )


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _history(trainer: Any) -> dict[str, Any]:
    """Last-epoch values of nnU-Net's training log (losses, pseudo Dice)."""
    logged = trainer.logger.get_checkpoint()
    out = {}
    for key in ("train_losses", "val_losses", "mean_fg_dice", "ema_fg_dice"):
        values = logged.get(key) or []
        out[key] = float(values[-1]) if values else None
    return out


def build_trainer(
    trainer_class: type,
    *,
    info: Mapping[str, Any],
    settings: Mapping[str, Any],
    results_root: Path,
    device: Any,
) -> Any:
    """The trainer for the planned dataset ``info``, its old fold folder removed first.

    Reads ``nnUNetPlans.json`` and ``dataset.json`` from the preprocessed folder; a
    ``batch_size`` setting replaces the planned one (it is saved with the model's plans).
    Must run inside :func:`~medsegflow.nnunet.env.nnunet_environment`.
    """
    pre = Path(info["preprocessed_dir"])
    configuration = settings["configuration"]
    plans = json.loads((pre / f"{info['plans']}.json").read_text(encoding="utf-8"))
    if settings["batch_size"]:
        plans["configurations"][configuration]["batch_size"] = settings["batch_size"]
    plans["continue_training"] = False  # nnU-Net pops this key
    fold = settings["fold"] if settings["fold"] == "all" else int(settings["fold"])
    name = f"{trainer_class.__name__}__{info['plans']}__{configuration}"
    shutil.rmtree(results_root / info["dataset_name"] / name / f"fold_{fold}", ignore_errors=True)
    return trainer_class(
        plans=plans,
        configuration=configuration,
        fold=fold,
        dataset_json=json.loads((pre / "dataset.json").read_text(encoding="utf-8")),
        device=device,
    )


def train_nnunet(
    *,
    planned: str | os.PathLike,
    method: Mapping[str, Any],
    method_name: str,
    nnunet_dir: str | os.PathLike,
    out_marker: str | os.PathLike,
    seed: int,
) -> dict[str, Any]:
    """Train ``method`` on the dataset of the ``planned`` marker; write ``out_marker`` last.

    The model tree is ``<nnunet_dir>/nnUNet_results/<method_name>/<dataset name>/
    MedSegFlow_<trainer>__nnUNetPlans__<configuration>/fold_<fold>/``; its fold folder is
    removed first, so no checkpoint of an older run survives. Returns the marker: model
    folder, checkpoint, schedule, device, seconds and the last epoch's losses.
    """
    info = read_marker(planned)
    settings = method_settings(method, method_name)
    _check_plan(info, settings, method_name)
    trainer_class = schedule_trainer(
        settings["trainer"],
        epochs=settings["epochs"],
        iterations_per_epoch=settings["iterations_per_epoch"],
        val_iterations=settings["val_iterations"],
        key=f"methods.{method_name}.trainer",
    )
    start = time.perf_counter()
    device = pick_device()
    augmentation = settings["augmentation_processes"]
    if augmentation is None:  # worker processes feed a GPU; on the CPU they only compete
        augmentation = settings["num_processes"] if device.type == "cuda" else 0
    environment = nnunet_environment(
        nnunet_dir,
        method=method_name,
        num_processes=settings["num_processes"],
        augmentation_processes=augmentation,
    )
    with environment as roots, process_output_to_log():
        limit_threads(settings["num_processes"])
        _seed_everything(seed)
        trainer = build_trainer(
            trainer_class, info=info, settings=settings, results_root=roots.results, device=device
        )
        log.info("training %s on %s, device %s", method_name, info["dataset_name"], device)
        trainer.run_training()
    marker = {
        "method": method_name,
        "dataset_name": info["dataset_name"],
        "model_dir": portable(trainer.output_folder_base),
        "checkpoint": portable(Path(trainer.output_folder) / "checkpoint_final.pth"),
        "trainer": trainer_class.__name__,
        "base_trainer": settings["trainer"],
        "configuration": settings["configuration"],
        "fold": trainer.fold,
        **trainer_class.schedule,
        "device": str(device),
        "batch_size": trainer.batch_size,
        "augmentation_processes": augmentation,
        "nnunet_to_original": info["nnunet_to_original"],
        "last_epoch": _history(trainer),
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_text(out_marker, json.dumps(marker, indent=2) + "\n")
    log.info("trained %s in %.1f s: %s", method_name, marker["seconds"], marker["last_epoch"])
    return marker
