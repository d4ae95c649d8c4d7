"""Adapter ``msd``: one task of the Medical Segmentation Decathlon (Antonelli et al., Nat.
Commun. 13, 4128, 2022; http://medicaldecathlon.com/), read through its ``dataset.json``.

Expected tree (``Task09_Spleen.tar`` unpacked; ``params.root`` is the task folder)::

    Task09_Spleen/
      dataset.json
      imagesTr/spleen_2.nii.gz   ...   (macOS "._spleen_2.nii.gz" files are not listed)
      labelsTr/spleen_2.nii.gz   ...
      imagesTs/spleen_1.nii.gz   ...   no labels: not read

``dataset.json`` (MSD's own, e.g. Task09)::

    {"name": "Spleen", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "spleen"},
     "numTraining": 41, "numTest": 20, "tensorImageSize": "3D",
     "training": [{"image": "./imagesTr/spleen_19.nii.gz",
                   "label": "./labelsTr/spleen_19.nii.gz"}, ...],
     "test": ["./imagesTs/spleen_15.nii.gz", ...]}

The cases are the ``training`` entries (case id: image file name without ``.nii.gz``,
``spleen_19``); ``test`` / ``imagesTs`` has no labels and is ignored. Label names come from
``labels`` in snake case ("non-enhancing tumor" -> ``non_enhancing_tumor``; value 0 is always
``background``); an nnU-Net v2 ``labels`` map ``{name: value}`` is read too. The modality is
``modality[channel]`` (nnU-Net v2: ``channel_names``) unless ``params.modality`` is given.

Multi-modal tasks (Task01 BrainTumour: FLAIR, T1w, t1gd, T2w; Task05 Prostate: T2, ADC)
store 4D images; ``params.channel`` selects one (the 4th axis; geometry of the first three),
read by :func:`medsegflow.io.read_image`. A 3D image has only channel 0.

MSD defines no validation split and keeps its test labels: ``splits`` (seeded fractions,
default train 0.6, val 0.2, test 0.2), ``split`` or ``split_all``. Images keep their values
(CT in HU) and geometry.

Parameters (``params.<key>``)::

    root          the task folder holding dataset.json (required)
    channel       image channel of a multi-modal task               default 0
    modality      override of dataset.json's modality name
    keep_labels   [name, ...] scored; the others become background  default: all
    splits | split | split_all, captions | caption   see :mod:`medsegflow.datasets._params`
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from medsegflow.datasets._params import (
    CasePlan,
    check_case_ids,
    check_keys,
    check_labels_exist,
    get_root,
    get_str,
    listing_problem,
    listing_warning,
    plan_cases,
)
from medsegflow.datasets.canonical import AdapterResult, CanonicalCase, CaseSource
from medsegflow.datasets.nifti_folder import _drop_values, _get_kept_labels
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import Volume, read_image

log = logging.getLogger(__name__)

ADAPTER = "msd"
KEYS = (
    "root",
    "channel",
    "modality",
    "keep_labels",
    "splits",
    "split",
    "split_all",
    "captions",
    "caption",
)
_NOT_NAME = re.compile(r"[^0-9a-z]+")


def build(params: Mapping[str, Any], *, seed: int) -> AdapterResult:
    """Read ``dataset.json`` and list its training pairs; :class:`InputError` names the
    file (dataset.json, a missing image or label) before any image is read (``verify``: a
    line for each bad training entry, and the others are listed)."""
    check_keys(params, KEYS, adapter=ADAPTER)
    root = get_root(params)
    meta_path = root / "dataset.json"
    meta = _read_json(meta_path)
    channel = params.get("channel", 0)
    if isinstance(channel, bool) or not isinstance(channel, int) or channel < 0:
        raise ConfigError(f"params.channel: expected an integer >= 0, got {channel!r}")
    channels = _channels(meta, meta_path)
    if channel >= len(channels):
        raise ConfigError(
            f"params.channel: {channel} is not a channel of {meta_path} "
            f"({', '.join(f'{i} {n}' for i, n in enumerate(channels))})"
        )
    modality = get_str(params, "modality", default=channels[channel])
    label_map, dropped = _get_kept_labels(params, _labels(meta, meta_path))
    pairs = _training_pairs(meta, meta_path, root)
    case_ids = {image: _case_id(image) for image, _ in pairs}
    check_case_ids(case_ids)
    check_labels_exist(pairs)
    declared = meta.get("numTraining")
    if isinstance(declared, int) and declared != len(pairs):
        listing_warning(f"{meta_path}: numTraining is {declared}, 'training' lists {len(pairs)}")
    plans = plan_cases(
        [(case_ids[img], img, lab) for img, lab in pairs], params, modality=modality, seed=seed
    )
    log.info(
        "%s: %s, %d training cases, channel %d (%s)",
        ADAPTER,
        meta.get("name", root.name),
        len(plans),
        channel,
        modality,
    )
    load = partial(
        _load_case, modality=modality, channel=channel, channels=len(channels), dropped=dropped
    )
    return AdapterResult(
        label_map, [CaseSource(p.case_id, str(p.image), partial(load, p)) for p in plans]
    )


def snake_case(name: str) -> str:
    """``"Non-enhancing Tumor"`` -> ``"non_enhancing_tumor"``."""
    return _NOT_NAME.sub("_", name.strip().lower()).strip("_")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"{path}: MSD dataset.json not found (params.root is the task folder)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: cannot read dataset.json ({err})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def _channels(meta: Mapping[str, Any], path: Path) -> list[str]:
    """Channel names in channel order, from ``modality`` (MSD) or ``channel_names`` (v2)."""
    key = "modality" if "modality" in meta else "channel_names"
    value = meta.get(key)
    if not isinstance(value, Mapping) or not value:
        raise InputError(f"{path}: no 'modality' mapping of channel number to name")
    try:
        numbered = sorted((int(k), str(v)) for k, v in value.items())
    except (TypeError, ValueError):
        raise InputError(
            f"{path}: '{key}' keys must be channel numbers, got {dict(value)}"
        ) from None
    if [i for i, _ in numbered] != list(range(len(numbered))):
        raise InputError(f"{path}: '{key}' channels are not numbered 0..n-1: {dict(value)}")
    return [name for _, name in numbered]


def _labels(meta: Mapping[str, Any], path: Path) -> dict[str, int]:
    """``labels`` as ``{name: value}``: MSD ``{"1": "spleen"}`` or v2 ``{"spleen": 1}``."""
    value = meta.get("labels")
    if not isinstance(value, Mapping) or not value:
        raise InputError(f"{path}: no 'labels' mapping")
    pairs: list[tuple[int, str]] = []
    for key, entry in value.items():
        if str(key).strip().isdigit():
            pairs.append((int(key), str(entry)))
        elif isinstance(entry, int) and not isinstance(entry, bool) and entry >= 0:
            pairs.append((entry, str(key)))
        else:
            raise InputError(
                f'{path}: label entry {key!r}: {entry!r} is neither "<value>": "<name>" '
                'nor "<name>": <value>'
            )
    label_map: dict[str, int] = {}
    for number, name in sorted(pairs):
        clean = "background" if number == 0 else snake_case(name)
        if not clean or clean in label_map:
            raise InputError(
                f"{path}: label {number} '{name}' gives the name '{clean}' twice or empty"
            )
        label_map[clean] = number
    if label_map.get("background") != 0:
        raise InputError(f"{path}: 'labels' has no value 0 (background)")
    return label_map


def _training_pairs(meta: Mapping[str, Any], path: Path, root: Path) -> list[tuple[Path, Path]]:
    entries = meta.get("training")
    if not isinstance(entries, Sequence) or isinstance(entries, str) or not entries:
        raise InputError(f"{path}: no 'training' list of image/label pairs")
    pairs = []
    for i, entry in enumerate(entries):
        if (
            not isinstance(entry, Mapping)
            or not isinstance(entry.get("image"), str)
            or not isinstance(entry.get("label"), str)
        ):
            listing_problem(f"{path}: training[{i}] is not {{'image': ..., 'label': ...}}")
            continue
        image, label = root / entry["image"], root / entry["label"]
        if not image.is_file():
            listing_problem(f"{image}: image file not found (training[{i}] of {path})")
            continue
        pairs.append((image, label))
    return pairs


def _case_id(image: Path) -> str:
    name = image.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return image.stem


def _load_case(
    plan: CasePlan, *, modality: str, channel: int, channels: int, dropped: Sequence[int]
) -> CanonicalCase:
    try:
        image = read_image(plan.image, channel=channel)
    except InputError as err:
        raise InputError(f"{err} (params.channel {channel}, dataset.json: {channels})") from None
    label = read_image(plan.label)
    if dropped:
        label = Volume(_drop_values(label.array_zyx, dropped), label.geometry)
    return CanonicalCase(
        case_id=plan.case_id,
        split=plan.split,
        modality=modality,
        image=image,
        label=label,
        caption=plan.caption,
        image_source=str(plan.image),
        label_source=str(plan.label),
    )
