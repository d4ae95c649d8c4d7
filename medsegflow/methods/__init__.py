"""Method families, registered by name.

``FAMILIES[family]`` is a dataset predictor called with keyword arguments only::

    predictor(*, method: Mapping, method_name: str, inputs: Mapping[str, path],
              out_dir, splits: Sequence[str]) -> pandas.DataFrame

``inputs`` are the prediction job's named input files
(:func:`medsegflow.workflow.predict_inputs`): ``preprocessed`` is the preprocessed
``manifest.tsv``, ``prompts`` a prompt file, and a family may add its own.

It writes ``out_dir/{case_id}.nii.gz`` (labels in the original image geometry) for every
case of ``splits`` and then ``out_dir/manifest.tsv``, and returns the manifest. Each
entry is a small wrapper that imports its family's module only when called, so the
registry costs nothing to import (no torch for the classical family).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

FamilyPredictor = Callable[..., "pd.DataFrame"]


def _classical(**kwargs: Any) -> pd.DataFrame:
    from medsegflow.methods.classical import predict_classical

    return predict_classical(**kwargs)


def _nnunet(**kwargs: Any) -> pd.DataFrame:
    from medsegflow.nnunet.predict import predict_nnunet

    return predict_nnunet(**kwargs)


def _sam(**kwargs: Any) -> pd.DataFrame:
    from medsegflow.methods.sam import predict_sam

    return predict_sam(**kwargs)


def _sam_auto(**kwargs: Any) -> pd.DataFrame:
    from medsegflow.methods.sam_auto import predict_sam_auto

    return predict_sam_auto(**kwargs)


def _text_sam(**kwargs: Any) -> pd.DataFrame:
    from medsegflow.methods.text_sam import predict_text_sam

    return predict_text_sam(**kwargs)


FAMILIES: dict[str, FamilyPredictor] = {
    "classical": _classical,
    "nnunet": _nnunet,
    "sam": _sam,
    "sam_auto": _sam_auto,
    "text_sam": _text_sam,
}
