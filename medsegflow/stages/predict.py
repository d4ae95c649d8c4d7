"""Predict label volumes for one (dataset, method): ``results/predictions/{dataset}/{method}/``.

``out_dir/{case_id}.nii.gz`` holds the predicted labels in the original image geometry
(shape, spacing, origin and direction of the canonical image), and ``out_dir/manifest.tsv``
(written last) lists the cases: ``case_id, split, n_prompts, seconds``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from medsegflow.datasets.canonical import SPLITS
from medsegflow.errors import ConfigError
from medsegflow.methods import FAMILIES

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("case_id", "split", "n_prompts", "seconds")


def predict_dataset(
    *,
    family: str,
    method: Mapping[str, Any],
    method_name: str,
    inputs: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    splits: Sequence[str] = ("test",),
) -> pd.DataFrame:
    """Run the predictor of ``family`` (from :data:`medsegflow.methods.FAMILIES`).

    ``inputs`` are the prediction job's named input files, as
    :func:`medsegflow.workflow.predict_inputs` lists them (``preprocessed``: the
    preprocessed ``manifest.tsv``; ``prompts``: a prompt file; family-specific others).

    Raises :class:`ConfigError` naming ``methods.<method_name>.family`` for an unknown
    family or one that disagrees with ``method["family"]``, and ``ValueError`` for a
    split that is not one of train/val/test. Returns the predictor's manifest.
    """
    if family not in FAMILIES:
        raise ConfigError(
            f"methods.{method_name}.family: '{family}' is not a known family; "
            f"known: {', '.join(sorted(FAMILIES))}"
        )
    if method.get("family", family) != family:
        raise ConfigError(
            f"methods.{method_name}.family: config says "
            f"'{method.get('family')}' but the rule runs family '{family}'"
        )
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ValueError(f"splits {list(splits)} must be a non-empty subset of {SPLITS}")
    return FAMILIES[family](
        method=method,
        method_name=method_name,
        inputs=inputs,
        out_dir=out_dir,
        splits=tuple(splits),
    )
