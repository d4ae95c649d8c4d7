"""The ``text_sam`` family: MedCLIP-SAMv2's text prompt -> saliency -> coarse mask -> SAM.

Its own stages (CLIP training, saliency, coarse masks, prompts from the masks, tuning)
are planned by :mod:`medsegflow.families.text_stages` and run by ``rules/saliency.smk``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from medsegflow.families.family import Family
from medsegflow.families.sam import sam_training
from medsegflow.families.text_stages import (
    TEXT_FAMILY,
    check_text_config,
    missing_clip_weights,
    stage_manifests,
    text_keys,
    text_predict_inputs,
)

if TYPE_CHECKING:
    import pandas as pd

    from medsegflow.prediction.job import PredictJob


def _predict(job: PredictJob) -> pd.DataFrame:
    from medsegflow.methods.text_sam import predict_text_sam

    return predict_text_sam(job)


def _wildcards(config: Mapping[str, Any]) -> dict[str, list[str]]:
    return {**text_keys(config), "clip": list(config.get("clip_models", {}))}


FAMILY = Family(
    name=TEXT_FAMILY,
    predict=_predict,
    inputs=text_predict_inputs,
    env="torch",
    gpu=True,
    cache="sam_embeddings",
    schema="families/text_sam.schema.yaml",
    train=sam_training,
    wildcards=_wildcards,
    check=check_text_config,
    missing_weights=missing_clip_weights,
    stage_manifests=stage_manifests,
)
