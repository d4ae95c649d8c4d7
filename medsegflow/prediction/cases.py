"""The per-case loop of every family: read each case, segment it, write it, then the manifest.

:func:`predict_cases` reads each case's preprocessed image, asks the family for its label
volume, writes it in the original image geometry (``out_dir/{case_id}.nii.gz``; before it,
``out_dir/{case_id}_probs.npz`` when the family returns soft outputs, see
:class:`CasePrediction`) and then the manifest (:mod:`medsegflow.prediction.manifest`).
:func:`predict_prompted_cases` adds the shared prompt file on top. Cases are those of the
job's splits and shard (:func:`select_cases`).
"""

from __future__ import annotations

import logging
import os
import time
import zipfile
import zlib
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
from medsegflow.io import Volume, atomic_path, read_volume, write_volume
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


@dataclass(frozen=True)
class CasePrediction:
    """A family's prediction of one case with its soft outputs (families without any
    return the bare label volume instead).

    Attributes:
        label_zyx: ``(Z, Y, X)`` integer labels of the image's shape.
        probs_czyx: float ``(C, Z, Y, X)`` foreground probabilities, channel ``c`` of label
            ``labels[c]``, or None; written as float16 to ``{case_id}_probs.npz``.
        labels: the label value of each channel.
    """

    label_zyx: np.ndarray
    probs_czyx: np.ndarray | None = None
    labels: tuple[int, ...] = ()


CaseSegmenter = Callable[[CaseInput], np.ndarray | CasePrediction]
"""``segment_case(case) -> (Z, Y, X)`` integer label volume of the case's image shape, or
a :class:`CasePrediction` holding it and the case's probabilities."""

PROBS_SUFFIX = "_probs.npz"


def probabilities_path(out_dir: str | os.PathLike, case_id: str) -> Path:
    """``out_dir/{case_id}_probs.npz``: a case's soft outputs beside its label volume."""
    return Path(out_dir) / f"{case_id}{PROBS_SUFFIX}"


def write_probabilities(
    path: str | os.PathLike, probs_czyx: np.ndarray, labels: Sequence[int]
) -> None:
    """Write ``probs`` (float16 ``(C, Z, Y, X)``) and ``labels`` (int64 ``(C,)``) atomically
    as a compressed ``.npz``."""
    probs_czyx = np.asarray(probs_czyx, dtype=np.float16)
    labels_c = np.asarray(labels, dtype=np.int64)
    if probs_czyx.ndim != 4 or labels_c.shape != probs_czyx.shape[:1]:
        raise ValueError(
            f"{path}: probabilities {probs_czyx.shape} need (C, Z, Y, X) with one of the "
            f"{labels_c.shape[0]} labels per channel"
        )
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, probs=probs_czyx, labels=labels_c)


