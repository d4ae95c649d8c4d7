"""nnU-Net's folder variables, set per job inside the library call; device; output capture.

nnU-Net finds its data through ``nnUNet_raw``, ``nnUNet_preprocessed`` and
``nnUNet_results``. :func:`nnunet_environment` sets them (and the process counts nnU-Net
reads from the environment, ``nnUNet_def_n_proc`` at import of ``nnunetv2.configuration``
and ``nnUNet_n_proc_DA`` when data loaders start) in this process only, before any
``nnunetv2`` module is imported, and restores the previous values afterwards, so
nothing depends on the user's shell. Layout under ``nnunet_dir`` (``results/nnunet``)::

    nnUNet_raw/DatasetNNN_<dataset>__<labels>/          imagesTr, labelsTr, imagesTs, dataset.json
    nnUNet_preprocessed/DatasetNNN_<dataset>__<labels>/ plans, fingerprint, preprocessed arrays
    nnUNet_results/<method>/DatasetNNN_<...>/           one trained-model tree per method
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class NnunetRoots:
    """Absolute nnU-Net folders of one job (``results`` is per method)."""

    raw: Path
    preprocessed: Path
    results: Path


def nnunet_roots(nnunet_dir: str | os.PathLike, *, method: str | None = None) -> NnunetRoots:
    """The nnU-Net folders under ``nnunet_dir``; ``results`` is ``nnUNet_results/<method>``."""
    root = Path(nnunet_dir).resolve()
    results = root / "nnUNet_results"
    return NnunetRoots(
        raw=root / "nnUNet_raw",
        preprocessed=root / "nnUNet_preprocessed",
        results=results / method if method else results,
    )


@contextlib.contextmanager
def nnunet_environment(
    nnunet_dir: str | os.PathLike,
    *,
    method: str | None = None,
    num_processes: int = 2,
    augmentation_processes: int | None = None,
) -> Iterator[NnunetRoots]:
    """Set nnU-Net's variables for the block (this process and its children); restore after.

    ``num_processes`` becomes ``nnUNet_def_n_proc``; ``augmentation_processes`` (default:
    ``num_processes``) becomes ``nnUNet_n_proc_DA`` (0 = augment in the training process).
    """
    roots = nnunet_roots(nnunet_dir, method=method)
    for folder in (roots.raw, roots.preprocessed, roots.results):
        folder.mkdir(parents=True, exist_ok=True)
    values = {
        "nnUNet_raw": str(roots.raw),
        "nnUNet_preprocessed": str(roots.preprocessed),
        "nnUNet_results": str(roots.results),
        "nnUNet_def_n_proc": str(num_processes),
        "nnUNet_n_proc_DA": str(
            num_processes if augmentation_processes is None else augmentation_processes
        ),
    }
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield roots
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def portable(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory (the workflow's), for marker files."""
    return os.path.relpath(path)


def pick_device() -> torch.device:
    """CUDA when available, else Apple MPS when available, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@contextlib.contextmanager
def process_output_to_log() -> Iterator[None]:
    """Point file descriptors 1 and 2 at the file behind ``sys.stdout`` for the block.

    Inside :func:`medsegflow.logs.log_to`, ``sys.stdout`` is the job log; nnU-Net's worker
    processes and C code write to the descriptors, which this sends to the same log.
    Does nothing when ``sys.stdout`` has no file descriptor of its own.
    """
    try:
        target = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        target = None
    if target is None or target in (1, 2):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
