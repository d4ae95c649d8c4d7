from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
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
                f"{' '.join(cmd[3:])} failed:\n"
                + self.failures(result.stdout + result.stderr)
                + result.stderr[-4000:]
            )
        return result

    @staticmethod
    def failures(output: str) -> str:
        """Snakemake's "Error in rule" blocks of a run's output (with --keep-going they are
        far from its end)."""
        blocks = re.findall(r"^Error in rule .*\n(?:.*\n){0,20}", output, flags=re.M)
        return "".join(blocks)

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


# The shared demo-sized run: one Snakemake run of the reduced demo for the whole session.
# Every integration test that only reads a run's outputs reads this one (``demo_run``);
# tests that need a run of their own (kill and resume, SLURM, sharding, a plugin family,
# real images, broken input) keep it small and copy the stages they do not test from a
# finished run (``copy_results``). The run starts in the background as soon as the tests
# are collected, and the tests that read it run last, so that the others use the cores it
# leaves idle. To work on those tests, point MEDSEGFLOW_TEST_DEMO_RUN at the work folder
# of a finished run of the same reduced config: it is read instead (CI never sets it).

REUSE_DEMO_RUN = "MEDSEGFLOW_TEST_DEMO_RUN"


def reduced_config() -> dict:
    """config.yaml with smaller phantoms and tiny training budgets (the plumbing, not the
    accuracy: the demo itself trains longer)."""
    with open(REPO / "config.yaml", encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    config["datasets"]["phantom_ct"]["params"].update(n_cases=5, shape=[24, 96, 96])
    config["datasets"]["phantom_us"]["params"].update(n_cases=8)
    config["tables"]["bootstrap"] = 200
    config["methods"]["nnunet_2d"].update(epochs=1, iterations_per_epoch=5, val_iterations=1)
    # the demo CLIP of 2 epochs gives empty SAM prompts: train on the coarse masks (never empty)
    config["methods"]["nnunet_weak"].update(
        epochs=1, iterations_per_epoch=5, val_iterations=1, labels_from="medclip_coarse"
    )
    config["clip_models"]["clip_demo"]["train"] = {"epochs": 2, "crops_per_image": 1}
    config["methods"]["sam_auto"]["points_per_side"] = 3
    for model in ("lite_medsam_medsam", "lite_medsam_samed", "lite_medsam_medsa"):
        config["sam_models"][model]["train"].update(iterations=2, batch_size=1, val_slices=2)
    config["sam_models"]["lite_medsam_samed"]["train"]["warmup"] = 1
    for method in ("medclip_coarse", "medclip_sam", "medclip_sam_tuned"):
        config["methods"][method].setdefault("saliency", {}).update(steps=3, samples=3)
    config["methods"]["medclip_sam_tuned"]["tune"]["grid"]["saliency.vlayer"] = [7, 8]
    config["methods"]["sam3d_clicks"]["train"]["iterations"] = 3
    return config


class DemoRun:
    """The shared run: started once (in the background), waited for by ``demo_run``."""

    def __init__(self) -> None:
        self.workdir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.seconds: float | None = None
        self.returncode: int | None = None

    def start(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="medsegflow-demo-run-"))
        cmd = Snakemake().command(["all"], cwd=self.workdir, config=reduced_config())
        with open(self.workdir / "snakemake.out", "wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started = time.monotonic()

    def wait(self) -> Path:
        if self.proc is None:
            self.start()
        if self.returncode is None:
            self.returncode = self.proc.wait()
            self.seconds = time.monotonic() - self.started
        path = self.workdir / "snakemake.out"
        if self.returncode != 0:
            output = path.read_text(encoding="utf-8", errors="replace")
            pytest.fail(
                f"the shared demo run failed ({path}):\n"
                + Snakemake.failures(output)
                + output[-4000:]
            )
        return self.workdir

    def stop(self, passed: bool) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait()
        if passed and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


_DEMO_RUN = DemoRun()


def _uses_demo_run(item: pytest.Item) -> bool:
    return "demo_run" in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    readers = [item for item in items if _uses_demo_run(item)]
    if not readers:
        return
    items[:] = [item for item in items if not _uses_demo_run(item)] + readers
    if not config.option.collectonly and not os.environ.get(REUSE_DEMO_RUN):
        _DEMO_RUN.start()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _DEMO_RUN.stop(passed=exitstatus == 0)


def pytest_terminal_summary(terminalreporter) -> None:
    if _DEMO_RUN.seconds is not None:
        terminalreporter.write_line(f"shared demo run (demo_run): {_DEMO_RUN.seconds:.0f} s")


@pytest.fixture(scope="session")
def demo_run() -> Path:
    """The work folder of the shared run of the reduced demo (target ``all``): read it,
    never write into it."""
    if os.environ.get(REUSE_DEMO_RUN):
        workdir = Path(os.environ[REUSE_DEMO_RUN])
        used = yaml.safe_load((workdir / "config.yaml").read_text(encoding="utf-8"))
        assert used == reduced_config(), f"{workdir}: not a run of the current reduced config"
        return workdir
    return _DEMO_RUN.wait()


@pytest.fixture(scope="session")
def copy_results():
    """``copy(source, target, *folders)``: copy ``results/<folder>`` trees between work
    folders, keeping mtimes, so that Snakemake takes them as finished stages (the target
    has no Snakemake metadata: only file times are compared)."""

    def copy(source: Path, target: Path, *folders: str) -> None:
        for folder in folders:
            shutil.copytree(source / "results" / folder, target / "results" / folder)

    return copy
