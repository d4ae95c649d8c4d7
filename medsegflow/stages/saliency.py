"""The saliency stage: M2IB text-driven saliency maps of every target slice and label.

Reads a preprocessed dataset (``images/`` uint8 volumes; ``labels/`` only for the oracle
slice choice of ``slice_mode: labelled``) and the sentences of each case and label, and
writes ``results/saliency/{dataset}/{cfg}/`` (``out_dir``), see :data:`SALIENCY_LAYOUT`.

Targets, per case:

- 2D image (one slice): the slice, for every label that has sentences;
- 3D volume, ``slice_mode: labelled``: each ``(z, label)`` where the label is present on
  slice ``z`` of the cleaned label volume. This uses label knowledge (which slices show
  the structure), like the oracle box prompts; docs/families/text_sam.md says so next to
  the results.
- 3D volume, ``slice_mode: all``: every slice for every label (no label file is read).

Each target gets its own noise seed, ``case_rng(seed, case_id, "saliency", z, label)``, so
maps do not depend on the order or the set of cases processed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from medsegflow.datasets.canonical import image_path, label_path
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import Volume, read_volume, write_csv_atomic, write_volume
from medsegflow.manifests import read_preprocessed_image, read_preprocessed_manifest
from medsegflow.saliency.maps import (
    SALIENCY_LAYOUT,
    SALIENCY_MANIFEST_COLUMNS,
    SALIENCY_TARGET_COLUMNS,
    saliency_map_path,
)
from medsegflow.seeding import case_rng
from medsegflow.threads import limit_threads

if TYPE_CHECKING:
    from medsegflow.clip.bundle import ClipBundle
    from medsegflow.saliency.m2ib import M2IBParams

log = logging.getLogger(__name__)

SLICE_MODES = ("labelled", "all")

if __doc__:  # None under python -OO
    __doc__ += "\nLayout of ``out_dir``::\n\n" + "\n".join(
        f"    {line}" for line in SALIENCY_LAYOUT.splitlines()
    )


def _case_texts(
    texts: Mapping[str, Mapping[Any, Sequence[str]]], case_id: str, source: Path
) -> dict[int, list[str]]:
    """``{label value: sentences}`` of a case; label keys may arrive as strings."""
    if case_id not in texts:
        raise InputError(f"{source}: case {case_id} has no text prompts")
    per_label: dict[int, list[str]] = {}
    for label, sentences in texts[case_id].items():
        items = [sentences] if isinstance(sentences, str) else list(sentences)
        if int(label) <= 0 or not items:
            raise ValueError(f"case {case_id}: label {label!r} needs sentences and a value > 0")
        per_label[int(label)] = [str(s) for s in items]
    return dict(sorted(per_label.items()))


def _case_targets(
    pre: Path, case_id: str, *, shape_zyx: tuple[int, ...], labels: Sequence[int], mode: str
) -> list[tuple[int, int]]:
    """``[(z, label)]`` to compute for one case (see the module docstring)."""
    if shape_zyx[0] == 1:
        return [(0, label) for label in labels]
    if mode == "all":
        return [(z, label) for z in range(shape_zyx[0]) for label in labels]
    path = label_path(pre, case_id)
    label_zyx = read_volume(path).array_zyx
    if label_zyx.shape != tuple(shape_zyx):
        raise InputError(
            f"{path}: label shape {label_zyx.shape} differs from the image's {tuple(shape_zyx)}"
        )
    present = {label: np.flatnonzero((label_zyx == label).any(axis=(1, 2))) for label in labels}
    return sorted((int(z), label) for label in labels for z in present[label])


def _target_seed(seed: int, case_id: str, z: int, label: int) -> int:
    return int(case_rng(seed, case_id, "saliency", f"z{z}", f"label{label}").integers(2**31))


def compute_saliency(
    *,
    preprocessed_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    bundle: ClipBundle,
    texts: Mapping[str, Mapping[int, Sequence[str]]],
    params: M2IBParams,
    splits: Sequence[str],
    slice_mode: str = "labelled",
    seed: int,
    key_prefix: str,
    threads: int | None = None,
) -> pd.DataFrame:
    """M2IB maps of every target of every case of ``splits``; writes ``out_dir``.

    Args:
        preprocessed_dir: a preprocessed dataset (``manifest.tsv``, ``images/``, and
            ``labels/`` for ``slice_mode: labelled`` of 3D cases of ``splits`` only).
        out_dir: the saliency folder (:data:`SALIENCY_LAYOUT`); ``manifest.tsv`` last.
        bundle: the CLIP model (on the device to run on).
        texts: ``{case_id: {label value: sentences}}``; several sentences give the mean
            of their maps (:func:`~medsegflow.saliency.m2ib.image_saliency`).
        params: M2IB settings; ``params.vlayer`` is checked against the model first.
        splits: case splits to process.
        slice_mode: ``labelled`` or ``all`` (3D volumes; see the module docstring).
        seed: base of the per-target noise seeds.
        key_prefix: config key of the ``saliency:`` block for messages
            (``methods.<m>.saliency``): errors name ``<key_prefix>.vlayer``, and the
            sibling ``methods.<m>.slice_mode``.
        threads: torch CPU threads (None: torch's default).

    Returns:
        The manifest: ``case_id, split, n_targets, seconds``.

    Raises:
        ConfigError: a bad ``slice_mode`` or ``vlayer``, naming the key.
        InputError: no case in ``splits``, a case without sentences, a missing or
            non-uint8 image, or a label of another shape than its image.
    """

    from medsegflow.saliency.blocks import check_layer, vision_blocks
    from medsegflow.saliency.m2ib import image_saliency

    if slice_mode not in SLICE_MODES:
        parent = key_prefix.rpartition(".")[0]
        raise ConfigError(
            f"{parent + '.' if parent else ''}slice_mode: {slice_mode!r} is not one of "
            f"{SLICE_MODES}"
        )
    check_layer(
        vision_blocks(bundle.model, name=bundle.name),
        params.vlayer,
        key=f"{key_prefix}.vlayer",
        model_name=bundle.name,
    )
    if threads:
        limit_threads(int(threads))
    pre, out_dir = Path(preprocessed_dir), Path(out_dir)
    cases = read_preprocessed_manifest(pre, splits=splits)
    if cases.empty:
        raise InputError(f"{pre / 'manifest.tsv'}: no cases in splits {list(splits)}")
    log.info(
        "saliency (%s, slice_mode %s) of %d cases with %s: %s",
        key_prefix,
        slice_mode,
        len(cases),
        bundle.name,
        params,
    )
    rows: list[dict[str, Any]] = []
    target_rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for case in tqdm(cases.to_dict("records"), desc="saliency", unit="case"):
        case_start = time.perf_counter()
        case_id, split = str(case["case_id"]), case["split"]
        case_texts = _case_texts(texts, case_id, pre / "manifest.tsv")
        image = read_preprocessed_image(image_path(pre, case_id), colour="grey")  # one channel
        targets = _case_targets(
            pre,
            case_id,
            shape_zyx=image.array_zyx.shape,
            labels=list(case_texts),
            mode=slice_mode,
        )
        maps: dict[int, np.ndarray] = {}
        for z, label in targets:
            tic = time.perf_counter()
            saliency_yx = image_saliency(
                bundle,
                image.array_zyx[z],
                case_texts[label],
                params,
                seed=_target_seed(seed, case_id, z, label),
                key_prefix=key_prefix,
            )
            maps.setdefault(label, np.zeros(image.array_zyx.shape, np.float32))[z] = saliency_yx
            target_rows.append(
                {
                    "case_id": case_id,
                    "split": split,
                    "z": z,
                    "label": label,
                    "seconds": round(time.perf_counter() - tic, 3),
                }
            )
        for label, volume in maps.items():
            write_volume(saliency_map_path(out_dir, case_id, label), Volume(volume, image.geometry))
        seconds = time.perf_counter() - case_start
        rows.append(
            {
                "case_id": case_id,
                "split": split,
                "n_targets": len(targets),
                "seconds": round(seconds, 3),
            }
        )
        log.info("%s: %d maps of labels %s, %.2f s", case_id, len(targets), sorted(maps), seconds)
    write_csv_atomic(
        pd.DataFrame(target_rows, columns=list(SALIENCY_TARGET_COLUMNS)),
        out_dir / "targets.tsv",
        sep="\t",
        float_format=None,
    )
    manifest = pd.DataFrame(rows, columns=list(SALIENCY_MANIFEST_COLUMNS))
    write_csv_atomic(manifest, out_dir / "manifest.tsv", sep="\t", float_format=None)
    seconds = time.perf_counter() - started
    n_targets = len(target_rows)
    log.info(
        "saliency maps of %d targets in %d cases into %s: %.1f s (%.3f s per map)",
        n_targets,
        len(manifest),
        out_dir,
        seconds,
        seconds / max(n_targets, 1),
    )
    return manifest
