"""Predict label volumes for one (dataset, method): ``results/predictions/{dataset}/{method}/``.

``out_dir/{case_id}.nii.gz`` holds the predicted labels in the original image geometry
(shape, spacing, origin and direction of the canonical image), and ``out_dir/manifest.tsv``
(written last) lists the cases: ``case_id, split, n_prompts, seconds``.

**Shards** (``scale.predict_shards``, Snakemake's ``scattergather: predict``). With
``shard=(index, count)`` a job predicts only the cases of that shard: of the cases of the
predicted splits, in the order of the preprocessed ``manifest.tsv``, shard ``index``
(0-based) holds positions ``index, index + count, index + 2 * count, ...`` (round robin,
so shards get similar mixes of case sizes; the same for every method). Its volumes go to
the same ``out_dir`` and its manifest to ``out_dir/shards/{index + 1}-of-{count}.tsv``
(Snakemake's ``{scatteritem}``); :func:`gather_shard_manifests` then writes
``manifest.tsv`` from the shard manifests.

Families stay unaware of the job's shard in their signature (``FAMILIES``): they choose
their cases with :func:`select_cases` (``shard=active_shard()``) and write their manifest
with :func:`write_prediction_manifest`, both of which follow the shard that
:func:`predict_dataset` sets for the duration of the family's call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import pandas as pd

from medsegflow.datasets.canonical import SPLITS
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import atomic_path
from medsegflow.methods import FAMILIES

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("case_id", "split", "n_prompts", "seconds")
MANIFEST_NAME = "manifest.tsv"
SHARDS_DIR = "shards"

Shard = tuple[int, int]
"""``(index, count)``: shard ``index`` (0-based) of ``count``."""

_ACTIVE_SHARD: ContextVar[Shard | None] = ContextVar("medsegflow_predict_shard", default=None)


def check_shard(shard: Shard | None) -> Shard | None:
    """``shard`` as ``(int, int)``; ``ValueError`` unless ``0 <= index < count``."""
    if shard is None:
        return None
    index, count = shard
    if isinstance(index, bool) or isinstance(count, bool) or not 0 <= int(index) < int(count):
        raise ValueError(f"shard {shard!r} must be (index, count) with 0 <= index < count")
    return int(index), int(count)


def parse_scatteritem(item: str) -> Shard:
    """Snakemake's ``{scatteritem}`` (``"2-of-3"``, 1-based) as a shard (``(1, 3)``)."""
    match = re.fullmatch(r"(\d+)-of-(\d+)", item)
    if not match:
        raise ValueError(f"scatteritem {item!r} is not '<i>-of-<n>'")
    shard = (int(match.group(1)) - 1, int(match.group(2)))
    try:
        return check_shard(shard)  # type: ignore[return-value]
    except ValueError:
        raise ValueError(f"scatteritem {item!r}: need 1 <= i <= n") from None


def shard_manifest_path(out_dir: str | os.PathLike, shard: Shard) -> Path:
    """``out_dir/shards/{index + 1}-of-{count}.tsv``, the manifest of one shard's job."""
    index, count = shard
    return Path(out_dir) / SHARDS_DIR / f"{index + 1}-of-{count}.tsv"


def active_shard() -> Shard | None:
    """The shard of the running :func:`predict_dataset` call; ``None`` outside one."""
    return _ACTIVE_SHARD.get()


@contextlib.contextmanager
def predicting_shard(shard: Shard | None) -> Iterator[None]:
    """Make ``shard`` the :func:`active_shard` inside the block."""
    token = _ACTIVE_SHARD.set(check_shard(shard))
    try:
        yield
    finally:
        _ACTIVE_SHARD.reset(token)


