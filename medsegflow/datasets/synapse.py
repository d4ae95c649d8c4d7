"""Adapters ``synapse`` and ``synapse_transunet``: the Synapse / BTCV multi-atlas abdomen CT
(MICCAI 2015 "Multi-Atlas Labeling Beyond the Cranial Vault",
https://www.synapse.org/#!Synapse:syn3193805/wiki/217789), raw and as TransUNet preprocessed it.

``synapse``: the raw volumes as ``RawData.zip`` unpacks (``params.root`` is the folder holding
``RawData/``, the ``RawData`` folder itself, or its ``Training`` folder)::

    RawData/Training/img/img0001.nii.gz     ... 30 labelled CT volumes (0001-0010, 0021-0040)
    RawData/Training/label/label0001.nii.gz
    RawData/Testing/img/img0061.nii.gz      20 unlabelled test volumes: not read

13 labels (:data:`LABELS`): 1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder,
5 esophagus, 6 liver, 7 stomach, 8 aorta, 9 inferior vena cava, 10 portal and splenic vein,
11 pancreas, 12 right adrenal gland, 13 left adrenal gland (the Synapse wiki's order, as
listed in SAMed's ``preprocess/README.md`` and TotalSegmentator's ``map_to_binary.py``
comment; tree from SAMed's ``preprocess/preprocess_data.py``: ``RawData/Training/img/*.nii.gz``
and ``label/*.nii.gz``). Case ids are ``case<nnnn>``, TransUNet's names, so both adapters
name a scan alike. Images keep HU and geometry.

``organs: transunet8`` keeps the 8 organs TransUNet, SAMed and their successors score and
gives them TransUNet's values and names (:data:`TRANSUNET8`), so ``synapse`` and
``synapse_transunet`` score the same classes. ``split: transunet`` is TransUNet's case split:
the 18 cases of ``lists/lists_Synapse/train.txt`` train, the 12 of ``test_vol.txt`` test
(Beckschen/TransUNet; the same 12 as ``test_data`` of SAMed's ``preprocess_data.py``).

``synapse_transunet``: TransUNet's preprocessed data (``data/Synapse`` of TransUNet's
``datasets/README.md``; ``params.root`` is that folder)::

    train_npz/case0005_slice000.npz   one axial slice: "image" (H, W), "label" (H, W)
    test_vol_h5/case0001.npy.h5       one volume: datasets "image", "label", (D, H, W)

Read as TransUNet's ``datasets/dataset_synapse.py`` reads them. Images are already clipped to
[-125, 275] HU and scaled to [0, 1] (TransUNet's ``datasets/README.md``); ``rescale_hu`` maps
them back to [-125, 275]. The slices of one training case are stacked in slice-index order
into one volume in split ``train``; the h5 volumes are ``test``. The files store no spacing:
1 mm is written with ``spacing_known`` false unless ``params.spacing`` gives it.

Label values of the preprocessed data (:data:`TRANSUNET8`): 1 spleen, 2 right kidney, 3 left
kidney, 4 gallbladder, 5 liver, 6 stomach, 7 aorta, 8 pancreas: the raw values 1, 2, 3, 4,
6, 7, 8, 11 renumbered in order, as SAMed's ``preprocess/README.md`` (table "label of the
processed data"), ``preprocess_data.py`` (``hashmap``) and ``test.py`` (``class_to_name``)
give them. TransUNet's own code never names the values (``test.py`` logs "Mean class i");
the order aorta, gallbladder, kidney L, kidney R, liver, pancreas, spleen, stomach of the
TransUNet paper's table is alphabetical, not the label values. This could not be checked
against TransUNet's files themselves; ``params.labels`` overrides the map if a copy differs.

Parameters of ``synapse`` (``params.<key>``)::

    root          see above (required)
    organs        "all" (13 labels) or "transunet8"                 default "all"
    keep_labels   [name, ...] of the organs' labels scored; the others become background
    split         "transunet" (TransUNet's 18 train / 12 test) or a mapping case id -> split
    splits | split_all, captions | caption   see :mod:`medsegflow.datasets._params`

Parameters of ``synapse_transunet``::

    root          the folder holding train_npz/ and/or test_vol_h5/ (required)
    labels        label map {name: value}                           default TRANSUNET8
    keep_labels   [name, ...] of params.labels scored               default: all
    spacing       [x, y, z] mm of every case, or {case_id: [x, y, z]}  default: unknown
    rescale_hu    map [0, 1] back to [-125, 275] HU                 default false
    val_fraction  share of the training cases put in val, seeded    default 0
    captions | caption                                              see _params
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
    CasePlan,
    case_captions,
    check_case_ids,
    check_keys,
    check_labels_exist,
    get_bool,
    get_label_map,
    get_root,
    get_spacing,
    get_str,
    listing_problem,
    plan_cases,
    usable_file,
)
from medsegflow.datasets.canonical import AdapterResult, CanonicalCase, CaseSource, assign_splits
from medsegflow.datasets.nifti_folder import _drop_values, _get_kept_labels
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import Geometry, Volume, read_arrays, read_image

log = logging.getLogger(__name__)

MODALITY = "CT"
LABELS = {
    "background": 0,
    "spleen": 1,
    "right_kidney": 2,
    "left_kidney": 3,
    "gallbladder": 4,
    "esophagus": 5,
    "liver": 6,
    "stomach": 7,
    "aorta": 8,
    "inferior_vena_cava": 9,
    "portal_and_splenic_vein": 10,
    "pancreas": 11,
    "right_adrenal_gland": 12,
    "left_adrenal_gland": 13,
}
"""The 13 labels of the raw Synapse / BTCV volumes."""
TRANSUNET8 = {
    "background": 0,
    "spleen": 1,
    "right_kidney": 2,
    "left_kidney": 3,
    "gallbladder": 4,
    "liver": 5,
    "stomach": 6,
    "aorta": 7,
    "pancreas": 8,
}
"""The 8 organs of TransUNet's preprocessed data and their values there."""
RAW_TO_TRANSUNET8 = {LABELS[name]: value for name, value in TRANSUNET8.items() if value}
"""Raw label value -> TransUNet value of the 8 organs (the 5 others become background)."""
ORGANS = {"all": (LABELS, None), "transunet8": (TRANSUNET8, RAW_TO_TRANSUNET8)}

