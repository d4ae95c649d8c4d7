"""Method families, registered by name.

``FAMILIES[family]`` is a dataset predictor called with keyword arguments only::

    predictor(*, method: Mapping, method_name: str, preprocessed_dir, prompts_path,
              out_dir, splits: Sequence[str]) -> pandas.DataFrame

It writes ``out_dir/{case_id}.nii.gz`` (labels in the original image geometry) for every
case of ``splits`` and then ``out_dir/manifest.tsv``, and returns the manifest. Each
entry is a small wrapper that imports its family's module only when called, so the
registry costs nothing to import (no torch for the classical family).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

FamilyPredictor = Callable[..., "pd.DataFrame"]


def _classical(
    *,
    method: Mapping[str, Any],
    method_name: str,
    preprocessed_dir: str | os.PathLike,
    prompts_path: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    splits: Sequence[str],
) -> pd.DataFrame:
    from medsegflow.methods.classical import predict_classical

    return predict_classical(
        method=method,
        method_name=method_name,
        preprocessed_dir=preprocessed_dir,
        prompts_path=prompts_path,
        out_dir=out_dir,
        splits=splits,
    )


FAMILIES: dict[str, FamilyPredictor] = {
    "classical": _classical,
}
