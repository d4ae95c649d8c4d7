"""One atomic CSV/TSV writer: medsegflow.io.write_csv_atomic."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

import medsegflow
from medsegflow import tables
from medsegflow.io import stale_temporaries, write_csv_atomic

PACKAGE = Path(medsegflow.__file__).parent


def test_result_tables_keep_six_digits_and_empty_nan(tmp_path):
    path = tmp_path / "summary.csv"
    write_csv_atomic(pd.DataFrame({"a": [1 / 3, np.nan], "ok": [True, False]}), path)
    assert path.read_text(encoding="utf-8") == "a,ok\n0.333333,True\n,False\n"
    assert stale_temporaries(path, ".csv") == []


def test_stage_tables_keep_every_digit_with_their_separator_and_nan(tmp_path):
    path = tmp_path / "prompts.tsv"
    write_csv_atomic(
        pd.DataFrame({"x": [1 / 3, np.nan]}), path, sep="\t", na_rep="NaN", float_format=None
    )
    assert pd.read_csv(path, sep="\t")["x"].iloc[0] == 1 / 3
    assert path.read_text(encoding="utf-8").splitlines()[2] == "NaN"


def test_the_tables_module_names_the_same_function():
    assert tables.write_csv_atomic is write_csv_atomic


def test_no_module_writes_a_csv_past_the_one_writer():
    pattern = re.compile(r"with atomic_path\([^\n]*\n[^\n]*\.to_csv\(")
    found = [
        str(path.relative_to(PACKAGE.parent))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "io.py" and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert found == [], "use medsegflow.io.write_csv_atomic: " + ", ".join(found)
