"""nnU-Net dataset ids and names, derived from the config (no heavy imports).

A converted dataset is one (canonical dataset, label source) pair. The label source is
``gt`` (the dataset's own labels) or the name of a method whose train/val predictions
replace them (``labels_from``). Its nnU-Net id is a deterministic hash of the pair into
:data:`ID_RANGE`, so it is stable across runs and machines and never depends on which
other datasets a config lists; two pairs of one config that hash to the same id are an
error (:func:`check_unique_ids`) naming both.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from medsegflow.errors import ConfigError

GT_LABELS = "gt"
"""Label source meaning the canonical dataset's own (ground-truth) labels."""

ID_RANGE = (100, 999)
"""Inclusive range of generated ids: nnU-Net reads ids as exactly three digits."""


def label_source(method: Mapping[str, Any]) -> str:
    """The label source of an ``nnunet`` method: its ``labels_from`` method, or ``gt``."""
    return str(method.get("labels_from") or GT_LABELS)


def dataset_id(dataset: str, labels: str) -> int:
    """nnU-Net id of (``dataset``, ``labels``): CRC-32 of the pair folded into :data:`ID_RANGE`."""
    low, high = ID_RANGE
    return low + zlib.crc32(f"{dataset}\x00{labels}".encode()) % (high - low + 1)


def dataset_name(dataset: str, labels: str) -> str:
    """nnU-Net folder name, e.g. ``Dataset417_phantom_us__gt``."""
    return f"Dataset{dataset_id(dataset, labels):03d}_{dataset}__{labels}"


def check_unique_ids(pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """``{(dataset, labels): id}``; :class:`ConfigError` naming both pairs when two ids collide."""
    ids: dict[tuple[str, str], int] = {}
    owner: dict[int, tuple[str, str]] = {}
    for pair in dict.fromkeys(pairs):
        number = dataset_id(*pair)
        if number in owner:
            first = owner[number]
            raise ConfigError(
                f"nnU-Net dataset id {number} is derived from both datasets.{first[0]} with "
                f"labels '{first[1]}' and datasets.{pair[0]} with labels '{pair[1]}'; "
                "rename one of them"
            )
        owner[number] = pair
        ids[pair] = number
    return ids
