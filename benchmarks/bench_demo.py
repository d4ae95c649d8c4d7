"""Time README command 1's workflow run (the demo) from a clean results/, rule by rule.

Runs ``snakemake --cores <cores> all`` on the embedded ``config.yaml`` in a scratch folder
(nothing of the repository's own ``results/`` is touched), then prints:

- the wall time of the run, and its ratio to the 6-minute budget (issue 25);
- a per-rule breakdown from the jobs' ``benchmark:`` files (``benchmarks/<rule>/*.tsv``):
  jobs, summed and longest job seconds, summed CPU seconds, peak memory;
- a machine-speed baseline measured in the same process before the run (LiteMedSAM's
  image encoder on one 256 x 256 slice, 1 thread, best of 3), and the run's wall time in
  units of that baseline, which compares runs on machines of different speed;
- the CPU seconds of the whole run (Snakemake and every job, from the kernel's
  accounting of the finished child processes: the jobs' ``benchmark:`` files sample
  their CPU time and miss short jobs and the work between samples), and the machine's
  load average before and after, which says how much other work shared the cores.

Run from the repository root after the set-up of README command 1::

    .venv/bin/python benchmarks/bench_demo.py [--cores all] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
BUDGET_SECONDS = 360.0


def encoder_baseline() -> float:
    """Seconds of one LiteMedSAM encoder pass on one slice, 1 thread (best of 3)."""
    import torch

    from medsegflow.models.sam_archs import build_sam

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_sam("lite_medsam")
    image = torch.rand(1, 3, 256, 256)
    best = float("inf")
    with torch.inference_mode():
        model.image_encoder(image)
        for _ in range(3):
            start = time.perf_counter()
            model.image_encoder(image)
            best = min(best, time.perf_counter() - start)
    return best


def rule_breakdown(workdir: Path) -> pd.DataFrame:
    """One row per rule with ``benchmark:`` files: jobs, seconds (sum, max), CPU, memory."""
    rows = []
    for path in sorted((workdir / "benchmarks").rglob("*.tsv")):
        rule = path.relative_to(workdir / "benchmarks").parts[0]
        table = pd.read_csv(path, sep="\t")
        rows.append(
            {
                "rule": rule,
                "s": float(table["s"].iloc[-1]),
                "cpu_s": float(table["cpu_time"].iloc[-1]),
                "max_rss_mb": float(table["max_rss"].iloc[-1]),
            }
        )
    jobs = pd.DataFrame(rows, columns=["rule", "s", "cpu_s", "max_rss_mb"])
    return (
        jobs.groupby("rule")
        .agg(
            jobs=("s", "size"),
            sum_s=("s", "sum"),
            max_job_s=("s", "max"),
            cpu_s=("cpu_s", "sum"),
            peak_rss_mb=("max_rss_mb", "max"),
        )
        .sort_values("sum_s", ascending=False)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", default="all", help="snakemake --cores (README: all)")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    args = parser.parse_args()
    baseline = encoder_baseline()
    print(f"baseline: LiteMedSAM encoder, one 256 x 256 slice, 1 thread: {baseline:.3f} s")
    from medsegflow.precision import resolve_precision

    print(f"precision auto on this machine (CPU): {resolve_precision('auto', 'cpu')}")
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="medsegflow_demo_"))
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(workdir / "results", ignore_errors=True)
    shutil.rmtree(workdir / "benchmarks", ignore_errors=True)
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--cores", str(args.cores), "all"]
    cmd += ["--configfile", str(REPO / "config.yaml")]
    load_before = os.getloadavg()
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, encoding="utf-8")
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (usage.ru_utime - usage_before.ru_utime) + (usage.ru_stime - usage_before.ru_stime)
    load_after = os.getloadavg()
    if result.returncode != 0:
        print(result.stdout[-2000:] + result.stderr[-4000:], file=sys.stderr)
        return 1
    table = rule_breakdown(workdir)
    pd.set_option("display.width", 120)
    print(table.round(1).to_string())
    print(
        f"\nbenchmarked jobs: {int(table['jobs'].sum())}, their seconds summed: "
        f"{table['sum_s'].sum():.0f} s (jobs overlap on several cores)"
    )
    print(
        f"CPU seconds of the whole run (Snakemake and its jobs): {cpu:.0f} s "
        f"({cpu / wall:.2f} cores busy on average, of {os.cpu_count()}); load average "
        f"(1, 5, 15 min) before {', '.join(f'{v:.1f}' for v in load_before)}, "
        f"after {', '.join(f'{v:.1f}' for v in load_after)}"
    )
    print(
        f"demo wall time: {wall:.0f} s = {wall / 60:.1f} min; "
        f"ratio to the {BUDGET_SECONDS / 60:g}-minute budget: {wall / BUDGET_SECONDS:.2f}; "
        f"in encoder baselines: {wall / baseline:.0f}"
    )
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if wall <= BUDGET_SECONDS else 2


if __name__ == "__main__":
    sys.exit(main())
