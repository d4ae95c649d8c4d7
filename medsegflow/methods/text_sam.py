"""The text-driven family (``text_sam``): MedCLIP-SAMv2's last step.

The earlier stages (saliency, coarse masks, prompts from the coarse masks) are their own
jobs (:mod:`medsegflow.families.text_stages`). This predictor either

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
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medsegflow.errors import InputError
from medsegflow.io import Volume
from medsegflow.manifests import read_table
from medsegflow.prediction.cases import predict_cases, read_label_volume
from medsegflow.prediction.job import PredictJob
from medsegflow.promptable.predict2d import SamConfig, predict_with_cached_sam

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def sam_config(method: Mapping[str, Any]) -> SamConfig:
    """The SAM decoding of a complete ``text_sam`` method: its ``multimask``, ``voting``
    and ``batch_size``, and no oracle clicks (the text-driven path has no labels)."""
    return SamConfig(
        multimask=method["multimask"],
        voting=method["voting"],
        click_rounds=0,
        click_mode="center",
        click_mask_input=False,
        batch_size=method["batch_size"],
    )


def copy_coarse_masks(job: PredictJob, *, coarse_dir: str | os.PathLike) -> pd.DataFrame:
    """Write the coarse mask of every case of ``job`` as its prediction, then the manifest.

    Masks are written in the preprocessed image's geometry (:func:`predict_cases`).
    :class:`InputError` names the coarse manifest when a case of the job is missing from
    it, and a coarse mask whose shape differs from the preprocessed image's.
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

    return predict_cases(job, segment=segment, desc="coarse masks")


def predict_text_sam(job: PredictJob) -> pd.DataFrame:
    """The family predictor (``family: text_sam``).

    ``job.inputs``: ``preprocessed`` and ``coarse`` (manifests); with ``model`` also
    ``prompts`` (drawn from the coarse masks), ``embeddings`` and ``checkpoint``.
    """
    if not job.method["model"]:
        job.require("coarse", family="text_sam")
        return copy_coarse_masks(job, coarse_dir=Path(job.inputs["coarse"]).parent)
    job.require("prompts", family="text_sam")
    return predict_with_cached_sam(job, config=sam_config(job.method))
