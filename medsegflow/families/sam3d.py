"""The ``sam3d`` family: SAM-Med3D on 3D clicks (:mod:`medsegflow.sam3d`), and its planning.

A method is either the released turbo checkpoint (``weights:``) or a small SAM-Med3D
trained here (``train:``; ``rules/sam3d.smk``, one job per method writing
``results/models/sam3d/{method}/sam3d.pth``). Predictions read the canonical image (the
original intensities: SAM-Med3D z-normalises its crop itself) and the cleaned reference
(the simulated user), and write, besides the label volume after the last click, the
label volume after every click (:mod:`medsegflow.interactive`). With ``windows:
{enabled: true}``, objects larger than one crop get their final mask from sliding crops
over their 3D box (:mod:`medsegflow.sam3d.windows`). The model is
:class:`~medsegflow.sam3d.promptable.Sam3dPromptable` (``promptable``), run by the generic
3D protocol (:mod:`medsegflow.promptable.volume_protocol`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsegflow import paths
from medsegflow.errors import ConfigError
from medsegflow.families.family import Family
from medsegflow.planning import base_inputs, dataset_method_pairs, method_config

if TYPE_CHECKING:
    import pandas as pd

    from medsegflow.prediction.job import PredictJob

NAME = "sam3d"
TURBO_WEIGHTS_SOURCE = (
    "official file sam_med3d_turbo.pth: the SAM-Med3D-turbo checkpoint linked from the "
    "uni-medical/SAM-Med3D README (Hugging Face blueyo0/SAM-Med3D)"
)


def _predict(job: PredictJob) -> pd.DataFrame:
    from medsegflow.sam3d.predict import predict_sam3d

    return predict_sam3d(job)


def _promptable() -> type:
    from medsegflow.sam3d.promptable import Sam3dPromptable

    return Sam3dPromptable


def sam3d_methods(config: Mapping[str, Any]) -> list[str]:
    """Methods of the family, in config order."""
    return [name for name, spec in config["methods"].items() if spec["family"] == NAME]


def trained_methods(config: Mapping[str, Any]) -> list[str]:
    return [m for m in sam3d_methods(config) if config["methods"][m].get("train")]


def weights_file(config: Mapping[str, Any], method: str) -> str:
    """The checkpoint a method's predictions load: the training job's output, or the
    configured ``weights:`` path."""
    spec = method_config(config, method)
    if spec.get("train"):
        return paths.fill(paths.SAM3D_WEIGHTS, sam3d=method)
    return str(config["weights"][spec["weights"]])


def _inputs(config: Mapping[str, Any], dataset: str, method: str) -> dict[str, str]:
    return {
        **base_inputs(config, dataset, method),
        "data": paths.fill(paths.DATA_CASES, dataset=dataset),
        "checkpoint": weights_file(config, method),
    }


def _training(config: Mapping[str, Any], dataset: str, method: str) -> str | None:
    return weights_file(config, method) if method_config(config, method).get("train") else None


def train_inputs(config: Mapping[str, Any], method: str) -> dict[str, list[str]]:
    """The training job's inputs: the canonical cases and cleaned labels of its datasets."""
    datasets = method_config(config, method)["train"]["datasets"]
    return {
        "data": [paths.fill(paths.DATA_CASES, dataset=d) for d in datasets],
        "preprocessed": [paths.fill(paths.PREPROCESSED, dataset=d) for d in datasets],
    }


def check_sam3d(config: Mapping[str, Any]) -> None:
    """:class:`ConfigError` naming the key: exactly one of weights and train, a known
    weights key and known training datasets."""
    for method in sam3d_methods(config):
        spec = config["methods"][method]
        key = f"methods.{method}"
        if bool(spec.get("weights")) == bool(spec.get("train")):
            raise ConfigError(f"{key}: give either weights: (a checkpoint) or train:, not both")
        if spec.get("weights") and spec["weights"] not in config.get("weights", {}):
            known = ", ".join(sorted(config.get("weights", {}))) or "none"
            raise ConfigError(
                f"{key}.weights: '{spec['weights']}' is not a key under weights:; known: {known}"
            )
        for dataset in (spec.get("train") or {}).get("datasets", []):
            if dataset not in config["datasets"]:
                raise ConfigError(f"{key}.train.datasets: unknown dataset '{dataset}'")


def missing_sam3d_weights(config: Mapping[str, Any]) -> list[str]:
    """One line per released checkpoint a scored method needs that is not there."""
    used = {m for _, m in dataset_method_pairs(config)}
    lines = []
    for method in sam3d_methods(config):
        key = config["methods"][method].get("weights")
        if method not in used or not key:
            continue
        path = Path(str(config["weights"][key])).expanduser()
        if not path.is_file():
            lines.append(
                f"weights.{key}: file not found at {path} (needed by methods.{method}); "
                f"{TURBO_WEIGHTS_SOURCE}"
            )
    return lines


def _wildcards(config: Mapping[str, Any]) -> dict[str, list[str]]:
    return {"sam3d": trained_methods(config)}


FAMILY = Family(
    name=NAME,
    predict=_predict,
    inputs=_inputs,
    env="torch",
    gpu=True,
    cache="own",
    schema="families/sam3d.schema.yaml",
    train=_training,
    wildcards=_wildcards,
    check=check_sam3d,
    missing_weights=missing_sam3d_weights,
    interactive=lambda config, method: True,
    promptable=_promptable,
)
