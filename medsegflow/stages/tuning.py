"""Validation-only tuning of a text-driven method: ``results/tuning/{dataset}/{method}/``.

MedCLIP-SAMv2 chooses the M2IB layer and bottleneck settings (and the post-processing)
per dataset. Here the search over a ``tune.grid`` of ``saliency.*`` and ``coarse.*``
values runs on the VALIDATION split only: saliency maps and coarse masks of the val
cases for every grid point, scored by the mean DSC of the coarse masks against the
cleaned val labels. Only val-split images and labels are read; the test split's labels
never are (tests/unit/test_tuning.py deletes them and tunes anyway).

Written (``out_dir``)::

    tuning.csv    one row per grid point: its values, mean DSC, number of scored objects
    chosen.json   {"saliency": {...}, "coarse": {...}, "dsc": ..., "n_val_cases": ...}
                  (written last: the file target the test-split run reads)

Grid points are scored in grid order; ties keep the first. Saliency is computed once
per distinct ``saliency.*`` combination and post-processed for every ``coarse.*`` one.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsegflow.clip.bundle import ClipBundle
from medsegflow.datasets.canonical import label_path
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import read_volume, write_csv_atomic, write_text
from medsegflow.manifests import read_preprocessed_manifest
from medsegflow.saliency.m2ib import M2IBParams
from medsegflow.stages.coarse import make_coarse_masks
from medsegflow.stages.saliency import compute_saliency

log = logging.getLogger(__name__)

TUNING_SPLIT = "val"
GROUPS = ("saliency", "coarse")


def grid_points(grid: Mapping[str, Sequence[Any]], key: str) -> list[dict[str, dict[str, Any]]]:
    """Every combination of ``grid`` (``{"saliency.vlayer": [7, 9], ...}``) as
    ``{"saliency": {...}, "coarse": {...}}``, saliency keys varying slowest."""
    for name in grid:
        if name.split(".", 1)[0] not in GROUPS or "." not in name:
            raise ConfigError(f"{key}.{name}: tuning varies saliency.<key> or coarse.<key> only")
    keys = sorted(grid, key=lambda k: (GROUPS.index(k.split(".", 1)[0]), k))
    for name in keys:
        if not isinstance(grid[name], list | tuple) or not grid[name]:
            raise ConfigError(f"{key}.{name}: must be a non-empty list of values")
    points = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}
        for name, value in zip(keys, values, strict=True):
            group, param = name.split(".", 1)
            point[group][param] = value
        points.append(point)
    return points


def dice_by_object(
    *, coarse_dir: Path, preprocessed_dir: Path, targets: pd.DataFrame
) -> list[float]:
    """DSC of every (case, label) of ``targets`` over its target slices, against the
    cleaned label (empty vs empty counts as 1)."""
    scores = []
    for (case_id, label), rows in targets.groupby(["case_id", "label"], sort=True):
        z = rows["z"].to_numpy(dtype=np.int64)
        pred = read_volume(coarse_dir / f"{case_id}.nii.gz").array_zyx[z] == label
        ref = read_volume(label_path(preprocessed_dir, str(case_id))).array_zyx[z] == label
        total = int(pred.sum()) + int(ref.sum())
        scores.append(1.0 if total == 0 else 2.0 * int((pred & ref).sum()) / total)
    return scores


def tune_text_method(
    *,
    preprocessed_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    bundle: ClipBundle,
    texts: Mapping[str, Mapping[int, Sequence[str]]],
    method: Mapping[str, Any],
    method_name: str,
    seed: int,
) -> dict[str, Any]:
    """Search ``method["tune"]["grid"]`` on the val split; write ``tuning.csv`` and
    ``chosen.json`` into ``out_dir``; return the chosen values.

    Grid values override the method's own ``saliency:`` and ``coarse:`` blocks.
    :class:`InputError` names the preprocessed manifest when it has no val case.
    """
    preprocessed_dir, out_dir = Path(preprocessed_dir), Path(out_dir)
    key = f"methods.{method_name}.tune.grid"
    points = grid_points(method["tune"]["grid"], key)
    val_cases = read_preprocessed_manifest(preprocessed_dir, splits=(TUNING_SPLIT,))
    if val_cases.empty:
        raise InputError(
            f"{preprocessed_dir / 'manifest.tsv'}: no {TUNING_SPLIT} case to tune "
            f"methods.{method_name} on"
        )
    val_texts = {c: texts[c] for c in val_cases["case_id"].astype(str)}
    work = out_dir / "work"
    shutil.rmtree(work, ignore_errors=True)
    rows: list[dict[str, Any]] = []
    saliency_done: dict[str, Path] = {}
    for index, point in enumerate(points):
        start = time.perf_counter()
        saliency = {**(method.get("saliency") or {}), **point["saliency"]}
        coarse = {**(method.get("coarse") or {}), **point["coarse"]}
        sal_key = json.dumps(saliency, sort_keys=True)
        if sal_key not in saliency_done:
            sal_dir = work / f"saliency_{len(saliency_done)}"
            compute_saliency(
                preprocessed_dir=preprocessed_dir,
                out_dir=sal_dir,
                bundle=bundle,
                texts=val_texts,
                params=M2IBParams.from_config(
                    saliency, key_prefix=f"methods.{method_name}.saliency"
                ),
                splits=(TUNING_SPLIT,),
                slice_mode=method.get("slice_mode", "labelled"),
                seed=seed,
                key_prefix=f"methods.{method_name}.saliency",
            )
            saliency_done[sal_key] = sal_dir
        sal_dir = saliency_done[sal_key]
        coarse_dir = work / f"coarse_{index}"
        make_coarse_masks(
            saliency_dir=sal_dir,
            preprocessed_dir=preprocessed_dir,
            out_dir=coarse_dir,
            config=coarse,
            key_prefix=f"methods.{method_name}.coarse",
        )
        targets = pd.read_csv(sal_dir / "targets.tsv", sep="\t", dtype={"case_id": str})
        scores = dice_by_object(
            coarse_dir=coarse_dir, preprocessed_dir=preprocessed_dir, targets=targets
        )
        dsc = float(np.mean(scores)) if scores else float("nan")
        rows.append(
            {
                **{f"saliency.{k}": v for k, v in point["saliency"].items()},
                **{f"coarse.{k}": v for k, v in point["coarse"].items()},
                "dsc": dsc,
                "n_objects": len(scores),
            }
        )
        log.info(
            "grid point %d/%d %s: val DSC %.4f over %d objects (%.1f s)",
            index + 1,
            len(points),
            point,
            dsc,
            len(scores),
            time.perf_counter() - start,
        )
    table = pd.DataFrame(rows)
    finite = table["dsc"].fillna(-1.0).to_numpy()
    best = int(np.argmax(finite))  # first of the ties
    chosen = {
        "saliency": points[best]["saliency"],
        "coarse": points[best]["coarse"],
        "dsc": rows[best]["dsc"],
        "n_val_cases": len(val_cases),
        "split": TUNING_SPLIT,
    }
    write_csv_atomic(table, out_dir / "tuning.csv", float_format=None)
    write_text(out_dir / "chosen.json", json.dumps(chosen, indent=2, default=float) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    log.info("chose %s (val DSC %.4f)", points[best], rows[best]["dsc"])
    return chosen


def apply_chosen(
    method: Mapping[str, Any], chosen_path: str | os.PathLike | None
) -> dict[str, Any]:
    """``method`` with the ``saliency``/``coarse`` values of a ``chosen.json`` applied."""
    updated = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in method.items()}
    if not chosen_path:
        return updated
    chosen = json.loads(Path(chosen_path).read_text(encoding="utf-8"))
    for group in GROUPS:
        updated[group] = {**(updated.get(group) or {}), **(chosen.get(group) or {})}
    return updated
