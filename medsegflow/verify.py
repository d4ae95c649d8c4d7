"""Dataset integrity check before any job (like nnU-Net's ``--verify_dataset_integrity``).

``python -m medsegflow verify --configfile X`` (or ``snakemake verify``) runs every
dataset's adapter, reads every case and lists **every** problem, one line each naming the
file, instead of stopping at the first as ``prepare_dataset`` does:

- adapter and parameter errors (unknown adapter, missing folder, bad ``params.<key>``);
- image files without their label file, and case ids that are used twice or unsafe;
- what an adapter finds while listing its files (a mask without its image, an unreadable
  header, a missing slice, a file not named as the dataset names them): the adapters list
  within :func:`~medsegflow.datasets._params.deferred_listing_checks`, so each is a line
  and the listing goes on without that file;
- unreadable files (missing, corrupt or truncated, wrong format or key);
- image/label shape, spacing, origin or direction mismatches;
- label values outside the label map, and non-integer labels;
- NaN or infinite intensities;
- constant images (every voxel one value): a warning instead where the dataset sets
  ``allow_constant_images``, as a run writes them then (``WARNING:`` lines), like what an
  adapter accepts while listing but reports (:func:`~medsegflow.datasets._params.listing_warning`:
  split or caption entries naming no case, images skipped as asked).

An exception no check expected (a reader's own error, an adapter bug) is one line too,
naming the case's files or the dataset with the exception type; the other cases and
datasets are still checked. Nothing is written. The exit status is 1 when any problem is
found, 0 otherwise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from medsegflow.datasets._params import deferred_listing_checks, is_safe_case_id
from medsegflow.datasets.canonical import (
    SPLITS,
    CaseSource,
    empty_image_problem,
    find_case_problems,
)
from medsegflow.datasets.registry import get_adapter
from medsegflow.errors import ConfigError, InputError

log = logging.getLogger(__name__)


@dataclass
class DatasetReport:
    """What :func:`verify_dataset` found in one dataset."""

    dataset: str
    n_cases: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def verify_dataset(name: str, entry: Mapping[str, Any], *, seed: int) -> DatasetReport:
    """Check every case of dataset ``name`` (its config entry ``entry``); write nothing.

    The adapter lists its cases within :func:`deferred_listing_checks`, so a problem with
    one file (a missing mask, an unreadable header, a missing slice) is one line and the
    listing goes on. An error no check expected (a reader's own exception, an adapter bug)
    is one line too, naming the dataset or the case's files with the exception type; the
    other cases and datasets are still checked.
    """
    report = DatasetReport(name)
    key = f"datasets.{name}"
    adapter_name = entry.get("adapter", "") if isinstance(entry, Mapping) else ""
    try:
        if not isinstance(entry, Mapping):
            raise ConfigError(f"expected a mapping with 'adapter' and 'params', got {entry!r}")
        adapter = get_adapter(adapter_name, key="adapter")
        with deferred_listing_checks() as listed:
            try:
                result = adapter(entry.get("params") or {}, seed=seed)
            finally:
                report.problems += listed
                report.warnings += listed.warnings
    except ConfigError as err:
        report.problems += [f"{key}.{line}" for line in _lines(err)]
        return report
    except InputError as err:
        report.problems += _lines(err)
        return report
    except Exception as err:  # one line, then the next dataset
        root = (entry.get("params") or {}).get("root", "") if isinstance(entry, Mapping) else ""
        report.problems.append(
            f"{key}: adapter '{adapter_name}' failed while listing the cases"
            f"{f' under {root}' if root else ''} ({_describe(err)})"
        )
        return report
    label_map = result.label_map
    if label_map.get("background") != 0:
        report.problems.append(f"{key}: label map {label_map} must map 'background' to 0")
    seen: dict[str, str] = {}
    for source in tqdm(result.sources, desc=f"verify {name}", unit="case"):
        report.n_cases += 1
        if source.case_id in seen:
            report.problems.append(
                f"{source.source}: duplicate case id '{source.case_id}', "
                f"also the id of {seen[source.case_id]}"
            )
            continue
        seen[source.case_id] = source.source
        if not is_safe_case_id(source.case_id):
            report.problems.append(
                f"{source.source}: case id '{source.case_id}' cannot be used as a file name"
            )
            continue
        allow_constant = bool(entry.get("allow_constant_images", False))
        problems, warnings = _case_problems(source, label_map, allow_constant=allow_constant)
        report.problems += problems
        report.warnings += warnings
    return report


def _case_problems(
    source: CaseSource, label_map: Mapping[str, int], *, allow_constant: bool = False
) -> tuple[list[str], list[str]]:
    """The problems and warnings of one case: its read, its split, then
    :func:`find_case_problems`; a constant image is a warning with ``allow_constant``."""
    try:
        case = source.load()
    except InputError as err:
        return _lines(err), []
    except Exception as err:  # a reader's own error or an adapter bug
        return [f"{source.source}: cannot read ({_describe(err)})"], []
    problems, warnings = [], []
    if case.split not in SPLITS:
        problems.append(f"{source.source}: split '{case.split}' is not one of {SPLITS}")
    try:
        problems += find_case_problems(case, label_map, check_empty=not allow_constant)
        if allow_constant and (empty := empty_image_problem(case)):
            warnings.append(f"{empty}; written all the same (allow_constant_images)")
    except Exception as err:  # e.g. an array of an unexpected type
        problems.append(f"{source.source}: cannot check the case ({_describe(err)})")
    return problems, warnings


def verify_datasets(
    config: Mapping[str, Any], *, datasets: Sequence[str] | None = None
) -> list[DatasetReport]:
    """:func:`verify_dataset` for ``datasets`` (default: every dataset of ``config``)."""
    entries = config.get("datasets") or {}
    names = list(datasets) if datasets else list(entries)
    reports = []
    for name in names:
        if name not in entries:
            reports.append(DatasetReport(name, problems=[f"datasets.{name}: no such dataset"]))
            continue
        start = time.perf_counter()
        report = verify_dataset(name, entries[name], seed=int(config.get("seed", 0)))
        log.info(
            "verified %s: %d cases, %d problems, %.1f s",
            name,
            report.n_cases,
            len(report.problems),
            time.perf_counter() - start,
        )
        reports.append(report)
    return reports


def format_reports(reports: Sequence[DatasetReport]) -> str:
    """Every problem on its own line, then every warning (``WARNING: ...``), then one summary
    line."""
    lines = [problem for report in reports for problem in report.problems]
    n_problems = len(lines)
    lines += [f"WARNING: {warning}" for report in reports for warning in report.warnings]
    n_warnings = len(lines) - n_problems
    n_bad = sum(1 for report in reports if report.problems)
    n_cases = sum(report.n_cases for report in reports)
    warned = f", {n_warnings} warnings" if n_warnings else ""
    if n_problems:
        lines.append(
            f"verify: {n_problems} problems in {n_bad} of {len(reports)} datasets "
            f"({n_cases} cases read{warned})"
        )
    else:
        lines.append(
            f"verify: no problems in {len(reports)} datasets ({n_cases} cases read{warned})"
        )
    return "\n".join(lines)


def _describe(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _lines(err: Exception) -> list[str]:
    return [line for line in str(err).splitlines() if line.strip()]
