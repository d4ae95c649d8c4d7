"""Adapter ``covid_qu_ex``: COVID-QU-Ex chest X-rays (Tahir et al., Computers in Biology and
Medicine 139, 2021, doi:10.1016/j.compbiomed.2021.104319), Kaggle
https://www.kaggle.com/datasets/anasmohammedtahir/covidqu, as the download unpacks.

Expected tree (``params.root`` is the unpacked download; each part is nested twice)::

    Lung Segmentation Data/Lung Segmentation Data/          33,920 images, lung masks
      {Train,Val,Test}/{COVID-19,Non-COVID,Normal}/images/covid_1579.png
                                                   lung masks/covid_1579.png
    Infection Segmentation Data/Infection Segmentation Data/  subset with infection masks
      {Train,Val,Test}/{COVID-19,Non-COVID,Normal}/images/non_COVID (11905).png
                                                   lung masks/non_COVID (11905).png
                                                   infection masks/non_COVID (11905).png

A mask has its image's file name (``covid_<n>.png``, ``non_COVID (<n>).png``,
``Normal (<n>).png``). A part unpacked once only (``<part>/Train/...``) is read too.

``task: lung`` (default; the lung X-ray task of MedCLIP-SAMv2) reads the Lung Segmentation
Data with its lung masks: background 0, lung 1. ``task: infection`` reads the Infection
Segmentation Data with its infection masks: background 0, infection 1 (what infection
segmentation is scored on; Normal images keep an empty reference). With ``with_lung: true``
the infection task also reads the lung masks: background 0, lung 1, infection 2 (infection
wins where both are set).

The official Train/Val/Test folders are the train/val/test splits. The class folder is the
caption (``params.caption``, default ``"Chest X-ray, {class}."`` with {class} COVID-19,
non-COVID infection or normal). Case ids are the file stems with every run of other
characters than letters and digits made one ``_`` (``non_COVID_11905``). Masks are 0/255
(binary rule of ``png_folder``); the pixel spacing is not published (1 mm written,
``spacing_known`` false).

Parameters (``params.<key>``)::

    root       the folder holding "Lung Segmentation Data" / "Infection Segmentation Data"
    task       lung | infection                                     default lung
    with_lung  infection task: label the lungs too (1; infection 2)  default false
    classes    subset of [COVID-19, Non-COVID, Normal]              default: all three
    caption    template with {class} (and {case_id})                default above
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medsegflow.datasets._params import (
    check_keys,
    check_labels_exist,
    get_bool,
    get_root,
    listing_problem,
    usable_file,
)
from medsegflow.datasets.canonical import AdapterResult, CanonicalCase, CaseSource
from medsegflow.datasets.png_folder import MaskRule, mask_to_label, read_image_and_masks
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import Geometry, Volume, read_raster

log = logging.getLogger(__name__)

ADAPTER = "covid_qu_ex"
KEYS = ("root", "task", "with_lung", "classes", "caption")
TASKS = {"lung": "Lung Segmentation Data", "infection": "Infection Segmentation Data"}
SETS = (("Train", "train"), ("Val", "val"), ("Test", "test"))
CLASSES = ("COVID-19", "Non-COVID", "Normal")
CAPTION_CLASS = {"COVID-19": "COVID-19", "Non-COVID": "non-COVID infection", "Normal": "normal"}
LUNG_MASKS, INFECTION_MASKS = "lung masks", "infection masks"
DEFAULT_CAPTION = "Chest X-ray, {class}."
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]+")


def build(params: Mapping[str, Any], *, seed: int) -> AdapterResult:
    """List the images of the chosen part with their masks; :class:`InputError` names a
    missing folder or an image without its mask, before any image is read (``verify``: each
    such problem is a line and the other folders and images are listed). ``seed`` is
    unused: the splits are the official folders."""
    check_keys(params, KEYS, adapter=ADAPTER)
    root = get_root(params)
    task = params.get("task", "lung")
    if task not in TASKS:
        raise ConfigError(f"params.task: expected one of {list(TASKS)}, got {task!r}")
    with_lung = get_bool(params, "with_lung", default=False)
    if with_lung and task != "infection":
        raise ConfigError("params.with_lung: only used with params.task 'infection'")
    classes = _get_classes(params)
    template = params.get("caption", DEFAULT_CAPTION)
    if not isinstance(template, str) or "{class}" not in template:
        raise ConfigError(f"params.caption: expected a template with {{class}}, got {template!r}")
    base = _part_folder(root, TASKS[task])
    mask_folders = [LUNG_MASKS] if task == "lung" else [INFECTION_MASKS]
    if with_lung:
        mask_folders = [LUNG_MASKS, INFECTION_MASKS]
    cases: list[tuple[str, str, str, Path, list[Path]]] = []
    first: dict[str, Path] = {}
    for folder, split in SETS:
        for cls in classes:
            class_dir = base / folder / cls
            images_dir = class_dir / "images"
            if not images_dir.is_dir():
                listing_problem(f"{images_dir}: COVID-QU-Ex image folder not found")
                continue
            absent = [n for n in mask_folders if not (class_dir / n).is_dir()]
            for name in absent:
                listing_problem(f"{class_dir / name}: COVID-QU-Ex mask folder not found")
            if absent:
                continue
            images = sorted(
                p
                for p in images_dir.iterdir()
                if not p.name.startswith(".")
                and usable_file(p)
                and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not images:
                listing_problem(f"{images_dir}: no image")
            for name in mask_folders:
                check_labels_exist([(p, class_dir / name / p.name) for p in images], kind="mask")
            for image in images:
                case_id = _NOT_ALNUM.sub("_", image.stem).strip("_")
                if not case_id:
                    listing_problem(f"{image}: no letter or digit in the name to make a case id")
                    continue
                if case_id in first:
                    listing_problem(
                        f"{image}: case id '{case_id}' is also that of {first[case_id]}"
                    )
                    continue
                first[case_id] = image
                masks = [class_dir / name / image.name for name in mask_folders]
                cases.append((case_id, split, cls, image, masks))
    labels = {"background": 0, "lung": 1} if task == "lung" else {"background": 0, "infection": 1}
    if with_lung:
        labels = {"background": 0, "lung": 1, "infection": 2}
    counts = {s: sum(1 for c in cases if c[1] == s) for _, s in SETS}
    log.info(
        "%s: %d images of task %s under %s, splits %s", ADAPTER, len(cases), task, base, counts
    )
    geometry = Geometry((1.0, 1.0, 1.0))
    sources = [
        CaseSource(
            case_id,
            str(image),
            partial(
                _load_case,
                case_id,
                split,
                image,
                masks,
                geometry=geometry,
                values=list(range(1, len(masks) + 1)),
                caption=template.replace("{class}", CAPTION_CLASS[cls]).replace(
                    "{case_id}", case_id
                ),
            ),
        )
        for case_id, split, cls, image, masks in cases
    ]
    return AdapterResult(labels, sources)


def _get_classes(params: Mapping[str, Any]) -> list[str]:
    classes = params.get("classes", list(CLASSES))
    if isinstance(classes, str) or not isinstance(classes, Sequence) or not classes:
        raise ConfigError(f"params.classes: expected a list of {list(CLASSES)}, got {classes!r}")
    unknown = [c for c in classes if c not in CLASSES]
    if unknown:
        raise ConfigError(f"params.classes: {unknown} are not COVID-QU-Ex classes {list(CLASSES)}")
    return list(dict.fromkeys(classes))


def _part_folder(root: Path, part: str) -> Path:
    """``root/<part>/<part>`` as the download unpacks, else ``root/<part>`` if it holds Train."""
    nested = root / part / part
    if nested.is_dir():
        return nested
    if (root / part / "Train").is_dir():
        return root / part
    if not root.is_dir():
        raise InputError(f"{root}: COVID-QU-Ex folder not found (params.root)")
    raise InputError(f"{nested}: COVID-QU-Ex folder not found (params.root: {root})")


def _load_case(
    case_id: str,
    split: str,
    image_path: Path,
    mask_paths: Sequence[Path],
    *,
    geometry: Geometry,
    values: Sequence[int],
    caption: str,
) -> CanonicalCase:
    image_yx, label_yx = read_image_and_masks(image_path, mask_paths[:1], MaskRule("binary"))
    for path, value in zip(mask_paths[1:], values[1:], strict=True):
        mask = read_raster(path)
        if mask.shape[:2] != image_yx.shape:
            raise InputError(
                f"{path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from image "
                f"{image_path} size {image_yx.shape[1]}x{image_yx.shape[0]} (width x height)"
            )
        extra = mask_to_label(mask, MaskRule("binary", foreground=value), path=path)
        label_yx = np.where(extra > 0, extra, label_yx)
    return CanonicalCase(
        case_id=case_id,
        split=split,
        modality="XR",
        image=Volume(image_yx[None], geometry, spacing_known=False),
        label=Volume(label_yx[None], geometry, spacing_known=False),
        caption=caption,
        image_source=str(image_path),
        label_source=";".join(str(p) for p in mask_paths),
    )
