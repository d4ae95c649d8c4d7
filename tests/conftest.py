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

from medsegflow.allocator import keep_freed_memory
from medsegflow.threads import THREAD_VARIABLES

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
    ``config`` is a dict (written to ``cwd/config.yaml``), a path or a list of paths
    (merged by Snakemake in order); either way ``--configfile`` goes last, since it takes
    several values. ``cores`` adds ``--cores``
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
        if isinstance(config, list | tuple):
            cmd += ["--configfile", *map(str, config)]
        elif config is not None:
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


DEMO_ANALYSES = REPO / "experiments" / "demo_analyses.yaml"  # an overlay of config.yaml


@pytest.fixture(scope="session")
def analyses_plan(snakemake, tmp_path_factory) -> subprocess.CompletedProcess:
    """The dry-run of config.yaml with the overlay experiments/demo_analyses.yaml."""
    workdir = tmp_path_factory.mktemp("analyses_plan")
    config = [REPO / "config.yaml", DEMO_ANALYSES]
    return snakemake(["-n"], cwd=workdir, config=config, check=True)


@pytest.fixture
def demo_analyses_config() -> dict:
    """A fresh copy of config.yaml merged with its analyses overlay, to edit."""
    return demo_with_analyses()


def demo_with_analyses() -> dict:
    """config.yaml merged with experiments/demo_analyses.yaml as Snakemake merges two
    ``--configfile``s (dicts key by key, anything else replaced)."""
    from snakemake.utils import update_config

    config = {}
    for path in (REPO / "config.yaml", DEMO_ANALYSES):
        with open(path, encoding="utf-8") as handle:
            update_config(config, yaml.safe_load(handle))
    return config


# The shared demo-sized run: one Snakemake run of the reduced demo for the whole session.
# Every integration test that only reads a run's outputs reads this one (``demo_run``);
# tests that need a run of their own (kill and resume, SLURM, sharding, a plugin family,
# real images, broken input) keep it small and copy the stages they do not test from a
# finished run (``copy_results``). The run starts in the background as soon as the tests
# are collected, and the tests that read it run last, so that the others use the cores it
# leaves idle (``pytest_collection_modifyitems``). With pytest-xdist (``-n``, in
# pyproject's addopts) the workers share it: the controller makes its folder, the first
# worker to collect a reader starts it, and every reader waits for its ``returncode``
# file. To work on those tests, point MEDSEGFLOW_TEST_DEMO_RUN at the work folder of a
# finished run of the same reduced config: it is read instead (CI never sets it).

REUSE_DEMO_RUN = "MEDSEGFLOW_TEST_DEMO_RUN"
DEMO_RUN_NICENESS = 5  # added to the niceness of the test processes once the run started
DEMO_RUN_FOLDER = "medsegflow_demo_run"  # xdist workerinput key: the shared run's folder


def reduced_config() -> dict:
    """config.yaml with its analyses (:func:`demo_with_analyses`), smaller phantoms and
    tiny training budgets (the plumbing, not the accuracy: the demo itself trains longer)."""
    config = demo_with_analyses()
    # 16 slices of 7.2 mm: the anatomy of the demo's 20 of 4.8 mm; smaller organs, so
    # MedSAM's 1000-voxel cleaning is halved (the kidneys and spleen have 900-1500 voxels)
    config["datasets"]["phantom_ct"]["params"].update(
        n_cases=5, shape=[16, 96, 96], spacing_mm=[7.2, 0.8, 0.8]
    )
    config["preprocess"]["cleaning"]["min_voxels_3d"] = 500
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
    """The shared run in its work folder, which also holds its state: ``started`` (the
    claim of the process that starts it, with the start time), ``pid`` (its process
    group), ``snakemake.out`` and, once it ended, ``returncode``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.took: float | None = None  # the wall time, kept by stop() for the summary
        self.cpu: float | None = None  # its CPU seconds, idem

    def start(self) -> None:
        """Start the run unless a process of this session already did."""
        try:
            claim = os.open(self.workdir / "started", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(claim, str(time.time()).encode())
        os.close(claim)
        cmd = Snakemake().command(["all"], cwd=self.workdir, config=reduced_config())
        # the shell records the exit status, so that any process of the session can wait
        script = (
            '"$@" > snakemake.out 2>&1; echo $? > returncode.part; times > times.txt; '
            "mv returncode.part returncode"
        )
        proc = subprocess.Popen(
            ["bash", "-c", script, "demo_run", *cmd], cwd=self.workdir, start_new_session=True
        )
        (self.workdir / "pid").write_text(str(proc.pid), encoding="utf-8")

    def seconds(self) -> float | None:
        """Wall time of a finished run."""
        done, started = self.workdir / "returncode", self.workdir / "started"
        if not done.is_file():
            return None
        return done.stat().st_mtime - float(started.read_text(encoding="utf-8"))

    def cpu_seconds(self) -> float | None:
        """User and system CPU seconds of the finished run (Snakemake and its jobs), from
        the shell's ``times``."""
        path = self.workdir / "times.txt"
        if not path.is_file():
            return None
        lines = path.read_text(encoding="utf-8").split("\n")
        values = re.findall(r"(\d+)m([\d.]+)s", lines[1] if len(lines) > 1 else "")
        return sum(60 * int(m) + float(sec) for m, sec in values) or None

    def wait(self) -> Path:
        self.start()  # a no-op once started (collection starts it)
        done = self.workdir / "returncode"
        while not done.is_file():
            time.sleep(1)
        path = self.workdir / "snakemake.out"
        if int(done.read_text(encoding="utf-8")) != 0:
            output = path.read_text(encoding="utf-8", errors="replace")
            pytest.fail(
                f"the shared demo run failed ({path}):\n"
                + Snakemake.failures(output)
                + output[-4000:]
            )
        return self.workdir

    def stop(self, passed: bool) -> None:
        """Stop a run still going (the session ended early); remove the folder if every
        test passed or the run never started."""
        self.took = self.seconds()
        self.cpu = self.cpu_seconds()
        pid = self.workdir / "pid"
        if pid.is_file() and not (self.workdir / "returncode").is_file():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid.read_text(encoding="utf-8")), signal.SIGTERM)
        if passed or not (self.workdir / "started").is_file():
            shutil.rmtree(self.workdir, ignore_errors=True)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _demo(config: pytest.Config) -> DemoRun:
    if _is_worker(config):
        return DemoRun(Path(config.workerinput[DEMO_RUN_FOLDER]))
    return config.stash[_DEMO_KEY]


