"""The ``classical`` family: Otsu and k-means inside each box prompt (no model, no GPU)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from medsegflow.families.family import Family
from medsegflow.planning import base_inputs

if TYPE_CHECKING:
    import pandas as pd

    from medsegflow.prediction.job import PredictJob


def _predict(job: PredictJob) -> pd.DataFrame:
    from medsegflow.methods.classical import predict_classical

    return predict_classical(job)


def _inputs(config: Mapping[str, Any], dataset: str, method: str) -> dict[str, str]:
    return base_inputs(config, dataset, method)


FAMILY = Family(
    name="classical",
    predict=_predict,
    inputs=_inputs,
    env="base",
    gpu=False,
    cache="none",
    schema="families/classical.schema.yaml",
)
