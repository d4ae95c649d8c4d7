"""The canonical dataset layout that every adapter writes and every later stage reads.

``results/data/{dataset}/``::

    images/{case_id}.nii.gz   image, 3D (2D images are 1-slice volumes with pixel spacing)
    labels/{case_id}.nii.gz   integer label volume, same grid and geometry as the image
    labels.json               label map {"background": 0, "<name>": <value>, ...}
    cases.tsv                 one row per case (written last: it is the stage's file target)

``cases.tsv`` columns: ``case_id, split, modality, spacing_xyz_mm, size_xyz, caption,
spacing_known, warnings``; spacing and size are written ``"x,y,z"`` in ITK order.
``spacing_known`` is ``False`` when the source format stores no spacing (PNG, JPEG, an
``.npz`` without it) and the adapter was not told it: the 1 mm written is a placeholder, so
NSD and HD95 of that case are in pixels (the metric rows carry it as ``distance_unit``).
``warnings`` holds what was written all the same (a constant image of a dataset with
``allow_constant_images``), "; " between two; the metric rows carry it as ``input_warnings``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medsegflow.errors import InputError
from medsegflow.io import Geometry, Volume, is_colour, write_csv_atomic, write_text, write_volume
from medsegflow.logs import console_warning

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CASES_COLUMNS = (
    "case_id",
    "split",
    "modality",
    "spacing_xyz_mm",
    "size_xyz",
    "caption",
    "spacing_known",
    "warnings",
)


@dataclass
class CanonicalCase:
    """One case as an adapter yields it. ``image`` and ``label`` share one grid."""

    case_id: str
    split: str
    modality: str
    image: Volume
    label: Volume
    caption: str = ""
    image_source: str = ""
    label_source: str = ""

    @property
    def spacing_known(self) -> bool:
        """Whether the image's spacing came from its file or the adapter (not a placeholder)."""
        return self.image.spacing_known


@dataclass(frozen=True)
class CaseSource:
    """One case as an adapter lists it, before any file is read.

    ``load`` reads the files and returns the case; it raises :class:`InputError` naming the
    file when one is unreadable. ``source`` names the files for messages. Listing cases
    this way lets ``verify`` read every case and report every problem, not only the first.
    """

    case_id: str
    source: str
    load: Callable[[], CanonicalCase]


def assign_splits(
    case_ids: Sequence[str], fractions: Mapping[str, float], *, seed: int
) -> dict[str, str]:
    """Deterministic train/val/test assignment from fractions (case order does not matter).

    Cases are sorted, shuffled with ``seed``, then cut by the fractions (largest-remainder
    rounding). With at least 3 cases, every split with a positive fraction gets one case.
    """
    ids = sorted(case_ids)
    n = len(ids)
    total = sum(fractions.get(s, 0.0) for s in SPLITS)
    if total <= 0:
        raise ValueError(f"split fractions {dict(fractions)} must add up to a positive number")
    raw = {s: n * fractions.get(s, 0.0) / total for s in SPLITS}
    counts = {s: math.floor(raw[s]) for s in SPLITS}
    for s in sorted(SPLITS, key=lambda s: raw[s] - counts[s], reverse=True):
        if sum(counts.values()) >= n:
            break
        counts[s] += 1
    if n >= 3:
        for s in SPLITS:
            if fractions.get(s, 0.0) > 0 and counts[s] == 0:
                donor = max(SPLITS, key=lambda t: counts[t])
                counts[donor] -= 1
                counts[s] += 1
    order = np.random.default_rng(seed).permutation(n)
    out: dict[str, str] = {}
    start = 0
    for s in SPLITS:
        for idx in order[start : start + counts[s]]:
            out[ids[idx]] = s
        start += counts[s]
    return out