def select_cases(
    cases: pd.DataFrame,
    splits: Sequence[str],
    shard: Shard | None = None,
    *,
    source: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """The rows of ``cases`` (a preprocessed manifest) to predict, in manifest order.

    Keeps the rows of ``splits``, then, with ``shard=(index, count)``, the positions
    ``index, index + count, ...`` of those (see the module docstring). The shards of one
    ``count`` partition the cases. Raises :class:`InputError` naming ``source`` (the
    manifest) when no case is in ``splits``; a shard may be empty (more shards than cases).
    """
    selected = cases[cases["split"].isin(list(splits))].reset_index(drop=True)
    if selected.empty:
        where = f"{source}: " if source is not None else ""
        raise InputError(f"{where}no cases in splits {list(splits)}")
    shard = check_shard(shard)
    if shard is not None:
        index, count = shard
        selected = selected.iloc[index::count].reset_index(drop=True)
    return selected


def write_prediction_manifest(manifest: pd.DataFrame, out_dir: str | os.PathLike) -> Path:
    """Write a family's manifest atomically; returns its path.

    ``out_dir/manifest.tsv``, or the shard manifest (:func:`shard_manifest_path`) inside a
    sharded :func:`predict_dataset` call.
    """
    shard = active_shard()
    path = Path(out_dir) / MANIFEST_NAME if shard is None else shard_manifest_path(out_dir, shard)
    with atomic_path(path) as tmp:
        manifest.to_csv(tmp, sep="\t", index=False)
    return path


def _read_preprocessed(inputs: Mapping[str, str | os.PathLike]) -> pd.DataFrame:
    from medsegflow.stages.preprocess import read_preprocessed_manifest

    return read_preprocessed_manifest(Path(inputs["preprocessed"]).parent)


def predict_dataset(
    *,
    family: str,
    method: Mapping[str, Any],
    method_name: str,
    inputs: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    splits: Sequence[str] = ("test",),
    shard: Shard | None = None,
) -> pd.DataFrame:
    """Run the predictor of ``family`` (from :data:`medsegflow.methods.FAMILIES`).

    ``inputs`` are the prediction job's named input files, as
    :func:`medsegflow.workflow.predict_inputs` lists them (``preprocessed``: the
    preprocessed ``manifest.tsv``; ``prompts``: a prompt file; family-specific others).
    ``shard=(index, count)`` predicts one shard's cases and writes
    ``out_dir/shards/{index + 1}-of-{count}.tsv`` instead of ``manifest.tsv`` (see the
    module docstring).

    Raises :class:`ConfigError` naming ``methods.<method_name>.family`` for an unknown
    family or one that disagrees with ``method["family"]``, ``ValueError`` for a split
    that is not one of train/val/test or a bad shard, and ``RuntimeError`` when a family
    ignores the shard. Returns the predictor's manifest.
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
    shard = check_shard(shard)
    unsharded = Path(out_dir) / MANIFEST_NAME
    before = unsharded.stat().st_mtime_ns if unsharded.exists() else None
    with predicting_shard(shard):
        manifest = FAMILIES[family](
            method=method,
            method_name=method_name,
            inputs=inputs,
            out_dir=out_dir,
            splits=tuple(splits),
        )
    if shard is not None:
        expected = select_cases(
            _read_preprocessed(inputs), splits, shard, source=inputs["preprocessed"]
        )["case_id"].tolist()
        found = manifest["case_id"].astype(str).tolist()
        path = shard_manifest_path(out_dir, shard)
        if found != expected or not path.is_file():
            if unsharded.exists() and unsharded.stat().st_mtime_ns != before:
                unsharded.unlink()  # not the gathered manifest: keep it from looking done
            raise RuntimeError(
                f"family '{family}' (method {method_name}) does not support sharding: shard "
                f"{shard[0] + 1}-of-{shard[1]} should predict {len(expected)} cases into "
                f"{path}, it predicted {len(found)}; set scale.predict_shards: 1"
            )
        log.info("shard %d-of-%d: %d cases", shard[0] + 1, shard[1], len(found))
    return manifest


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
    with atomic_path(out_path) as tmp:
        gathered.to_csv(tmp, sep="\t", index=False)
    log.info("gathered %d cases from %d shards into %s", len(gathered), len(tables), out_path)
    return gathered
