"""Adapter for a folder of 3D images with one label volume each (nnU-Net raw, MSD, BIDS,
DICOM series, ...).

Parameters (``params.<key>``)::

    root           dataset folder (required)
    images         glob relative to root, ``**`` allowed            default "imagesTr/*.nii.gz"
                   a matched folder holding files is one DICOM series (see below)
    label_replace  [[from, to], ...] string replacements applied in order to the image path
                   relative to root to get its label path
                   default [["imagesTr/", "labelsTr/"], ["_0000.nii.gz", ".nii.gz"]]
    label          instead of label_replace: label path relative to root, a template with
                   {case_id} and {dir} (the image's folder relative to root), e.g.
                   "labelsTr/{case_id}.nii.gz"
    case_id        regex with one group, searched in the image path relative to root
                   default: file name without .nii.gz/.nii/.mha/.nrrd and a trailing _0000;
                   a series folder's whole name
    labels         label map {name: value}          default {"background": 0, "foreground": 1}
    binarize       every nonzero label value becomes 1              default false
    keep_labels    [name, ...] of params.labels scored; the others become background
                   (e.g. Synapse's 8 organs of TransUNet and SAMed)  default: every label
    modality       e.g. "CT", "MR" (required)
    splits | split | split_all, captions | caption   see :mod:`medsegflow.datasets._params`

The defaults read nnU-Net raw (``imagesTr/<case>_0000.nii.gz`` with ``labelsTr/<case>.nii.gz``)
and MSD (``imagesTr/<case>.nii.gz``). For multi-channel nnU-Net sets give
``images: "imagesTr/*_0000.nii.gz"`` to take the first channel.

DICOM series: one folder per series, e.g. ``dicom/<case>/*.dcm`` with ``labels/<case>.nii.gz``
is read with ``images: "dicom/*"`` and ``label: "labels/{case_id}.nii.gz"``. Every folder the
``images`` glob matches that directly holds a file is one image, read with SimpleITK's series
reader (:func:`medsegflow.io.read_dicom_series`: slices in GDCM's order, spacing, origin and
direction from the files); the files inside it are not images of their own. A folder holding
no series, or several, is reported when its case is read. A label path that is a folder is a
DICOM series too; labels are usually NIfTI. ``verify`` compares the label's geometry with the
series' as for any image.

Images keep their voxel values (CT stays in HU) and geometry; labels keep their values
unless ``binarize`` is set. Files are listed and every label's existence checked when
:func:`build` is called; volumes are read one case at a time as the cases are consumed.
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
    BINARY_LABELS,
    COMMON_KEYS,
    CasePlan,
    check_case_ids,
    check_keys,
    check_labels_exist,
    get_bool,
    get_label_map,
    get_path_template,
    get_root,
    get_str,
    list_images,
    plan_cases,
    warn_unmatched_labels,
)
from medsegflow.datasets.canonical import AdapterResult, CanonicalCase, CaseSource
from medsegflow.errors import ConfigError
from medsegflow.io import Volume, read_image

log = logging.getLogger(__name__)

ADAPTER = "nifti_folder"
KEYS = (*COMMON_KEYS, "label_replace", "label", "case_id", "binarize", "keep_labels")
DEFAULT_IMAGES = "imagesTr/*.nii.gz"
DEFAULT_REPLACE = (("imagesTr/", "labelsTr/"), ("_0000.nii.gz", ".nii.gz"))
_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")


def build(params: Mapping[str, Any], *, seed: int) -> AdapterResult:
    """List the image/label pairs under ``params.root`` and return them as lazy cases.

    Raises :class:`ConfigError` naming ``params.<key>`` for a bad parameter and
    :class:`InputError` naming the folder or file for a missing folder, no matching image,
    a missing label file or a duplicate case id, before any volume is read.
    """
    check_keys(params, KEYS, adapter=ADAPTER)
    root = get_root(params)
    pattern = get_str(params, "images", default=DEFAULT_IMAGES)
    modality = get_str(params, "modality")
    replacements = _get_replacements(params)
    id_regex = _get_case_id_regex(params)
    binarize = get_bool(params, "binarize", default=False)
    label_map = get_label_map(params, default=BINARY_LABELS)
    if binarize and sorted(label_map.values()) != [0, 1]:
        raise ConfigError(
            f"params.labels: binarize needs one foreground label with value 1, got {label_map}"
        )
    label_map, dropped = _get_kept_labels(params, label_map)
    if binarize and dropped:
        raise ConfigError("params.keep_labels: give either binarize or keep_labels")
    template = _get_label_template(params)
    images = list_images(root, pattern, series_folders=True)
    case_ids = {
        img: _case_id(img.relative_to(root).as_posix(), id_regex, folder=img.is_dir())
        for img in images
    }
    check_case_ids(case_ids)
    pairs = [(img, _label_path(root, img, case_ids[img], template, replacements)) for img in images]
    check_labels_exist(pairs, series_folders=True)
    warn_unmatched_labels(pairs, pattern=pattern)
    plans = plan_cases(
        [(case_ids[img], img, lab) for img, lab in pairs], params, modality=modality, seed=seed
    )
    log.info("%s: %d cases under %s (images '%s')", ADAPTER, len(plans), root, pattern)
    load = partial(_load_case, modality=modality, binarize=binarize, dropped=dropped)
    return AdapterResult(
        label_map, [CaseSource(p.case_id, str(p.image), partial(load, p)) for p in plans]
    )


def _load_case(
    plan: CasePlan, *, modality: str, binarize: bool, dropped: Sequence[int] = ()
) -> CanonicalCase:
    image = read_image(plan.image)
    label = read_image(plan.label)
    if binarize:
        label = Volume(_binarize(label.array_zyx), label.geometry)
    elif dropped:
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


def _get_kept_labels(
    params: Mapping[str, Any], label_map: Mapping[str, int]
) -> tuple[dict[str, int], list[int]]:
    """``(label map of the kept labels, values that become background)``."""
    keep = params.get("keep_labels")
    if keep is None:
        return dict(label_map), []
    if isinstance(keep, str) or not isinstance(keep, Sequence) or not keep:
        raise ConfigError(f"params.keep_labels: expected a list of label names, got {keep!r}")
    unknown = [name for name in keep if name not in label_map or label_map[name] == 0]
    if unknown:
        raise ConfigError(
            f"params.keep_labels: {unknown} are not foreground names of params.labels "
            f"({', '.join(n for n, v in label_map.items() if v != 0)})"
        )
    kept = {name: value for name, value in label_map.items() if value == 0 or name in keep}
    return kept, sorted(v for n, v in label_map.items() if n not in kept)


def _drop_values(label_zyx: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """``label_zyx`` with ``values`` set to 0 (a float label with NaN/inf is kept to be
    reported)."""
    if np.issubdtype(label_zyx.dtype, np.floating) and not np.isfinite(label_zyx).all():
        return label_zyx
    out = label_zyx.copy()
    out[np.isin(out, values)] = 0
    return out


def _binarize(label_zyx: np.ndarray) -> np.ndarray:
    """Nonzero -> 1 as uint8; a float label with NaN/inf is returned unchanged to be reported."""
    if np.issubdtype(label_zyx.dtype, np.floating) and not np.isfinite(label_zyx).all():
        return label_zyx
    return (label_zyx != 0).astype(np.uint8)


def _get_replacements(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    value = params.get("label_replace", DEFAULT_REPLACE)
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        raise ConfigError(
            f"params.label_replace: expected a list of [from, to] pairs, got {value!r}"
        )
    out = []
    for i, pair in enumerate(value):
        if (
            isinstance(pair, str)
            or not isinstance(pair, Sequence)
            or len(pair) != 2
            or not all(isinstance(s, str) for s in pair)
            or not pair[0]
        ):
            raise ConfigError(
                f"params.label_replace[{i}]: expected a [from, to] pair of "
                f"strings with a non-empty 'from', got {pair!r}"
            )
        out.append((pair[0], pair[1]))
    return out


def _get_label_template(params: Mapping[str, Any]) -> str | None:
    """``params.label``: a label path template with ``{case_id}`` (and ``{dir}``), or None."""
    if params.get("label") is None:
        return None
    if params.get("label_replace") is not None:
        raise ConfigError("params.label: give either params.label or params.label_replace")
    return get_path_template(params, "label", "case_id")


def _get_case_id_regex(params: Mapping[str, Any]) -> re.Pattern[str] | None:
    value = params.get("case_id")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"params.case_id: expected a regex string, got {value!r}")
    try:
        regex = re.compile(value)
    except re.error as err:
        raise ConfigError(f"params.case_id: bad regex '{value}' ({err})") from None
    if regex.groups != 1:
        raise ConfigError(
            f"params.case_id: regex '{value}' must have exactly one group, has {regex.groups}"
        )
    return regex


def _case_id(relpath: str, regex: re.Pattern[str] | None, *, folder: bool = False) -> str:
    """Case id of an image from its posix path relative to root (``folder``: a DICOM series
    folder, whose whole name is the id: series folders are often named by UIDs with dots)."""
    if regex is not None:
        match = regex.search(relpath)
        if match is None or not match.group(1):
            raise ConfigError(
                f"params.case_id: regex '{regex.pattern}' does not match the "
                f"image path '{relpath}' (relative to params.root)"
            )
        return match.group(1)
    name = relpath.rsplit("/", 1)[-1]
    if folder:
        return name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = Path(name).stem
    return name.removesuffix("_0000")


def _label_path(
    root: Path,
    image: Path,
    case_id: str,
    template: str | None,
    replacements: Sequence[tuple[str, str]],
) -> Path:
    """The label path of ``image``: ``params.label`` filled in, else ``params.label_replace``."""
    if template is not None:
        return root / template.format(
            case_id=case_id, dir=image.parent.relative_to(root).as_posix()
        )
    return root / _label_relpath(image.relative_to(root).as_posix(), replacements)


def _label_relpath(relpath: str, replacements: Sequence[tuple[str, str]]) -> str:
    """Label path relative to root: the image path with every replacement applied in order."""
    label = relpath
    for old, new in replacements:
        label = label.replace(old, new)
    if label == relpath:
        raise ConfigError(
            f"params.label_replace: no replacement applies to image '{relpath}', "
            "so its label path would be the image itself"
        )
    return label
