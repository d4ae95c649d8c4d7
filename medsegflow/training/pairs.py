"""Training samples of SAM-family recipes: the train split's selected slices (``slices.tsv``)
and the (slice, label) pairs of their foreground."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsegflow.datasets.canonical import image_path, label_path, read_label_map
from medsegflow.errors import InputError
from medsegflow.io import read_volume
from medsegflow.manifests import SLICES_COLUMNS, read_preprocessed_manifest, read_table

log = logging.getLogger(__name__)

ZOOM_RANGE = (0.7, 1.0)
"""Crop side / slice side, drawn uniformly, of the zoom augmentation."""


@dataclass
class DatasetPairs:
    """The selected slices of one dataset's train cases and their (slice, label) pairs.

    Attributes:
        name: the dataset folder's name.
        label_map: its ``labels.json`` (``{name: value}``, background included).
        images: ``(H, W)`` uint8 slices, ``(H, W, 3)`` for colour images (preprocessed
            intensities): every foreground slice and the empty slices the preprocessing
            kept (``n_empty_slices``).
        labels: ``(H, W)`` integer cleaned labels of the same slices.
        pairs: ``(P, 2)`` int64 rows ``(index into images, label value)``.
    """

    name: str
    label_map: dict[str, int] = field(default_factory=dict)
    images: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))


@dataclass
class TrainingPairs:
    """Pairs of several datasets; :meth:`sample` picks a dataset uniformly, then a pair."""

    datasets: list[DatasetPairs]

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A random (slice, label) pair's slice and the masks of every label on it.

        Returns:
            ``image_yx`` uint8 ``(H, W)`` and ``masks_kyx`` bool ``(K, H, W)``: the drawn
            label first, then the slice's other labels in increasing value. Decoding all
            of them against one image embedding gives K supervised prompts for the price
            of one encoder pass.
        """
        data = self.datasets[int(rng.integers(len(self.datasets)))]
        index, value = data.pairs[int(rng.integers(len(data.pairs)))]
        label_yx = data.labels[index]
        others = [int(v) for v in np.unique(label_yx) if v not in (0, value)]
        masks_kyx = np.stack([label_yx == v for v in (int(value), *others)])
        return data.images[index], masks_kyx

    def sample_slice(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A random selected slice (foreground or empty) of a random dataset:
        ``(image_yx, label_yx)``; semantic recipes learn background from the empty ones."""
        data = self.datasets[int(rng.integers(len(self.datasets)))]
        index = int(rng.integers(len(data.images)))
        return data.images[index], data.labels[index]

    def counts(self) -> dict[str, int]:
        """Number of (slice, label) pairs per dataset."""
        return {d.name: len(d.pairs) for d in self.datasets}


def _dataset_pairs(preprocessed_dir: Path, split: str = "train") -> DatasetPairs:
    """The selected slices of one split of one preprocessed dataset, and their pairs."""
    cases = read_preprocessed_manifest(preprocessed_dir, splits=[split])
    slices = read_table(preprocessed_dir / "slices.tsv", columns=SLICES_COLUMNS)
    slices = slices[slices["case_id"].isin(cases["case_id"])]
    data = DatasetPairs(name=preprocessed_dir.name, label_map=read_label_map(preprocessed_dir))
    pairs: list[tuple[int, int]] = []
    for case_id, rows in slices.groupby("case_id", sort=True):
        # RGB stays RGB: the recipes take (H, W, 3) as the official code does
        image_zyx = read_volume(image_path(preprocessed_dir, case_id), colour="rgb").array_zyx
        label_zyx = read_volume(label_path(preprocessed_dir, case_id)).array_zyx
        if image_zyx.dtype != np.uint8 or image_zyx.shape[:3] != label_zyx.shape:
            raise InputError(
                f"{image_path(preprocessed_dir, case_id)}: expected a uint8 image on the "
                f"label's grid {label_zyx.shape}, got {image_zyx.dtype} {image_zyx.shape}"
            )
        for z in sorted(int(v) for v in rows["z"]):
            values = [int(v) for v in np.unique(label_zyx[z]) if v != 0]
            pairs += [(len(data.images), v) for v in values]
            data.images.append(image_zyx[z])
            data.labels.append(label_zyx[z])
    data.pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return data


def load_training_pairs(preprocessed_dirs: Sequence[str | os.PathLike]) -> TrainingPairs:
    """Pairs of every dataset with train foreground; datasets without any are skipped
    with a warning, and :class:`InputError` is raised when none is left."""
    kept = []
    for folder in preprocessed_dirs:
        data = _dataset_pairs(Path(folder))
        if len(data.pairs):
            kept.append(data)
            log.info(
                "%s: %d train slices (%d with foreground), %d (slice, label) pairs",
                data.name,
                len(data.images),
                len(np.unique(data.pairs[:, 0])),
                len(data.pairs),
            )
        else:
            log.warning("%s: no foreground slice in the train split, not used", folder)
    if not kept:
        names = ", ".join(str(Path(f) / "manifest.tsv") for f in preprocessed_dirs)
        raise InputError(f"{names}: no train case with foreground to train the demo SAM on")
    return TrainingPairs(kept)


def load_validation_pairs(preprocessed_dirs: Sequence[str | os.PathLike]) -> TrainingPairs | None:
    """The val split's slices and pairs of every dataset that has val foreground, or None."""
    kept = [_dataset_pairs(Path(folder), "val") for folder in preprocessed_dirs]
    kept = [data for data in kept if len(data.pairs)]
    return TrainingPairs(kept) if kept else None


def augment_slice(
    image_yx: np.ndarray, masks_kyx: np.ndarray, *, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random left-right flip and zoom of one training slice and its masks.

    - flip with probability 0.5;
    - zoom: a crop of ``s * H`` x ``s * W`` pixels, ``s`` uniform in :data:`ZOOM_RANGE`, at
      a random place that holds the box of the first mask (no crop when none does); masks
      left empty by the crop are dropped, the first never is.

    Intensities are left alone: a random gamma (0.7..1.4) lowered the CT organs' DSC
    (their windowed HU tell them apart) more than it helped the ultrasound lesions.

    Args:
        image_yx: ``(H, W)`` uint8, or ``(H, W, 3)`` uint8 RGB.
        masks_kyx: ``(K, H, W)`` bool, the first one non-empty.

    Returns:
        the augmented ``(h, w)`` (or ``(h, w, 3)``) uint8 image and ``(K', h, w)`` bool
        masks, ``K' <= K``.
    """
    if rng.random() < 0.5:
        image_yx, masks_kyx = image_yx[:, ::-1], masks_kyx[:, :, ::-1]
    height, width = image_yx.shape[:2]
    scale = rng.uniform(*ZOOM_RANGE)
    crop_h, crop_w = max(1, round(height * scale)), max(1, round(width * scale))
    rows = np.flatnonzero(masks_kyx[0].any(axis=1))
    cols = np.flatnonzero(masks_kyx[0].any(axis=0))
    y_lo, y_hi = max(0, rows[-1] - crop_h + 1), min(rows[0], height - crop_h)
    x_lo, x_hi = max(0, cols[-1] - crop_w + 1), min(cols[0], width - crop_w)
    if y_lo <= y_hi and x_lo <= x_hi:
        y0, x0 = int(rng.integers(y_lo, y_hi + 1)), int(rng.integers(x_lo, x_hi + 1))
        image_yx = image_yx[y0 : y0 + crop_h, x0 : x0 + crop_w]
        masks_kyx = masks_kyx[:, y0 : y0 + crop_h, x0 : x0 + crop_w]
        masks_kyx = masks_kyx[masks_kyx.reshape(len(masks_kyx), -1).any(axis=1)]
    return np.ascontiguousarray(image_yx), np.ascontiguousarray(masks_kyx)
