from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real fixtures not found at {SHARED_DATA} (expected ../shared/data)")
    return SHARED_DATA


class Snakemake:
    """Runs the repository's workflow (``-s Snakefile``) in a work folder, as the user would.

    ``snakemake(args, cwd=..., config=...)`` returns the ``CompletedProcess`` (text).
    ``config`` is a dict (written to ``cwd/config.yaml``) or a path; either way
    ``--configfile`` goes last, since it takes several values. ``cores`` adds ``--cores``
    (``None``: not at all, e.g. with a profile). ``env`` adds environment variables.
    ``check=True`` asserts success and shows the output's tail otherwise.
    """

    executable = str(Path(sys.executable).with_name("snakemake"))

    def command(self, args=(), *, cwd: Path, config=None, cores: int | None = 2) -> list[str]:
        cmd = [self.executable, "-s", str(REPO / "Snakefile"), *map(str, args)]
        if cores is not None and "--cores" not in cmd:
            cmd += ["--cores", str(cores)]
        if isinstance(config, dict):
            (Path(cwd) / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
            config = "config.yaml"
        if config is not None:
            cmd += ["--configfile", str(config)]
        return cmd

    def __call__(
        self,
        args=(),
        *,
        cwd: Path,
        config=None,
        cores: int | None = 2,
        env: dict | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess:
        cmd = self.command(args, cwd=cwd, config=config, cores=cores)
        result = subprocess.run(
            cmd,
            cwd=cwd,
            env={**os.environ, **env} if env else None,
            capture_output=True,
            text=True,
            encoding="utf-8",
        )
        if check:
            assert result.returncode == 0, (
                f"{' '.join(cmd[3:])} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
            )
        return result

    @staticmethod
    def job_counts(output: str) -> dict[str, int]:
        """Jobs per rule from the "Job stats" table of a (dry-)run's stdout."""
        table = output.split("Job stats:")[1]
        return {
            m.group(1): int(m.group(2))
            for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)
            if m.group(1) != "total"
        }


@pytest.fixture(scope="session")
def snakemake() -> Snakemake:
    return Snakemake()


@pytest.fixture(scope="session")
def demo_plan(snakemake, tmp_path_factory) -> subprocess.CompletedProcess:
    """The dry-run of the default config.yaml (target ``all``), shared by the DAG tests."""
    workdir = tmp_path_factory.mktemp("demo_plan")
    return snakemake(["-n"], cwd=workdir, config=REPO / "config.yaml", check=True)
