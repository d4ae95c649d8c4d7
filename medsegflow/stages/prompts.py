"""Make a prompt set for a preprocessed dataset: ``results/prompts/{dataset}/{name}/prompts.tsv``.

``prompts.tsv`` has one row per box prompt: ``case_id, split, z, label, x_min, y_min,
x_max, y_max``; the box is ``XYXY`` in pixel coordinates of axial slice ``z`` (x =
column, inclusive corners, floats after jitter). Rows come in case order of the
preprocessed manifest, then z, then label value.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from medsegflow.datasets.canonical import label_path, read_label_map
from medsegflow.errors import ConfigError
from medsegflow.io import atomic_path, read_volume
from medsegflow.prompts.boxes import gt_box_prompts
from medsegflow.seeding import case_rng
from medsegflow.stages.preprocess import read_preprocessed_manifest, read_table

log = logging.getLogger(__name__)

PROMPT_COLUMNS = ("case_id", "split", "z", "label", "x_min", "y_min", "x_max", "y_max")
PROMPT_SOURCES = ("gt",)
PROMPT_TYPES = ("box",)
PROMPT_DEFAULTS: dict[str, Any] = {"source": "gt", "type": "box", "jitter": 20}


def parse_prompt_config(prompt: Mapping[str, Any], prompt_name: str) -> dict[str, Any]:
    """Fill defaults (source ``gt``, type ``box``, jitter 20) and check a prompt config.

    ``jitter`` is the largest outward shift per box side in pixels at SAM's 1024 scale.
    Raises :class:`ConfigError` naming ``prompts.<prompt_name>.<key>``.
    """
    config = dict(PROMPT_DEFAULTS)
    for key, value in prompt.items():
        if key not in PROMPT_DEFAULTS:
            raise ConfigError(
                f"prompts.{prompt_name}.{key}: unknown key; allowed: {', '.join(PROMPT_DEFAULTS)}"
            )
        config[key] = value
    if config["source"] not in PROMPT_SOURCES:
        raise ConfigError(
            f"prompts.{prompt_name}.source: {config['source']!r} is not one of {PROMPT_SOURCES}"
        )
    if config["type"] not in PROMPT_TYPES:
        raise ConfigError(
            f"prompts.{prompt_name}.type: {config['type']!r} is not one of {PROMPT_TYPES}"
        )
    jitter = config["jitter"]
    if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not jitter >= 0:
        raise ConfigError(
            f"prompts.{prompt_name}.jitter: {jitter!r} must be a number >= 0 "
            "(pixels at the 1024 scale)"
        )
    return config


def read_prompts(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``prompts.tsv`` (case ids as strings); :class:`InputError` naming the file
    when it is missing or lacks a column."""
    return read_table(path, columns=PROMPT_COLUMNS)


def make_prompts(
    *,
    preprocessed_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    prompt: Mapping[str, Any],
    seed: int,
    prompt_name: str,
) -> pd.DataFrame:
    """Oracle box prompts from the cleaned labels of every case (all splits).

    One box per (slice, label) present, jittered with
    ``case_rng(seed, case_id, "prompts", prompt_name)`` (see
    :func:`~medsegflow.prompts.boxes.gt_box_prompts`); labels are every non-background
    value of ``labels.json``. Writes ``out_path`` atomically and returns the table.
    """
    config = parse_prompt_config(prompt, prompt_name)
    cases = read_preprocessed_manifest(preprocessed_dir)
    label_values = sorted(v for v in read_label_map(preprocessed_dir).values() if v != 0)
    rows: list[dict[str, Any]] = []
    for case in tqdm(cases.to_dict("records"), desc=f"prompts {prompt_name}", unit="case"):
        case_id = case["case_id"]
        label = read_volume(label_path(preprocessed_dir, case_id))
        boxes = gt_box_prompts(
            label.array_zyx,
            label_values=label_values,
            max_shift_1024=config["jitter"],
            rng=case_rng(seed, case_id, "prompts", prompt_name),
        )
        rows.extend({"case_id": case_id, "split": case["split"], **asdict(b)} for b in boxes)
        if not boxes:
            log.info("%s: no foreground, no prompts", case_id)
    table = pd.DataFrame(rows, columns=list(PROMPT_COLUMNS))
    with atomic_path(Path(out_path)) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    log.info(
        "prompt set %s (%s %s, jitter %g): %d boxes for %d cases",
        prompt_name,
        config["source"],
        config["type"],
        config["jitter"],
        len(table),
        len(cases),
    )
    return table
