"""The ``sam`` family: prompted SAM, MedSAM, LiteMedSAM or a model trained by the pipeline,
decoding GT prompts from the cached image embeddings of its ``model``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from medsegflow.families.family import Family
from medsegflow.planning import base_inputs, sam_model_inputs, sam_training_target

if TYPE_CHECKING:
    import pandas as pd

    from medsegflow.prediction.job import PredictJob


def _predict(job: PredictJob) -> pd.DataFrame:
    from medsegflow.methods.sam import predict_sam

    return predict_sam(job)


def sam_inputs(config: Mapping[str, Any], dataset: str, method: str) -> dict[str, str]:
    """Base inputs plus the embeddings and weights of the method's ``model`` (when set)."""
    inputs = base_inputs(config, dataset, method)
    model = config["methods"][method].get("model")
    if model:
        inputs.update(sam_model_inputs(config, dataset, model))
    return inputs


def sam_training(config: Mapping[str, Any], dataset: str, method: str) -> str | None:
    """The training target of the method's SAM model, when the pipeline trains it."""
    return sam_training_target(config, config["methods"][method].get("model"))


FAMILY = Family(
    name="sam",
    predict=_predict,
    inputs=sam_inputs,
    env="torch",
    gpu=True,
    cache="sam_embeddings",
    schema="families/sam.schema.yaml",
    train=sam_training,
)
