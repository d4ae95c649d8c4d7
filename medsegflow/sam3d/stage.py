"""The training stage of a ``sam3d`` method: ``results/models/sam3d/{method}/``.

Trains the method's spec from scratch (:func:`medsegflow.sam3d.train.train_sam3d`) on the
train split of its ``train.datasets``: each case's canonical image (original intensities)
with its cleaned reference labels, every label value an object. Writes the weights in the
released checkpoint's layout (``{"model_state_dict": ...}``, so the predictor loads them
with the same strict loader as ``sam_med3d_turbo.pth``), a model card ``model.json``
(spec, train settings, time, parameters, first and last loss, and ``resampling``: the
torchio version and the 1.5 mm grid rule the training crops were cut on) and
``train_log.csv`` (the loss per click of every iteration).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medsegflow.datasets.canonical import image_path, label_path, read_cases
from medsegflow.errors import InputError
from medsegflow.io import read_volume, write_text
from medsegflow.tables import write_csv_atomic
from medsegflow.threads import limit_threads

log = logging.getLogger(__name__)

CARD_FORMAT = "medsegflow-sam3d-model/1"


def training_cases(
    data_dirs: Sequence[str | os.PathLike], preprocessed_dirs: Sequence[str | os.PathLike]
) -> list[tuple[Any, Any]]:
    """``(image, cleaned label)`` volumes of the train split of every dataset."""
    cases = []
    for data_dir, pre_dir in zip(data_dirs, preprocessed_dirs, strict=True):
        table = read_cases(data_dir)
        for case_id in table.loc[table["split"] == "train", "case_id"]:
            image = read_volume(image_path(data_dir, case_id))
            label = read_volume(label_path(pre_dir, case_id))
            if image.array_zyx.ndim != 3 or min(image.array_zyx.shape) < 2:
                raise InputError(
                    f"{image_path(data_dir, case_id)}: SAM-Med3D trains on 3D images, got "
                    f"shape {image.array_zyx.shape}"
                )
            cases.append((image, label))
    if not cases:
        raise InputError(f"no train-split case in {[os.fspath(d) for d in data_dirs]}")
    return cases


def train_sam3d_model(
    *,
    method: str,
    spec: str | Mapping[str, Any],
    train: Mapping[str, Any],
    data_dirs: Sequence[str | os.PathLike],
    preprocessed_dirs: Sequence[str | os.PathLike],
    out_weights: str | os.PathLike,
    seed: int,
    device: str | None = None,
    resample_grid: str = "torchio",
) -> dict[str, Any]:
    """Train and write the weights, card and loss history; returns the training summary.
    ``resample_grid``: the method's 1.5 mm grid (:mod:`medsegflow.sam3d.preprocess`)."""

    from medsegflow.sam3d.model import save_checkpoint
    from medsegflow.sam3d.preprocess import grid_provenance
    from medsegflow.sam3d.train import TrainConfig, train_sam3d

    limit_threads(int(train.get("threads", 1)))
    cases = training_cases(data_dirs, preprocessed_dirs)
    config = TrainConfig(
        spec=spec,
        iterations=int(train["iterations"]),
        batch_size=int(train["batch_size"]),
        max_clicks=int(train["max_clicks"]),
        lr=float(train["lr"]),
        weight_decay=float(train["weight_decay"]),
        warmup=int(train["warmup"]),
        resample_grid=resample_grid,
    )
    log.info("%s: training SAM-Med3D %s on %d cases, %s", method, spec, len(cases), config)
    model, info = train_sam3d(cases, seed=seed, config=config, device=device)
    history = info.pop("history")
    out_weights = Path(out_weights)
    save_checkpoint(model, out_weights)
    card = {
        "format": CARD_FORMAT,
        "method": method,
        "spec": spec,
        "train": dict(train),
        "training": {**info, "n_cases": len(cases)},
        "resampling": grid_provenance(resample_grid),
    }
    write_text(out_weights.parent / "model.json", json.dumps(card, indent=2, default=str) + "\n")
    write_csv_atomic(
        pd.DataFrame({"iteration": range(1, len(history) + 1), "loss_per_click": history}),
        out_weights.parent / "train_log.csv",
    )
    log.info(
        "%s: %d iterations in %.1f s, loss per click %.4f -> %.4f, %d parameters",
        method,
        info["iterations"],
        info["seconds"],
        info["loss_first"],
        info["loss_last"],
        info["n_parameters"],
    )
    return info
