"""Adapter ``isic2016``: ISIC 2016 Part 1, lesion segmentation (Gutman et al., ISBI 2016
challenge), with its official training and test sets.

Expected tree (the four Part 1 archives unpacked side by side under ``params.root``)::

    ISBI2016_ISIC_Part1_Training_Data/ISIC_0000000.jpg                    900 images
    ISBI2016_ISIC_Part1_Training_GroundTruth/ISIC_0000000_Segmentation.png
    ISBI2016_ISIC_Part1_Test_Data/ISIC_0000003.jpg                        379 images
    ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_0000003_Segmentation.png

Training images are the ``train`` split, except a seeded ``val_fraction`` of them (ISIC
2016 has no validation set; default 0.1) which become ``val``; test images are ``test``.
Masks are 0/255 (binary rule of ``png_folder``); the colour images stay RGB (the folder
adapters' rule, ``medsegflow.io.colour_or_grey``); the pixel spacing is not published (1 mm
written). Case ids are the image ids (``ISIC_0000000``).

Parameters (``params.<key>``)::

    root          the folder holding the four ISBI2016_ISIC_Part1_* folders (required)
    val_fraction  share of the training images put in val, seeded  default 0.1
    caption       caption of every case                            default "Dermoscopy image
                  of a skin lesion."
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from medsegflow.datasets._params import (
    check_keys,
    check_labels_exist,
    get_root,
    listing_problem,
    usable_file,
)
from medsegflow.datasets.canonical import AdapterResult, CanonicalCase, CaseSource, assign_splits
from medsegflow.datasets.png_folder import MaskRule, read_image_and_masks
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import Geometry, Volume

log = logging.getLogger(__name__)

ADAPTER = "isic2016"
KEYS = ("root", "val_fraction", "caption")
LABELS = {"background": 0, "lesion": 1}
PREFIX = "ISBI2016_ISIC_Part1_"
SETS = (("Training", "train"), ("Test", "test"))
DEFAULT_CAPTION = "Dermoscopy image of a skin lesion."


def build(params: Mapping[str, Any], *, seed: int) -> AdapterResult:
    """List both official sets; :class:`InputError` names a missing folder or mask
    (``verify``: a line each, and the other set is still listed)."""
    check_keys(params, KEYS, adapter=ADAPTER)
    root = get_root(params)
    fraction = params.get("val_fraction", 0.1)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction < 1:
        raise ConfigError(f"params.val_fraction: expected a number in [0, 1), got {fraction!r}")
    caption = params.get("caption", DEFAULT_CAPTION)
    if not isinstance(caption, str):
        raise ConfigError(f"params.caption: expected a string, got {caption!r}")
    cases: list[tuple[str, str, Path, Path]] = []
    for name, split in SETS:
        images_dir = root / f"{PREFIX}{name}_Data"
        if not images_dir.is_dir():
            if not root.is_dir():
                raise InputError(f"{root}: ISIC 2016 folder not found (params.root)")
            listing_problem(f"{images_dir}: ISIC 2016 folder not found (params.root: {root})")
            continue
        images = sorted(
            p
            for p in images_dir.glob("ISIC_*.jpg")
            if not p.name.startswith(".") and usable_file(p)
        )
        if not images:
            listing_problem(f"{images_dir}: no ISIC_<id>.jpg image")
            continue
        masks = root / f"{PREFIX}{name}_GroundTruth"
        pairs = [(image, masks / f"{image.stem}_Segmentation.png") for image in images]
        check_labels_exist(pairs, kind="mask")
        cases += [(image.stem, split, image, mask) for image, mask in pairs]
    train_ids = [case_id for case_id, split, *_ in cases if split == "train"]
    splits = {case_id: split for case_id, split, *_ in cases}
    if fraction > 0:
        splits.update(assign_splits(train_ids, {"train": 1 - fraction, "val": fraction}, seed=seed))
    counts = {s: sum(1 for v in splits.values() if v == s) for s in ("train", "val", "test")}
    log.info("%s: %d images under %s, splits %s", ADAPTER, len(cases), root, counts)
    sources = [
        CaseSource(
            case_id,
            str(image),
            partial(_load_case, case_id, splits[case_id], image, mask, caption=caption),
        )
        for case_id, _, image, mask in cases
    ]
    return AdapterResult(dict(LABELS), sources)


def _load_case(
    case_id: str, split: str, image_path: Path, mask_path: Path, *, caption: str = ""
) -> CanonicalCase:
    geometry = Geometry((1.0, 1.0, 1.0))
    image_yx, label_yx = read_image_and_masks(image_path, [mask_path], MaskRule("binary"))
    return CanonicalCase(
        case_id=case_id,
        split=split,
        modality="dermoscopy",
        image=Volume(image_yx[None], geometry, spacing_known=False),
        label=Volume(label_yx[None], geometry, spacing_known=False),
        caption=caption,
        image_source=str(image_path),
        label_source=str(mask_path),
    )
