"""The per-case loop shared by every prompted family (classical baselines, SAM, ...).

:func:`predict_cases` reads each case's preprocessed image, asks the family for its
label volume, writes it in the original image geometry (``out_dir/{case_id}.nii.gz``) and
then ``manifest.tsv`` (``case_id, split, n_prompts, seconds``), as
:mod:`medsegflow.stages.predict` describes; every family's predictor runs on it.
:func:`predict_prompted_cases` adds the shared prompt file on top. :func:`paint_objects`
is the shared painting of per-slice object masks into a label volume.

The classical family supplies one function that segments one slice from one box
(:func:`predict_box_prompts`); the SAM family decodes all prompts of a case at once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from medsegflow.datasets.canonical import image_path, label_path
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import Volume, read_volume, write_volume
from medsegflow.stages.predict import (
    PREDICTION_COLUMNS,
    active_shard,
    select_cases,
    write_prediction_manifest,
)
from medsegflow.stages.preprocess import read_preprocessed_manifest
from medsegflow.stages.prompts import BOX_COLUMNS, read_prompts

log = logging.getLogger(__name__)

BoxSegmenter = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``segment(image_yx uint8 (H, W), box_xyxy float64 (4,)) -> bool (H, W) mask``."""


def check_method_keys(
    method: Mapping[str, Any], method_name: str, *, allowed: Sequence[str], family: str
) -> Callable[[str], str]:
    """:class:`ConfigError` for a key of ``method`` not in ``allowed``; returns ``key``,
    which names a method key in messages (``key("x")`` is ``methods.<method_name>.x``)."""

    def key(name: str) -> str:
        return f"methods.{method_name}.{name}"

    for name in method:
        if name not in allowed:
            raise ConfigError(
                f"{key(name)}: unknown key for the {family} family; allowed: {', '.join(allowed)}"
            )
    return key


@dataclass(frozen=True)
class ObjectMask:
    """One predicted object: bool ``(H, W)`` mask of slice ``z`` painted with ``label``.

    ``area`` orders the painting (largest first, so smaller objects painted later win
    where masks overlap, e.g. a lesion inside its organ): the prompt box's area for
    box-prompted families, the mask's pixel count otherwise.
    """

    z: int
    label: int
    mask_yx: np.ndarray
    area: float


def paint_objects(shape_zyx: tuple[int, int, int], objects: Iterable[ObjectMask]) -> np.ndarray:
    """Label volume of ``shape_zyx`` with every object painted, largest ``area`` first.

    Returns:
        ``(Z, Y, X)`` uint8 labels (uint16 for label values above 255), 0 = background.
    """
    objects = list(objects)
    top = max((o.label for o in objects), default=0)
    label_zyx = np.zeros(shape_zyx, dtype=np.uint8 if top < 256 else np.uint16)
    for i in np.argsort([-o.area for o in objects], kind="stable"):
        obj = objects[i]
        label_zyx[obj.z][obj.mask_yx] = obj.label
    return label_zyx


def box_rows(prompts: pd.DataFrame) -> pd.DataFrame:
    """The prompt rows that have a box (all four coordinates finite)."""
    finite = np.isfinite(prompts[list(BOX_COLUMNS)].to_numpy(dtype=np.float64)).all(axis=1)
    return prompts[finite]


def paint_box_predictions(
    image_zyx: np.ndarray, prompts: pd.DataFrame, *, segment: BoxSegmenter, source: str = "prompts"
) -> np.ndarray:
    """Label volume from one case's box prompts, each segmented on its slice.

    Every prompt row (columns ``z, label, x_min, y_min, x_max, y_max``; XYXY pixel
    coordinates of slice z) is segmented with ``segment`` and painted with the row's
    label value by :func:`paint_objects`, larger boxes first. ``source`` names the prompt
    file in errors.

    Returns:
        ``(Z, Y, X)`` uint8 labels (uint16 for label values above 255), 0 = background.
    """
    labels = prompts["label"].to_numpy(dtype=np.int64)
    boxes = prompts[list(BOX_COLUMNS)].to_numpy(dtype=np.float64)
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    objects = []
    for i, z in enumerate(prompts["z"].to_numpy(dtype=np.int64)):
        where = f"{source}: row for case {prompts['case_id'].iloc[i]}, z {z}"
        if not 0 <= z < image_zyx.shape[0]:
            raise InputError(f"{where}: z is outside the image's {image_zyx.shape[0]} slices")
        try:
            mask_yx = segment(image_zyx[z], boxes[i])
        except ValueError as err:
            raise InputError(f"{where}, label {labels[i]}: {err}") from None
        objects.append(ObjectMask(int(z), int(labels[i]), mask_yx, float(area[i])))
    return paint_objects(image_zyx.shape, objects)


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


