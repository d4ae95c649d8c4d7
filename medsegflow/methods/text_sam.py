"""The text-driven family (``text_sam``): MedCLIP-SAMv2's last step.

The earlier stages (saliency, coarse masks, prompts from the coarse masks) are their own
jobs (:mod:`medsegflow.workflow_text`). This predictor either

- decodes the prompts drawn from the coarse masks with a SAM model from its cached
  embeddings (``model`` set): the SAM family's own decoding, with optional voting over
  repeated prompts and no oracle clicks; or
- writes the coarse masks as the prediction (no ``model``), which scores the
  text -> saliency -> post-processing chain alone.

Coarse masks are label volumes in the preprocessed image's geometry, which is the
canonical image's, so they are copied unchanged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medsegflow.errors import ConfigError, InputError
from medsegflow.io import Volume
from medsegflow.methods.box_prompted import predict_cases, read_label_volume
from medsegflow.stages.preprocess import read_table

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SAM_KEYS = ("multimask", "voting", "batch_size")
"""Keys of a ``text_sam`` method passed on to the SAM family's decoding."""


def sam_method(method: Mapping[str, Any], prompts_name: str) -> dict[str, Any]:
    """The ``family: sam`` method that decodes a ``text_sam`` method's prompts."""
    sam = {"family": "sam", "model": method["model"], "prompts": prompts_name}
    sam.update({k: method[k] for k in SAM_KEYS if k in method})
    return sam


def copy_coarse_masks(
    *,
    coarse_dir: str | os.PathLike,
    preprocessed_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    splits: Sequence[str],
) -> pd.DataFrame:
    """Write the coarse mask of every case of ``splits`` as its prediction, then the manifest.

    Masks are written in the preprocessed image's geometry (:func:`predict_cases`).
    :class:`InputError` names the coarse manifest when a case of ``splits`` is missing
    from it, and a coarse mask whose shape differs from the preprocessed image's.
    """
    coarse_dir = Path(coarse_dir)
    coarse = read_table(coarse_dir / "manifest.tsv", columns=("case_id", "n_targets"))
    n_targets = dict(zip(coarse["case_id"].astype(str), coarse["n_targets"], strict=True))

    def segment(case: dict[str, Any], image: Volume) -> tuple[np.ndarray, int]:
        case_id = str(case["case_id"])
        if case_id not in n_targets:
            raise InputError(
                f"{coarse_dir / 'manifest.tsv'}: case {case_id} ({case['split']}) is missing; "
                "the coarse-mask job did not cover this split"
            )
        mask_zyx = read_label_volume(coarse_dir / f"{case_id}.nii.gz", image.array_zyx.shape)
        return mask_zyx, int(n_targets[case_id])

    return predict_cases(
        segment=segment,
        preprocessed_dir=preprocessed_dir,
        out_dir=out_dir,
        splits=splits,
        desc="coarse masks",
    )


def predict_text_sam(
    *,
    method: Mapping[str, Any],
    method_name: str,
    inputs: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    splits: Sequence[str],
) -> pd.DataFrame:
    """The family predictor (``FAMILIES["text_sam"]``).

    ``inputs``: ``preprocessed`` and ``coarse`` (manifests); with ``model`` also
    ``prompts`` (drawn from the coarse masks), ``embeddings`` and ``checkpoint``.
    """
    preprocessed_dir = Path(inputs["preprocessed"]).parent
    if not method.get("model"):
        if not inputs.get("coarse"):
            raise ConfigError(f"methods.{method_name}: the text_sam family needs 'coarse'")
        return copy_coarse_masks(
            coarse_dir=Path(inputs["coarse"]).parent,
            preprocessed_dir=preprocessed_dir,
            out_dir=out_dir,
            splits=splits,
        )
    from medsegflow.methods.sam import predict_sam

    prompts_name = Path(inputs["prompts"]).parent.name
    return predict_sam(
        method=sam_method(method, prompts_name),
        method_name=method_name,
        inputs=inputs,
        out_dir=out_dir,
        splits=splits,
    )
