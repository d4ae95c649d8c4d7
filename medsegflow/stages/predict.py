"""The prediction stage: run a method's family on one dataset, or gather shard manifests.

``results/predictions/{dataset}/{method}/`` is described in :mod:`medsegflow.prediction`.
:func:`predict_dataset` completes the method's config with its family's schema, runs the
family's predictor (:attr:`medsegflow.families.Family.predict`) on a
:class:`~medsegflow.prediction.job.PredictJob`, and checks that a sharded job predicted
exactly its shard's cases; :func:`gather_predictions` writes ``manifest.tsv`` from the
shard manifests.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medsegflow.errors import ConfigError
from medsegflow.families.registry import complete_method, family_named
from medsegflow.manifests import read_preprocessed_manifest
from medsegflow.prediction.cases import job_cases, select_cases
from medsegflow.prediction.job import PredictJob, Shard
from medsegflow.prediction.manifest import (
    MANIFEST_NAME,
    gather_shard_manifests,
    shard_manifest_path,
)

log = logging.getLogger(__name__)


def predict_dataset(
    *,
    method: Mapping[str, Any],
    method_name: str,
    inputs: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    splits: Sequence[str],
    seed: int,
    shard: Shard | None = None,
    device: str | None = None,
) -> pd.DataFrame:
    """Run the predictor of ``method``'s family on its cases; returns the manifest.

    ``inputs`` are the prediction job's named input files (the family's
    :attr:`~medsegflow.families.Family.inputs`). ``shard=(index, count)`` predicts one
    shard's cases and writes ``out_dir/shards/{index + 1}-of-{count}.tsv`` instead of
    ``manifest.tsv``. ``seed`` is the config's seed.

    Raises :class:`ConfigError` naming ``methods.<method_name>.<key>`` for an unknown
    family or a bad method config, ``ValueError`` for a split that is not one of
    train/val/test or a bad shard, and ``RuntimeError`` when a family ignores the shard.
    """
    family = family_named(method.get("family", ""), key=f"methods.{method_name}.family")
    job = PredictJob(
        method=complete_method(method, method_name),
        method_name=method_name,
        inputs=dict(inputs),
        out_dir=Path(out_dir),
        splits=tuple(splits),
        seed=int(seed),
        shard=shard,
        device=device,
    )
    unsharded = job.out_dir / MANIFEST_NAME
    before = unsharded.stat().st_mtime_ns if unsharded.exists() else None
    manifest = family.predict(job)
    if job.shard is not None:
        expected = job_cases(job)["case_id"].tolist()
        found = manifest["case_id"].astype(str).tolist()
        path = shard_manifest_path(job.out_dir, job.shard)
        if found != expected or not path.is_file():
            if unsharded.exists() and unsharded.stat().st_mtime_ns != before:
                unsharded.unlink()  # not the gathered manifest: keep it from looking done
            index, count = job.shard
            raise RuntimeError(
                f"family '{family.name}' (method {method_name}) does not support sharding: "
                f"shard {index + 1}-of-{count} should predict {len(expected)} cases into "
                f"{path}, it predicted {len(found)}; set scale.predict_shards: 1"
            )
        log.info("shard %d-of-%d: %d cases", job.shard[0] + 1, job.shard[1], len(found))
    return manifest


def gather_predictions(
    *,
    shard_paths: Sequence[str | os.PathLike],
    preprocessed: str | os.PathLike,
    out_path: str | os.PathLike,
    splits: Sequence[str],
) -> pd.DataFrame:
    """``manifest.tsv`` from the shard manifests of one (dataset, method): every case of
    ``splits`` of the preprocessed manifest exactly once, in its order."""
    if not shard_paths:
        raise ConfigError("gather_predictions: no shard manifests")
    cases = select_cases(
        read_preprocessed_manifest(Path(preprocessed).parent), splits, source=preprocessed
    )
    return gather_shard_manifests(shard_paths, out_path, cases["case_id"].tolist())
