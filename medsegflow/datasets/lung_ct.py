"""Adapter ``lung_ct``: the lung CT dataset of MedCLIP-SAMv2 (github.com/HealthX-Lab/MedCLIP-SAMv2,
README "Datasets": "Lung CT" -> https://www.kaggle.com/datasets/polomarco/chest-ct-segmentation),
"Chest CT Segmentation": axial chest CT slices with lung, heart and trachea masks, re-saved
as images by github.com/mandrakedrink/ChestCTSegmentation from the lung segmentation dataset
of Kónya et al., 2020 (https://www.kaggle.com/sandorkonya/ct-lung-heart-trachea-segmentation).

Expected tree (``params.root`` is the unpacked download)::

    images/images/ID00007637202177411956430_0.jpg     one JPEG per slice (17,011 reported)
    masks/masks/ID00007637202177411956430_mask_0.jpg  its mask (16,708 reported)
    train.csv                                         ImageId, MaskId (not read)
    (numpy_images_files.zip, numpy_masks_files.zip: the same data as pickles; not read)

``images/`` and ``masks/`` unpacked without the inner folder are read too. Slice files are
``<patient>_<k>.jpg`` and masks ``<patient>_mask_<k>.jpg``; the patient ids are those of
the OSIC pulmonary fibrosis scans (``ID`` + digits). Images are 8-bit display values (the
slices were windowed before saving), not Hounsfield units; they are kept as stored (one
channel when the three channels are equal, else luminance).

Masks are RGB JPEGs with one channel per structure: lung blue, heart green, trachea red
(channel order lung, heart, trachea of the source tensors, written by OpenCV in BGR order;
as documented by the derived Chest-CT-Subset dataset of sarah-antillia and read so by
public loaders). A structure is where its channel is > 127 (JPEG noise removed; public
loaders use >= 240). ``structures`` chooses the labels, numbered 1, 2, ... in the given
order (a later one wins where two overlap); default ``[lung]``: background 0, lung 1.

Images without a mask (the counts above differ) are skipped with a warning; with
``unlabelled: error`` they stop the run. A mask without its image always stops it. Splits
are by patient (all slices of one patient in one split): ``splits`` fractions of the
patients (default train 0.6 / val 0.2 / test 0.2, seeded), ``split`` {patient: split} or
``split_all``. Case ids are ``<patient>_<k>`` with ``k`` on 3 digits. The pixel spacing is
not in the files (1 mm written, ``spacing_known`` false).

Intensity: as the values are 0..255 and not HU, set the dataset's CT window to the identity
``window: {level: 127.5, width: 255}`` (or give another ``modality``, e.g. a non-CT name so
that preprocessing uses percentiles); the HU presets would clip them.

Parameters (``params.<key>``)::

    root        the unpacked download (required)
    structures  subset of [lung, heart, trachea], in label order      default [lung]
    unlabelled  skip | error: images without a mask                  default skip
    modality    modality written to cases.tsv                         default "CT"
    caption     caption of every case ({case_id} allowed)            default "Chest CT."
    splits | split | split_all   by patient id, see :mod:`medsegflow.datasets._params`
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
    assign_case_splits,
    check_keys,
    get_root,
    get_str,
    listing_problem,
    listing_warning,
    usable_file,
)
from medsegflow.datasets.canonical import AdapterResult, CanonicalCase, CaseSource
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import Geometry, Volume, read_raster, to_grey

log = logging.getLogger(__name__)

ADAPTER = "lung_ct"
KEYS = ("root", "structures", "unlabelled", "modality", "caption", "splits", "split", "split_all")
CHANNELS = {"lung": 2, "heart": 1, "trachea": 0}
"""Structure -> RGB channel index of the mask JPEGs (as PIL reads them: R=0, G=1, B=2)."""
LABELS = {"background": 0, "lung": 1}
DEFAULT_CAPTION = "Chest CT."
THRESHOLD = 127
_IMAGE = re.compile(r"^(?P<pid>.+?)_(?P<k>\d+)\.jpe?g$", re.IGNORECASE)
_MASK = re.compile(r"^(?P<pid>.+?)_mask_(?P<k>\d+)\.jpe?g$", re.IGNORECASE)


def build(params: Mapping[str, Any], *, seed: int) -> AdapterResult:
    """List slices and masks, split by patient; :class:`InputError` names a missing folder,
    a mask without its image (or an image without its mask with ``unlabelled: error``);
    ``verify``: each such file is a line and the other slices are listed."""
    check_keys(params, KEYS, adapter=ADAPTER)
    root = get_root(params)
    structures = _get_structures(params)
    unlabelled = params.get("unlabelled", "skip")
    if unlabelled not in ("skip", "error"):
        raise ConfigError(f"params.unlabelled: expected 'skip' or 'error', got {unlabelled!r}")
    modality = get_str(params, "modality", default="CT")
    caption = params.get("caption", DEFAULT_CAPTION)
    if not isinstance(caption, str):
        raise ConfigError(f"params.caption: expected a string, got {caption!r}")
    if not root.is_dir():
        raise InputError(f"{root}: lung CT folder not found (params.root)")
    images = _list(_folder(root, "images"), _IMAGE, "<patient>_<k>.jpg")
    masks = _list(_folder(root, "masks"), _MASK, "<patient>_mask_<k>.jpg")
    orphans = sorted(set(masks) - set(images))
    for pid, k in orphans:
        listing_problem(
            f"{masks[pid, k]}: a mask without its image {_folder(root, 'images')}/{pid}_{k}.jpg"
        )
    missing = sorted(set(images) - set(masks))
    if missing and unlabelled == "error":
        for pid, k in missing:
            listing_problem(
                f"{images[pid, k]}: mask file not found, expected "
                f"{_folder(root, 'masks') / f'{pid}_mask_{k}.jpg'}"
            )
    elif missing:
        listing_warning(
            f"{ADAPTER}: {len(missing)} images have no mask and are skipped "
            f"(params.unlabelled), e.g. {images[missing[0]]}"
        )
    keys = sorted(set(images) & set(masks), key=lambda key: (key[0], int(key[1])))
    if not keys:
        raise InputError(f"{root}: no image has its mask")
    pids = sorted({pid for pid, _ in keys})
    by_patient = assign_case_splits(pids, params, seed=seed)
    labels = {"background": 0, **{name: i + 1 for i, name in enumerate(structures)}}
    log.info(
        "%s: %d slices of %d patients under %s, labels %s",
        ADAPTER,
        len(keys),
        len(pids),
        root,
        labels,
    )
    load = partial(_load_case, modality=modality, structures=structures)
    sources = []
    for pid, k in keys:
        case_id = f"{pid}_{int(k):03d}"
        sources.append(
            CaseSource(
                case_id,
                str(images[pid, k]),
                partial(
                    load,
                    case_id,
                    images[pid, k],
                    masks[pid, k],
                    split=by_patient[pid],
                    caption=caption.replace("{case_id}", case_id),
                ),
            )
        )
    return AdapterResult(labels, sources)


def _get_structures(params: Mapping[str, Any]) -> list[str]:
    value = params.get("structures", ["lung"])
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ConfigError(f"params.structures: expected a list of {list(CHANNELS)}, got {value!r}")
    unknown = [s for s in value if s not in CHANNELS]
    if unknown:
        raise ConfigError(f"params.structures: {unknown} are not among {list(CHANNELS)}")
    if len(set(value)) != len(value):
        raise ConfigError(f"params.structures: {list(value)} names a structure twice")
    return list(value)


def _folder(root: Path, name: str) -> Path:
    """``root/<name>/<name>`` (as Kaggle unpacks ``<name>.zip``) or ``root/<name>``."""
    nested = root / name / name
    return nested if nested.is_dir() else root / name


def _list(folder: Path, pattern: re.Pattern, form: str) -> dict[tuple[str, str], Path]:
    """``{(patient, k): path}`` of the files of ``folder`` named like ``pattern``."""
    if not folder.is_dir():
        raise InputError(f"{folder}: lung CT folder not found")
    found: dict[tuple[str, str], Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not usable_file(path):
            continue
        match = pattern.match(path.name)
        if match and (pattern is _MASK or not _MASK.match(path.name)):
            key = (match["pid"], str(int(match["k"])))
            if key in found:
                listing_problem(f"{path}: same slice as {found[key]}")
                continue
            found[key] = path
    if not found:
        raise InputError(f"{folder}: no {form} file")
    return found


def _load_case(
    case_id: str,
    image_path: Path,
    mask_path: Path,
    *,
    split: str,
    caption: str,
    modality: str,
    structures: Sequence[str],
) -> CanonicalCase:
    image_yx = to_grey(read_raster(image_path))
    mask = read_raster(mask_path)
    if mask.ndim != 3 or mask.shape[-1] < 3:
        raise InputError(
            f"{mask_path}: expected an RGB mask (lung blue, heart green, trachea red), "
            f"got shape {mask.shape}"
        )
    if mask.shape[:2] != image_yx.shape:
        raise InputError(
            f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from image "
            f"{image_path} size {image_yx.shape[1]}x{image_yx.shape[0]} (width x height)"
        )
    label = np.zeros(image_yx.shape, dtype=np.uint8)
    for value, name in enumerate(structures, start=1):
        label[mask[..., CHANNELS[name]] > THRESHOLD] = value
    geometry = Geometry((1.0, 1.0, 1.0))
    return CanonicalCase(
        case_id=case_id,
        split=split,
        modality=modality,
        image=Volume(image_yx[None], geometry, spacing_known=False),
        label=Volume(label[None], geometry, spacing_known=False),
        caption=caption,
        image_source=str(image_path),
        label_source=str(mask_path),
    )
