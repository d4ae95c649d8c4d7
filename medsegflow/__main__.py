"""Command line: ``python -m medsegflow verify --configfile X [--dataset NAME ...]``.

``verify`` lists every problem of every dataset of the config before any job runs (see
:mod:`medsegflow.verify`) and exits 1 when it finds one. Relative dataset roots are taken
from the working folder, as in a Snakemake run from the repository root.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from medsegflow.errors import ConfigError


def _merge(base: dict, update: dict) -> dict:
    """Snakemake's rule for several ``--configfile``: later files update nested keys."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _read_configs(paths: Sequence[str]) -> dict:
    from medsegflow.config import read_config_file

    config: dict = {}
    for path in paths:
        _merge(config, read_config_file(path))
    return config


def verify_main(args: argparse.Namespace) -> int:
    from medsegflow.config import validate_config
    from medsegflow.verify import format_reports, verify_datasets

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        raw = _read_configs(args.configfile)
    except ConfigError as err:
        print(err)
        return 1
    try:
        config = validate_config(raw)
        problem = ""
    except ConfigError as err:  # still verify the datasets as written
        config, problem = raw, f"{' '.join(args.configfile)}: {err}"
    reports = verify_datasets(config, datasets=args.dataset)
    if problem:
        print(problem)
    print(format_reports(reports))
    return 1 if problem or any(report.problems for report in reports) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medsegflow")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="list every problem of every dataset")
    verify.add_argument(
        "--configfile",
        nargs="+",
        default=[str(Path("config.yaml"))],
        help="config file(s), merged in order like Snakemake's (default: config.yaml)",
    )
    verify.add_argument("--dataset", nargs="+", help="only these datasets (default: all)")
    args = parser.parse_args(argv)
    return verify_main(args)


if __name__ == "__main__":
    sys.exit(main())
