"""The prediction manifest (``manifest.tsv`` or a shard's ``shards/{i}-of-{n}.tsv``).

Columns ``case_id, split, n_prompts, seconds, gpu_mem_mb``: one row per predicted case,
written after every case's volume, so a manifest's presence means its cases are complete.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medsegflow.errors import InputError
from medsegflow.io import write_csv_atomic
from medsegflow.prediction.job import Shard

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("case_id", "split", "n_prompts", "seconds")
"""The columns a manifest must have (older manifests have only these)."""
WRITTEN_COLUMNS = (*PREDICTION_COLUMNS, "gpu_mem_mb")
"""The columns written now: ``gpu_mem_mb`` is the case's peak GPU memory, NaN on the CPU."""
MANIFEST_NAME = "manifest.tsv"
SHARDS_DIR = "shards"


def shard_manifest_path(out_dir: str | os.PathLike, shard: Shard) -> Path:
    """``out_dir/shards/{index + 1}-of-{count}.tsv``, the manifest of one shard's job."""
    index, count = shard
    return Path(out_dir) / SHARDS_DIR / f"{index + 1}-of-{count}.tsv"


def manifest_path(out_dir: str | os.PathLike, shard: Shard | None) -> Path:
    """``out_dir/manifest.tsv``, or the shard's manifest (:func:`shard_manifest_path`)."""
    return Path(out_dir) / MANIFEST_NAME if shard is None else shard_manifest_path(out_dir, shard)


def write_prediction_manifest(
    manifest: pd.DataFrame, out_dir: str | os.PathLike, shard: Shard | None
) -> Path:
    """Write a job's manifest atomically (:func:`manifest_path`); returns its path."""
    path = manifest_path(out_dir, shard)
    write_csv_atomic(manifest, path, sep="\t", float_format=None)
    return path


def read_prediction_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """A prediction (or shard) manifest; :class:`InputError` naming a missing file/column."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    table = pd.read_csv(path, sep="\t", dtype={"case_id": str, "split": str}, keep_default_na=False)
    missing = [c for c in PREDICTION_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing columns {missing}")
    return table


def _listing(items: Sequence[str], limit: int = 5) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def gather_shard_manifests(
    shard_paths: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    expected_case_ids: Sequence[str],
) -> pd.DataFrame:
    """Concatenate shard manifests into ``out_path`` (atomic), rows in ``expected_case_ids`` order.

    Every expected case must appear in exactly one shard manifest, and no other case:
    :class:`InputError` names a missing case, a case listed twice (with its shard files)
    or an unexpected one. Returns the gathered manifest.
    """
    tables = []
    for path in shard_paths:
        table = read_prediction_manifest(path)
        tables.append(table.assign(_shard=str(path)))
    rows = (
        pd.concat(tables, ignore_index=True)
        if tables
        else pd.DataFrame(columns=[*PREDICTION_COLUMNS, "_shard"])
    )
    expected = [str(c) for c in expected_case_ids]
    if len(set(expected)) != len(expected):
        raise ValueError("expected_case_ids lists a case twice")
    twice = rows[rows["case_id"].duplicated(keep=False)]
    if not twice.empty:
        case_id = twice["case_id"].iloc[0]
        files = twice.loc[twice["case_id"] == case_id, "_shard"].tolist()
        raise InputError(f"case {case_id} is listed more than once, in {_listing(files)}")
    listed = set(rows["case_id"])
    missing = [c for c in expected if c not in listed]
    if missing:
        raise InputError(
            f"case {missing[0]} is missing from the shard manifests "
            f"({len(missing)} missing: {_listing(missing)}); "
            f"shards: {_listing([str(p) for p in shard_paths])}"
        )
    extra = sorted(listed - set(expected))
    if extra:
        source = rows.loc[rows["case_id"] == extra[0], "_shard"].iloc[0]
        raise InputError(
            f"{source}: case {extra[0]} is not a case of the predicted splits "
            f"({len(extra)} unexpected: {_listing(extra)})"
        )
    order = {case_id: i for i, case_id in enumerate(expected)}
    gathered = (
        rows.sort_values("case_id", key=lambda s: s.map(order), kind="stable")
        .drop(columns="_shard")
        .reset_index(drop=True)
    )
    write_csv_atomic(gathered, out_path, sep="\t", float_format=None)
    log.info("gathered %d cases from %d shards into %s", len(gathered), len(tables), out_path)
    return gathered
