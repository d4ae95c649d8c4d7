"""Canonical dataset -> nnU-Net v2 raw dataset ``DatasetNNN_<dataset>__<labels>``.

``<nnUNet_raw>/DatasetNNN_<dataset>__<labels>/``::

    imagesTr/{case_id}_0000.nii.gz   train and val images, bytes of the canonical image
    labelsTr/{case_id}.nii.gz        their labels, values made consecutive, image geometry
    imagesTs/{case_id}_0000.nii.gz   test images (never labelled here)
    dataset.json                     channel_names, labels, numTraining, file_ending, ...

Labels come from the canonical dataset (``labels == "gt"``) or from another method's
predictions on the train and val split (pseudo-labels). nnU-Net needs label values
0, 1, ..., K: the label map's values are renumbered in increasing order and the mapping
back (``nnunet_to_original``) is stored in ``dataset.json`` (key ``medsegflow``) and in
the marker JSON, which is written last.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from medsegflow.datasets.canonical import image_path, read_cases, read_label_map
from medsegflow.errors import InputError
from medsegflow.io import (
    COLOUR_CHANNELS,
    Volume,
    atomic_path,
    read_volume,
    write_text,
    write_volume,
)
from medsegflow.manifests import read_table
from medsegflow.nnunet.env import nnunet_roots, portable
from medsegflow.nnunet.naming import GT_LABELS, dataset_id, dataset_name

log = logging.getLogger(__name__)

FILE_ENDING = ".nii.gz"
TRAINING_SPLITS = ("train", "val")


def channel_name(modality: str) -> str:
    """nnU-Net channel name: ``CT`` (its CT normalisation) for CT, else the modality."""
    return "CT" if modality.strip().upper() == "CT" else modality


def consecutive_labels(label_map: Mapping[str, int]) -> tuple[dict[str, int], dict[int, int]]:
    """nnU-Net labels ``{name: 0..K}`` in order of value, and ``{nnU-Net value: original}``.

    ``background`` must be 0 (it stays 0). E.g. ``{background: 0, liver: 1, tumour: 5}``
    gives ``{background: 0, liver: 1, tumour: 2}`` and ``{0: 0, 1: 1, 2: 5}``.
    """
    if label_map.get("background") != 0:
        raise InputError(f"label map {dict(label_map)} must map 'background' to 0")
    ordered = sorted(label_map.items(), key=lambda item: item[1])
    labels = {name: index for index, (name, _) in enumerate(ordered)}
    return labels, {index: int(value) for index, (_, value) in enumerate(ordered)}


def remap_labels(
    label_zyx: np.ndarray, mapping: Mapping[int, int], *, source: str = "labels"
) -> np.ndarray:
    """``label_zyx`` with every value ``v`` replaced by ``mapping[v]``, as uint8 (uint16 if needed).

    A value missing from ``mapping`` raises :class:`InputError` naming ``source``.
    """
    values = np.unique(label_zyx)
    unknown = sorted(int(v) for v in values if int(v) not in mapping)
    if unknown:
        raise InputError(f"{source}: label values {unknown} are not in the label map")
    dtype = np.uint8 if max(mapping.values(), default=0) < 256 else np.uint16
    out = np.zeros(label_zyx.shape, dtype=dtype)
    for value in values:
        out[label_zyx == value] = mapping[int(value)]
    return out


def check_training_cases(
    case_ids: Iterable[str], splits: Mapping[str, str], *, source: str
) -> None:
    """Fail loudly unless every case about to enter imagesTr/labelsTr is a train or val case."""
    for case_id in case_ids:
        split = splits.get(case_id)
        if split not in TRAINING_SPLITS:
            raise InputError(
                f"{source}: case {case_id} (split {split}) would enter nnU-Net's imagesTr/"
                f"labelsTr; only {'/'.join(TRAINING_SPLITS)} cases may be trained on"
            )


def _copy_atomic(src: Path, dst: Path) -> None:
    """Copy an image into nnU-Net's folder. A colour (RGB) image is written as one grey
    channel instead (:func:`medsegflow.io.grey_of`, BT.601 luminance): the dataset.json
    declares one input channel."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(src))
    reader.ReadImageInformation()
    if reader.GetNumberOfComponents() == COLOUR_CHANNELS:
        write_volume(dst, read_volume(src, colour="grey"))
        return
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _label_folder(
    data_dir: Path, labels: str, pseudolabels: str | os.PathLike | None, case_ids: list[str]
) -> Path:
    """Folder of the training labels; checks a pseudo-label manifest covers every case."""
    if labels == GT_LABELS:
        return data_dir / "labels"
    if pseudolabels is None:
        raise ValueError(f"labels '{labels}': a pseudo-label manifest is required")
    manifest = read_table(pseudolabels, columns=("case_id", "split"))
    missing = sorted(set(case_ids) - set(manifest["case_id"]))
    if missing:
        raise InputError(f"{pseudolabels}: no pseudo-label for train/val cases {missing}")
    return Path(pseudolabels).parent


