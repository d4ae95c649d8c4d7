"""Preprocess a canonical dataset: intensities to uint8, label cleaning, slice selection.

``results/preprocessed/{dataset}/`` (``out_dir``)::

    images/{case_id}.nii.gz   uint8 0..255 image, geometry of the source image
    labels/{case_id}.nii.gz   cleaned labels (uint8), geometry of the source label
    labels.json               the dataset's label map, copied
    slices.tsv                case_id, split, z, n_foreground, kind (foreground | empty)
    manifest.tsv              one row per case, written last (the file target)
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from medsegflow.datasets.canonical import (
    SPLITS,
    image_path,
    label_path,
    read_cases,
    read_label_map,
)
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import Volume, read_volume, write_csv_atomic, write_text, write_volume
from medsegflow.manifests import MANIFEST_COLUMNS, SLICES_COLUMNS
from medsegflow.preprocess.cleaning import CleaningReport, LabelCleaning, clean_label
from medsegflow.preprocess.intensity import (
    WindowSpec,
    describe_intensity,
    normalise_intensity,
    resolve_window,
)
from medsegflow.preprocess.slices import select_slices
from medsegflow.schema import complete
from medsegflow.seeding import case_rng

log = logging.getLogger(__name__)


def _check_count(key: str, value: Any) -> None:
    """:class:`ConfigError` naming ``key`` unless ``value`` is an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key}: {value!r} must be an integer >= 0")


CLEANING_SCHEMA = "config.schema.yaml#/properties/preprocess/properties/cleaning"


def _cleaning_params(cleaning: Mapping[str, Any] | None) -> dict[str, int]:
    """The cleaning thresholds completed by the config schema (its defaults); unknown keys
    or bad values raise :class:`ConfigError` naming ``preprocess.cleaning.<key>``."""
    return complete(cleaning or {}, CLEANING_SCHEMA, key="preprocess.cleaning")


def _preprocess_case(
    case: Mapping[str, Any],
    *,
    data_dir: Path,
    out_dir: Path,
    window: WindowSpec,
    cleaning: Mapping[str, int],
    n_empty_slices: int,
    seed: int,
) -> tuple[dict[str, Any], list[dict[str, Any]], CleaningReport]:
    """Preprocess one case; returns its manifest row, its slice rows and its cleaning report."""
    case_id = case["case_id"]
    image = read_volume(image_path(data_dir, case_id), colour="rgb")  # RGB stays RGB
    label = read_volume(label_path(data_dir, case_id))
    if label.array_zyx.shape != image.array_zyx.shape[:3]:
        raise InputError(
            f"{label_path(data_dir, case_id)}: label shape (z,y,x)="
            f"{label.array_zyx.shape} differs from the image's "
            f"{image.array_zyx.shape}"
        )
    image_u8 = normalise_intensity(image.array_zyx, modality=case["modality"], window=window)
    cleaned, report = clean_label(label.array_zyx, **cleaning)
    label_dtype = np.uint8 if cleaned.max(initial=0) < 256 else np.uint16
    write_volume(image_path(out_dir, case_id), Volume(image_u8, image.geometry))
    write_volume(label_path(out_dir, case_id), Volume(cleaned.astype(label_dtype), label.geometry))
    chosen = select_slices(cleaned, n_empty=n_empty_slices, rng=case_rng(seed, case_id, "slices"))
    slice_rows = [
        {
            "case_id": case_id,
            "split": case["split"],
            "z": s.z,
            "n_foreground": s.n_foreground,
            "kind": s.kind,
        }
        for s in chosen
    ]
    row = {
        "case_id": case_id,
        "split": case["split"],
        "modality": case["modality"],
        "intensity": describe_intensity(
            modality=case["modality"], window=window, dtype=image.array_zyx.dtype
        ),
        "n_components_removed_3d": report.n_components_removed_3d,
        "n_components_removed_2d": report.n_components_removed_2d,
        "voxels_removed": report.voxels_removed,
    }
    return row, slice_rows, report


