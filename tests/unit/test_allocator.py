"""glibc malloc thresholds (medsegflow.allocator), checked in fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from medsegflow.allocator import ENV_VARIABLES, THRESHOLD_BYTES

PROBE = """
import json, os
from medsegflow.allocator import ENV_VARIABLES, keep_freed_memory
took = keep_freed_memory()
print(json.dumps({"took": took, "env": {k: os.environ.get(k) for k in ENV_VARIABLES}}))
"""


def probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    clean.pop("MEDSEGFLOW_MALLOC", None)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_thresholds_are_raised_for_the_process_and_its_children():
    result = probe()
    assert result["took"] is True
    assert result["env"] == dict.fromkeys(ENV_VARIABLES, str(THRESHOLD_BYTES))


def test_a_users_thresholds_are_kept():
    result = probe(MALLOC_MMAP_THRESHOLD_="65536")
    assert result["env"]["MALLOC_MMAP_THRESHOLD_"] == "65536"
    assert result["env"]["MALLOC_TRIM_THRESHOLD_"] == str(THRESHOLD_BYTES)


def test_the_opt_out_keeps_glibcs_defaults():
    result = probe(MEDSEGFLOW_MALLOC="default")
    assert result == {"took": False, "env": dict.fromkeys(ENV_VARIABLES)}