def _read_uint8_image(path: Path) -> Volume:
    """A preprocessed image; :class:`InputError` naming the file unless it is uint8."""
    image = read_volume(path)
    if image.array_zyx.dtype != np.uint8:
        raise InputError(f"{path}: preprocessed image is {image.array_zyx.dtype}, expected uint8")
    return image


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


def predict_cases(
    *,
    segment: CaseRunner,
    preprocessed_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    splits: Sequence[str],
    desc: str = "predict",
) -> pd.DataFrame:
    """Run ``segment`` on every case of ``splits``; write the volumes, then the manifest.

    For each case: reads the preprocessed ``uint8`` image, calls ``segment``, checks the
    label volume's shape and writes ``out_dir/{case_id}.nii.gz`` with the preprocessed
    image's geometry, which is the canonical image's; the manifest row records the
    ``n_prompts`` that ``segment`` returns and the seconds the case took. ``manifest.tsv``
    is written last. Inside a sharded ``predict_dataset`` call only the shard's cases are
    predicted and the shard manifest is written instead
    (:func:`medsegflow.stages.predict.select_cases`). ``desc`` labels the progress bar.
    """
    out_dir = Path(out_dir)
    cases = select_cases(
        read_preprocessed_manifest(preprocessed_dir),
        splits,
        active_shard(),
        source=Path(preprocessed_dir) / "manifest.tsv",
    )
    rows: list[dict[str, Any]] = []
    n_empty = 0
    for case in tqdm(cases.to_dict("records"), desc=desc, unit="case"):
        start = time.perf_counter()
        case_id = case["case_id"]
        image = _read_uint8_image(image_path(preprocessed_dir, case_id))
        label_zyx, n_prompts = segment(case, image)
        if label_zyx.shape != image.array_zyx.shape:
            raise ValueError(
                f"case {case_id}: predicted shape {label_zyx.shape} differs from the "
                f"image's {image.array_zyx.shape}"
            )
        n_empty += not label_zyx.any()
        write_volume(out_dir / f"{case_id}.nii.gz", Volume(label_zyx, image.geometry))
        seconds = round(time.perf_counter() - start, 3)
        rows.append(
            {"case_id": case_id, "split": case["split"], "n_prompts": n_prompts, "seconds": seconds}
        )
        log.info("%s: %d prompts, %.2f s", case_id, n_prompts, seconds)
    manifest = pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))
    path = write_prediction_manifest(manifest, out_dir)
    log.info(
        "predicted %d cases into %s (%s; %d all background)",
        len(manifest),
        out_dir,
        path.name,
        n_empty,
    )
    return manifest


def predict_prompted_cases(
    *,
    segment_case: CaseSegmenter,
    preprocessed_dir: str | os.PathLike,
    prompts_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    splits: Sequence[str],
    select: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Run ``segment_case`` on every case of ``splits`` with its prompts (:func:`predict_cases`).

    Each case gets its rows of the prompt file (``select`` filters the whole prompt table
    first, e.g. to box rows), whose slice indices are checked first. A case without
    prompts is still passed on (families return an all-background volume); ``n_prompts``
    is the case's number of prompt rows.
    """
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
                label_file=label_path(preprocessed_dir, case_id),
                source=source,
            )
        )
        return label_zyx, len(case_prompts)

    return predict_cases(
        segment=segment, preprocessed_dir=preprocessed_dir, out_dir=out_dir, splits=splits
    )


def predict_box_prompts(
    *,
    segment: BoxSegmenter,
    preprocessed_dir: str | os.PathLike,
    prompts_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    splits: Sequence[str],
) -> pd.DataFrame:
    """Segment every box prompt (rows with a box) of every case of ``splits`` slice by slice.

    Each case is painted with :func:`paint_box_predictions` by
    :func:`predict_prompted_cases`; rows without a box (point prompts) are ignored.
    """

    def segment_case(case: CaseInput) -> np.ndarray:
        return paint_box_predictions(
            case.image.array_zyx, case.prompts, segment=segment, source=case.source
        )

    return predict_prompted_cases(
        segment_case=segment_case,
        preprocessed_dir=preprocessed_dir,
        prompts_path=prompts_path,
        out_dir=out_dir,
        splits=splits,
        select=box_rows,
    )
