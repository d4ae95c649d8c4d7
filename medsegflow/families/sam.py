"""The ``sam`` family: prompted SAM, MedSAM, LiteMedSAM or a model trained by the pipeline,
decoding GT prompts from the cached image embeddings of its ``model``
(:func:`medsegflow.promptable.predict2d.predict_promptable_2d`). Its promptable model
class is :class:`medsegflow.promptable.sam_model.SamPromptable`. A method with
``clicks3d.n`` > 0 (box3d prompts and corrective 3D clicks) runs the interactive protocol."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from medsegflow.errors import ConfigError
from medsegflow.families.family import Family
from medsegflow.planning import base_inputs, method_config, sam_model_inputs, sam_training_target

if TYPE_CHECKING:
    import pandas as pd

    from medsegflow.prediction.job import PredictJob
    from medsegflow.promptable.interface import PromptableModel


def _predict(job: PredictJob) -> pd.DataFrame:
    from medsegflow.promptable.predict2d import predict_promptable_2d

    return predict_promptable_2d(job)


def _promptable() -> type[PromptableModel]:
    from medsegflow.promptable.sam_model import SamPromptable

    return SamPromptable


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


def clicks3d_n(config: Mapping[str, Any], method: str) -> int:
    """The method's ``clicks3d.n`` (0 when not set: a method config without defaults)."""
    return int((method_config(config, method).get("clicks3d") or {}).get("n", 0))


def is_interactive(config: Mapping[str, Any], method: str) -> bool:
    return clicks3d_n(config, method) > 0


def check_sam(config: Mapping[str, Any]) -> None:
    """:class:`ConfigError` naming the key for ``clicks3d.n`` > 0 with a prompt set that is
    not box3d or with ``clicks.rounds`` > 0."""
    prompts = config.get("prompts") or {}
    for method, spec in config["methods"].items():
        if spec.get("family") != "sam" or not is_interactive(config, method):
            continue
        key = f"methods.{method}.clicks3d.n"
        kind = (prompts.get(spec.get("prompts")) or {}).get("type")
        if kind != "box3d":
            raise ConfigError(
                f"{key}: corrective 3D clicks follow a box3d prompt set; prompts "
                f"'{spec.get('prompts')}' is of type {kind}"
            )
        if (spec.get("clicks") or {}).get("rounds", 0):
            raise ConfigError(f"{key}: set methods.{method}.clicks.rounds to 0 with 3D clicks")


FAMILY = Family(
    name="sam",
    predict=_predict,
    inputs=sam_inputs,
    env="torch",
    gpu=True,
    cache="sam_embeddings",
    schema="families/sam.schema.yaml",
    train=sam_training,
    check=check_sam,
    interactive=is_interactive,
    promptable=_promptable,
)
