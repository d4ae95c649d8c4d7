"""The per-case loop of every family: read each case, segment it, write it, then the manifest.

:func:`predict_cases` reads each case's preprocessed image, asks the family for its label
volume, writes it in the original image geometry (``out_dir/{case_id}.nii.gz``) and then
the manifest (:mod:`medsegflow.prediction.manifest`). :func:`predict_prompted_cases` adds
the shared prompt file on top. Cases are those of the job's splits and shard
(:func:`select_cases`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from medsegflow.datasets.canonical import image_path, label_path
from medsegflow.errors import InputError
from medsegflow.gpu_memory import gpu_peak_mb, reset_gpu_peak
from medsegflow.io import Volume, read_volume, write_volume
from medsegflow.manifests import read_preprocessed_image, read_preprocessed_manifest, read_prompts
from medsegflow.prediction.job import PredictJob, Shard, check_shard
from medsegflow.prediction.manifest import WRITTEN_COLUMNS, write_prediction_manifest

log = logging.getLogger(__name__)


def select_cases(
    cases: pd.DataFrame,
    splits: Sequence[str],
    shard: Shard | None = None,
    *,
    source: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """The rows of ``cases`` (a preprocessed manifest) to predict, in manifest order.

    Keeps the rows of ``splits``, then, with ``shard=(index, count)``, the positions
    ``index, index + count, ...`` of those (:mod:`medsegflow.prediction.job`). The shards
    of one ``count`` partition the cases. Raises :class:`InputError` naming ``source``
    (the manifest) when no case is in ``splits``; a shard may be empty (more shards than
    cases).
    """
    selected = cases[cases["split"].isin(list(splits))].reset_index(drop=True)
    if selected.empty:
        where = f"{source}: " if source is not None else ""
        raise InputError(f"{where}no cases in splits {list(splits)}")
    shard = check_shard(shard)
    if shard is not None:
        index, count = shard
        selected = selected.iloc[index::count].reset_index(drop=True)
    return selected


def job_cases(job: PredictJob) -> pd.DataFrame:
    """The preprocessed-manifest rows of the cases ``job`` predicts (:func:`select_cases`)."""
    return select_cases(
        read_preprocessed_manifest(job.preprocessed_dir),
        job.splits,
        job.shard,
        source=job.inputs["preprocessed"],
    )


@dataclass(frozen=True)
class CaseInput:
    """What a family gets for one case.

    Attributes:
        case_id, split: the case.
        image: the preprocessed ``uint8`` image (its geometry is the original one).
        prompts: this case's rows of the prompt file (see :mod:`medsegflow.stages.prompts`).
        label_file: the cleaned reference label (for oracle clicks; read on demand).
        source: the prompt file's path, for error messages.
    """

    case_id: str
    split: str
    image: Volume
    prompts: pd.DataFrame
    label_file: Path
    source: str

    def read_label_zyx(self) -> np.ndarray:
        """The cleaned label volume ``(Z, Y, X)``; :class:`InputError` if its shape differs."""
        return read_label_volume(self.label_file, self.image.array_zyx.shape)


def read_label_volume(path: str | os.PathLike, shape_zyx: tuple[int, ...]) -> np.ndarray:
    """The label volume at ``path``; :class:`InputError` naming it unless of ``shape_zyx``."""
    label_zyx = read_volume(path).array_zyx
    if label_zyx.shape != tuple(shape_zyx):
        raise InputError(f"{path}: shape {label_zyx.shape} differs from the image's {shape_zyx}")
    return label_zyx


CaseSegmenter = Callable[[CaseInput], np.ndarray]
"""``segment_case(case) -> (Z, Y, X)`` integer label volume of the case's image shape."""


def _check_slices(prompts: pd.DataFrame, n_z: int, *, source: str, case_id: str) -> None:
    bad = prompts["z"][(prompts["z"] < 0) | (prompts["z"] >= n_z)]
    if len(bad):
        raise InputError(
            f"{source}: row for case {case_id}, z {int(bad.iloc[0])}: z is outside the "
            f"image's {n_z} slices"
        )


