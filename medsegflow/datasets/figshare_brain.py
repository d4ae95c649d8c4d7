"""Adapter ``figshare_brain``: the Figshare brain tumour dataset (Jun Cheng et al., figshare
1512427, doi:10.6084/m9.figshare.1512427; https://figshare.com/articles/dataset/brain_tumor_dataset/1512427),
3064 T1-weighted contrast-enhanced MR slices of 233 patients: 708 meningioma, 1426 glioma,
930 pituitary tumour. MedCLIP-SAMv2 uses it through the Kaggle mirror
https://www.kaggle.com/datasets/ashkhagan/figshare-brain-tumor-dataset (same ``.mat`` files).

Expected tree (``params.root``; ``.mat`` files are found at any depth below it)::

    figshare download (article 1512427, version 5)     Kaggle mirror
      brainTumorDataPublic_1-766.zip       -> 1.mat ... 766.mat      dataset/data/1.mat
      brainTumorDataPublic_767-1532.zip    -> 767.mat ... 1532.mat   dataset/data/...
      brainTumorDataPublic_1533-2298.zip   -> ...                    ...
      brainTumorDataPublic_2299-3064.zip   -> ... 3064.mat
      cvind.mat                            5-fold cross-validation indices
      README.txt

The four zip parts must be unpacked (side by side or into one folder). Each ``<n>.mat`` is a
MATLAB v7.3 (HDF5) file holding the struct ``cjdata``: ``image`` (512x512 int16 for most
slices), ``tumorMask`` (1 = tumour), ``label`` (1 meningioma, 2 glioma, 3 pituitary
tumour), ``PID`` (patient id, a MATLAB char array) and ``tumorBorder`` (not used).
``cvind.mat`` holds ``cvind``, the fold (1..5) of every slice in file-number order.

Splits are by patient: all slices of one ``PID`` go to one split. Listing reads the small
``PID`` and ``label`` fields of every file (needed to group and filter slices), never an
image. By default patients get seeded fractions (``splits``, train 0.6 / val 0.2 / test 0.2
of the patients); ``split`` maps patient ids to splits; ``split_all`` puts every slice in one
split. ``test_fold: k`` instead makes the official fold ``k`` of ``cvind.mat`` the test set
and splits the other patients into train and val (``val_fraction`` of them, seeded); a
patient found in fold ``k`` and in another fold stops the run.

Labels: background 0, tumour 1; with ``labels_by_class: true`` the tumour takes its class
value instead (meningioma 1, glioma 2, pituitary 3). Case ids are ``<class>_<n>`` with the
file number (``glioma_0012`` for ``12.mat``). The class is the caption (``params.caption``,
default ``"Brain MRI, {class}."``, ``{class}`` one of meningioma, glioma, pituitary tumour).

Spacing: the files store none (1 mm written, ``spacing_known`` false). Cheng et al., PLoS
One 10(10) e0140381 (2015) state "an inplane resolution of 512x512 with pixel size 0.49x0.49
mm2", slice thickness 6 mm, gap 1 mm: give ``spacing_mm: [0.49, 0.49]`` to use it (then
``spacing_known`` is true). It applies to every slice alike; slices of another size (a few
are reported to be 256x256) would then carry the 512x512 pixel size.

Parameters (``params.<key>``)::

    root            folder holding the unpacked .mat files (required)
    classes         subset of [meningioma, glioma, pituitary]         default: all three
    labels_by_class label the tumour by its class (1, 2, 3)          default false
    caption         template with {class} (and {case_id})             default above
    spacing_mm      pixel spacing [sx, sy] in mm                      default: unknown
    test_fold       official cvind.mat fold (1..5) used as test       default: none
    val_fraction    with test_fold: share of the other patients in val  default 0.25
    cvind           path of cvind.mat (with test_fold)     default: the cvind.mat under root
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
    get_bool,
    get_root,
    get_spacing,
    listing_problem,
    usable_file,
)
from medsegflow.datasets.canonical import AdapterResult, CanonicalCase, CaseSource, assign_splits
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import Geometry, Volume, read_arrays

log = logging.getLogger(__name__)

ADAPTER = "figshare_brain"
KEYS = (
    "root",
    "classes",
    "labels_by_class",
    "caption",
    "spacing_mm",
    "test_fold",
    "val_fraction",
    "cvind",
    "splits",
    "split",
    "split_all",
)
CLASSES = {1: "meningioma", 2: "glioma", 3: "pituitary"}
"""``cjdata.label`` code -> class name (label names with ``labels_by_class``)."""
CAPTION_CLASS = {"meningioma": "meningioma", "glioma": "glioma", "pituitary": "pituitary tumour"}
LABELS = {"background": 0, "tumour": 1}
LABELS_BY_CLASS = {"background": 0, **{name: code for code, name in CLASSES.items()}}
DEFAULT_CAPTION = "Brain MRI, {class}."
IMAGE_KEY, MASK_KEY, LABEL_KEY, PID_KEY = (
    "cjdata/image",
    "cjdata/tumorMask",
    "cjdata/label",
    "cjdata/PID",
)
_SLICE = re.compile(r"^(\d+)\.mat$")


def build(params: Mapping[str, Any], *, seed: int) -> AdapterResult:
    """List the slices (reading only ``PID`` and ``label``) and split them by patient;
    :class:`InputError` names a missing folder or an unreadable or malformed file (``verify``:
    each bad file is a line and the other slices are listed)."""
    check_keys(params, KEYS, adapter=ADAPTER)
    root = get_root(params)
    classes = _get_classes(params)
    by_class = get_bool(params, "labels_by_class", default=False)
    template = _get_template(params)
    spacing = get_spacing(params, "spacing_mm", lengths=(2,))
    test_fold = _get_test_fold(params)
    if not root.is_dir():
        raise InputError(f"{root}: Figshare brain tumour folder not found (params.root)")
    files = _list_slices(root)
    slices = []  # (case_id, number, class, pid, path)
    for number, path in sorted(files.items()):
        try:
            pid, code = _read_header(path)
        except InputError as err:
            listing_problem(err)
            continue
        if CLASSES[code] in classes:
            slices.append((f"{CLASSES[code]}_{number:04d}", number, CLASSES[code], pid, path))
    if not slices:
        raise InputError(f"{root}: no slice of the classes {classes}")
    pids = sorted({pid for *_, pid, _ in slices})
    if test_fold is None:
        by_patient = assign_case_splits(pids, params, seed=seed)
    else:
        by_patient = _fold_splits(root, params, slices, test_fold, seed=seed)
    counts = {
        s: sum(1 for *_, p, _ in slices if by_patient[p] == s) for s in ("train", "val", "test")
    }
    log.info(
        "%s: %d slices of %d patients under %s (%s), slices per split %s",
        ADAPTER,
        len(slices),
        len(pids),
        root,
        ", ".join(f"{c} {sum(1 for s in slices if s[2] == c)}" for c in classes),
        counts,
    )
    geometry = Geometry((spacing[0], spacing[1], 1.0) if spacing else (1.0, 1.0, 1.0))
    load = partial(_load_case, geometry=geometry, known=spacing is not None, by_class=by_class)
    sources = [
        CaseSource(
            case_id,
            str(path),
            partial(
                load,
                case_id,
                cls,
                path,
                split=by_patient[pid],
                caption=template.replace("{class}", CAPTION_CLASS[cls]).replace(
                    "{case_id}", case_id
                ),
            ),
        )
        for case_id, _, cls, pid, path in slices
    ]
    return AdapterResult(dict(LABELS_BY_CLASS if by_class else LABELS), sources)


def _get_classes(params: Mapping[str, Any]) -> list[str]:
    names = list(CLASSES.values())
    classes = params.get("classes", names)
    if isinstance(classes, str) or not isinstance(classes, Sequence) or not classes:
        raise ConfigError(f"params.classes: expected a list of {names}, got {classes!r}")
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise ConfigError(f"params.classes: {unknown} are not classes of this dataset {names}")
    return list(dict.fromkeys(classes))


def _get_template(params: Mapping[str, Any]) -> str:
    template = params.get("caption", DEFAULT_CAPTION)
    if not isinstance(template, str) or "{class}" not in template:
        raise ConfigError(f"params.caption: expected a template with {{class}}, got {template!r}")
    return template


def _get_test_fold(params: Mapping[str, Any]) -> int | None:
    fold = params.get("test_fold")
    if fold is None:
        for key in ("val_fraction", "cvind"):
            if key in params:
                raise ConfigError(f"params.{key}: only used with params.test_fold")
        return None
    if isinstance(fold, bool) or not isinstance(fold, int) or not 1 <= fold <= 5:
        raise ConfigError(f"params.test_fold: expected a cvind.mat fold 1..5, got {fold!r}")
    for key in ("splits", "split", "split_all"):
        if params.get(key) is not None:
            raise ConfigError(f"params.{key}: give either params.test_fold or params.{key}")
    return fold


def _list_slices(root: Path) -> dict[int, Path]:
    """``{file number: path}`` of every ``<n>.mat`` below ``root`` (hidden files skipped)."""
    files: dict[int, Path] = {}
    for path in sorted(root.rglob("*.mat")):
        match = _SLICE.match(path.name)
        if not match or not usable_file(path):
            continue
        number = int(match[1])
        if number in files:
            listing_problem(f"{path}: slice {number} is also {files[number]}; keep one copy")
            continue
        files[number] = path
    if not files:
        parts = sorted(p.name for p in root.glob("brainTumorDataPublic_*.zip"))
        hint = f"; unpack {', '.join(parts)}" if parts else ""
        raise InputError(f"{root}: no <n>.mat slice file of the Figshare dataset{hint}")
    return files


def _read_header(path: Path) -> tuple[str, int]:
    """``(patient id, class code)`` of one slice file."""
    arrays = read_arrays(path, [PID_KEY, LABEL_KEY])
    try:
        pid = _decode_chars(arrays[PID_KEY])
    except (ValueError, TypeError, OverflowError):
        raise InputError(f"{path}: cjdata.PID is not a MATLAB char array") from None
    if not pid:
        raise InputError(f"{path}: cjdata.PID is empty; the split by patient needs it")
    values = np.ravel(arrays[LABEL_KEY])
    code = int(values[0]) if values.size == 1 and float(values[0]).is_integer() else None
    if code not in CLASSES:
        raise InputError(f"{path}: cjdata.label is {values.tolist()}, expected 1, 2 or 3")
    return pid, code


def _decode_chars(array: np.ndarray) -> str:
    """A MATLAB char array as text: uint16 character codes (v7.3) or a string array (v5)."""
    array = np.asarray(array)
    if array.dtype.kind in "US":
        text = "".join(str(v) for v in np.ravel(array))
    else:
        text = "".join(chr(int(v)) for v in np.ravel(array) if int(v) > 0)
    return text.strip()


def _fold_splits(
    root: Path,
    params: Mapping[str, Any],
    slices: Sequence[tuple[str, int, str, str, Path]],
    test_fold: int,
    *,
    seed: int,
) -> dict[str, str]:
    """Split of every patient: fold ``test_fold`` of ``cvind.mat`` is test, the other
    patients are train or val (seeded ``val_fraction``)."""
    fraction = params.get("val_fraction", 0.25)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction < 1:
        raise ConfigError(f"params.val_fraction: expected a number in [0, 1), got {fraction!r}")
    path = _find_cvind(root, params)
    folds = np.ravel(read_arrays(path, ["cvind"])["cvind"])
    largest = max(number for _, number, *_ in slices)
    if folds.size < largest:
        raise InputError(
            f"{path}: cvind holds {folds.size} folds, fewer than the {largest} slices found"
        )
    if test_fold not in {int(v) for v in folds}:
        raise ConfigError(
            f"params.test_fold: fold {test_fold} is not in {path} (folds "
            f"{sorted({int(v) for v in folds})})"
        )
    test = {pid for _, number, _, pid, _ in slices if int(folds[number - 1]) == test_fold}
    rest = {pid for _, number, _, pid, _ in slices if int(folds[number - 1]) != test_fold}
    shared = sorted(test & rest)
    if shared:
        raise InputError(
            f"{path}: patient {shared[0]} has slices in fold {test_fold} and in other folds "
            f"({len(shared)} such patients); use params.splits for a patient split"
        )
    splits = {pid: "test" for pid in test}
    if rest:
        others = sorted(rest)
        if fraction > 0:
            splits.update(
                assign_splits(others, {"train": 1 - fraction, "val": fraction}, seed=seed)
            )
        else:
            splits.update({pid: "train" for pid in others})
    return splits


def _find_cvind(root: Path, params: Mapping[str, Any]) -> Path:
    if params.get("cvind") is not None:
        value = params["cvind"]
        if not isinstance(value, str | Path) or not str(value).strip():
            raise ConfigError(f"params.cvind: expected the path of cvind.mat, got {value!r}")
        path = Path(value).expanduser()
        path = path if path.is_absolute() or path.is_file() else root / path
        if not path.is_file():
            raise InputError(f"{path}: cvind.mat not found (params.cvind)")
        return path
    found = sorted(p for p in root.rglob("*.mat") if p.name.lower() == "cvind.mat")
    if not found:
        raise InputError(f"{root}: no cvind.mat below params.root (needed by params.test_fold)")
    if len(found) > 1:
        raise InputError(f"{found[1]}: a second cvind.mat besides {found[0]}; give params.cvind")
    return found[0]


def _load_case(
    case_id: str,
    cls: str,
    path: Path,
    *,
    split: str,
    caption: str,
    geometry: Geometry,
    known: bool,
    by_class: bool,
) -> CanonicalCase:
    arrays = read_arrays(path, [IMAGE_KEY, MASK_KEY])
    image, mask = np.asarray(arrays[IMAGE_KEY]), np.asarray(arrays[MASK_KEY])
    if image.ndim != 2:
        raise InputError(f"{path}: cjdata.image has shape {image.shape}, expected a 2D slice")
    if mask.shape != image.shape:
        raise InputError(
            f"{path}: cjdata.tumorMask shape {mask.shape} differs from cjdata.image {image.shape}"
        )
    value = LABELS_BY_CLASS[cls] if by_class else LABELS["tumour"]
    label = ((mask > 0) * value).astype(np.uint8)
    return CanonicalCase(
        case_id=case_id,
        split=split,
        modality="MR",
        image=Volume(np.ascontiguousarray(image)[None], geometry, spacing_known=known),
        label=Volume(label[None], geometry, spacing_known=known),
        caption=caption,
        image_source=f"{path}:{IMAGE_KEY}",
        label_source=f"{path}:{MASK_KEY}",
    )
