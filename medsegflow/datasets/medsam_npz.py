"""Adapter ``medsam_npz``: the ``.npz`` files of MedSAM / LiteMedSAM and the CVPR 2024 challenge
"Segment Anything in Medical Images on Laptop" (https://www.codabench.org/competitions/1847/,
https://github.com/bowang-lab/MedSAM, branch LiteMedSAM).

One file is one case::

    imgs     (H, W, 3) uint8 RGB for 2D images; (D, H, W) uint8 for 3D CT, MR and PET
    gts      (H, W) or (D, H, W) integer label ids, same grid
    spacing  3D only: voxel spacing in mm
    boxes    validation/test only: box prompts (not read; prompts are made by the pipeline)

Expected trees (``params.root`` is the folder holding them)::

    train_npz/CT/AbdTumor/CT_AbdTumor_<id>.npz          training set: imgs + gts (+ spacing)
    train_npz/Dermoscopy/ISIC2018/Dermoscopy_ISIC2018_<id>.npz   ... (one folder per modality)
    MedSAM_train/CT_Abd/CT_Abd_FLARE22_Tr_0001.npz       MedSAM's pre_CT_MR.py output
    validation: imgs/2DBox_US_<id>.npz, imgs/3DBox_CT_<id>.npz (imgs, boxes, spacing)
                gts/2DBox_US_<id>.npz,  gts/3DBox_CT_<id>.npz  (gts, spacing)

Sources: the challenge's data README (``imgs``/``gts``/``spacing``, shapes, "spacing: only
for 3D CT, MR, PET"; copy in PaulCalot/MedSAM-Laptop ``src/medsamprovided/DataReadMe.md``),
MedSAM's ``pre_CT_MR.py`` (``np.savez_compressed(..., imgs=img_roi, gts=gt_roi,
spacing=img_sitk.GetSpacing())``: ``spacing`` is ITK's x, y, z order; file names
``<modality>_<anatomy>_<name>.npz``), ``CVPR24_LiteMedSAM_infer.py`` (``imgs``, ``boxes``,
``spacing`` of ``2DBox_*``/``3DBox_*`` files) and ``evaluation/compute_metrics.py`` (``gts``
read from a separate ``gts`` folder of the same file names, ``test_demo/imgs`` and
``test_demo/gts``). Unverified: that evaluation script hands ``spacing`` unchanged to a
distance function indexing (D, H, W) arrays, i.e. as z, y, x; if a copy stores z, y, x give
``spacing_order: zyx``. The folder names of the official training download
(``train_npz/<modality>/<dataset>``) could be checked only through participants' code.

Labels: ``gts`` hold class ids of the source dataset (MedSAM's 3D preprocessing keeps the
organ values) or, in the 2D and challenge files, one id per object; their meaning is not in
the file, so the label map is a parameter: ``labels`` (``{name: value}``, every value the
files hold) or ``binarize: true`` (every nonzero id is ``foreground``). A value outside the
map stops the run naming the file. 2D colour images stay RGB, as LiteMedSAM's official
code feeds them (``medsegflow.io.colour_or_grey``; RGB with equal channels keeps one
channel); 2D files store no spacing (1 mm written, ``spacing_known``
false, unless ``params.spacing``). A file is 3D when its name starts with ``3DBox_`` or its
modality is CT, MR or PET, 2D otherwise (``2DBox_`` files always). The modality is the
file-name prefix (``CT_...``, ``3DBox_MR_...``; ``X-Ray``/``XR``/``CXR`` -> ``XRay``,
``Microscope`` -> ``Microscopy``) unless ``params.modality`` gives it.
Case ids are the file names without ``.npz``.

Parameters (``params.<key>``)::

    root           the folder holding the npz files (required)
    images         glob relative to root, ``**`` allowed                default "**/*.npz"
    gts_dir        folder (relative to root) holding each image's gts file of the same name;
                   default: ``gts`` is read from the image file itself
    labels         label map {name: value}  |  binarize  true           one is required
    keep_labels    [name, ...] of params.labels scored; the others become background
    modality       one modality for every file                         default: file prefix
    spacing        [x, y, z] (or [x, y]) mm of files that store none   default: unknown
    spacing_order  "xyz" or "zyx": axis order of the files' spacing    default "xyz"
    splits | split | split_all, captions | caption   see :mod:`medsegflow.datasets._params`
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medsegflow.datasets._params import (
    BINARY_LABELS,
    assign_case_splits,
    case_captions,
    check_case_ids,
    check_keys,
    check_labels_exist,
    get_bool,
    get_label_map,
    get_mapping,
    get_root,
    get_spacing,
    get_str,
    list_images,
    listing_problem,
)
from medsegflow.datasets.canonical import AdapterResult, CanonicalCase, CaseSource
from medsegflow.datasets.nifti_folder import _binarize, _drop_values, _get_kept_labels
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import Geometry, Volume, colour_or_grey, read_arrays, read_image

log = logging.getLogger(__name__)

ADAPTER = "medsam_npz"
KEYS = (
    "root",
    "images",
    "gts_dir",
    "labels",
    "binarize",
    "keep_labels",
    "modality",
    "spacing",
    "spacing_order",
    "splits",
    "split",
    "split_all",
    "captions",
    "caption",
)
DEFAULT_IMAGES = "**/*.npz"
MODALITIES = {
    "CT": "CT",
    "MR": "MR",
    "MRI": "MR",
    "PET": "PET",
    "US": "US",
    "XRay": "XRay",
    "X-Ray": "XRay",
    "XR": "XRay",
    "CXR": "XRay",
    "Dermoscopy": "Dermoscopy",
    "Endoscopy": "Endoscopy",
    "Fundus": "Fundus",
    "Mammography": "Mammography",
    "Microscopy": "Microscopy",
    "Microscope": "Microscopy",
    "OCT": "OCT",
}
"""File-name prefix -> modality (prefixes of the training folders and of 2DBox_/3DBox_ files)."""
VOLUME_MODALITIES = ("CT", "MR", "PET")
"""Modalities stored as (D, H, W) volumes."""


@dataclass(frozen=True)
class NpzCase:
    """One listed file (decided before any file is read)."""

    case_id: str
    image: Path
    gts: Path
    modality: str
    is_3d: bool
    split: str
    caption: str


def build(params: Mapping[str, Any], *, seed: int) -> AdapterResult:
    """List the npz files under ``params.root``; :class:`ConfigError` names a bad parameter
    and :class:`InputError` a missing folder, a missing gts file, a duplicate case id or a
    file whose modality cannot be told, before any array is read (``verify``: a line for
    each such file, and the others are listed)."""
    check_keys(params, KEYS, adapter=ADAPTER)
    root = get_root(params)
    pattern = get_str(params, "images", default=DEFAULT_IMAGES)
    label_map, binarize, dropped = _get_labels(params)
    fixed_modality = params.get("modality")
    if fixed_modality is not None:
        fixed_modality = get_str(params, "modality")
    spacing = get_spacing(params, "spacing")
    order = get_str(params, "spacing_order", default="xyz")
    if order not in ("xyz", "zyx"):
        raise ConfigError(f"params.spacing_order: expected 'xyz' or 'zyx', got {order!r}")
    gts_dir = _get_gts_dir(params, root)
    images = [
        p
        for p in list_images(root, pattern)
        if p.name.lower().endswith(".npz") and (gts_dir is None or not p.is_relative_to(gts_dir))
    ]
    if not images:
        raise InputError(f"{root}: no .npz file matches the images pattern '{pattern}'")
    modalities = {}
    for img in images:
        try:
            modalities[img] = fixed_modality or _modality(img)
        except InputError as err:
            listing_problem(err)
    images = [img for img in images if img in modalities]
    case_ids = {img: img.name[: -len(".npz")] for img in images}
    check_case_ids(case_ids)
    gts = {img: (gts_dir / img.name if gts_dir is not None else img) for img in images}
    if gts_dir is not None:
        check_labels_exist([(img, gts[img]) for img in images], kind="gts")
    ids = [case_ids[img] for img in images]
    splits = assign_case_splits(ids, params, seed=seed)
    captions = _captions(ids, {case_ids[img]: modalities[img] for img in images}, params)
    cases = [
        NpzCase(
            case_ids[img],
            img,
            gts[img],
            modalities[img],
            _is_3d(img, modalities[img]),
            splits[case_ids[img]],
            captions[case_ids[img]],
        )
        for img in images
    ]
    log.info(
        "%s: %d files under %s (%d 3D), modalities %s",
        ADAPTER,
        len(cases),
        root,
        sum(c.is_3d for c in cases),
        ", ".join(sorted(set(modalities.values()))),
    )
    load = partial(
        _load_case, binarize=binarize, dropped=dropped, spacing=spacing, reverse=order == "zyx"
    )
    return AdapterResult(
        label_map, [CaseSource(c.case_id, str(c.image), partial(load, c)) for c in cases]
    )


def _captions(
    ids: Sequence[str], modalities: Mapping[str, str], params: Mapping[str, Any]
) -> dict[str, str]:
    """``params.captions[case_id]``, else ``params.caption`` formatted with the case's modality."""
    template = {"caption": params.get("caption", "")}
    captions: dict[str, str] = {}
    for modality in sorted(set(modalities.values())):
        same = [case_id for case_id in ids if modalities[case_id] == modality]
        captions.update(case_captions(same, template, modality=modality))
    explicit = get_mapping(params, "captions") or {}
    checked = case_captions(ids, {"captions": explicit}, modality="")
    captions.update({case_id: checked[case_id] for case_id in ids if case_id in explicit})
    return captions