_DEMO_KEY = pytest.StashKey[DemoRun]()


def pytest_configure(config: pytest.Config) -> None:
    # One compute thread per process (unless set): the two test processes, the shared run
    # and the tests' own runs share 2 cores, and OpenMP threads of oversubscribed
    # processes spin for each other. The jobs of the tests' runs inherit it.
    # The same glibc thresholds as a Snakemake run (medsegflow.allocator), for the test
    # processes and the runs they start.
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    keep_freed_memory()
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if not _is_worker(config):
        config.stash[_DEMO_KEY] = DemoRun(Path(tempfile.mkdtemp(prefix="medsegflow-demo-run-")))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:  # xdist controller: each worker gets the folder
    node.workerinput[DEMO_RUN_FOLDER] = str(node.config.stash[_DEMO_KEY].workdir)


def _uses_demo_run(item: pytest.Item) -> bool:
    return "demo_run" in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Readers of the shared run last: a module whose tests all read it goes to the end;
    in a module that also has other tests (a run of its own, made while the shared run
    goes on) the readers follow the module's other tests, so that its fixtures are made
    once."""
    readers = [item for item in items if _uses_demo_run(item)]
    if not readers:
        return
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    first, last = [], []
    for module in modules.values():
        others = [item for item in module if not _uses_demo_run(item)]
        (first if others else last).extend(others + [i for i in module if _uses_demo_run(i)])
    items[:] = first + last
    if not config.option.collectonly and not os.environ.get(REUSE_DEMO_RUN):
        _demo(config).start()
        # the run has the cores first (its readers wait for it); the tests take the rest
        os.nice(DEMO_RUN_NICENESS)


TIMELINE = "MEDSEGFLOW_TEST_TIMELINE"  # a file: each test's start and end, per worker


def _timeline(nodeid: str, event: str) -> None:
    path = os.environ.get(TIMELINE)
    if path:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{time.time():.1f}\t{worker}\t{event}\t{nodeid}\n")


def pytest_runtest_logstart(nodeid: str, location) -> None:
    _timeline(nodeid, "start")


def pytest_runtest_logfinish(nodeid: str, location) -> None:
    _timeline(nodeid, "end")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _is_worker(session.config):
        _demo(session.config).stop(passed=exitstatus == 0)


def pytest_terminal_summary(terminalreporter) -> None:
    config = terminalreporter.config
    if _is_worker(config) or _DEMO_KEY not in config.stash:
        return
    demo = _demo(config)
    if demo.took is not None:
        cpu = f", {demo.cpu:.0f} CPU s" if demo.cpu else ""
        terminalreporter.write_line(f"shared demo run (demo_run): {demo.took:.0f} s{cpu}")


@pytest.fixture(scope="session")
def demo_config() -> dict:
    """The config of the shared run (what ``demo_run``'s ``config.yaml`` holds)."""
    return reduced_config()


@pytest.fixture(scope="session")
def demo_run(request) -> Path:
    """The work folder of the shared run of the reduced demo (target ``all``): read it,
    never write into it."""
    if os.environ.get(REUSE_DEMO_RUN):
        workdir = Path(os.environ[REUSE_DEMO_RUN])
        used = yaml.safe_load((workdir / "config.yaml").read_text(encoding="utf-8"))
        assert used == reduced_config(), f"{workdir}: not a run of the current reduced config"
        return workdir
    return _demo(request.config).wait()


@pytest.fixture(scope="session")
def copy_results():
    """``copy(source, target, *folders)``: copy ``results/<folder>`` trees between work
    folders, keeping mtimes, so that Snakemake takes them as finished stages (the target
    has no Snakemake metadata: only file times are compared)."""

    def copy(source: Path, target: Path, *folders: str) -> None:
        for folder in folders:
            shutil.copytree(source / "results" / folder, target / "results" / folder)

    return copy
