"""The workflow reads no Snakemake internals: the command line's overrides come through
public API (the `config` dict before the configfile directive, the `scatter` functions),
not through the `workflow` object's settings (`workflow.overwrite_*`, `*_settings`)."""

from __future__ import annotations

import re

INTERNAL = re.compile(r"(?<![\w.])workflow\.(overwrite_\w+|\w+_settings\b|_\w+)")


def test_no_snakemake_workflow_internals(repo_root):
    files = [repo_root / "Snakefile", *sorted((repo_root / "rules").glob("*.smk"))]
    found = [
        f"{path.relative_to(repo_root)}:{n}: {line.strip()}"
        for path in files
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if INTERNAL.search(line.split("#")[0])
    ]
    assert found == [], "\n".join(found)