def find_case_problems(
    case: CanonicalCase, label_map: Mapping[str, int], *, check_empty: bool = False
) -> list[str]:
    """Every problem with one case, each a line naming the file and what is wrong.

    Checks: image and label are 3D arrays on the same grid and geometry, the image has
    no NaN/inf intensities, and every label value is in the label map. With
    ``check_empty``, an image whose voxels all have one value is a problem too
    (:func:`empty_image_problem`; a warning where the dataset allows constant images).
    """
    img_name = case.image_source or f"{case.case_id} image"
    lab_name = case.label_source or f"{case.case_id} label"
    problems: list[str] = []
    img, lab = case.image.array_zyx, case.label.array_zyx
    if img.ndim != 3 and not is_colour(img):  # a colour image: (Z, Y, X, 3) uint8 RGB
        problems.append(f"{img_name}: image has {img.ndim} dimensions, expected 2D or 3D")
    if lab.ndim != 3:
        problems.append(f"{lab_name}: label has {lab.ndim} dimensions, expected 2D or 3D")
    if problems:
        return problems
    if img.shape[:3] != lab.shape:
        problems.append(
            f"{lab_name}: label shape (z,y,x)={lab.shape} differs from image "
            f"{img_name} shape {img.shape}"
        )
    elif differing := case.label.geometry.differences(case.image.geometry):
        problems.append(
            f"{lab_name}: label geometry ({_fmt_geometry(case.label.geometry)}) differs from "
            f"image {img_name} ({_fmt_geometry(case.image.geometry)}) in "
            f"{' and '.join(differing)}"
        )
    if np.issubdtype(img.dtype, np.floating) and not np.isfinite(img).all():
        n_bad = int((~np.isfinite(img)).sum())
        problems.append(f"{img_name}: image has {n_bad} NaN or infinite intensities")
    elif check_empty and (empty := empty_image_problem(case)):
        problems.append(f"{empty}{CONSTANT_HINT}")
    if np.issubdtype(lab.dtype, np.floating) and (
        not np.isfinite(lab).all() or not np.array_equal(lab, np.round(lab))
    ):
        problems.append(f"{lab_name}: label has non-integer values")
        return problems
    allowed = set(int(v) for v in label_map.values())
    present = set(int(v) for v in np.unique(lab))
    unknown = sorted(present - allowed)
    if unknown:
        problems.append(
            f"{lab_name}: label values {unknown} are not in the label map {dict(label_map)}"
        )
    return problems


CONSTANT_HINT = "; set allow_constant_images: true in the dataset's config to score it all the same"
"""Ends the line of a constant image where it is an error (the default)."""


def empty_image_problem(case: CanonicalCase) -> str:
    """A line naming the image file when all its voxels have one value; "" otherwise."""
    img = case.image.array_zyx
    if img.size and np.min(img) != np.max(img):
        return ""
    value = "no voxels" if img.size == 0 else f"every voxel is {np.ravel(img)[0]}"
    return f"{case.image_source or case.case_id + ' image'}: constant image ({value})"


