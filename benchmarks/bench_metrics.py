"""Benchmark medsegflow.metrics.compute_metrics against medpy's hd95 on real CT masks.

Each fixture's reference mask is scored against itself shifted by (1, 3, -2) voxels, with its
real spacing. For every fixture the script logs the median time of ``medpy.metric.binary.hd95``
(one metric) and of :func:`compute_metrics` (all metrics), checks that DSC, HD95 and ASSD
agree, and logs the speed-up. Exit status 1 when a number disagrees (or the speed-up is below
``--min-speedup``), 2 when a fixture is missing.

Run from the repository root::

    .venv/bin/python benchmarks/bench_metrics.py [--data ../shared/data] [--repeats 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from medpy.metric import binary as medpy_binary

from medsegflow.io import read_volume
from medsegflow.metrics import compute_metrics

LOG = logging.getLogger("bench_metrics")
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FIXTURES = (
    "ibsi_sts/STS_001/CT_mask.nii.gz",
    "ibsi_sts/STS_002/CT_mask.nii.gz",
    "msd_spleen_crop/sub-spleen2_ct_seg-manual.nii.gz",
)
SHIFT_ZYX = (1, 3, -2)
RTOL = 1e-9


def median_seconds(function: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls (after one warm-up call) and the last result."""
    result = function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_fixture(data: Path, relative: str, repeats: int) -> tuple[bool, float]:
    """Time and cross-check the fixture ``data / relative``; return (numbers agree, speed-up)."""
    volume = read_volume(data / relative)
    gt_zyx = volume.array_zyx
    pred_zyx = np.roll(gt_zyx, SHIFT_ZYX, axis=(0, 1, 2))
    spacing = volume.spacing_zyx
    medpy_s, medpy_hd95 = median_seconds(
        lambda: medpy_binary.hd95(pred_zyx, gt_zyx, voxelspacing=spacing), repeats
    )
    ours_s, ours = median_seconds(lambda: compute_metrics(pred_zyx, gt_zyx, spacing), repeats)
    ours = ours[1]
    expected = {
        "dsc": medpy_binary.dc(pred_zyx, gt_zyx),
        "hd95_mm": medpy_hd95,
        "assd_mm": medpy_binary.assd(pred_zyx, gt_zyx, voxelspacing=spacing),
    }
    agree = all(np.isclose(ours[k], v, rtol=RTOL, atol=0) for k, v in expected.items())
    speedup = medpy_s / ours_s
    LOG.info(
        "%s %s: medpy hd95 %.4f s, compute_metrics (all metrics) %.4f s, "
        "speedup vs medpy hd95: %.1fx | hd95 %.6f/%.6f mm, assd %.6f/%.6f mm, dsc %.6f/%.6f "
        "(ours/medpy) %s",
        relative,
        gt_zyx.shape,
        medpy_s,
        ours_s,
        speedup,
        ours["hd95_mm"],
        expected["hd95_mm"],
        ours["assd_mm"],
        expected["assd_mm"],
        ours["dsc"],
        expected["dsc"],
        "OK" if agree else "MISMATCH",
    )
    return agree, speedup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help=f"shared fixture folder (default: {DEFAULT_DATA})",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per function")
    parser.add_argument(
        "--min-speedup",
        type=float,
        default=0.0,
        help="also fail when a fixture's speed-up is below this",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    missing = [str(args.data / f) for f in FIXTURES if not (args.data / f).is_file()]
    if missing:
        LOG.error("fixtures not found: %s", ", ".join(missing))
        return 2
    ok = True
    for relative in FIXTURES:
        agree, speedup = bench_fixture(args.data, relative, args.repeats)
        ok = ok and agree and speedup >= args.min_speedup
    LOG.info("all numbers agree" if ok else "FAILED: see MISMATCH lines or --min-speedup")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
