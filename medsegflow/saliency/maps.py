"""The layout of a saliency folder (``results/saliency/{dataset}/{key}/``) and its readers.

Written by :mod:`medsegflow.stages.saliency`; read by the coarse-mask stage, tuning and
:mod:`medsegflow.saliency.localisation`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from medsegflow.io import Volume, read_volume
from medsegflow.manifests import read_table

SALIENCY_LAYOUT = """\
maps/{case_id}_label{value}.nii.gz   float32 saliency in [0, 1] of one label, geometry and
                                     shape of the preprocessed image; slices that are not
                                     targets are 0 (only labels with a target get a file)
targets.tsv                          case_id, split, z, label, seconds: the computed
                                     (slice, label) pairs
manifest.tsv                         case_id, split, n_targets, seconds (written last:
                                     the file target)
"""
SALIENCY_MANIFEST_COLUMNS = ("case_id", "split", "n_targets", "seconds")
SALIENCY_TARGET_COLUMNS = ("case_id", "split", "z", "label", "seconds")


def saliency_map_path(saliency_dir: str | os.PathLike, case_id: str, label: int) -> Path:
    """``saliency_dir/maps/{case_id}_label{label}.nii.gz``."""
    return Path(saliency_dir) / "maps" / f"{case_id}_label{int(label)}.nii.gz"


def read_saliency_manifest(saliency_dir: str | os.PathLike) -> pd.DataFrame:
    """The ``manifest.tsv`` of a saliency folder (:class:`InputError` naming it if missing
    or incomplete)."""
    return read_table(Path(saliency_dir) / "manifest.tsv", columns=SALIENCY_MANIFEST_COLUMNS)


def read_saliency_targets(saliency_dir: str | os.PathLike) -> pd.DataFrame:
    """The ``targets.tsv`` of a saliency folder: one row per computed (slice, label)."""
    return read_table(Path(saliency_dir) / "targets.tsv", columns=SALIENCY_TARGET_COLUMNS)


def read_saliency_map(saliency_dir: str | os.PathLike, case_id: str, label: int) -> Volume:
    """The float32 ``zyx`` saliency volume of ``case_id`` and ``label``.

    Raises:
        InputError: naming the file when it is missing or unreadable.
    """
    volume = read_volume(saliency_map_path(saliency_dir, case_id, label))
    return Volume(volume.array_zyx.astype(np.float32, copy=False), volume.geometry)
