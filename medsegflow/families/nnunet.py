"""The ``nnunet`` family: nnU-Net v2 trained by the pipeline, and the planning of its stages.

A converted nnU-Net dataset is one (dataset, labels) pair: labels ``gt``, or the method
whose train/val predictions are the training labels (``labels_from``). Its stages are
``rules/nnunet.smk``: convert -> plan and preprocess -> train (per method) -> predict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from medsegflow import paths
from medsegflow.errors import ConfigError
from medsegflow.families.family import Family
from medsegflow.planning import base_inputs, dataset_method_pairs, method_config

if TYPE_CHECKING:
    import pandas as pd

    from medsegflow.prediction.job import PredictJob

NAME = "nnunet"
NNUNET_GT = "gt"  # medsegflow.nnunet.naming.GT_LABELS (that module is kept import-light too)


def _predict(job: PredictJob) -> pd.DataFrame:
    from medsegflow.nnunet.predict import predict_nnunet

    return predict_nnunet(job)


def is_nnunet(config: Mapping[str, Any], method: str) -> bool:
    return method_config(config, method)["family"] == NAME


def label_source(config: Mapping[str, Any], method: str) -> str:
    """Where ``method`` (family nnunet) takes its training labels: ``gt`` or a method name."""
    return method_config(config, method).get("labels_from") or NNUNET_GT


def label_sources(config: Mapping[str, Any]) -> list[str]:
    """``gt`` and every method named by an nnU-Net method's ``labels_from``, config order."""
    used = {m.get("labels_from") for m in config["methods"].values() if m["family"] == NAME}
    return [NNUNET_GT, *(m for m in config["methods"] if m in used)]


def nnunet_pairs(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(dataset, labels) of every nnU-Net dataset the config trains on, without repeats."""
    pairs = [
        (d, label_source(config, m))
        for d, m in dataset_method_pairs(config)
        if is_nnunet(config, m)
    ]
    return list(dict.fromkeys(pairs))


def check_nnunet(config: Mapping[str, Any]) -> None:
    """:class:`ConfigError` naming the key for a bad ``labels_from`` (unknown, itself, a
    method named ``gt``, a cycle) or two nnU-Net datasets with the same derived id."""
    from medsegflow.nnunet.naming import check_unique_ids

    for name, spec in config["methods"].items():
        seen = [name]
        source = spec.get("labels_from") if spec["family"] == NAME else None
        while source:
            key = f"methods.{seen[-1]}.labels_from"
            if source == NNUNET_GT:
                raise ConfigError(f"{key}: '{NNUNET_GT}' is reserved for the ground truth")
            if source not in config["methods"]:
                raise ConfigError(f"{key}: unknown method '{source}'")
            if source in seen:
                raise ConfigError(
                    f"{key}: labels_from forms a cycle {' -> '.join(seen)} -> {source}"
                )
            seen.append(source)
            follow = config["methods"][source]
            source = follow.get("labels_from") if follow["family"] == NAME else None
    check_unique_ids(nnunet_pairs(config))


def training_marker(config: Mapping[str, Any], dataset: str, method: str) -> str:
    """The training job's output of (``dataset``, ``method``): its ``training.json``."""
    return paths.fill(paths.NNUNET_TRAINED, dataset=dataset, method=method)


def _inputs(config: Mapping[str, Any], dataset: str, method: str) -> dict[str, str]:
    return {
        **base_inputs(config, dataset, method),
        "data": paths.fill(paths.DATA_CASES, dataset=dataset),
        "model": training_marker(config, dataset, method),
    }


def convert_inputs(config: Mapping[str, Any], dataset: str, labels: str) -> dict[str, str]:
    """Inputs of the conversion of (``dataset``, ``labels``): cases, and pseudo-labels."""
    inputs = {"cases": paths.fill(paths.DATA_CASES, dataset=dataset)}
    if labels != NNUNET_GT:
        inputs["pseudolabels"] = paths.fill(paths.PSEUDOLABELS, dataset=dataset, method=labels)
    return inputs


def plan_params(config: Mapping[str, Any], dataset: str, labels: str) -> dict[str, Any]:
    """Configurations to preprocess for (``dataset``, ``labels``), the process count and
    the fingerprint's voxel sample: the union and the maxima over the nnU-Net methods
    trained on it (a method at nnU-Net's default sample, None, wins)."""
    specs = [
        method_config(config, m)
        for d, m in dataset_method_pairs(config)
        if d == dataset and is_nnunet(config, m) and label_source(config, m) == labels
    ]
    if not specs:
        raise ConfigError(f"no nnU-Net method trains on {dataset} with labels '{labels}'")
    voxels = [s.get("fingerprint_voxels") for s in specs]
    return {
        "configurations": sorted({s["configuration"] for s in specs}),
        "num_processes": max(int(s["num_processes"]) for s in specs),
        "fingerprint_voxels": None if None in voxels else max(int(v) for v in voxels),
    }


def train_inputs(config: Mapping[str, Any], dataset: str, method: str) -> dict[str, str]:
    labels = label_source(config, method)
    return {"planned": paths.fill(paths.NNUNET_PLANNED, dataset=dataset, labels=labels)}


def threads(config: Mapping[str, Any], method: str) -> int:
    return int(method_config(config, method)["num_processes"])


FAMILY = Family(
    name=NAME,
    predict=_predict,
    inputs=_inputs,
    env="nnunet",
    gpu=True,
    cache="own",
    schema="families/nnunet.schema.yaml",
    train=training_marker,
    wildcards=lambda config: {"labels": label_sources(config)},
    check=check_nnunet,
)
