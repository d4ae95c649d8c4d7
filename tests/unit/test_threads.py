"""One way to set a job's threads: medsegflow.threads.limit_threads."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from medsegflow import threads
from medsegflow.threads import THREAD_VARIABLES, limit_threads

PACKAGE = Path(threads.__file__).parent


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_limit_threads_sets_the_variables_and_torch(monkeypatch, torch_threads):
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    torch.set_num_threads(2)
    limit_threads(1)
    assert all(os.environ[name] == "1" for name in THREAD_VARIABLES)
    assert torch.get_num_threads() == 1


def test_a_thread_variable_the_user_set_wins(monkeypatch, torch_threads):
    for name in THREAD_VARIABLES:
        monkeypatch.setenv(name, "1")
    torch.set_num_threads(2)
    limit_threads(3)
    assert torch.get_num_threads() == 1


def test_zero_threads_is_refused():
    with pytest.raises(ValueError, match="threads must be >= 1"):
        limit_threads(0)


def test_no_module_sets_torch_threads_past_limit_threads():
    calls = [
        f"{path.relative_to(PACKAGE.parent)}:{n}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != Path(threads.__file__)
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bset_num_threads\(", line)
    ]
    assert calls == [], "use medsegflow.threads.limit_threads: " + ", ".join(calls)