def read_probabilities(
    path: str | os.PathLike, shape_zyx: tuple[int, ...]
) -> dict[int, np.ndarray]:
    """``{label: (Z, Y, X) float16 probabilities}`` of a :func:`write_probabilities` file.

    Raises :class:`InputError` naming ``path`` when it is unreadable, lacks ``probs`` or
    ``labels``, its channels and labels differ in number or repeat a label, its maps are
    not of ``shape_zyx`` (the prediction's), or a value is NaN or outside [0, 1].
    """
    try:
        if not zipfile.is_zipfile(path):
            raise ValueError("not an .npz archive")
        with np.load(path, allow_pickle=False) as data:
            probs_czyx, labels_c = data["probs"], data["labels"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise InputError(f"{path}: unreadable probability file ({err})") from None
    if probs_czyx.ndim != 4 or probs_czyx.shape[1:] != tuple(shape_zyx):
        raise InputError(
            f"{path}: probabilities of shape {probs_czyx.shape}, expected (C, Z, Y, X) with "
            f"(Z, Y, X) = {tuple(shape_zyx)}, the prediction's shape"
        )
    labels = [int(v) for v in np.asarray(labels_c).reshape(-1)]
    if len(labels) != probs_czyx.shape[0] or len(set(labels)) != len(labels):
        raise InputError(f"{path}: {probs_czyx.shape[0]} probability channels but labels {labels}")
    if not np.issubdtype(probs_czyx.dtype, np.floating):
        raise InputError(f"{path}: probabilities of dtype {probs_czyx.dtype}, not float")
    if probs_czyx.size and not (probs_czyx.min() >= 0 and probs_czyx.max() <= 1):  # or NaN
        raise InputError(f"{path}: probabilities outside [0, 1] (or NaN)")
    return {label: probs_czyx[c] for c, label in enumerate(labels)}


def _check_slices(prompts: pd.DataFrame, n_z: int, *, source: str, case_id: str) -> None:
    bad = prompts["z"][(prompts["z"] < 0) | (prompts["z"] >= n_z)]
    if len(bad):
        raise InputError(
            f"{source}: row for case {case_id}, z {int(bad.iloc[0])}: z is outside the "
            f"image's {n_z} slices"
        )


CaseRunner = Callable[[dict[str, Any], Volume], tuple[np.ndarray | CasePrediction, int]]
"""``segment(case_row, image) -> ((Z, Y, X) label volume or CasePrediction, n_prompts)``
for one case.

``case_row`` is the case's row of the preprocessed manifest (``case_id``, ``split``, ...);
``image`` its preprocessed ``uint8`` image."""


def predict_cases(job: PredictJob, *, segment: CaseRunner, desc: str = "predict") -> pd.DataFrame:
    """Run ``segment`` on every case of ``job``; write the volumes, then the manifest.

    For each case (:func:`job_cases`: the job's splits and shard): reads the preprocessed
    ``uint8`` image, calls ``segment``, checks the label volume's shape and writes
    ``out_dir/{case_id}.nii.gz`` with the preprocessed image's geometry, which is the
    canonical image's. A :class:`CasePrediction` with probabilities has them written
    first (:func:`write_probabilities`, ``out_dir/{case_id}_probs.npz``, same grid); one
    without removes a probability file an earlier run left, so none is stale. The manifest
    row records the ``n_prompts`` that ``segment`` returns and the seconds the case took.
    The manifest (``manifest.tsv``, or the shard's) is written last. ``desc`` labels the
    progress bar.
    """
    cases = job_cases(job)
    rows: list[dict[str, Any]] = []
    n_empty = 0
    for case in tqdm(cases.to_dict("records"), desc=desc, unit="case"):
        start = time.perf_counter()
        reset_gpu_peak()
        case_id = case["case_id"]
        # one channel: the families that read the image itself (classical, coarse masks)
        # need one; the SAM families decode embeddings that were made from the RGB image
        image = read_preprocessed_image(image_path(job.preprocessed_dir, case_id), colour="grey")
        result, n_prompts = segment(case, image)
        prediction = result if isinstance(result, CasePrediction) else CasePrediction(result)
        label_zyx = prediction.label_zyx
        if label_zyx.shape != image.array_zyx.shape:
            raise ValueError(
                f"case {case_id}: predicted shape {label_zyx.shape} differs from the "
                f"image's {image.array_zyx.shape}"
            )
        n_empty += not label_zyx.any()
        probs_path = probabilities_path(job.out_dir, case_id)
        if prediction.probs_czyx is None:
            probs_path.unlink(missing_ok=True)
        elif prediction.probs_czyx.shape[1:] != label_zyx.shape:
            raise ValueError(
                f"case {case_id}: probabilities of shape {prediction.probs_czyx.shape} do "
                f"not match the predicted shape {label_zyx.shape}"
            )
        else:
            write_probabilities(probs_path, prediction.probs_czyx, prediction.labels)
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

    def segment(case: dict[str, Any], image: Volume) -> tuple[np.ndarray | CasePrediction, int]:
        case_id = case["case_id"]
        case_prompts = by_case.get(case_id, empty)
        _check_slices(case_prompts, image.array_zyx.shape[0], source=source, case_id=case_id)
        prediction = segment_case(
            CaseInput(
                case_id=case_id,
                split=case["split"],
                image=image,
                prompts=case_prompts,
                label_file=label_path(job.preprocessed_dir, case_id),
                source=source,
            )
        )
        return prediction, len(case_prompts)

    return predict_cases(job, segment=segment)
