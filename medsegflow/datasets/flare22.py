"""Adapter ``flare22``: the 50 labelled CT scans of FLARE 2022 (MICCAI 2022 challenge "Fast
and Low-resource semi-supervised Abdominal oRgan sEgmentation", Ma et al.,
https://flare22.grand-challenge.org/), 13 abdominal organs.

Expected tree (``params.root`` is the folder holding ``images/`` and ``labels/``, or the
folder holding ``FLARE22Train/``; an nnU-Net copy with ``imagesTr/``, ``labelsTr/`` is read
too)::

    FLARE22Train/
      images/FLARE22_Tr_0001_0000.nii.gz  ... FLARE22_Tr_0050_0000.nii.gz
      labels/FLARE22_Tr_0001.nii.gz       ... FLARE22_Tr_0050.nii.gz

Folder and file names: the defaults ``data/FLARE22Train/images`` / ``labels`` with the
``_0000.nii.gz`` image suffix of MedSAM's ``pre_CT_MR.py`` (bowang-lab/MedSAM), and U-Mamba's
``data/README.md`` (bowang-lab/U-Mamba, ``Dataset701_AbdomenCT/imagesTr/FLARE22_Tr_0001_0000
.nii.gz``). Label values (:data:`LABELS`): the ``labels`` of U-Mamba's Dataset701_AbdomenCT
``dataset.json`` ("MICCAI FLARE 2022 Challenge") and ``FlareSemiSeg/common/labels.py`` of
Shanghai-Aitrox-Technology/EfficientSegLearning agree: 1 liver, 2 right kidney, 3 spleen,
4 pancreas, 5 aorta, 6 inferior vena cava, 7 right adrenal gland, 8 left adrenal gland,
9 gallbladder, 10 esophagus, 11 stomach, 12 duodenum, 13 left kidney. The 2000 unlabelled
training scans and the validation/test images have no labels here and are not read.

FLARE22 defines no split of its 50 labelled cases: ``splits`` (seeded fractions, default
train 0.6, val 0.2, test 0.2), ``split`` or ``split_all`` as for every folder adapter.
``split: medsam`` is MedSAM's: the label files sorted by name, the first 40 train and the
last 10 test (``names[:40]`` / ``names[40:]`` of bowang-lab/MedSAM ``pre_CT_MR.py``,
commits 3e703df and 1893706).
Case ids are the label stems (``FLARE22_Tr_0001``). Images keep HU and geometry.

Parameters (``params.<key>``)::

    root          see above (required)
    keep_labels   [organ, ...] of LABELS scored; the others become background
                  default: all 13
    split         "medsam" (first 40 sorted cases train, last 10 test) or a mapping
    splits | split | split_all, captions | caption   see :mod:`medsegflow.datasets._params`
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from medsegflow.datasets._params import (
    check_case_ids,
    check_keys,
    check_labels_exist,
    get_root,
    plan_cases,
    usable_file,
)
from medsegflow.datasets.canonical import AdapterResult, CaseSource
from medsegflow.datasets.nifti_folder import _get_kept_labels, _load_case
from medsegflow.errors import InputError

log = logging.getLogger(__name__)

ADAPTER = "flare22"
KEYS = ("root", "keep_labels", "splits", "split", "split_all", "captions", "caption")
MODALITY = "CT"
LABELS = {
    "background": 0,
    "liver": 1,
    "right_kidney": 2,
    "spleen": 3,
    "pancreas": 4,
    "aorta": 5,
    "inferior_vena_cava": 6,
    "right_adrenal_gland": 7,
    "left_adrenal_gland": 8,
    "gallbladder": 9,
    "esophagus": 10,
    "stomach": 11,
    "duodenum": 12,
    "left_kidney": 13,
}
LAYOUTS = (
    ("images", "labels"),
    ("FLARE22Train/images", "FLARE22Train/labels"),
    ("imagesTr", "labelsTr"),
)
"""(images, labels) folders relative to ``params.root``, tried in this order."""
_IMAGE = re.compile(r"^(FLARE22_Tr_\d+)_0000\.nii\.gz$")


def build(params: Mapping[str, Any], *, seed: int) -> AdapterResult:
    """List the labelled FLARE22 cases; :class:`InputError` names a missing folder or label."""
    check_keys(params, KEYS, adapter=ADAPTER)
    root = get_root(params)
    label_map, dropped = _get_kept_labels(params, LABELS)
    images_dir, labels_dir = _find_layout(root)
    images = sorted(
        p for p in images_dir.iterdir() if usable_file(p) and _IMAGE.match(p.name) is not None
    )
    if not images:
        raise InputError(f"{images_dir}: no FLARE22_Tr_<nnnn>_0000.nii.gz image")
    case_ids = {img: _IMAGE.match(img.name)[1] for img in images}
    check_case_ids(case_ids)
    pairs = [(img, labels_dir / f"{case_ids[img]}.nii.gz") for img in images]
    check_labels_exist(pairs)
    if params.get("split") == "medsam":
        params = {**params, "split": medsam_split(case_ids.values())}
    plans = plan_cases(
        [(case_ids[img], img, lab) for img, lab in pairs], params, modality=MODALITY, seed=seed
    )
    log.info("%s: %d labelled cases under %s", ADAPTER, len(plans), images_dir.parent)
    load = partial(_load_case, modality=MODALITY, binarize=False, dropped=dropped)
    return AdapterResult(
        label_map, [CaseSource(p.case_id, str(p.image), partial(load, p)) for p in plans]
    )


def medsam_split(case_ids: Iterable[str]) -> dict[str, str]:
    """MedSAM's FLARE22 split: sorted by name, the first 40 cases train, the others test."""
    return {c: "train" if i < 40 else "test" for i, c in enumerate(sorted(case_ids))}


def _find_layout(root: Path) -> tuple[Path, Path]:
    if not root.is_dir():
        raise InputError(f"{root}: FLARE22 folder not found (params.root)")
    for images, labels in LAYOUTS:
        if (root / images).is_dir():
            if not (root / labels).is_dir():
                raise InputError(f"{root / labels}: FLARE22 label folder not found")
            return root / images, root / labels
    tried = ", ".join(images for images, _ in LAYOUTS)
    raise InputError(f"{root}: no FLARE22 image folder ({tried}) under params.root")