TRANSUNET_TRAIN = (
    "case0005", "case0006", "case0007", "case0009", "case0010", "case0021",
    "case0023", "case0024", "case0026", "case0027", "case0028", "case0030",
    "case0031", "case0033", "case0034", "case0037", "case0039", "case0040",
)  # fmt: skip
"""The 18 cases of TransUNet's ``lists/lists_Synapse/train.txt``."""
TRANSUNET_TEST = (
    "case0001", "case0002", "case0003", "case0004", "case0008", "case0022",
    "case0025", "case0029", "case0032", "case0035", "case0036", "case0038",
)  # fmt: skip
"""The 12 cases of TransUNet's ``lists/lists_Synapse/test_vol.txt``."""
TRANSUNET_SPLIT = {
    **{case: "train" for case in TRANSUNET_TRAIN},
    **{case: "test" for case in TRANSUNET_TEST},
}
HU_RANGE = (-125.0, 275.0)
"""TransUNet's clipping window; its [0, 1] images are (HU + 125) / 400."""

RAW_KEYS = ("root", "organs", "keep_labels", "splits", "split", "split_all", "captions", "caption")
TRANSUNET_KEYS = (
    "root",
    "labels",
    "keep_labels",
    "spacing",
    "rescale_hu",
    "val_fraction",
    "captions",
    "caption",
)
_RAW_IMAGE = re.compile(r"^img(\d+)\.nii\.gz$")
_SLICE = re.compile(r"^(case\d+)_slice(\d+)\.npz$")
_VOLUME = re.compile(r"^(case\d+)\.npy\.h5$")


# --------------------------------------------------------------------------- raw volumes


def build_synapse(params: Mapping[str, Any], *, seed: int) -> AdapterResult:
    """List the 30 labelled raw volumes; :class:`InputError` names a missing folder or label."""
    adapter = "synapse"
    check_keys(params, RAW_KEYS, adapter=adapter)
    root = get_root(params)
    organs = get_str(params, "organs", default="all")
    if organs not in ORGANS:
        raise ConfigError(f"params.organs: expected one of {sorted(ORGANS)}, got {organs!r}")
    organ_map, remap = ORGANS[organs]
    label_map, dropped = _get_kept_labels(params, organ_map)
    training = _find_training(root)
    images = sorted(
        p
        for p in (training / "img").iterdir()
        if usable_file(p) and _RAW_IMAGE.match(p.name) is not None
    )
    if not images:
        raise InputError(f"{training / 'img'}: no img<nnnn>.nii.gz volume")
    numbers = {img: _RAW_IMAGE.match(img.name)[1] for img in images}
    case_ids = {img: f"case{numbers[img]}" for img in images}
    check_case_ids(case_ids)
    pairs = [(img, training / "label" / f"label{numbers[img]}.nii.gz") for img in images]
    check_labels_exist(pairs)
    plans = plan_cases(
        [(case_ids[img], img, lab) for img, lab in pairs],
        _with_preset_split(params),
        modality=MODALITY,
        seed=seed,
    )
    log.info("%s: %d labelled volumes under %s, organs %s", adapter, len(plans), training, organs)
    load = partial(_load_raw, remap=remap, dropped=dropped)
    return AdapterResult(
        label_map, [CaseSource(p.case_id, str(p.image), partial(load, p)) for p in plans]
    )