def _log_cleaning_totals(totals: Mapping[int, LabelCleaning], label_map: Mapping[str, int]) -> None:
    names = {value: name for name, value in label_map.items()}
    for value in sorted(totals):
        t = totals[value]
        log.info(
            "cleaning removed from label %s (%d): %d 3D + %d 2D components, %d voxels",
            names.get(value, "?"),
            value,
            t.n_components_removed_3d,
            t.n_components_removed_2d,
            t.voxels_removed,
        )


def preprocess_dataset(
    *,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    window: WindowSpec = None,
    cleaning: Mapping[str, Any] | None = None,
    n_empty_slices: int = 2,
    seed: int,
) -> pd.DataFrame:
    """Preprocess every case of the canonical dataset in ``data_dir`` into ``out_dir``.

    Images become ``uint8`` (CT windowed by ``window``; 8-bit rasters - uint8 images of
    any modality but CT and MR, grey or RGB - unchanged; the others by foreground
    percentiles, see :func:`~medsegflow.preprocess.intensity.normalise_intensity`);
    labels are cleaned with ``cleaning`` (keys ``min_voxels_3d``, default 1000, and
    ``min_pixels_2d``, default 100; 0 disables); the slices of every case are selected
    with ``n_empty_slices`` random empty slices drawn from
    ``case_rng(seed, case_id, "slices")``. Every file keeps its source geometry and is
    written atomically, ``manifest.tsv`` last. Returns the manifest.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    params = _cleaning_params(cleaning)
    _check_count("preprocess.n_empty_slices", n_empty_slices)
    try:
        resolve_window(window)
    except ConfigError as err:
        raise ConfigError(f"datasets.{data_dir.name}.window: {err}") from None
    cases = read_cases(data_dir)
    label_map = read_label_map(data_dir)
    rows: list[dict[str, Any]] = []
    slice_rows: list[dict[str, Any]] = []
    totals: dict[int, LabelCleaning] = {}
    for case in tqdm(cases.to_dict("records"), desc="preprocess", unit="case"):
        start = time.perf_counter()
        row, case_slices, report = _preprocess_case(
            case,
            data_dir=data_dir,
            out_dir=out_dir,
            window=window,
            cleaning=params,
            n_empty_slices=n_empty_slices,
            seed=seed,
        )
        rows.append(row)
        slice_rows.extend(case_slices)
        for value, counts in report.per_label.items():
            totals.setdefault(value, LabelCleaning()).add(counts)
        log.info(
            "%s: %s, %d slices selected, cleaning removed %d voxels, %.2f s",
            row["case_id"],
            row["intensity"],
            len(case_slices),
            report.voxels_removed,
            time.perf_counter() - start,
        )
    _log_cleaning_totals(totals, label_map)
    return _write_tables(out_dir, label_map=label_map, rows=rows, slice_rows=slice_rows)


def _write_tables(
    out_dir: Path,
    *,
    label_map: Mapping[str, int],
    rows: list[dict[str, Any]],
    slice_rows: list[dict[str, Any]],
) -> pd.DataFrame:
    """Write ``labels.json``, ``slices.tsv`` and, last, ``manifest.tsv``; return the manifest."""
    write_text(out_dir / "labels.json", json.dumps(dict(label_map), indent=2) + "\n")
    write_csv_atomic(
        pd.DataFrame(slice_rows, columns=list(SLICES_COLUMNS)),
        out_dir / "slices.tsv",
        sep="\t",
        float_format=None,
    )
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    write_csv_atomic(manifest, out_dir / "manifest.tsv", sep="\t", float_format=None)
    splits = manifest["split"].value_counts().reindex(list(SPLITS), fill_value=0).to_dict()
    log.info("preprocessed %d cases into %s (%s)", len(manifest), out_dir, splits)
    return manifest
