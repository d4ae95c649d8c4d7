"""Conformance tests: MedSegFlow against golden outputs of the authors' official code.

The fixtures live in ``../shared/conformance/`` (one folder per system, each with its README
giving the quirks and tolerances). They are read in place and never copied into the repository.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFORMANCE = REPO.parent / "shared" / "conformance"


@pytest.fixture(scope="session")
def conformance_root() -> Path:
    if not CONFORMANCE.is_dir():
        pytest.fail(
            f"conformance fixtures not found at {CONFORMANCE} (expected ../shared/conformance)"
        )
    return CONFORMANCE
