"""Benchmark the metric stage against medpy's hd95 on real 3D masks, in one run.

Each fixture's reference mask is scored against itself shifted by (1, 3, -2) voxels, with its
real spacing. For every fixture the script times, as the median of ``--repeats`` calls taken
in turns:

- ``medpy.metric.binary.hd95`` (one metric);
- :func:`medsegflow.metrics.compute_metrics`: every metric of the main table (DSC, IoU, the
  surfel NSD, HD95, ASSD, ...);
- the score stage's work per case, as :func:`medsegflow.stages.score.score_predictions` does
  it: the metric rows (``compute_metrics``), then the replay of every registered paper
  convention (:class:`medsegflow.stages.replay.ConventionReplay`, a superset of the default
  ``metrics.conventions``), sharing one :class:`medsegflow.metrics.SurfaceCache`.

It checks that DSC, HD95 and ASSD equal medpy's and that the shared cache changes no value
(the stage's metrics and replay results equal those computed without it), and prints each
ratio (medpy hd95 time / ours) and the overall ratios (summed times of all fixtures). Exit
status 1 when a number disagrees or when the stage's ratio of any fixture, the overall stage
ratio or the overall ``compute_metrics`` ratio is below ``--min-speedup`` (default 5), 2 when
a fixture is missing.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_metrics.py [--data DIR] [--repeats 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from medpy.metric import binary as medpy_binary

from medsegflow.conventions import CONVENTIONS
from medsegflow.io import read_volume
from medsegflow.metrics import SurfaceCache, compute_metrics
from medsegflow.stages.replay import ConventionReplay
from medsegflow.stages.score import score_case

LOG = logging.getLogger("bench_metrics")
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FIXTURES = (
    "ibsi_sts/STS_001/CT_mask.nii.gz",
    "ibsi_sts/STS_002/CT_mask.nii.gz",
    "msd_spleen_crop/sub-spleen2_ct_seg-manual.nii.gz",
)
SHIFT_ZYX = (1, 3, -2)
RTOL = 1e-9


def median_seconds(
    functions: dict[str, Callable[[], object]], repeats: int
) -> dict[str, tuple[float, object]]:
    """``{name: (median wall time, last result)}`` of ``repeats`` calls of each function,
    after one warm-up call each. The calls take turns (one of each per round), so that a load
    that comes and goes on the machine weighs on every function alike."""
    results = {name: function() for name, function in functions.items()}
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            results[name] = function()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), results[name]) for name in functions}


def bench_fixture(data: Path, relative: str, repeats: int) -> tuple[bool, float, float, float]:
    """Time and cross-check one fixture; return (numbers agree, medpy s, metrics s, stage s)."""
    volume = read_volume(data / relative)
    gt_zyx = (volume.array_zyx > 0).astype(np.uint8)
    pred_zyx = np.roll(gt_zyx, SHIFT_ZYX, axis=(0, 1, 2))
    spacing = volume.spacing_zyx
    gt = dataclasses.replace(volume, array_zyx=gt_zyx)

    def stage() -> tuple[dict, list]:
        """One case of the score stage: the same cache for the replays and the metric rows."""
        cache = SurfaceCache()
        rows = score_case(
            pred_zyx=pred_zyx, gt=gt, label_map={"object": 1}, nsd_tolerance_mm=2.0, cache=cache
        )
        replay = ConventionReplay(list(CONVENTIONS), {1: "object"})
        replay.add(pred_zyx, gt_zyx, spacing, cache=cache)
        return replay.results, rows

    timed = median_seconds(
        {
            "medpy": lambda: medpy_binary.hd95(pred_zyx, gt_zyx, voxelspacing=spacing),
            "metrics": lambda: compute_metrics(pred_zyx, gt_zyx, spacing, 2.0, labels=[1]),
            "stage": stage,
        },
        repeats,
    )
    (medpy_s, medpy_hd95), (ours_s, ours), (stage_s, shared) = timed.values()
    ours = ours[1]
    alone = (
        {name: [CONVENTIONS[name].case(pred_zyx, gt_zyx, spacing, [1])] for name in CONVENTIONS},
        score_case(pred_zyx=pred_zyx, gt=gt, label_map={"object": 1}, nsd_tolerance_mm=2.0),
    )
    expected = {
        "dsc": medpy_binary.dc(pred_zyx, gt_zyx),
        "hd95_mm": medpy_hd95,
        "assd_mm": medpy_binary.assd(pred_zyx, gt_zyx, voxelspacing=spacing),
    }
    agree = all(np.isclose(ours[k], v, rtol=RTOL, atol=0) for k, v in expected.items())
    same = _same(shared, alone)
    LOG.info(
        "%s %s: medpy hd95 %.4f s | compute_metrics (all metrics) %.4f s, ratio %.1fx | "
        "stage (metrics + %d conventions) %.4f s, ratio %.1fx | hd95 %.6f/%.6f mm, "
        "assd %.6f/%.6f mm, dsc %.6f/%.6f, nsd %.6f (ours/medpy) %s; cache %s",
        relative,
        gt_zyx.shape,
        medpy_s,
        ours_s,
        medpy_s / ours_s,
        len(CONVENTIONS),
        stage_s,
        medpy_s / stage_s,
        ours["hd95_mm"],
        expected["hd95_mm"],
        ours["assd_mm"],
        expected["assd_mm"],
        ours["dsc"],
        expected["dsc"],
        ours["nsd"],
        "OK" if agree else "MISMATCH",
        "changes no value" if same else "MISMATCH",
    )
    return agree and same, medpy_s, ours_s, stage_s


def _same(a: object, b: object) -> bool:
    """Equal nested results, NaN equal to NaN and floats compared exactly."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return a == b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help=f"shared fixture folder (default: {DEFAULT_DATA})",
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per function")
    parser.add_argument(
        "--min-speedup",
        type=float,
        default=5.0,
        help="fail when a fixture's or the overall stage ratio, or the overall "
        "compute_metrics ratio, is below this (default 5)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    missing = [str(args.data / f) for f in FIXTURES if not (args.data / f).is_file()]
    if missing:
        LOG.error("fixtures not found: %s", ", ".join(missing))
        return 2
    results = [bench_fixture(args.data, relative, args.repeats) for relative in FIXTURES]
    agree = all(r[0] for r in results)
    medpy_s, ours_s, stage_s = (sum(r[i] for r in results) for i in (1, 2, 3))
    ratio = medpy_s / ours_s
    LOG.info(
        "overall (%d cases): medpy hd95 %.3f s; compute_metrics %.3f s, ratio %.1fx; "
        "stage with %d conventions %.3f s, ratio %.1fx",
        len(results),
        medpy_s,
        ours_s,
        ratio,
        len(CONVENTIONS),
        stage_s,
        medpy_s / stage_s,
    )
    slow = [f for f, r in zip(FIXTURES, results, strict=True) if r[1] / r[3] < args.min_speedup]
    if medpy_s / stage_s < args.min_speedup:
        slow.append("all fixtures")
    for name in slow:
        LOG.info("stage ratio below %.1fx: %s", args.min_speedup, name)
    ok = agree and ratio >= args.min_speedup and not slow
    LOG.info(
        f"all numbers agree, every ratio >= {args.min_speedup:.1f}x"
        if ok
        else "FAILED: see MISMATCH lines or the ratios below --min-speedup"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
