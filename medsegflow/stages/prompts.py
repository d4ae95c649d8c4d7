"""Make a prompt set for a preprocessed dataset: ``results/prompts/{dataset}/{name}/prompts.tsv``.

``prompts.tsv`` has one row per drawn prompt: ``case_id, split, z, label, prompt_id,
repeat, component, x_min, y_min, x_max, y_max, points, z_min, z_max``.

- ``z``: the axial slice (array axis 0); ``label``: the label value the prompt targets;
- ``prompt_id``: the object within the case (0, 1, ...), shared by its ``repeat`` draws
  (0..repeats-1), which methods combine by voting;
- ``component``: the object's index among the label's 8-connected components on the
  slice (largest first), or -1 for their union;
- ``x_min..y_max``: ``XYXY`` box in pixel coordinates of slice ``z`` (x = column,
  inclusive corners, floats after jitter), ``NaN`` when the prompt has no box;
- ``points``: JSON list of ``[x, y, label]`` pixel indices (label 1 positive,
  0 negative), ``[]`` when the prompt has no point;
- ``z_min, z_max``: the inclusive slice range the prompt covers: ``z`` itself for a
  prompt of one slice; for a ``box3d`` prompt (one 3D box per object, LiteMedSAM's 3D
  protocol) the object's z extent, with ``z`` its key slice (``key_slice`` of the prompt
  set: its middle slice, LiteMedSAM's, or its largest one);
- ``key_slice`` (box3d sets only): how ``z`` was chosen, ``reference_middle`` or
  ``reference_largest``: from the reference, an oracle like the box itself.

Rows come in case order of the preprocessed manifest, then z, then label value, then
component, then repeat.

:func:`make_prompts` draws oracle prompts from the cleaned labels;
:func:`make_mask_prompts` draws them, with the same sampling, from other label volumes
such as text-driven coarse masks (``results/coarse/...``), in the order of their manifest.
"""

from __future__ import annotations

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
from medsegflow.io import read_volume, write_csv_atomic
from medsegflow.manifests import (
    BOX_COLUMNS,
    PROMPT_COLUMNS,
    format_points,
    read_preprocessed_manifest,
    read_table,
)
from medsegflow.prompts.sampling import PromptSpec, gt_prompts
from medsegflow.schema import complete
from medsegflow.seeding import case_rng

log = logging.getLogger(__name__)

GT_PROMPT_SCHEMA = "common.schema.yaml#/$defs/gt_prompt"
KEY_SLICE_SOURCE = "reference_{}"
"""The ``key_slice`` column of a box3d set: the rule, applied to the reference."""
MASK_PROMPT_SCHEMA = "common.schema.yaml#/$defs/mask_prompt"


def parse_prompt_config(prompt: Mapping[str, Any], prompt_name: str) -> dict[str, Any]:
    """A ``prompts:`` entry completed by its schema (:data:`GT_PROMPT_SCHEMA`, which holds
    the defaults) and checked; :class:`ConfigError` naming ``prompts.<prompt_name>.<key>``.

    ``jitter`` is the largest outward shift per box side in pixels at SAM's 1024 scale.
    """
    key = f"prompts.{prompt_name}"
    return _checked(complete(prompt, GT_PROMPT_SCHEMA, key=key), key)


def parse_mask_prompt_config(prompt: Mapping[str, Any] | None, key_prefix: str) -> dict[str, Any]:
    """The prompt config of prompts drawn from (coarse) masks, completed by its schema
    (:data:`MASK_PROMPT_SCHEMA`: no jitter by default); errors name ``<key_prefix>.<key>``."""
    return _checked(complete(prompt or {}, MASK_PROMPT_SCHEMA, key=key_prefix), key_prefix)


def _checked(config: dict[str, Any], key: str) -> dict[str, Any]:
    """``config`` once the sampling accepts it (the checks the schema cannot state)."""
    try:
        PromptSpec.from_config(config)
    except ValueError as err:
        raise ConfigError(f"{key}: {err}") from None
    return config


def _case_rows(case: Mapping[str, Any], label_zyx: np.ndarray, **kwargs: Any) -> list[dict]:
    """The prompt rows of one case (``kwargs``: ``label_values, spec, rng`` of
    :func:`~medsegflow.prompts.sampling.gt_prompts`)."""
    rows: list[dict[str, Any]] = []
    objects: dict[tuple[int, int, int], int] = {}
    for z, value, prompt in gt_prompts(label_zyx, **kwargs):
        prompt_id = objects.setdefault((z, value, prompt.component), len(objects))
        box = prompt.box_xyxy if prompt.box_xyxy is not None else np.full(4, np.nan)
        z_min, z_max = prompt.z_range if prompt.z_range is not None else (z, z)
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
                "z_min": z_min,
                "z_max": z_max,
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
    if spec.type == "box3d":  # the key slice was chosen from the reference: an oracle
        table["key_slice"] = KEY_SLICE_SOURCE.format(spec.key_slice)
    write_csv_atomic(table, Path(out_path), sep="\t", na_rep="NaN", float_format=None)
    return table


def _log_prompt_set(
    prompt_name: str, source: str, config: Mapping[str, Any], table: pd.DataFrame, n_cases: int
) -> None:
    kind = config["type"]
    if kind == "box3d":
        kind += f", key slice {KEY_SLICE_SOURCE.format(config.get('key_slice', 'middle'))}"
    log.info(
        "prompt set %s (%s %s, %s, %d repeats): %d prompts, %d objects, %d cases",
        prompt_name,
        source,
        kind,
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
    :data:`MASK_PROMPT_SCHEMA`: no jitter unless ``jitter`` is set), with
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
