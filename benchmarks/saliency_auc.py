"""How well a run's text-driven saliency maps localise their targets (pixel ROC AUC).

For every saliency folder ``results/saliency/{dataset}/{key}/`` of a finished run, scores
each map against the cleaned reference label of its slice
(:func:`medsegflow.saliency.localisation.saliency_localisation`) and prints, per dataset,
saliency key and label, the number of targets and the mean / median pixel AUC (0.5 is
chance) with the share of targets above chance. Reads only; exit status 2 when the run
has no saliency folder.

Run from the repository root after the demo (or any study)::

    .venv/bin/python benchmarks/saliency_auc.py [--results results] [--split test]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from medsegflow.saliency.localisation import localisation_summary, saliency_localisation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--split", action="append", help="split(s) to score (default: test)")
    args = parser.parse_args(argv)
    splits = args.split or ["test"]
    folders = sorted((args.results / "saliency").glob("*/*/targets.tsv"))
    if not folders:
        print(f"no saliency folders under {args.results / 'saliency'}", file=sys.stderr)
        return 2
    tables = []
    for targets in folders:
        saliency_dir = targets.parent
        dataset, key = saliency_dir.parent.name, saliency_dir.name
        table = saliency_localisation(
            saliency_dir, args.results / "preprocessed" / dataset, splits=splits
        )
        summary = localisation_summary(table)
        summary.insert(0, "saliency", key)
        summary.insert(0, "dataset", dataset)
        tables.append(summary)
    result = pd.concat(tables, ignore_index=True)
    print(f"pixel AUC of the saliency maps, split(s) {', '.join(splits)}:")
    print(result.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
