"""The per-case loop shared by every box-prompted family (classical baselines, SAM, ...).

A family supplies one function that segments one slice from one box; this module reads
the shared prompt file and the preprocessed images, paints each case's label volume and
writes it in the original image geometry, then ``manifest.tsv`` (``case_id, split,
n_prompts, seconds``), as :mod:`medsegflow.stages.predict` describes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from medsegflow.datasets.canonical import image_path
from medsegflow.errors import InputError
from medsegflow.io import Volume, atomic_path, read_volume, write_volume
from medsegflow.stages.predict import PREDICTION_COLUMNS
from medsegflow.stages.preprocess import read_preprocessed_manifest
from medsegflow.stages.prompts import read_prompts

log = logging.getLogger(__name__)

BoxSegmenter = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``segment(image_yx uint8 (H, W), box_xyxy float64 (4,)) -> bool (H, W) mask``."""


def paint_box_predictions(
    image_zyx: np.ndarray, prompts: pd.DataFrame, *, segment: BoxSegmenter, source: str = "prompts"
) -> np.ndarray:
    """Label volume from one case's box prompts, each segmented on its slice.

    Every prompt row (columns ``z, label, x_min, y_min, x_max, y_max``; XYXY pixel
    coordinates of slice z) is segmented with ``segment`` and its mask painted with the
    row's label value. Larger boxes are painted first, so where masks overlap the
    smaller box wins (a lesion inside its organ). ``source`` names the prompt file in
    errors.

    Returns:
        ``(Z, Y, X)`` uint8 labels (uint16 for label values above 255), 0 = background.
    """
    labels = prompts["label"].to_numpy(dtype=np.int64)
    dtype = np.uint8 if labels.size == 0 or labels.max() < 256 else np.uint16
    label_zyx = np.zeros(image_zyx.shape, dtype=dtype)
    boxes = prompts[["x_min", "y_min", "x_max", "y_max"]].to_numpy(dtype=np.float64)
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    for i in np.argsort(-area, kind="stable"):
        z = int(prompts["z"].iloc[i])
        where = f"{source}: row for case {prompts['case_id'].iloc[i]}, z {z}"
        if not 0 <= z < image_zyx.shape[0]:
            raise InputError(f"{where}: z is outside the image's {image_zyx.shape[0]} slices")
        try:
            mask_yx = segment(image_zyx[z], boxes[i])
        except ValueError as err:
            raise InputError(f"{where}, label {labels[i]}: {err}") from None
        label_zyx[z][mask_yx] = labels[i]
    return label_zyx


def _read_uint8_image(path: Path) -> Volume:
    """A preprocessed image; :class:`InputError` naming the file unless it is uint8."""
    image = read_volume(path)
    if image.array_zyx.dtype != np.uint8:
        raise InputError(f"{path}: preprocessed image is {image.array_zyx.dtype}, expected uint8")
    return image


def predict_box_prompts(
    *,
    segment: BoxSegmenter,
    preprocessed_dir: str | os.PathLike,
    prompts_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    splits: Sequence[str],
) -> pd.DataFrame:
    """Segment every box prompt of every case of ``splits`` slice by slice; write the volumes.

    For each case: reads the preprocessed ``uint8`` image, paints the prompts with
    :func:`paint_box_predictions` (a case without prompts gives an all-background
    volume), and writes ``out_dir/{case_id}.nii.gz`` with the preprocessed image's
    geometry, which is the canonical image's. ``manifest.tsv`` is written last.
    """
    out_dir = Path(out_dir)
    cases = read_preprocessed_manifest(preprocessed_dir, splits=splits)
    if cases.empty:
        raise InputError(
            f"{Path(preprocessed_dir) / 'manifest.tsv'}: no cases in splits {list(splits)}"
        )
    prompts = read_prompts(prompts_path)
    by_case = {case_id: rows for case_id, rows in prompts.groupby("case_id", sort=False)}
    empty = prompts.iloc[0:0]
    rows: list[dict[str, Any]] = []
    for case in tqdm(cases.to_dict("records"), desc="predict", unit="case"):
        start = time.perf_counter()
        case_id = case["case_id"]
        image = _read_uint8_image(image_path(preprocessed_dir, case_id))
        case_prompts = by_case.get(case_id, empty)
        label_zyx = paint_box_predictions(
            image.array_zyx, case_prompts, segment=segment, source=str(prompts_path)
        )
        write_volume(out_dir / f"{case_id}.nii.gz", Volume(label_zyx, image.geometry))
        rows.append(
            {
                "case_id": case_id,
                "split": case["split"],
                "n_prompts": len(case_prompts),
                "seconds": round(time.perf_counter() - start, 3),
            }
        )
        log.info("%s: %d prompts, %.2f s", case_id, len(case_prompts), rows[-1]["seconds"])
    manifest = pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))
    with atomic_path(out_dir / "manifest.tsv") as tmp:
        manifest.to_csv(tmp, sep="\t", index=False)
    log.info("predicted %d cases into %s", len(manifest), out_dir)
    return manifest
