"""glibc's default malloc thresholds against :func:`medsegflow.allocator.keep_freed_memory`.

Runs the same work twice, each in a fresh process (glibc reads its thresholds at start-up):
once with glibc's defaults (``MEDSEGFLOW_MALLOC=default``, no ``MALLOC_*`` variables; the
baseline) and once with the thresholds raised as a Snakemake run or the tests raise
them. The work: LiteMedSAM's image encoder (the packaged official checkpoint) on
``--slices`` 256 x 256 slices of a 3D conformance input, one per call, in float32 and in
the precision ``auto`` chooses on this machine. Prints per setting the wall, user and
system CPU seconds, minor page faults and peak resident size, and the ratios to the
baseline.

    .venv/bin/python benchmarks/bench_allocator.py [--slices 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

INPUT = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "conformance"
    / "litemedsam"
    / "inputs"
    / "3DBox_CT_sts001.npz"
)


def work(slices: int) -> dict[str, float]:
    """Encode the slices in float32 and in ``auto``; resource use of the encoding only."""
    import resource
    import time

    import numpy as np

    from medsegflow.allocator import keep_freed_memory
    from medsegflow.models.sam_encode import encode_slices
    from medsegflow.models.sam_loader import load_sam_model
    from medsegflow.models.sam_registry import packaged_weights_path
    from medsegflow.precision import resolve_precision

    if os.environ.get("BENCH_ALLOCATOR") == "raised":
        keep_freed_memory()
    model, _ = load_sam_model(
        packaged_weights_path("lite_medsam"), arch="lite_medsam", device="cpu"
    )
    volume = np.load(INPUT)["imgs"][13 : 13 + slices]
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for precision in ("fp32", resolve_precision("auto", "cpu")):
        encode_slices(volume, model=model, device="cpu", batch_size=1, precision=precision)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": time.perf_counter() - start,
        "user_s": after.ru_utime - before.ru_utime,
        "sys_s": after.ru_stime - before.ru_stime,
        "minor_faults": after.ru_minflt - before.ru_minflt,
        "peak_rss_mb": after.ru_maxrss / 1024,
    }


def run(setting: str, slices: int, threads: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(
        BENCH_ALLOCATOR=setting,
        OMP_NUM_THREADS=str(threads),
        MEDSEGFLOW_MALLOC="default" if setting == "default" else "",
    )
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(slices)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(work(args.child)))
        return 0
    if not INPUT.is_file():
        print(f"{INPUT}: file not found (the conformance fixtures)", file=sys.stderr)
        return 2
    results = {s: run(s, args.slices, args.threads) for s in ("default", "raised")}
    print(f"LiteMedSAM encoder, {args.slices} slices x (fp32 + auto), {args.threads} thread(s):")
    for setting, values in results.items():
        print(f"  {setting:8s}" + "  ".join(f"{k} {v:.1f}" for k, v in values.items()))
    base, raised = results["default"], results["raised"]
    print(
        f"ratio raised/default: wall {raised['wall_s'] / base['wall_s']:.2f}, "
        f"system CPU {raised['sys_s'] / max(base['sys_s'], 1e-9):.2f}, "
        f"peak RSS {raised['peak_rss_mb'] / base['peak_rss_mb']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
