"""Adapter ``busi``: the Breast Ultrasound Images dataset (Al-Dhabyani et al., Data in Brief
28, 2020, doi:10.1016/j.dib.2019.104863) as its download unpacks.

Expected tree (``Dataset_BUSI_with_GT.zip``; ``params.root`` is that folder)::

    Dataset_BUSI_with_GT/
      benign/     benign (1).png      benign (1)_mask.png      ... 437 images
                  benign (4).png      benign (4)_mask.png  benign (4)_mask_1.png
      malignant/  malignant (1).png   malignant (1)_mask.png   ... 210 images
      normal/     normal (1).png      normal (1)_mask.png      ... 133 images (empty masks)

Every image has one mask ``<name>_mask.png``; an image with several lesions has more,
``<name>_mask_1.png``, ``<name>_mask_2.png``, ...: their union is the lesion label.
``normal`` images have empty masks: an empty reference. The class becomes the caption
(``params.caption``, default ``"Breast ultrasound, {class}."``), so class-specific text
prompts (``assign: caption``) find it. Case ids are ``<class>_<n>`` (``benign_004``).
BUSI defines no split: ``splits`` / ``split`` / ``split_all`` as for every folder adapter
(default train 0.6, val 0.2, test 0.2, seeded). Its pixel spacing is not published: 1 mm
is written, so mm metrics are in pixels.

Parameters (``params.<key>``)::

    root       the Dataset_BUSI_with_GT folder (required)
    classes    subset of [benign, malignant, normal]              default: all three
    caption    template with {class} (and {case_id})              default above
    splits | split | split_all   see :mod:`medsegflow.datasets._params`
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from medsegflow.datasets._params import (
    assign_case_splits,
    check_keys,
    get_root,
    listing_problem,
    usable_file,
)
from medsegflow.datasets.canonical import AdapterResult, CanonicalCase, CaseSource
from medsegflow.datasets.png_folder import MaskRule, read_image_and_masks
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import Geometry, Volume

log = logging.getLogger(__name__)

ADAPTER = "busi"
KEYS = ("root", "classes", "caption", "splits", "split", "split_all")
CLASSES = ("benign", "malignant", "normal")
LABELS = {"background": 0, "lesion": 1}
DEFAULT_CAPTION = "Breast ultrasound, {class}."
_IMAGE = re.compile(r"^(benign|malignant|normal) \((\d+)\)\.png$")
_MASK = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<k>\d+))?\.png$")


def build(params: Mapping[str, Any], *, seed: int) -> AdapterResult:
    """List BUSI's images and their masks; :class:`InputError` names a missing class
    folder or an image without ``_mask.png``, before any image is read (``verify``: each
    such problem is a line and the other images are listed, see
    :func:`~medsegflow.datasets._params.listing_problem`)."""
    check_keys(params, KEYS, adapter=ADAPTER)
    root = get_root(params)
    classes = _get_classes(params)
    template = params.get("caption", DEFAULT_CAPTION)
    if not isinstance(template, str) or "{class}" not in template:
        raise ConfigError(f"params.caption: expected a template with {{class}}, got {template!r}")
    found: list[tuple[str, str, Path, list[Path]]] = []
    for cls in classes:
        folder = root / cls
        if not folder.is_dir():
            if not root.is_dir():
                raise InputError(f"{root}: BUSI folder not found (params.root)")
            listing_problem(f"{folder}: BUSI class folder not found (params.root: {root})")
            continue
        found += _class_cases(folder, cls)
    ids = [case_id for case_id, *_ in found]
    splits = assign_case_splits(ids, params, seed=seed)
    log.info(
        "%s: %d images under %s (%s), %d with more than one lesion mask",
        ADAPTER,
        len(found),
        root,
        ", ".join(f"{c} {sum(1 for f in found if f[1] == c)}" for c in classes),
        sum(1 for f in found if len(f[3]) > 1),
    )
    sources = [
        CaseSource(case_id, str(image), partial(_load_case, case_id, cls, image, masks, **kw))
        for case_id, cls, image, masks in found
        for kw in [{"split": splits[case_id], "template": template}]
    ]
    return AdapterResult(dict(LABELS), sources)


def _get_classes(params: Mapping[str, Any]) -> list[str]:
    classes = params.get("classes", list(CLASSES))
    if isinstance(classes, str) or not isinstance(classes, Sequence) or not classes:
        raise ConfigError(f"params.classes: expected a list of {list(CLASSES)}, got {classes!r}")
    unknown = [c for c in classes if c not in CLASSES]
    if unknown:
        raise ConfigError(f"params.classes: {unknown} are not BUSI classes {list(CLASSES)}")
    return list(dict.fromkeys(classes))


def _class_cases(folder: Path, cls: str) -> list[tuple[str, str, Path, list[Path]]]:
    """``(case_id, class, image, masks)`` of one class folder, in image number order."""
    images: dict[str, tuple[int, Path]] = {}
    masks: dict[str, list[tuple[int, Path]]] = {}
    for path in folder.iterdir():
        if path.name.startswith(".") or not usable_file(path):
            continue
        if match := _MASK.match(path.name):
            masks.setdefault(match["stem"], []).append((int(match["k"] or 0), path))
        elif match := _IMAGE.match(path.name):
            if match[1] != cls:
                listing_problem(f"{path}: a {match[1]} image in the {cls} folder")
                continue
            images[path.stem] = (int(match[2]), path)
    for stem in sorted(set(masks) - set(images)):
        for _, mask in sorted(masks[stem]):
            listing_problem(f"{mask}: a mask without its image {folder / stem}.png")
    if not images:
        listing_problem(f"{folder}: no '{cls} (<n>).png' image")
    cases = []
    for stem, (number, image) in sorted(images.items(), key=lambda kv: kv[1][0]):
        own = sorted(masks.get(stem, []))
        if not own or own[0][0] != 0:
            listing_problem(f"{image}: mask file not found, expected {folder / stem}_mask.png")
            continue
        cases.append((f"{cls}_{number:03d}", cls, image, [p for _, p in own]))
    return cases


def _load_case(
    case_id: str,
    cls: str,
    image_path: Path,
    mask_paths: Sequence[Path],
    *,
    split: str,
    template: str,
) -> CanonicalCase:
    geometry = Geometry((1.0, 1.0, 1.0))
    image_yx, label_yx = read_image_and_masks(image_path, mask_paths, MaskRule("binary"))
    return CanonicalCase(
        case_id=case_id,
        split=split,
        modality="US",
        image=Volume(image_yx[None], geometry, spacing_known=False),
        label=Volume(label_yx[None], geometry, spacing_known=False),
        caption=template.replace("{class}", cls).replace("{case_id}", case_id),
        image_source=str(image_path),
        label_source=";".join(str(p) for p in mask_paths),
    )