def _find_training(root: Path) -> Path:
    if not root.is_dir():
        raise InputError(f"{root}: Synapse folder not found (params.root)")
    for folder in (root / "RawData" / "Training", root / "Training", root):
        if (folder / "img").is_dir():
            if not (folder / "label").is_dir():
                raise InputError(f"{folder / 'label'}: Synapse label folder not found")
            return folder
    raise InputError(
        f"{root}: no RawData/Training/img folder (params.root may also be RawData or Training)"
    )


def _with_preset_split(params: Mapping[str, Any]) -> Mapping[str, Any]:
    split = params.get("split")
    if not isinstance(split, str):
        return params
    if split != "transunet":
        raise ConfigError(
            f"params.split: expected 'transunet' or a mapping case id -> split, got {split!r}"
        )
    return {**params, "split": TRANSUNET_SPLIT}


def _load_raw(
    plan: CasePlan, *, remap: Mapping[int, int] | None, dropped: Sequence[int]
) -> CanonicalCase:
    image = read_image(plan.image)
    label = read_image(plan.label)
    array = label.array_zyx
    if remap is not None:
        array = _remap(array, remap)
    if dropped:
        array = _drop_values(array, dropped)
    return CanonicalCase(
        case_id=plan.case_id,
        split=plan.split,
        modality=MODALITY,
        image=image,
        label=Volume(array, label.geometry),
        caption=plan.caption,
        image_source=str(plan.image),
        label_source=str(plan.label),
    )


