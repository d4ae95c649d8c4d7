"""The embedding stage: a 2D promptable model's features of every selected slice, once.

The model of a ``sam_models`` entry is built by the :class:`PromptableModel` class of the
entry's ``family`` (the registry's ``Family.promptable``); nothing here knows a model.
``results/embeddings/{dataset}/{model}/`` (``out_dir``), see
:mod:`medsegflow.models.sam_cache`::

    {case_id}.npz   the named feature arrays of the case's slices (SliceFeatures.arrays;
                    SAM: embeddings, (N, C, h, w), float32; bf16: float16)
    model.json      the model's describe() ({"family", "arch", "checkpoint", "image_size",
                    "precision", ...}): what the predictor builds
    manifest.tsv    case_id, split, n_slices, seconds, gpu_mem_mb (written last: the target)

The slices are those of the preprocessed ``slices.tsv`` (every foreground slice plus the
selected empty ones), and for a 3D case every slice between its first and last
foreground slice (so that 3D box propagation finds an embedding on each slice of an
object's box). Each becomes encoder input by the model's own recipe
(:meth:`PromptableModel.encode_slices`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from medsegflow.datasets.canonical import image_path
from medsegflow.errors import ConfigError, InputError
from medsegflow.families.registry import family_named
from medsegflow.gpu_memory import gpu_peak_mb, reset_gpu_peak
from medsegflow.io import write_csv_atomic
from medsegflow.manifests import (
    SLICES_COLUMNS,
    read_preprocessed_image,
    read_preprocessed_manifest,
    read_table,
)
from medsegflow.models.sam_cache import (
    EMBEDDINGS_MANIFEST_COLUMNS,
    CaseEmbeddings,
    case_embeddings_path,
    save_case_embeddings,
    write_model_info,
)
from medsegflow.precision import encoder_batch_size
from medsegflow.promptable.interface import PromptableModel
from medsegflow.threads import limit_threads

log = logging.getLogger(__name__)


def _case_slices(slices: pd.DataFrame, case_id: str, *, n_z: int, source: Path) -> np.ndarray:
    """Sorted slice indices to embed for ``case_id``: those listed, and every slice between
    its first and last foreground slice; :class:`InputError` if one is out of range."""
    rows = slices[slices["case_id"] == case_id]
    z = rows["z"].to_numpy(dtype=np.int64)
    if z.size and (z.min() < 0 or z.max() >= n_z):
        raise InputError(f"{source}: case {case_id} lists slice z={z.max()} outside 0..{n_z - 1}")
    foreground = rows.loc[rows["kind"] == "foreground", "z"].to_numpy(dtype=np.int64)
    if foreground.size:
        z = np.concatenate([z, np.arange(foreground.min(), foreground.max() + 1)])
    return np.unique(z)


def build_promptable(
    family: str,
    spec: dict[str, Any],
    checkpoint: str | os.PathLike,
    *,
    device: str | None = None,
    precision: str = "auto",
    key: str = "family",
) -> PromptableModel:
    """The model of ``spec`` built by the promptable class of ``family``;
    :class:`ConfigError` naming ``key`` when the family has none."""
    cls = family_named(family, key=key).promptable
    if cls is None:
        raise ConfigError(f"{key}: family '{family}' is not a promptable family")
    return cls().build(spec, checkpoint, device=device, precision=precision)


def embed_dataset(
    *,
    preprocessed_dir: str | os.PathLike,
    checkpoint: str | os.PathLike,
    arch: str | dict[str, Any],
    family: str,
    spec: dict[str, Any] | None = None,
    out_dir: str | os.PathLike,
    splits: Sequence[str],
    batch_size: int | str,
    precision: str,
    device: str | None = None,
    threads: int | None = None,
) -> pd.DataFrame:
    """Embed every listed slice of every case of ``splits``; write the cache folder.

    Args:
        preprocessed_dir: a preprocessed dataset (``manifest.tsv``, ``slices.tsv``,
            ``images/`` of uint8 volumes).
        checkpoint: the model's weights in its official format.
        arch: the entry's architecture (base filled in), as its family reads it.
        family: the promptable family that builds the model (``sam_models.<m>.family``).
        spec: the model's ``sam_models`` entry (its family's keys; ``arch`` replaced).
        out_dir: the cache folder; ``manifest.tsv`` is written last.
        splits: case splits to embed (the workflow passes those its methods predict).
        device: None for CUDA when available, else CPU; autocast (bf16/fp16) on CUDA.
        batch_size: slices per encoder call, or ``auto``
            (:func:`~medsegflow.precision.encoder_batch_size`).
        threads: torch CPU threads (None: torch's default).
        precision: the encoder's precision, ``auto``, ``fp32`` or ``bf16``
            (:func:`~medsegflow.precision.resolve_precision`).

    Returns:
        The manifest: ``case_id, split, n_slices, seconds, gpu_mem_mb``.
    """

    if threads:
        limit_threads(int(threads))
    pre, out_dir = Path(preprocessed_dir), Path(out_dir)
    cases = read_preprocessed_manifest(pre, splits=splits)
    if cases.empty:
        raise InputError(f"{pre / 'manifest.tsv'}: no cases in splits {list(splits)}")
    slices = read_table(pre / "slices.tsv", columns=SLICES_COLUMNS)
    model = build_promptable(
        family, {**(spec or {}), "arch": arch}, checkpoint, device=device, precision=precision
    )
    batch_size = encoder_batch_size(batch_size, device)
    info = model.describe()
    write_model_info(out_dir, info, model_class=type(model))
    rows: list[dict[str, Any]] = []
    encode_seconds = 0.0
    for case in tqdm(cases.to_dict("records"), desc="embed", unit="case"):
        start = time.perf_counter()
        reset_gpu_peak()
        path = image_path(pre, case["case_id"])
        image_zyx = read_preprocessed_image(path, colour="rgb").array_zyx  # the recipes take RGB
        z = _case_slices(slices, case["case_id"], n_z=image_zyx.shape[0], source=pre / "slices.tsv")
        tic = time.perf_counter()
        features = model.encode_slices(image_zyx[z], batch_size=batch_size)
        encode_seconds += time.perf_counter() - tic
        cached = CaseEmbeddings(
            case_id=case["case_id"],
            z=z,
            arrays=features.arrays,
            original_size=features.original_size,
            input_size=features.input_size,
            image_size=features.image_size,
        )
        save_case_embeddings(case_embeddings_path(out_dir, case["case_id"]), cached)
        rows.append(
            {
                "case_id": case["case_id"],
                "split": case["split"],
                "n_slices": int(z.size),
                "seconds": round(time.perf_counter() - start, 3),
                "gpu_mem_mb": gpu_peak_mb(),
            }
        )
    manifest = pd.DataFrame(rows, columns=list(EMBEDDINGS_MANIFEST_COLUMNS))
    write_csv_atomic(manifest, out_dir / "manifest.tsv", sep="\t", float_format=None)
    n = int(manifest["n_slices"].sum())
    log.info(
        "embedded %d slices of %d cases with %s %s (%s): %.2f images/s (encoder only)",
        n,
        len(manifest),
        family,
        info["arch"],
        f"precision {precision}: {info.get('precision')}",
        n / encode_seconds if encode_seconds > 0 else float("nan"),
    )
    return manifest
