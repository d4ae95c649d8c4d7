"""One prediction job: which method, which inputs, which cases (splits and shard), which seed.

**Shards** (``scale.predict_shards``, Snakemake's ``scattergather: predict``). With
``shard=(index, count)`` a job predicts only the cases of that shard: of the cases of the
predicted splits, in the order of the preprocessed ``manifest.tsv``, shard ``index``
(0-based) holds positions ``index, index + count, index + 2 * count, ...`` (round robin,
so shards get similar mixes of case sizes; the same for every method).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsegflow.datasets.canonical import SPLITS
from medsegflow.errors import ConfigError

Shard = tuple[int, int]
"""``(index, count)``: shard ``index`` (0-based) of ``count``."""


def check_shard(shard: Sequence[int] | None) -> Shard | None:
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


@dataclass(frozen=True)
class PredictJob:
    """Everything a family's predictor gets (``Family.predict(job)``).

    Attributes:
        method: the method's config, complete: validated against its family's schema
            with every default filled in (:func:`medsegflow.families.complete_method`).
        method_name: the method's name (its key under ``methods:``).
        inputs: the job's named input files (``Family.inputs``): ``preprocessed`` (the
            preprocessed ``manifest.tsv``), ``prompts`` (a prompt file) and the family's own.
        out_dir: ``results/predictions/{dataset}/{method}/``.
        splits: the case splits to predict, a subset of train/val/test.
        shard: ``(index, count)`` to predict one shard of those cases, or None.
        seed: the config's ``seed``; every random draw of the job derives from it and the
            case id (:func:`medsegflow.seeding.case_rng`).
    """

    method: Mapping[str, Any]
    method_name: str
    inputs: Mapping[str, str | os.PathLike]
    out_dir: Path
    splits: tuple[str, ...]
    seed: int
    shard: Shard | None = None
    device: str | None = None
    """Torch device of model families (None: CUDA when available, else the CPU)."""

    def __post_init__(self) -> None:
        bad = [s for s in self.splits if s not in SPLITS]
        if bad or not self.splits:
            raise ValueError(f"splits {list(self.splits)} must be a non-empty subset of {SPLITS}")
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        object.__setattr__(self, "splits", tuple(self.splits))
        object.__setattr__(self, "shard", check_shard(self.shard))

    def key(self, name: str) -> str:
        """The dotted config key of one of the method's keys, for messages."""
        return f"methods.{self.method_name}.{name}"

    @property
    def preprocessed_dir(self) -> Path:
        """The preprocessed dataset (the folder of the ``preprocessed`` input)."""
        return Path(self.inputs["preprocessed"]).parent

    def require(self, *names: str, family: str) -> None:
        """:class:`ConfigError` naming the first of ``names`` missing from ``inputs``."""
        for name in names:
            if not self.inputs.get(name):
                raise ConfigError(
                    f"methods.{self.method_name}: the {family} family needs the '{name}' input"
                )
