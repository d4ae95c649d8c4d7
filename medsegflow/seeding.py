"""Seeded random generators that do not depend on the order cases are processed in."""

from __future__ import annotations

import zlib

import numpy as np


def case_rng(seed: int, case_id: str, *streams: str) -> np.random.Generator:
    """A generator for one case, stable across runs, job layouts and Python hash seeds.

    ``streams`` separate independent uses (e.g. ``"prompts"``, ``"box_j20"``) so that adding
    a new random draw in one stage never shifts the numbers of another.
    """
    keys = [zlib.crc32(s.encode()) for s in (case_id, *streams)]
    return np.random.default_rng([int(seed), *keys])
