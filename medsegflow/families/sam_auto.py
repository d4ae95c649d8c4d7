"""The ``sam_auto`` family: SAM's automatic masks with no prompt, one chosen per slice."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medsegflow.families.family import Family
from medsegflow.families.sam import sam_inputs, sam_training

if TYPE_CHECKING:
    import pandas as pd

    from medsegflow.prediction.job import PredictJob


def _predict(job: PredictJob) -> pd.DataFrame:
    from medsegflow.methods.sam_auto import predict_sam_auto

    return predict_sam_auto(job)


FAMILY = Family(
    name="sam_auto",
    predict=_predict,
    inputs=sam_inputs,
    env="torch",
    gpu=True,
    cache="sam_embeddings",
    schema="families/sam_auto.schema.yaml",
    train=sam_training,
)