def _fmt(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _fmt_geometry(geometry: Geometry) -> str:
    """``spacing (x, y, z), origin (x, y, z), direction (9 values, row by row)``."""
    return (
        f"spacing {_fmt(geometry.spacing_xyz)}, origin {_fmt(geometry.origin_xyz)}, "
        f"direction {_fmt(geometry.direction)}"
    )


@dataclass
class AdapterResult:
    """What an adapter returns: the label map and its cases, listed but not yet read."""

    label_map: dict[str, int]
    sources: Sequence[CaseSource]

    @property
    def cases(self) -> Iterator[CanonicalCase]:
        """The cases, read one at a time as they are consumed."""
        return (source.load() for source in self.sources)


def write_canonical_dataset(
    cases: Iterable[CanonicalCase],
    *,
    label_map: Mapping[str, int],
    out_dir: str | os.PathLike,
    allow_constant_images: bool = False,
    dataset_warnings: Sequence[str] = (),
) -> pd.DataFrame:
    """Verify and write cases into ``out_dir`` in the canonical layout; return the table.

    Every case is checked with :func:`find_case_problems` before anything is written for
    it; the first bad case stops the run with an :class:`InputError` whose lines name
    each problem. An image whose voxels all have one value is such a problem, unless
    ``allow_constant_images``: then it is written with a warning, on the console, in the log
    and in the case's ``warnings``; ``dataset_warnings`` (what the adapter warned about
    while listing, e.g. a label without its image) go into every case's ``warnings``.
    ``cases.tsv`` is written last and atomically, so a dataset folder without it is never
    taken as complete.
    """
    out = Path(out_dir)
    _check_label_map(label_map)
    (out / "cases.tsv").unlink(missing_ok=True)  # never leave an old table over new files
    rows = []
    seen: set[str] = set()
    for case in cases:
        if case.split not in SPLITS:
            raise InputError(f"{case.case_id}: split '{case.split}' is not one of {SPLITS}")
        if case.case_id in seen:
            raise InputError(
                f"{case.image_source or case.case_id}: duplicate case id '{case.case_id}'"
            )
        seen.add(case.case_id)
        problems = find_case_problems(case, label_map, check_empty=not allow_constant_images)
        if problems:
            raise InputError("\n".join(problems))
        warnings = list(dataset_warnings)
        if empty := empty_image_problem(case):
            warnings.append(empty)
            console_warning(log, f"{empty}; written all the same (allow_constant_images)")
        write_volume(out / "images" / f"{case.case_id}.nii.gz", case.image)
        label = Volume(
            case.label.array_zyx.astype(np.uint8 if max(label_map.values()) < 256 else np.uint16),
            case.label.geometry,
        )
        write_volume(out / "labels" / f"{case.case_id}.nii.gz", label)
        size_zyx = case.image.array_zyx.shape[:3]  # a colour image's RGB axis is no size
        rows.append(
            {
                "case_id": case.case_id,
                "split": case.split,
                "modality": case.modality,
                "spacing_xyz_mm": ",".join(f"{s:.6g}" for s in case.image.geometry.spacing_xyz),
                "size_xyz": ",".join(str(s) for s in size_zyx[::-1]),
                "caption": case.caption,
                "spacing_known": case.spacing_known,
                "warnings": "; ".join(warnings),
            }
        )
        log.info(
            "wrote case %s (%s, %s, size xyz %s)",
            case.case_id,
            case.split,
            case.modality,
            rows[-1]["size_xyz"],
        )
    if not rows:
        raise InputError(f"{out}: the adapter produced no cases")
    write_text(out / "labels.json", json.dumps(dict(label_map), indent=2) + "\n")
    table = pd.DataFrame(rows, columns=list(CASES_COLUMNS))
    write_csv_atomic(table, out / "cases.tsv", sep="\t", float_format=None)
    counts = table["split"].value_counts().to_dict()
    log.info("dataset written to %s: %d cases %s", out, len(table), counts)
    return table


def _check_label_map(label_map: Mapping[str, int]) -> None:
    values = list(label_map.values())
    if label_map.get("background") != 0:
        raise InputError(f"label map {dict(label_map)} must map 'background' to 0")
    if len(set(values)) != len(values):
        raise InputError(f"label map {dict(label_map)} gives two names the same value")


def read_cases(dataset_dir: str | os.PathLike) -> pd.DataFrame:
    """Read ``cases.tsv`` of a canonical dataset (case ids as strings, captions never NaN)."""
    path = Path(dataset_dir) / "cases.tsv"
    table = pd.read_csv(
        path,
        sep="\t",
        dtype={"case_id": str, "caption": str, "warnings": str},
        keep_default_na=False,
    )
    if "spacing_known" not in table.columns:  # written before the column existed
        table["spacing_known"] = True
    if "warnings" not in table.columns:
        table["warnings"] = ""
    table["spacing_known"] = table["spacing_known"].map(
        lambda v: str(v).strip().lower() in ("true", "1")
    )
    missing = [c for c in CASES_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing columns {missing}")
    return table


def read_label_map(dataset_dir: str | os.PathLike) -> dict[str, int]:
    """Read ``labels.json`` of a canonical dataset as ``{name: value}``."""
    path = Path(dataset_dir) / "labels.json"
    with open(path, encoding="utf-8") as handle:
        return {str(k): int(v) for k, v in json.load(handle).items()}


def image_path(dataset_dir: str | os.PathLike, case_id: str) -> Path:
    return Path(dataset_dir) / "images" / f"{case_id}.nii.gz"


def label_path(dataset_dir: str | os.PathLike, case_id: str) -> Path:
    return Path(dataset_dir) / "labels" / f"{case_id}.nii.gz"