CaseRunner = Callable[[dict[str, Any], Volume], tuple[np.ndarray, int]]
"""``segment(case_row, image) -> ((Z, Y, X) label volume, n_prompts)`` for one case.

``case_row`` is the case's row of the preprocessed manifest (``case_id``, ``split``, ...);
``image`` its preprocessed ``uint8`` image."""


def predict_cases(job: PredictJob, *, segment: CaseRunner, desc: str = "predict") -> pd.DataFrame:
    """Run ``segment`` on every case of ``job``; write the volumes, then the manifest.

    For each case (:func:`job_cases`: the job's splits and shard): reads the preprocessed
    ``uint8`` image, calls ``segment``, checks the label volume's shape and writes
    ``out_dir/{case_id}.nii.gz`` with the preprocessed image's geometry, which is the
    canonical image's; the manifest row records the ``n_prompts`` that ``segment``
    returns and the seconds the case took. The manifest (``manifest.tsv``, or the
    shard's) is written last. ``desc`` labels the progress bar.
    """
    cases = job_cases(job)
    rows: list[dict[str, Any]] = []
    n_empty = 0
    for case in tqdm(cases.to_dict("records"), desc=desc, unit="case"):
        start = time.perf_counter()
        reset_gpu_peak()
        case_id = case["case_id"]
        image = read_preprocessed_image(image_path(job.preprocessed_dir, case_id))
        label_zyx, n_prompts = segment(case, image)
        if label_zyx.shape != image.array_zyx.shape:
            raise ValueError(
                f"case {case_id}: predicted shape {label_zyx.shape} differs from the "
                f"image's {image.array_zyx.shape}"
            )
        n_empty += not label_zyx.any()
        write_volume(job.out_dir / f"{case_id}.nii.gz", Volume(label_zyx, image.geometry))
        seconds = round(time.perf_counter() - start, 3)
        rows.append(
            {
                "case_id": case_id,
                "split": case["split"],
                "n_prompts": n_prompts,
                "seconds": seconds,
                "gpu_mem_mb": gpu_peak_mb(),
            }
        )
        log.info("%s: %d prompts, %.2f s", case_id, n_prompts, seconds)
    manifest = pd.DataFrame(rows, columns=list(WRITTEN_COLUMNS))
    path = write_prediction_manifest(manifest, job.out_dir, job.shard)
    log.info(
        "%s: predicted %d cases into %s (%s; %d all background) in %.1f s",
        job.method_name,
        len(manifest),
        job.out_dir,
        path.name,
        n_empty,
        float(manifest["seconds"].sum()) if len(manifest) else 0.0,
    )
    return manifest


def predict_prompted_cases(
    job: PredictJob,
    *,
    segment_case: CaseSegmenter,
    prompts_path: str | os.PathLike | None = None,
    select: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Run ``segment_case`` on every case of ``job`` with its prompts (:func:`predict_cases`).

    The prompts come from ``prompts_path`` (default: the job's ``prompts`` input). Each
    case gets its rows of the prompt file (``select`` filters the whole prompt table
    first, e.g. to box rows), whose slice indices are checked first. A case without
    prompts is still passed on (families return an all-background volume); ``n_prompts``
    is the case's number of prompt rows.
    """
    prompts_path = prompts_path if prompts_path is not None else job.inputs["prompts"]
    source = str(prompts_path)
    prompts = read_prompts(prompts_path)
    prompts = select(prompts) if select is not None else prompts
    by_case = {case_id: rows for case_id, rows in prompts.groupby("case_id", sort=False)}
    empty = prompts.iloc[0:0]

    def segment(case: dict[str, Any], image: Volume) -> tuple[np.ndarray, int]:
        case_id = case["case_id"]
        case_prompts = by_case.get(case_id, empty)
        _check_slices(case_prompts, image.array_zyx.shape[0], source=source, case_id=case_id)
        label_zyx = segment_case(
            CaseInput(
                case_id=case_id,
                split=case["split"],
                image=image,
                prompts=case_prompts,
                label_file=label_path(job.preprocessed_dir, case_id),
                source=source,
            )
        )
        return label_zyx, len(case_prompts)

    return predict_cases(job, segment=segment)
