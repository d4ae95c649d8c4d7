"""Benchmark how fast Snakemake plans a large study and checks an up-to-date demo.

1. A synthetic study: ``--datasets`` phantom datasets of ``--cases`` cases each and a
   k-means ablation grid of about 200 method variants. Cases exist only inside jobs
   (jobs are per dataset and method), so the DAG must not grow with ``--cases``; the
   dry-run (``snakemake -n``) is timed twice, with ``--cases`` and with 3 cases, and the
   job counts must agree.
2. The demo (``config.yaml``) is built once in a scratch folder, then a no-op rerun
   (everything up to date) is timed, as ``snakemake -n`` and as a real ``snakemake``.

Each timing is the wall time (and CPU time, which a busy machine inflates less) of a fresh
``snakemake`` process: Python start-up, Snakefile parsing, config validation, DAG.
Exit status 1 when the dry-run exceeds ``--max-seconds`` (wall) or the job counts differ.
Run from the repository root::

    .venv/bin/python benchmarks/bench_dag.py [--datasets 10] [--cases 1000] [--no-demo]
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

LOG = logging.getLogger("bench_dag")
REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

# 7 x 3 x 5 x 2 = 210 variants of kmeans_box, plus otsu_box and kmeans_box
ABLATION_GRID = {
    "n_clusters": [2, 3, 4, 5, 6, 7, 8],
    "polarity": ["auto", "bright", "dark"],
    "smoothing_sigma": [0, 0.5, 1, 2, 4],
    "keep_largest": [True, False],
}


def study_config(n_datasets: int, n_cases: int) -> dict:
    """The demo config with ``n_datasets`` phantom datasets and the ablation grid."""
    with open(REPO / "config.yaml", encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    kinds = ("ct", "us")
    config["datasets"] = {
        f"phantom_{i:02d}": {
            "adapter": "phantom",
            "params": {"kind": kinds[i % 2], "n_cases": n_cases},
        }
        for i in range(n_datasets)
    }
    config["ablations"] = {"kmeans_grid": {"base": "kmeans_box", "grid": ABLATION_GRID}}
    # the generated datasets have no text prompt sets: keep the box-, point- and
    # GT-trained methods (experiments/medclip_samv2.yaml is the text-driven study's plan)
    config["methods"] = {
        name: spec
        for name, spec in config["methods"].items()
        if spec["family"] not in ("text_sam", "sam_auto") and not spec.get("labels_from")
    }
    return config


@dataclass(frozen=True)
class Timing:
    """Wall and CPU (user + system) seconds of one Snakemake process."""

    wall_s: float
    cpu_s: float

    def __str__(self) -> str:
        return f"{self.wall_s:.1f} s (CPU {self.cpu_s:.1f} s)"


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def snakemake(workdir: Path, *args: str) -> tuple[Timing, str]:
    """Run Snakemake in ``workdir``; return its timing and stdout + stderr."""
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), *args, "--configfile", "config.yaml"]
    start, cpu_start = time.perf_counter(), _children_cpu_s()
    result = subprocess.run(
        cmd, cwd=workdir, capture_output=True, text=True, encoding="utf-8", timeout=3600
    )
    timing = Timing(time.perf_counter() - start, _children_cpu_s() - cpu_start)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return timing, result.stdout + result.stderr


def total_jobs(output: str) -> int:
    match = re.search(r"^total\s+(\d+)\s*$", output, flags=re.M)
    if match is None:
        raise RuntimeError(f"no job stats in the dry-run output:\n{output[-2000:]}")
    return int(match.group(1))


def dry_run(workdir: Path, config: dict) -> tuple[Timing, int]:
    """Timing and number of jobs of ``snakemake -n`` for ``config`` in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    timing, output = snakemake(workdir, "-n", "--cores", "1", "--quiet", "rules")
    return timing, total_jobs(output)


def bench_study(scratch: Path, n_datasets: int, n_cases: int, max_seconds: float) -> bool:
    big_s, big_jobs = dry_run(scratch / "study", study_config(n_datasets, n_cases))
    small_s, small_jobs = dry_run(scratch / "study_3_cases", study_config(n_datasets, 3))
    n_methods = 2 + math.prod(len(values) for values in ABLATION_GRID.values())
    LOG.info(
        "study: %d datasets x %d cases x %d methods: %d jobs, dry-run %s "
        "(with 3 cases per dataset: %d jobs, %s)",
        n_datasets,
        n_cases,
        n_methods,
        big_jobs,
        big_s,
        small_jobs,
        small_s,
    )
    if big_jobs != small_jobs:
        LOG.error("the DAG depends on the number of cases: %d != %d jobs", big_jobs, small_jobs)
    if big_s.wall_s > max_seconds:
        LOG.error("dry-run took %s, more than --max-seconds %.1f", big_s, max_seconds)
    return big_jobs == small_jobs and big_s.wall_s <= max_seconds


def bench_demo_noop(scratch: Path) -> None:
    workdir = scratch / "demo"
    workdir.mkdir()
    (workdir / "config.yaml").write_text((REPO / "config.yaml").read_text(encoding="utf-8"))
    build_s, _ = snakemake(workdir, "all", "--cores", "2")
    dry_s, output = snakemake(workdir, "all", "-n", "--cores", "2")
    if "Nothing to be done" not in output:
        raise RuntimeError(f"the demo is not up to date after building it:\n{output[-2000:]}")
    noop_s, _ = snakemake(workdir, "all", "--cores", "2")
    LOG.info(
        "demo: built in %s; no-op rerun: dry-run %s, snakemake %s",
        build_s,
        dry_s,
        noop_s,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=10)
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--no-demo", action="store_true", help="skip the demo no-op rerun")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="bench_dag_") as scratch:
        ok = bench_study(Path(scratch), args.datasets, args.cases, args.max_seconds)
        if not args.no_demo:
            bench_demo_noop(Path(scratch))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