def _remap(label_zyx: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """Raw Synapse values -> ``mapping`` values (unmapped organs 0; other values kept, to be
    reported; a float label with NaN/inf is returned unchanged to be reported)."""
    if np.issubdtype(label_zyx.dtype, np.floating) and not np.isfinite(label_zyx).all():
        return label_zyx
    out = label_zyx.copy()
    for raw in LABELS.values():
        if raw:
            out[label_zyx == raw] = mapping.get(raw, 0)
    return out


# --------------------------------------------------------------- TransUNet preprocessed


def build_synapse_transunet(params: Mapping[str, Any], *, seed: int) -> AdapterResult:
    """List TransUNet's training slices (grouped by case) and test volumes.

    :class:`InputError` names a missing folder, a file that is not a TransUNet name, or a
    missing slice of a case, before any array is read (``verify``: each such file is a line
    and the other cases are listed).
    """
    adapter = "synapse_transunet"
    check_keys(params, TRANSUNET_KEYS, adapter=adapter)
    root = get_root(params)
    label_map, dropped = _get_kept_labels(params, get_label_map(params, default=TRANSUNET8))
    rescale = get_bool(params, "rescale_hu", default=False)
    fraction = params.get("val_fraction", 0)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction < 1:
        raise ConfigError(f"params.val_fraction: expected a number in [0, 1), got {fraction!r}")
    if not root.is_dir():
        raise InputError(f"{root}: TransUNet Synapse folder not found (params.root)")
    train_dir, test_dir = root / "train_npz", root / "test_vol_h5"
    if not train_dir.is_dir() and not test_dir.is_dir():
        raise InputError(f"{root}: neither train_npz/ nor test_vol_h5/ found (params.root)")
    train = _list_slices(train_dir) if train_dir.is_dir() else {}
    test = _list_volumes(test_dir) if test_dir.is_dir() else {}
    for case in sorted(set(train) & set(test)):
        listing_problem(f"{test[case]}: case {case} is also a training case in {train_dir}")
        del test[case]
    splits = {case: "train" for case in train} | {case: "test" for case in test}
    if fraction > 0 and train:
        splits.update(
            assign_splits(list(train), {"train": 1 - fraction, "val": fraction}, seed=seed)
        )
    ids = sorted(splits)
    spacing = _case_spacing(params, ids)
    captions = case_captions(ids, params, modality=MODALITY)
    log.info(
        "%s: %d training cases (%d slices) and %d test volumes under %s",
        adapter,
        len(train),
        sum(len(s) for s in train.values()),
        len(test),
        root,
    )
    common = {"dropped": dropped, "rescale": rescale}
    sources = []
    for case in ids:
        files = train.get(case) or [test[case]]
        load = partial(
            _load_transunet,
            case,
            files,
            split=splits[case],
            spacing=spacing.get(case),
            caption=captions[case],
            **common,
        )
        sources.append(CaseSource(case, str(files[0].parent / case), load))
    return AdapterResult(label_map, sources)


def _list_slices(folder: Path) -> dict[str, list[Path]]:
    """Case id -> its slice files in slice order; every index 0..n-1 must be there."""
    found: dict[str, dict[int, Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not usable_file(path):
            continue
        match = _SLICE.match(path.name)
        if match is None:
            listing_problem(f"{path}: not a TransUNet training slice (case<nnnn>_slice<nnn>.npz)")
            continue
        index = int(match[2])
        slices = found.setdefault(match[1], {})
        if index in slices:
            listing_problem(f"{path}: slice {index} of {match[1]} is also {slices[index]}")
            continue
        slices[index] = path
    if not found:
        listing_problem(f"{folder}: no case<nnnn>_slice<nnn>.npz file")
    cases = {}
    for case, slices in sorted(found.items()):
        missing = sorted(set(range(max(slices) + 1)) - set(slices))
        for index in missing:  # the case is left out: its slices cannot be stacked
            listing_problem(
                f"{folder / f'{case}_slice{index:03d}.npz'}: slice missing; {case} has "
                f"{len(slices)} slice files up to index {max(slices)}"
            )
        if not missing:
            cases[case] = [slices[i] for i in sorted(slices)]
    return cases


def _list_volumes(folder: Path) -> dict[str, Path]:
    volumes = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not usable_file(path):
            continue
        match = _VOLUME.match(path.name)
        if match is None:
            listing_problem(f"{path}: not a TransUNet test volume (case<nnnn>.npy.h5)")
            continue
        volumes[match[1]] = path
    if not volumes:
        listing_problem(f"{folder}: no case<nnnn>.npy.h5 file")
    return volumes


def _case_spacing(params: Mapping[str, Any], ids: Sequence[str]) -> dict[str, tuple]:
    value = params.get("spacing")
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        spacing = get_spacing(params, "spacing")
        return {case: spacing for case in ids}
    out = {}
    for case, entry in value.items():
        spacing = get_spacing({"spacing": entry}, "spacing", key_name=f"spacing.{case}")
        out[str(case)] = spacing
    missing = [case for case in ids if case not in out]
    if missing:
        raise ConfigError(
            f"params.spacing: {len(missing)} case(s) have no spacing, e.g. {', '.join(missing[:5])}"
        )
    return out


def _load_transunet(
    case_id: str,
    files: Sequence[Path],
    *,
    split: str,
    spacing: tuple[float, float, float] | None,
    caption: str,
    dropped: Sequence[int],
    rescale: bool,
) -> CanonicalCase:
    if len(files) == 1 and _VOLUME.match(files[0].name):
        arrays = read_arrays(files[0], ["image", "label"])
        image, label = np.asarray(arrays["image"]), np.asarray(arrays["label"])
        for name, array in (("image", image), ("label", label)):
            if array.ndim != 3:
                raise InputError(
                    f"{files[0]}: dataset '{name}' has shape {array.shape}, expected (D, H, W)"
                )
        source = str(files[0])
    else:
        image, label = _stack_slices(files)
        source = f"{files[0].parent}/{case_id}_slice*.npz ({len(files)} slices)"
    if rescale:
        low, high = HU_RANGE
        image = (image.astype(np.float32) * np.float32(high - low) + np.float32(low)).astype(
            np.float32
        )
    if dropped:
        label = _drop_values(label, dropped)
    geometry = Geometry(spacing or (1.0, 1.0, 1.0))
    known = spacing is not None
    return CanonicalCase(
        case_id=case_id,
        split=split,
        modality=MODALITY,
        image=Volume(np.ascontiguousarray(image), geometry, spacing_known=known),
        label=Volume(np.ascontiguousarray(label), geometry, spacing_known=known),
        caption=caption,
        image_source=source,
        label_source=source,
    )


def _stack_slices(files: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for path in files:
        arrays = read_arrays(path, ["image", "label"])
        image, label = np.asarray(arrays["image"]), np.asarray(arrays["label"])
        if image.ndim != 2 or label.shape != image.shape:
            raise InputError(
                f"{path}: image {image.shape} and label {label.shape} are not one (H, W) slice"
            )
        if images and image.shape != images[0].shape:
            raise InputError(
                f"{path}: slice shape {image.shape} differs from {files[0]} {images[0].shape}"
            )
        images.append(image)
        labels.append(label)
    return np.stack(images), np.stack(labels)
