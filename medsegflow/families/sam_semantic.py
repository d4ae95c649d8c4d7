"""The ``sam_semantic`` family: a semantic SAM (SAMed) labels every class of every slice at
once, with no prompt (its model is trained by the ``samed`` recipe or imported from
SAMed's released LoRA checkpoint)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from medsegflow import paths
from medsegflow.families.family import Family
from medsegflow.families.sam import sam_training
from medsegflow.planning import base_inputs, sam_checkpoint

if TYPE_CHECKING:
    import pandas as pd

    from medsegflow.prediction.job import PredictJob


def _predict(job: PredictJob) -> pd.DataFrame:
    from medsegflow.methods.sam_semantic import predict_sam_semantic

    return predict_sam_semantic(job)


def _inputs(config: Mapping[str, Any], dataset: str, method: str) -> dict[str, str]:
    """The preprocessed dataset and the model's weights (no prompts, no embedding cache:
    every slice is encoded by the prediction job)."""
    inputs = base_inputs(config, dataset, method)
    inputs["checkpoint"] = sam_checkpoint(config, config["methods"][method]["model"])
    if config["methods"][method].get("hu_window"):  # SAMed's float CT: the canonical image
        inputs["data"] = paths.fill(paths.DATA_CASES, dataset=dataset)
    return inputs


FAMILY = Family(
    name="sam_semantic",
    predict=_predict,
    inputs=_inputs,
    env="torch",
    gpu=True,
    cache="none",
    schema="families/sam_semantic.schema.yaml",
    train=sam_training,
)