def _get_labels(params: Mapping[str, Any]) -> tuple[dict[str, int], bool, list[int]]:
    binarize = get_bool(params, "binarize", default=False)
    has_labels = params.get("labels") is not None
    if binarize == has_labels:
        raise ConfigError(
            "params.labels: give the label map {name: value} of the gts ids, or binarize: true "
            "(the npz files do not say what their ids mean)"
            if not binarize
            else "params.binarize: give either binarize or labels, not both"
        )
    if binarize:
        if params.get("keep_labels") is not None:
            raise ConfigError("params.keep_labels: give either binarize or keep_labels")
        return dict(BINARY_LABELS), True, []
    label_map, dropped = _get_kept_labels(params, get_label_map(params, default=BINARY_LABELS))
    return label_map, False, dropped


def _get_gts_dir(params: Mapping[str, Any], root: Path) -> Path | None:
    if params.get("gts_dir") is None:
        return None
    folder = root / get_str(params, "gts_dir")
    if not folder.is_dir():
        raise InputError(f"{folder}: gts folder not found (params.gts_dir)")
    return folder


def _modality(path: Path) -> str:
    name = path.name
    for box in ("2DBox_", "3DBox_"):
        name = name.removeprefix(box)
    for prefix in sorted(MODALITIES, key=len, reverse=True):
        if name.startswith(prefix + "_"):
            return MODALITIES[prefix]
    raise InputError(
        f"{path}: cannot tell the modality from the file name (expected a prefix such as "
        f"CT_, MR_, 2DBox_US_, 3DBox_CT_); give params.modality"
    )


