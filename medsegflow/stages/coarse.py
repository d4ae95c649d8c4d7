"""Coarse masks from saliency maps: ``results/coarse/{dataset}/{cfg}/``.

Reads a saliency folder (``saliency_dir``)::

    maps/{case_id}_label{value}.nii.gz   float32 saliency in [0, 1], preprocessed geometry
    targets.tsv                          case_id, split, z, label, seconds: computed pairs
    manifest.tsv                         case_id, split, n_targets, seconds

and writes (``out_dir``)::

    {case_id}.nii.gz   uint8 labels in the preprocessed image's geometry: the coarse mask
                       of every (z, label) of targets.tsv painted with its label value
    manifest.tsv       case_id, split, n_targets, n_empty, seconds (written last)

Each coarse mask comes from its map slice and the preprocessed image slice
(:func:`~medsegflow.coarse.postprocess.coarse_mask`). Masks of one slice are painted
largest first, so a smaller mask wins where two overlap
(:func:`~medsegflow.prediction.painting.paint_objects`). A (z, label) whose mask is empty
leaves nothing (``n_empty`` counts them). No label file is read: coarse masks use the
image and the text-driven maps only.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from medsegflow.coarse.postprocess import coarse_mask, parse_coarse_config
from medsegflow.datasets.canonical import image_path
from medsegflow.errors import InputError
from medsegflow.io import Volume, read_volume, write_csv_atomic, write_volume
from medsegflow.manifests import read_table
from medsegflow.prediction.painting import ObjectMask, paint_objects
from medsegflow.saliency.maps import (
    SALIENCY_MANIFEST_COLUMNS,
    SALIENCY_TARGET_COLUMNS,
    saliency_map_path,
)

log = logging.getLogger(__name__)

COARSE_COLUMNS = ("case_id", "split", "n_targets", "n_empty", "seconds")
RANGE_TOLERANCE = 1e-3
"""How far outside [0, 1] a saliency value may lie (rounding) before the map is refused."""


def _read_map(path: Path, shape_zyx: tuple[int, ...]) -> np.ndarray:
    """A saliency volume; :class:`InputError` naming it for a wrong shape or value."""
    saliency = read_volume(path).array_zyx
    if saliency.shape != tuple(shape_zyx):
        raise InputError(
            f"{path}: shape {saliency.shape} differs from the preprocessed image's "
            f"{tuple(shape_zyx)}"
        )
    saliency = saliency.astype(np.float32, copy=False)
    if not np.isfinite(saliency).all():
        raise InputError(f"{path}: saliency has NaN or infinite values")
    low, high = float(saliency.min()), float(saliency.max())
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise InputError(f"{path}: saliency spans [{low:.4g}, {high:.4g}], expected [0, 1]")
    return saliency


def make_coarse_masks(
    *,
    saliency_dir: str | os.PathLike,
    preprocessed_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: Mapping[str, Any] | None,
    key_prefix: str,
) -> pd.DataFrame:
    """Coarse masks of every case of the saliency manifest; returns the written manifest.

    ``config`` is the ``coarse:`` block (:func:`~medsegflow.coarse.postprocess.
    parse_coarse_config`, errors name ``<key_prefix>.<key>``). :class:`InputError` names
    the file for a missing map or image, a map of the wrong shape, a value outside
    [0, 1], or a target slice outside the image.
    """
    settings = parse_coarse_config(config, key_prefix)
    saliency_dir, out_dir = Path(saliency_dir), Path(out_dir)
    cases = read_table(saliency_dir / "manifest.tsv", columns=SALIENCY_MANIFEST_COLUMNS)
    targets_path = saliency_dir / "targets.tsv"
    targets = read_table(targets_path, columns=SALIENCY_TARGET_COLUMNS)
    by_case = {case_id: rows for case_id, rows in targets.groupby("case_id", sort=False)}
    empty_rows = targets.iloc[0:0]
    rows: list[dict[str, Any]] = []
    for case in tqdm(cases.to_dict("records"), desc="coarse masks", unit="case"):
        start = time.perf_counter()
        case_id = str(case["case_id"])
        image = read_volume(image_path(preprocessed_dir, case_id), colour="grey")  # one channel
        image_zyx = image.array_zyx
        if image_zyx.dtype != np.uint8:
            raise InputError(
                f"{image_path(preprocessed_dir, case_id)}: preprocessed image is "
                f"{image_zyx.dtype}, expected uint8"
            )
        case_targets = by_case.get(case_id, empty_rows).sort_values(["z", "label"], kind="stable")
        objects: list[ObjectMask] = []
        n_empty = 0
        for label, label_rows in case_targets.groupby("label", sort=True):
            saliency_zyx = _read_map(
                saliency_map_path(saliency_dir, case_id, int(label)), image_zyx.shape
            )
            for z in label_rows["z"].to_numpy(dtype=np.int64):
                if not 0 <= z < image_zyx.shape[0]:
                    raise InputError(
                        f"{targets_path}: case {case_id}, label {label}: z {z} is outside "
                        f"the image's {image_zyx.shape[0]} slices"
                    )
                mask_yx = coarse_mask(saliency_zyx[z], image_zyx[z], settings)
                if not mask_yx.any():
                    n_empty += 1
                    log.info("%s z=%d label %d: empty coarse mask", case_id, z, label)
                    continue
                objects.append(ObjectMask(int(z), int(label), mask_yx, float(mask_yx.sum())))
        label_zyx = paint_objects(image_zyx.shape, objects)
        write_volume(out_dir / f"{case_id}.nii.gz", Volume(label_zyx, image.geometry))
        rows.append(
            {
                "case_id": case_id,
                "split": case["split"],
                "n_targets": len(case_targets),
                "n_empty": n_empty,
                "seconds": round(time.perf_counter() - start, 3),
            }
        )
    manifest = pd.DataFrame(rows, columns=list(COARSE_COLUMNS))
    write_csv_atomic(manifest, out_dir / "manifest.tsv", sep="\t", float_format=None)
    n_targets, n_empty = int(manifest["n_targets"].sum()), int(manifest["n_empty"].sum())
    log.info(
        "coarse masks (%s) of %d cases: %d targets, %d empty (%.1f%%) into %s",
        settings.method,
        len(manifest),
        n_targets,
        n_empty,
        100.0 * n_empty / max(n_targets, 1),
        out_dir,
    )
    if n_empty:
        log.warning("%d of %d targets gave an empty coarse mask (no prompt)", n_empty, n_targets)
    return manifest
