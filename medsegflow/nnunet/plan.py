"""nnU-Net experiment planning and preprocessing through its Python API.

The equivalent of ``nnUNetv2_plan_and_preprocess -d N -c <configs> -np <n>
--verify_dataset_integrity``: integrity check of the raw folder, dataset fingerprint,
``ExperimentPlanner`` plans (``nnUNetPlans``), preprocessing of the requested
configurations, and a cross-validation ``splits_final.json`` over the training cases
(``min(5, n)`` folds, nnU-Net's seeded split; none for a single case, so only fold
``all`` can train). The marker JSON is written last.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from medsegflow.errors import InputError
from medsegflow.io import write_text
from medsegflow.nnunet.env import nnunet_environment, portable, process_output_to_log

log = logging.getLogger(__name__)

CONFIGURATIONS = ("2d", "3d_fullres")

POOL_MODULES = (
    "nnunetv2.experiment_planning.verify_dataset_integrity",
    "nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor",
    "nnunetv2.preprocessing.preprocessors.default_preprocessor",
)
"""nnU-Net modules whose ``multiprocessing.get_context("spawn").Pool`` plans a dataset."""


class _ThreadPoolContext:
    """A ``multiprocessing`` context whose ``Pool`` is a thread pool of this process."""

    @staticmethod
    def Pool(processes: int | None = None):  # noqa: N802  multiprocessing's name
        from multiprocessing.pool import ThreadPool

        return ThreadPool(processes)


class _InProcessMultiprocessing:
    """Stands for the ``multiprocessing`` module inside :data:`POOL_MODULES`."""

    @staticmethod
    def get_context(method: str | None = None) -> _ThreadPoolContext:
        return _ThreadPoolContext()


@contextlib.contextmanager
def in_process_pools(num_processes: int) -> Iterator[bool]:
    """With one process, nnU-Net's planning pools run in this process for the block (no
    ``spawn`` workers); yields whether they do. More processes: nnU-Net's own pools."""
    if num_processes != 1:
        yield False
        return
    modules = [importlib.import_module(name) for name in POOL_MODULES]
    saved = [module.multiprocessing for module in modules]
    for module in modules:
        module.multiprocessing = _InProcessMultiprocessing()
    try:
        yield True
    finally:
        for module, original in zip(modules, saved, strict=True):
            module.multiprocessing = original


def read_marker(path: str | os.PathLike) -> dict[str, Any]:
    """A stage marker JSON; :class:`InputError` naming the file when missing or unreadable."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None


def verify_raw_dataset(raw_dir: str | os.PathLike, *, num_processes: int = 1) -> None:
    """nnU-Net's ``verify_dataset_integrity``; its failures become one-line :class:`InputError`."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    try:
        verify_dataset_integrity(str(raw_dir), num_processes)
    except (AssertionError, RuntimeError, FileNotFoundError) as err:
        detail = " ".join(str(err).split()) or type(err).__name__
        raise InputError(f"{raw_dir}: nnU-Net dataset integrity check failed: {detail}") from None


def write_splits(preprocessed_dir: Path, case_ids: Sequence[str]) -> int:
    """Write nnU-Net's seeded ``min(5, n)``-fold split; returns the number of folds (0 if n < 2)."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    keys = sorted(case_ids)
    if len(keys) < 2:
        return 0
    splits = generate_crossval_split(keys, seed=12345, n_splits=min(5, len(keys)))
    write_text(preprocessed_dir / "splits_final.json", json.dumps(splits, indent=2) + "\n")
    return len(splits)


def _configuration_summary(plans: dict[str, Any], name: str) -> dict[str, Any]:
    conf = plans["configurations"][name]
    return {
        key: conf.get(key)
        for key in ("patch_size", "batch_size", "spacing", "normalization_schemes")
    }


def extract_fingerprint(number: int, *, num_processes: int, voxels: int | None = None) -> dict:
    """nnU-Net's dataset fingerprint (``extract_fingerprint_dataset``), its intensity
    statistics from ``voxels`` sampled foreground voxels (None: nnU-Net's 10^8)."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
        DatasetFingerprintExtractor,
    )

    extractor = DatasetFingerprintExtractor(number, num_processes, verbose=False)
    if voxels is not None:
        extractor.num_foreground_voxels_for_intensitystats = int(voxels)
    return extractor.run(overwrite_existing=True)


def run_planning(
    number: int,
    *,
    configurations: Sequence[str],
    num_processes: int,
    fingerprint_voxels: int | None = None,
) -> tuple[dict[str, Any], str, list[str]]:
    """Fingerprint, ``ExperimentPlanner`` plans and preprocessing of nnU-Net dataset ``number``.

    Returns the plans, their identifier and the requested configurations that were
    planned (and preprocessed). Must run inside :func:`nnunet_environment`.
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        plan_experiment_dataset,
        preprocess_dataset,
    )

    extract_fingerprint(number, num_processes=num_processes, voxels=fingerprint_voxels)
    plans, identifier = plan_experiment_dataset(number)
    planned = [c for c in configurations if c in plans["configurations"]]
    for missing in sorted(set(configurations) - set(planned)):
        log.warning(
            "dataset %d: nnU-Net planned no '%s' configuration (2D images?)", number, missing
        )
    if planned:
        preprocess_dataset(
            number,
            plans_identifier=identifier,
            configurations=planned,
            num_processes=[num_processes] * len(planned),
            show_progress_bar=False,
        )
    return plans, identifier, planned


def plan_and_preprocess(
    *,
    converted: str | os.PathLike,
    nnunet_dir: str | os.PathLike,
    configurations: Sequence[str],
    num_processes: int = 2,
    fingerprint_voxels: int | None = None,
    out_marker: str | os.PathLike,
) -> dict[str, Any]:
    """Verify, fingerprint, plan and preprocess the dataset of the ``converted`` marker.

    Configurations the planner does not produce (``3d_fullres`` for 2D images) are logged
    and left out; training one of them later fails naming the method. The preprocessed
    folder is rebuilt from scratch. Returns the marker written to ``out_marker``.
    """
    info = read_marker(converted)
    bad = [c for c in configurations if c not in CONFIGURATIONS]
    if bad or not configurations:
        raise ValueError(
            f"configurations {list(configurations)} must be a subset of {CONFIGURATIONS}"
        )
    start = time.perf_counter()
    name, number = info["dataset_name"], int(info["dataset_id"])
    with (
        nnunet_environment(nnunet_dir, num_processes=num_processes) as roots,
        process_output_to_log(),
        in_process_pools(num_processes),
    ):
        shutil.rmtree(roots.preprocessed / name, ignore_errors=True)
        verify_raw_dataset(roots.raw / name, num_processes=num_processes)
        plans, identifier, planned = run_planning(
            number,
            configurations=configurations,
            num_processes=num_processes,
            fingerprint_voxels=fingerprint_voxels,
        )
        n_folds = write_splits(roots.preprocessed / name, info["training_cases"])
    marker = {
        "dataset_id": number,
        "dataset_name": name,
        "preprocessed_dir": portable(roots.preprocessed / name),
        "plans": identifier,
        "configurations": {c: _configuration_summary(plans, c) for c in planned},
        "n_training": len(info["training_cases"]),
        "n_folds": n_folds,
        "fingerprint_voxels": fingerprint_voxels,
        "nnunet_to_original": info["nnunet_to_original"],
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_text(out_marker, json.dumps(marker, indent=2) + "\n")
    log.info("planned and preprocessed %s (%s) in %.1f s", name, planned, marker["seconds"])
    return marker