def _is_3d(path: Path, modality: str) -> bool:
    if path.name.startswith("2DBox_"):
        return False
    return path.name.startswith("3DBox_") or modality in VOLUME_MODALITIES


def _load_case(
    case: NpzCase,
    *,
    binarize: bool,
    dropped: Sequence[int],
    spacing: tuple[float, float, float] | None,
    reverse: bool,
) -> CanonicalCase:
    if case.is_3d:
        image = read_image(case.image, key="imgs")
        if image.spacing_known and reverse:
            stored = image.geometry.spacing_xyz
            image = Volume(image.array_zyx, Geometry(tuple(reversed(stored))), spacing_known=True)
        elif not image.spacing_known and spacing is not None:
            image = Volume(image.array_zyx, Geometry(spacing), spacing_known=True)
    else:
        raw = np.asarray(read_arrays(case.image, ["imgs"])["imgs"])
        if raw.ndim != 2 and not (raw.ndim == 3 and raw.shape[-1] in (1, 3, 4)):
            raise InputError(
                f"{case.image}: 'imgs' has shape {raw.shape}, expected (H, W, 3) or (H, W) "
                "for a 2D file"
            )
        geometry = Geometry(spacing or (1.0, 1.0, 1.0))
        # an RGB 2D image stays RGB (CVPR24 npz: what LiteMedSAM's official code feeds)
        image = Volume(colour_or_grey(raw)[None], geometry, spacing_known=spacing is not None)
    gts = np.asarray(read_arrays(case.gts, ["gts"])["gts"])
    if gts.ndim == 2:
        gts = gts[None]
    elif gts.ndim != 3 or not case.is_3d:
        raise InputError(
            f"{case.gts}: 'gts' has shape {gts.shape}, expected "
            f"{'(D, H, W)' if case.is_3d else '(H, W)'}"
        )
    if binarize:
        gts = _binarize(gts)
    elif dropped:
        gts = _drop_values(gts, dropped)
    label = Volume(np.ascontiguousarray(gts), image.geometry, spacing_known=image.spacing_known)
    return CanonicalCase(
        case_id=case.case_id,
        split=case.split,
        modality=case.modality,
        image=image,
        label=label,
        caption=case.caption,
        image_source=str(case.image),
        label_source=str(case.gts),
    )
