"""Readers of the tables that stages write, shared by every later stage.

- ``results/preprocessed/{dataset}/manifest.tsv`` (:data:`MANIFEST_COLUMNS`) and
  ``slices.tsv`` (:data:`SLICES_COLUMNS`), written by :mod:`medsegflow.stages.preprocess`;
- ``prompts.tsv`` of a prompt set (:data:`PROMPT_COLUMNS`), written by
  :mod:`medsegflow.stages.prompts`, which documents its columns;
- the preprocessed ``uint8`` images (:func:`read_preprocessed_image`).

Each reader raises :class:`~medsegflow.errors.InputError` naming the file when it is
missing, lacks a column or holds a malformed value.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medsegflow.errors import InputError
from medsegflow.io import Volume, read_volume

MANIFEST_COLUMNS = (
    "case_id",
    "split",
    "modality",
    "intensity",
    "n_components_removed_3d",
    "n_components_removed_2d",
    "voxels_removed",
)
SLICES_COLUMNS = ("case_id", "split", "z", "n_foreground", "kind")
BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")
PROMPT_COLUMNS = (
    "case_id",
    "split",
    "z",
    "label",
    "prompt_id",
    "repeat",
    "component",
    *BOX_COLUMNS,
    "points",
    "z_min",
    "z_max",
)


def read_table(path: str | os.PathLike, *, columns: Sequence[str]) -> pd.DataFrame:
    """Read a stage's TSV with ``case_id`` as strings; :class:`InputError` naming the file
    when it is missing or lacks one of ``columns``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    table = pd.read_csv(path, sep="\t", dtype={"case_id": str}, keep_default_na=False)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(
            f"{path}: missing columns {missing} (a file of an older version? remove it and "
            "run again to remake it)"
        )
    return table


def read_preprocessed_manifest(
    preprocessed_dir: str | os.PathLike, *, splits: Sequence[str] | None = None
) -> pd.DataFrame:
    """The ``manifest.tsv`` of a preprocessed dataset, optionally only rows of ``splits``."""
    table = read_table(Path(preprocessed_dir) / "manifest.tsv", columns=MANIFEST_COLUMNS)
    if splits is not None:
        table = table[table["split"].isin(list(splits))].reset_index(drop=True)
    return table


def format_points(points_xyl: np.ndarray) -> str:
    """JSON text of ``[x, y, label]`` rows, e.g. ``[[12, 30, 1], [40, 5, 0]]``."""
    return json.dumps(np.asarray(points_xyl, dtype=np.int64).reshape(-1, 3).tolist())


def parse_points(text: str, *, source: str = "prompts") -> np.ndarray:
    """int64 ``(N, 3)`` ``[x, y, label]`` from :func:`format_points` text; :class:`InputError`
    naming ``source`` when it is not such a list."""
    try:
        points = np.asarray(json.loads(text) if text else [], dtype=np.int64).reshape(-1, 3)
    except (ValueError, TypeError):
        raise InputError(f"{source}: points {text!r} is not a JSON list of [x, y, label]") from None
    if points.size and not np.isin(points[:, 2], (0, 1)).all():
        raise InputError(f"{source}: points {text!r} has a label other than 0 or 1")
    return points


def read_prompts(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``prompts.tsv``: case ids as strings, box columns as float64 (NaN: no box),
    ``points`` as JSON text (see :func:`parse_points`). :class:`InputError` naming the
    file when it is missing, lacks a column, or has a non-numeric box value."""
    table = read_table(path, columns=PROMPT_COLUMNS)
    for column in BOX_COLUMNS:
        try:
            values = table[column]
            if not pd.api.types.is_numeric_dtype(values):
                values = values.astype(str).str.strip().replace("", "nan")
            table[column] = values.astype(np.float64)
        except (ValueError, TypeError):
            raise InputError(
                f"{path}: column {column} holds a value that is not a number"
            ) from None
    table["points"] = table["points"].astype(str)
    if table.empty:
        return table.astype({"z": np.int64, "z_min": np.int64, "z_max": np.int64})
    for column in ("z", "z_min", "z_max"):
        if len(table) and not pd.api.types.is_integer_dtype(table[column]):
            raise InputError(f"{path}: column {column} holds a value that is not an integer")
    bad = table[(table["z_min"] > table["z"]) | (table["z"] > table["z_max"])]
    if len(bad):
        row = bad.iloc[0]
        raise InputError(
            f"{path}: case {row['case_id']}: z {row['z']} is outside its range "
            f"{row['z_min']}..{row['z_max']}"
        )
    return table


def read_preprocessed_image(path: str | os.PathLike, *, colour: str = "error") -> Volume:
    """A preprocessed image (``images/{case_id}.nii.gz``); :class:`InputError` naming the
    file when it is unreadable or not ``uint8``. ``colour``: what the caller does with a
    colour (RGB) image, ``"rgb"`` (keep it, ``(Z, Y, X, 3)``) or ``"grey"`` (one channel),
    see :func:`medsegflow.io.read_volume`."""
    image = read_volume(path, colour=colour)
    if image.array_zyx.dtype != np.uint8:
        raise InputError(f"{path}: preprocessed image is {image.array_zyx.dtype}, expected uint8")
    return image
