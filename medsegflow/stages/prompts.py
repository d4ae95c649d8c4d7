"""Make a prompt set for a preprocessed dataset: ``results/prompts/{dataset}/{name}/prompts.tsv``.

``prompts.tsv`` has one row per drawn prompt: ``case_id, split, z, label, prompt_id,
repeat, component, x_min, y_min, x_max, y_max, points``.

- ``z``: the axial slice (array axis 0); ``label``: the label value the prompt targets;
- ``prompt_id``: the object within the case (0, 1, ...), shared by its ``repeat`` draws
  (0..repeats-1), which methods combine by voting;
- ``component``: the object's index among the label's 8-connected components on the
  slice (largest first), or -1 for their union;
- ``x_min..y_max``: ``XYXY`` box in pixel coordinates of slice ``z`` (x = column,
  inclusive corners, floats after jitter), ``NaN`` when the prompt has no box;
- ``points``: JSON list of ``[x, y, label]`` pixel indices (label 1 positive,
  0 negative), ``[]`` when the prompt has no point.

Rows come in case order of the preprocessed manifest, then z, then label value, then
component, then repeat.

:func:`make_prompts` draws oracle prompts from the cleaned labels;
:func:`make_mask_prompts` draws them, with the same sampling, from other label volumes
such as text-driven coarse masks (``results/coarse/...``), in the order of their manifest.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from medsegflow.datasets.canonical import label_path, read_label_map
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import atomic_path, read_volume
from medsegflow.prompts.sampling import PROMPT_TYPES, PromptSpec, gt_prompts
from medsegflow.seeding import case_rng
from medsegflow.stages.preprocess import read_preprocessed_manifest, read_table

log = logging.getLogger(__name__)

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
)
PROMPT_SOURCES = ("gt",)
PROMPT_DEFAULTS: dict[str, Any] = {
    "source": "gt",
    "type": "box",
    "jitter": 20,
    "n_positive": 1,
    "n_negative": 0,
    "erosion_px": 2,
    "ring_px": [3, 15],
    "components": "union",
    "repeats": 1,
}
MASK_PROMPT_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in PROMPT_DEFAULTS.items() if k != "source"},
    "jitter": 0,
}
"""Defaults of prompts drawn from coarse masks: the GT keys without ``source``, and no
jitter (MedCLIP-SAMv2 prompts SAM with the coarse mask's tight box)."""
_COUNTS = ("n_positive", "n_negative", "repeats")


def _check_number(key: str, value: Any, *, integer: bool = False) -> None:
    """:class:`ConfigError` naming ``key`` unless ``value`` is a number (integer) >= 0."""
    kinds = int if integer else int | float
    if isinstance(value, bool) or not isinstance(value, kinds) or not value >= 0:
        raise ConfigError(
            f"{key}: {value!r} must be {'an integer' if integer else 'a number'} >= 0"
        )


def parse_prompt_config(prompt: Mapping[str, Any], prompt_name: str) -> dict[str, Any]:
    """Fill defaults (:data:`PROMPT_DEFAULTS`) and check a prompt config.

    ``jitter`` is the largest outward shift per box side in pixels at SAM's 1024 scale.
    Raises :class:`ConfigError` naming ``prompts.<prompt_name>.<key>``.
    """
    return _parse_prompt_keys(prompt, f"prompts.{prompt_name}", PROMPT_DEFAULTS)


def parse_mask_prompt_config(prompt: Mapping[str, Any] | None, key_prefix: str) -> dict[str, Any]:
    """Fill defaults (:data:`MASK_PROMPT_DEFAULTS`) and check the prompt config of prompts
    drawn from (coarse) masks; :class:`ConfigError` naming ``<key_prefix>.<key>``."""
    return _parse_prompt_keys(prompt or {}, key_prefix, MASK_PROMPT_DEFAULTS)


def _parse_prompt_keys(
    prompt: Mapping[str, Any], key: str, defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """``defaults`` updated with ``prompt`` and checked; errors name ``<key>.<name>``."""
    config = dict(defaults)
    for name, value in prompt.items():
        if name not in defaults:
            raise ConfigError(f"{key}.{name}: unknown key; allowed: {', '.join(defaults)}")
        config[name] = value
    if "source" in config and config["source"] not in PROMPT_SOURCES:
        raise ConfigError(f"{key}.source: {config['source']!r} is not one of {PROMPT_SOURCES}")
    if config["type"] not in PROMPT_TYPES:
        raise ConfigError(f"{key}.type: {config['type']!r} is not one of {PROMPT_TYPES}")
    if (
        isinstance(config["jitter"], bool)
        or not isinstance(config["jitter"], int | float)
        or not (config["jitter"] >= 0)
    ):
        raise ConfigError(
            f"{key}.jitter: {config['jitter']!r} must be a number >= 0 (pixels at the 1024 scale)"
        )
    _check_number(f"{key}.erosion_px", config["erosion_px"])
    for name in _COUNTS:
        _check_number(f"{key}.{name}", config[name], integer=True)
    ring = config["ring_px"]
    if not isinstance(ring, list | tuple) or len(ring) != 2:
        raise ConfigError(f"{key}.ring_px: {ring!r} must be [inner, outer] in pixels")
    for value in ring:
        _check_number(f"{key}.ring_px", value)
    try:
        PromptSpec.from_config(config)
    except ValueError as err:
        raise ConfigError(f"{key}: {err}") from None
    return config


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
    return table


def _case_rows(case: Mapping[str, Any], label_zyx: np.ndarray, **kwargs: Any) -> list[dict]:
    """The prompt rows of one case (``kwargs``: ``label_values, spec, rng`` of
    :func:`~medsegflow.prompts.sampling.gt_prompts`)."""
    rows: list[dict[str, Any]] = []
    objects: dict[tuple[int, int, int], int] = {}
    for z, value, prompt in gt_prompts(label_zyx, **kwargs):
        prompt_id = objects.setdefault((z, value, prompt.component), len(objects))
        box = prompt.box_xyxy if prompt.box_xyxy is not None else np.full(4, np.nan)
        rows.append(
            {
                "case_id": case["case_id"],
                "split": case["split"],
                "z": z,
                "label": value,
                "prompt_id": prompt_id,
                "repeat": prompt.repeat,
                "component": prompt.component,
                **dict(zip(BOX_COLUMNS, (float(c) for c in box), strict=True)),
                "points": format_points(prompt.points_xyl),
            }
        )
    return rows


def _write_prompt_table(
    cases: pd.DataFrame,
    *,
    read_labels: Callable[[str], np.ndarray],
    label_values: Callable[[np.ndarray], Sequence[int]],
    spec: PromptSpec,
    seed: int,
    prompt_name: str,
    out_path: str | os.PathLike,
) -> pd.DataFrame:
    """The loop shared by GT and mask prompts: the prompt rows of every case of ``cases``
    (``read_labels(case_id)``: its label volume; ``label_values(volume)``: the values to
    prompt), drawn with ``case_rng(seed, case_id, "prompts", prompt_name)``; writes
    ``out_path`` atomically and returns the table."""
    rows: list[dict[str, Any]] = []
    for case in tqdm(cases.to_dict("records"), desc=f"prompts {prompt_name}", unit="case"):
        case_id = case["case_id"]
        label_zyx = read_labels(case_id)
        case_rows = _case_rows(
            case,
            label_zyx,
            label_values=label_values(label_zyx),
            spec=spec,
            rng=case_rng(seed, case_id, "prompts", prompt_name),
        )
        rows.extend(case_rows)
        if not case_rows:
            log.info("%s: no foreground, no prompts", case_id)
    table = pd.DataFrame(rows, columns=list(PROMPT_COLUMNS))
    table = table.astype({c: np.float64 for c in BOX_COLUMNS})
    with atomic_path(Path(out_path)) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="NaN")
    return table


def _log_prompt_set(
    prompt_name: str, source: str, config: Mapping[str, Any], table: pd.DataFrame, n_cases: int
) -> None:
    log.info(
        "prompt set %s (%s %s, %s, %d repeats): %d prompts, %d objects, %d cases",
        prompt_name,
        source,
        config["type"],
        config["components"],
        config["repeats"],
        len(table),
        table.groupby(["case_id", "prompt_id"]).ngroups if len(table) else 0,
        n_cases,
    )


def make_prompts(
    *,
    preprocessed_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    prompt: Mapping[str, Any],
    seed: int,
    prompt_name: str,
) -> pd.DataFrame:
    """Oracle prompts from the cleaned labels of every case (all splits).

    Prompts of every (slice, label) present, drawn with
    ``case_rng(seed, case_id, "prompts", prompt_name)`` as
    :func:`~medsegflow.prompts.sampling.gt_prompts` describes (a box-only, union,
    single-repeat set gives the boxes of :func:`~medsegflow.prompts.boxes.gt_box_prompts`);
    labels are every non-background value of ``labels.json``. Writes ``out_path``
    atomically and returns the table (as :func:`read_prompts` reads it back).
    """
    config = parse_prompt_config(prompt, prompt_name)
    spec = PromptSpec.from_config(config)
    cases = read_preprocessed_manifest(preprocessed_dir)
    label_values = sorted(v for v in read_label_map(preprocessed_dir).values() if v != 0)
    table = _write_prompt_table(
        cases,
        read_labels=lambda case_id: read_volume(label_path(preprocessed_dir, case_id)).array_zyx,
        label_values=lambda _: label_values,
        spec=spec,
        seed=seed,
        prompt_name=prompt_name,
        out_path=out_path,
    )
    _log_prompt_set(prompt_name, config["source"], config, table, len(cases))
    return table


def make_mask_prompts(
    *,
    mask_dir: str | os.PathLike,
    cases_manifest: str | os.PathLike,
    out_path: str | os.PathLike,
    prompt: Mapping[str, Any] | None,
    seed: int,
    prompt_name: str,
    key_prefix: str | None = None,
) -> pd.DataFrame:
    """Prompts drawn from (coarse) label volumes, in the format of :func:`make_prompts`.

    For every case of ``cases_manifest`` (a TSV with ``case_id, split``: the coarse-mask
    manifest), ``mask_dir/{case_id}.nii.gz`` is read and every (slice, label value)
    present gets its prompts exactly as GT prompts are drawn
    (:func:`~medsegflow.prompts.sampling.gt_prompts`, same keys, defaults
    :data:`MASK_PROMPT_DEFAULTS`: no jitter unless ``jitter`` is set), with
    ``case_rng(seed, case_id, "prompts", prompt_name)``. A (slice, label) whose mask is
    empty gets no prompt. Errors name ``<key_prefix>.<key>`` (default
    ``prompts.<prompt_name>``). Writes ``out_path`` atomically and returns the table.
    """
    config = parse_mask_prompt_config(prompt, key_prefix or f"prompts.{prompt_name}")
    spec = PromptSpec.from_config(config)
    cases = read_table(cases_manifest, columns=("case_id", "split"))

    def read_labels(case_id: str) -> np.ndarray:
        path = Path(mask_dir) / f"{case_id}.nii.gz"
        label_zyx = read_volume(path).array_zyx
        if not np.issubdtype(label_zyx.dtype, np.integer):
            raise InputError(f"{path}: mask volume is {label_zyx.dtype}, expected integer labels")
        return label_zyx

    def present(label_zyx: np.ndarray) -> list[int]:
        return [int(v) for v in np.unique(label_zyx) if v != 0]

    table = _write_prompt_table(
        cases,
        read_labels=read_labels,
        label_values=present,
        spec=spec,
        seed=seed,
        prompt_name=prompt_name,
        out_path=out_path,
    )
    _log_prompt_set(prompt_name, f"masks of {mask_dir}", config, table, len(cases))
    return table
