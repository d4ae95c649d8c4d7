"""Adapter ``kvasir_seg``: Kvasir-SEG, 1000 colonoscopy polyp images with masks (Jha et al.,
"Kvasir-SEG: A Segmented Polyp Dataset", MMM 2020; https://datasets.simula.no/kvasir-seg/,
github.com/DebeshJha/Kvasir-SEG), as ``kvasir-seg.zip`` unpacks.

Expected tree (``params.root`` is the ``Kvasir-SEG`` folder, or the folder holding it)::

    Kvasir-SEG/
      images/cju0qkwl35piu0993l0dewei2.jpg     1000 RGB JPEGs, 332x487 to 1920x1072
      masks/cju0qkwl35piu0993l0dewei2.jpg      same name, JPEG (polyp white)
      kavsir_bboxes.json                       bounding boxes (spelled so; not read)

Masks are JPEGs, so their values are near 0 and 255 with compression noise: a pixel is polyp
where its grey value (max over RGB) is > 127 (binary rule of ``png_folder``). Images stay RGB
(``medsegflow.io.colour_or_grey``). Labels: background 0, polyp 1. Case ids are
the image ids. The pixel spacing is not published (1 mm written, ``spacing_known`` false).

Splits: Kvasir-SEG itself defines none. Its authors published a train/val split of the
1000 images for the MediaEval 2020 Medico task (github.com/DebeshJha/2020-MediaEval-Medico-
polyp-segmentation, ``kvasir-seg-train-val/train.txt`` and ``val.txt``, "for the fair model
comparison"; 880 / 120 images as commonly reported, not verified here): give them as
``split_lists: {train: train.txt, test: val.txt}`` (one image name per line, with or without
``.jpg``; paths relative to ``params.root`` or absolute). Every image must then be in exactly
one list. Otherwise ``splits`` (seeded fractions, default train 0.6 / val 0.2 / test 0.2;
``{train: 0.88, test: 0.12}`` gives an 880 / 120 split), ``split`` or ``split_all``.

Parameters (``params.<key>``)::

    root         the Kvasir-SEG folder (required)
    split_lists  {split: list file}                                   default: none
    caption      caption of every case ({case_id} allowed)
                 default "Colonoscopy image of a polyp."
    splits | split | split_all   see :mod:`medsegflow.datasets._params`
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from medsegflow.datasets._params import (
    assign_case_splits,
    check_case_ids,
    check_keys,
    check_labels_exist,
    get_mapping,
    get_root,
    listing_problem,
    usable_file,
)
from medsegflow.datasets.canonical import SPLITS, AdapterResult, CanonicalCase, CaseSource
from medsegflow.datasets.png_folder import MaskRule, read_image_and_masks
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import Geometry, Volume

log = logging.getLogger(__name__)

ADAPTER = "kvasir_seg"
KEYS = ("root", "split_lists", "caption", "splits", "split", "split_all")
LABELS = {"background": 0, "polyp": 1}
DEFAULT_CAPTION = "Colonoscopy image of a polyp."
FOLDER = "Kvasir-SEG"


def build(params: Mapping[str, Any], *, seed: int) -> AdapterResult:
    """List images and masks; :class:`InputError` names a missing folder or mask and
    :class:`ConfigError` a bad parameter, before any image is read."""
    check_keys(params, KEYS, adapter=ADAPTER)
    root = _dataset_folder(get_root(params))
    caption = params.get("caption", DEFAULT_CAPTION)
    if not isinstance(caption, str):
        raise ConfigError(f"params.caption: expected a string, got {caption!r}")
    images_dir, masks_dir = root / "images", root / "masks"
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise InputError(f"{folder}: Kvasir-SEG folder not found (params.root: {root})")
    images = sorted(
        p
        for p in images_dir.iterdir()
        if not p.name.startswith(".") and usable_file(p) and p.suffix.lower() in (".jpg", ".jpeg")
    )
    if not images:
        raise InputError(f"{images_dir}: no .jpg image")
    pairs = [(image, masks_dir / image.name) for image in images]
    check_labels_exist(pairs, kind="mask")
    case_ids = {image: image.stem for image in images}
    check_case_ids(case_ids)
    ids = list(case_ids.values())
    if params.get("split_lists") is not None:
        for key in ("splits", "split", "split_all"):
            if params.get(key) is not None:
                raise ConfigError(f"params.{key}: give either params.split_lists or params.{key}")
        splits = _list_splits(root, ids, get_mapping(params, "split_lists") or {})
    else:
        splits = assign_case_splits(ids, params, seed=seed)
    counts = {s: sum(1 for v in splits.values() if v == s) for s in SPLITS}
    log.info("%s: %d images under %s, splits %s", ADAPTER, len(ids), root, counts)
    sources = [
        CaseSource(
            case_ids[image],
            str(image),
            partial(
                _load_case,
                case_ids[image],
                splits[case_ids[image]],
                image,
                mask,
                caption=caption.replace("{case_id}", case_ids[image]),
            ),
        )
        for image, mask in pairs
    ]
    return AdapterResult(dict(LABELS), sources)


def _dataset_folder(root: Path) -> Path:
    """``root``, or ``root/Kvasir-SEG`` when ``root`` is the folder the zip unpacked into."""
    if not (root / "images").is_dir() and (root / FOLDER / "images").is_dir():
        return root / FOLDER
    if not root.is_dir():
        raise InputError(f"{root}: Kvasir-SEG folder not found (params.root)")
    return root


def _list_splits(root: Path, ids: list[str], lists: Mapping[str, Any]) -> dict[str, str]:
    """Split of every image from the list files ``{split: path}``."""
    if not lists:
        raise ConfigError("params.split_lists: expected {split: list file}, got an empty mapping")
    known = set(ids)
    splits: dict[str, str] = {}
    for split, value in lists.items():
        if split not in SPLITS:
            raise ConfigError(f"params.split_lists.{split}: unknown split; expected {SPLITS}")
        if not isinstance(value, str | Path) or not str(value).strip():
            raise ConfigError(f"params.split_lists.{split}: expected a file path, got {value!r}")
        path = Path(value).expanduser()
        path = path if path.is_absolute() or path.is_file() else root / path
        if not path.is_file():
            raise InputError(f"{path}: split list not found (params.split_lists.{split})")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            name = line.strip()
            if not name:
                continue
            case_id = Path(name).stem if name.lower().endswith((".jpg", ".jpeg")) else name
            if case_id not in known:
                listing_problem(f"{path}:{number}: '{name}' is not an image of {root / 'images'}")
                continue
            if case_id in splits and splits[case_id] != split:
                listing_problem(f"{path}:{number}: '{name}' is also in the {splits[case_id]} list")
                continue
            splits[case_id] = split
    unlisted = [c for c in ids if c not in splits]
    if unlisted:
        raise ConfigError(
            f"params.split_lists: {len(unlisted)} image(s) are in no list, e.g. "
            f"{', '.join(unlisted[:5])}"
        )
    return splits


def _load_case(
    case_id: str, split: str, image_path: Path, mask_path: Path, *, caption: str
) -> CanonicalCase:
    geometry = Geometry((1.0, 1.0, 1.0))
    image_yx, label_yx = read_image_and_masks(image_path, [mask_path], MaskRule("binary"))
    return CanonicalCase(
        case_id=case_id,
        split=split,
        modality="endoscopy",
        image=Volume(image_yx[None], geometry, spacing_known=False),
        label=Volume(label_yx[None], geometry, spacing_known=False),
        caption=caption,
        image_source=str(image_path),
        label_source=str(mask_path),
    )
