"""Prompt-robustness curves of one (dataset, SAM model): ``results/robustness/{d}/{m}.csv``.

Loads the model once and reads the cached image embeddings of the scored splits; every
curve of :mod:`medsegflow.robustness` decodes on them (the encoder never runs here).
Writes the per-case rows (:data:`~medsegflow.robustness.CURVE_COLUMNS`) atomically;
:func:`write_robustness_table` gathers them into ``results/tables/robustness.csv``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from medsegflow.datasets.canonical import read_label_map
from medsegflow.errors import InputError
from medsegflow.io import read_volume
from medsegflow.manifests import read_table
from medsegflow.promptable.predict2d import load_cached_model, load_checked_embeddings
from medsegflow.robustness import (
    CURVE_COLUMNS,
    TABLE_COLUMNS,
    RobustnessGrid,
    case_curves,
    summarise_curves,
)
from medsegflow.tables import write_csv_atomic
from medsegflow.threads import limit_threads

log = logging.getLogger(__name__)


def robustness_curves(
    *,
    dataset: str,
    model: str,
    preprocessed_manifest: str | os.PathLike,
    inputs: Mapping[str, str],
    splits: Sequence[str],
    grid: Mapping[str, Any],
    seed: int,
    out_csv: str | os.PathLike,
    threads: int | None = None,
    device: str | None = None,
) -> pd.DataFrame:
    """Every curve on every case of ``splits`` (the first ``grid["max_cases"]`` when set);
    returns the summary (:data:`~medsegflow.robustness.TABLE_COLUMNS`).

    ``inputs``: ``embeddings`` (the cache's manifest) and ``checkpoint``; the model is
    built by the promptable family the cache names
    (:func:`medsegflow.promptable.predict2d.load_cached_model`) and decodes in the
    precision of the cache's encoder, as the prediction jobs do.
    """
    if threads:
        limit_threads(int(threads))
    pre_dir = Path(preprocessed_manifest).parent
    cases = read_table(preprocessed_manifest, columns=("case_id", "split"))
    cases = cases[cases["split"].isin(list(splits))]
    if grid.get("max_cases"):
        cases = cases.head(int(grid["max_cases"]))
    label_map = read_label_map(pre_dir)
    values = sorted(v for v in label_map.values() if v != 0)
    loaded = load_cached_model(inputs, device=device)
    spec = RobustnessGrid.from_config(grid)
    frames = []
    start = time.perf_counter()
    for case_id in tqdm(cases["case_id"], desc=f"robustness {dataset}/{model}", unit="case"):
        label = read_volume(pre_dir / "labels" / f"{case_id}.nii.gz").array_zyx
        cached = load_checked_embeddings(
            loaded.embeddings_dir, case_id, model=loaded.model, shape_zyx=label.shape
        )
        rows, _ = case_curves(
            loaded.model,
            cached,
            label,
            case_id=case_id,
            label_values=values,
            grid=spec,
            seed=seed,
            name=model,
        )
        frames.append(rows)
    per_case = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    per_case = per_case.reindex(columns=list(CURVE_COLUMNS))
    write_csv_atomic(per_case, out_csv)
    summary = summarise_curves(per_case, dataset=dataset, model=model)
    jitter = summary[summary["curve"] == "box_jitter"].set_index("x")["dsc"].round(3).to_dict()
    noc = summary[summary["curve"] == "noc"].set_index("x")["noc"].round(2).to_dict()
    log.info(
        "%s/%s: %d cases in %.1f s; DSC by box jitter %s; NoC %s",
        dataset,
        model,
        len(cases),
        time.perf_counter() - start,
        jitter,
        noc,
    )
    return summary


def robustness_table(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """``results/tables/robustness.csv`` from the per-(dataset, model) files
    (``results/robustness/{dataset}/{model}.csv``); no file gives an empty table."""
    frames = []
    for path in paths:
        path = Path(path)
        per_case = pd.read_csv(path, dtype={"case_id": str})
        missing = set(CURVE_COLUMNS) - set(per_case.columns)
        if missing:
            raise InputError(f"{path}: not a robustness file, no columns {sorted(missing)}")
        frames.append(summarise_curves(per_case, dataset=path.parent.name, model=path.stem))
    if not frames:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def write_robustness_table(
    paths: Sequence[str | os.PathLike], out_csv: str | os.PathLike
) -> pd.DataFrame:
    table = robustness_table(paths)
    write_csv_atomic(table, out_csv)
    log.info("robustness.csv: %d rows from %d files", len(table), len(paths))
    return table