def _write_training_case(
    case_id: str, *, data_dir: Path, label_file: Path, folder: Path, mapping: Mapping[int, int]
) -> bool:
    """imagesTr + labelsTr files of one case; the label takes the image's geometry.
    Returns whether the label has foreground."""
    src = image_path(data_dir, case_id)
    if not label_file.is_file():
        raise InputError(f"{src}: image has no label file (expected {label_file})")
    image = read_volume(src, colour="grey")  # nnU-Net gets one channel (_copy_atomic)
    label = read_volume(label_file)
    if label.array_zyx.shape != image.array_zyx.shape or not label.geometry.matches(image.geometry):
        raise InputError(
            f"{label_file}: label grid {label.array_zyx.shape} (spacing "
            f"{label.geometry.spacing_xyz}) differs from image {src} {image.array_zyx.shape} "
            f"(spacing {image.geometry.spacing_xyz})"
        )
    remapped = remap_labels(label.array_zyx, mapping, source=str(label_file))
    _copy_atomic(src, folder / "imagesTr" / f"{case_id}_0000{FILE_ENDING}")
    write_volume(folder / "labelsTr" / f"{case_id}{FILE_ENDING}", Volume(remapped, image.geometry))
    return bool(remapped.any())


def _dataset_json(
    *, name: str, channel: str, labels: Mapping[str, int], n_training: int, extra: dict
) -> dict[str, Any]:
    return {
        "name": name,
        "channel_names": {"0": channel},
        "labels": dict(labels),
        "numTraining": n_training,
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": "SimpleITKIO",
        "medsegflow": extra,
    }


def _case_lists(data_dir: Path) -> tuple[dict[str, str], list[str], list[str], str]:
    """``{case: split}``, train+val ids, test ids and the one modality of ``cases.tsv``."""
    cases = read_cases(data_dir)
    splits = dict(zip(cases["case_id"], cases["split"], strict=True))
    train_ids = [c for c, s in splits.items() if s in TRAINING_SPLITS]
    if not train_ids:
        raise InputError(f"{data_dir / 'cases.tsv'}: no train or val cases to train nnU-Net on")
    modalities = sorted(set(cases["modality"]))
    if len(modalities) != 1:
        raise InputError(f"{data_dir / 'cases.tsv'}: mixed modalities {modalities}")
    return splits, train_ids, [c for c, s in splits.items() if s == "test"], modalities[0]


def convert_dataset(
    *,
    data_dir: str | os.PathLike,
    nnunet_dir: str | os.PathLike,
    dataset: str,
    labels: str = GT_LABELS,
    pseudolabels: str | os.PathLike | None = None,
    out_marker: str | os.PathLike,
) -> dict[str, Any]:
    """Write the canonical dataset in ``data_dir`` as nnU-Net raw data under ``nnunet_dir``.

    Train and val cases go to imagesTr/labelsTr (labels from ``data_dir/labels`` when
    ``labels == "gt"``, else from the folder of the ``pseudolabels`` manifest), test cases
    to imagesTs only. The folder is rebuilt from scratch; ``out_marker`` (JSON: id, name,
    folder, label mapping, case lists) is written last. Returns the marker's content.
    """
    data_dir = Path(data_dir)
    splits, train_ids, test_ids, modality = _case_lists(data_dir)
    nn_labels, to_original = consecutive_labels(read_label_map(data_dir))
    label_dir = _label_folder(data_dir, labels, pseudolabels, train_ids)
    check_training_cases(train_ids, splits, source=str(label_dir))
    name = dataset_name(dataset, labels)
    folder = nnunet_roots(nnunet_dir).raw / name
    shutil.rmtree(folder, ignore_errors=True)
    with_foreground = 0
    for case_id in tqdm(train_ids, desc=f"nnU-Net imagesTr {name}", unit="case"):
        with_foreground += _write_training_case(
            case_id,
            data_dir=data_dir,
            label_file=label_dir / f"{case_id}{FILE_ENDING}",
            folder=folder,
            mapping={original: new for new, original in to_original.items()},
        )
    if not with_foreground:
        # nnU-Net's fingerprint fails on this with an unrelated IndexError
        source = pseudolabels if labels != GT_LABELS else label_dir
        raise InputError(
            f"{source}: all {len(train_ids)} training labels of {dataset} ({labels}) are "
            "empty; nnU-Net cannot train on them"
        )
    (folder / "imagesTs").mkdir(parents=True, exist_ok=True)
    for case_id in test_ids:
        _copy_atomic(image_path(data_dir, case_id), folder / "imagesTs" / f"{case_id}_0000.nii.gz")
    extra = {
        "dataset": dataset,
        "label_source": labels,
        "nnunet_to_original": {str(k): v for k, v in to_original.items()},
    }
    channel = channel_name(modality)
    content = _dataset_json(
        name=name, channel=channel, labels=nn_labels, n_training=len(train_ids), extra=extra
    )
    write_text(folder / "dataset.json", json.dumps(content, indent=2) + "\n")
    marker = {"dataset_id": dataset_id(dataset, labels), "dataset_name": name}
    marker.update(raw_dir=portable(folder), channel=channel, labels=nn_labels, **extra)
    marker.update(training_cases=train_ids, test_cases=test_ids)
    write_text(out_marker, json.dumps(marker, indent=2) + "\n")
    log.info(
        "converted %s (labels %s) to %s: %d training, %d test cases, channel %s",
        dataset,
        labels,
        folder,
        len(train_ids),
        len(test_ids),
        channel,
    )
    return marker


def labels_to_original(label_zyx: np.ndarray, nnunet_to_original: Mapping[Any, int]) -> np.ndarray:
    """Map an nnU-Net label volume back to the dataset's label values (``dataset.json`` keys
    may be strings)."""
    mapping = {int(k): int(v) for k, v in nnunet_to_original.items()}
    return remap_labels(label_zyx, mapping, source="nnU-Net prediction")
