"""Image-caption pairs for training or fine-tuning a CLIP, from preprocessed datasets.

``out_dir``::

    images/{dataset}/{case_id}_z{z:03d}.png         uint8 grey slice (preprocessed intensities)
    images/{dataset}/{case_id}_z{z:03d}_c{k}.png    random crops (``crops_per_image`` > 0)
    captions.csv                                    image, caption, dataset, case_id, split, z, kind

``captions.csv`` is written last (the stage's file target); ``image`` is relative to it.
Extra generated phantoms (``phantom_images``) are listed under their dataset with ids
``clip_<kind>_<index>`` and split ``train``.

Pairs, from the cases of ``splits`` only (train by default; val may be added; test labels
are never read):

- a 2D image (one-slice volume) with its case caption (``cases.tsv``);
- each selected slice of a 3D volume (``slices.tsv``: foreground and empty slices) with a
  caption naming the structures on it, from its label slice: ``"<prefix> slice showing
  the liver, the spleen and the lesion."`` (``"... showing no labelled structure."``).
  ``<prefix>`` is the case caption before " with " (``"Axial abdominal CT"``), else the
  modality. A case caption describes the whole volume, which a slice may not show.
- localisation augmentation (``crops_per_image`` crops per image, off by default): square
  crops of ``crop_fraction`` of the image side, half centred on a pixel of a random
  structure of the slice and half placed uniformly, captioned ``"<prefix> crop showing
  ..."`` with the structures that fill at least :data:`CROP_MIN_SHARE` of their slice area
  or of the crop (and :data:`MIN_PIXELS` pixels). A crop of a captioned 2D image that shows
  every structure of the image takes the image's caption (it shows what the caption
  describes). Crops with and without a structure, each named accordingly, are what
  teaches a CLIP which words go with which image regions, the ability M2IB saliency
  relies on.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from medsegflow.datasets.canonical import image_path, label_path, read_cases, read_label_map
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import atomic_path, read_volume, write_csv_atomic
from medsegflow.manifests import SLICES_COLUMNS, read_preprocessed_manifest, read_table
from medsegflow.seeding import case_rng

log = logging.getLogger(__name__)

CAPTION_COLUMNS = ("image", "caption", "dataset", "case_id", "split", "z", "kind")
TRAINING_SPLITS = ("train", "val")
MIN_PIXELS = 20
"""Pixels a structure needs on a slice (or crop) to be named in its caption."""
CROP_MIN_SHARE = 0.3
NOTHING = "no labelled structure"


def caption_prefix(caption: str, modality: str) -> str:
    """What the image is, from its case caption: the words before " with " (``"Axial
    abdominal CT with one lesion."`` -> ``"Axial abdominal CT"``), a caption of at most
    5 words without its full stop, else ``modality`` (``"Medical image"`` if empty)."""
    text = caption.strip().rstrip(".").strip()
    parts = re.split(r"\s+with\s+", text, maxsplit=1, flags=re.IGNORECASE)
    if len(parts) == 2 and parts[0]:
        return parts[0]
    if text and len(text.split()) <= 5:
        return text
    return modality.strip() or "Medical image"


def structures_phrase(names: Sequence[str]) -> str:
    """``"the liver, the spleen and the lesion"``; :data:`NOTHING` for no names."""
    items = [f"the {n.replace('_', ' ')}" for n in names]
    if not items:
        return NOTHING
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _present(
    label_yx: np.ndarray, names: Mapping[int, str], *, reference: np.ndarray | None = None
) -> list[str]:
    """Names of the structures of ``label_yx`` (a slice or a crop of it) big enough to name;
    for a crop, ``reference`` is the full slice (share of each structure kept)."""
    values, counts = np.unique(label_yx, return_counts=True)
    found = []
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        if value == 0 or value not in names or count < MIN_PIXELS:
            continue
        if reference is not None:
            whole = int((reference == value).sum())
            if count < CROP_MIN_SHARE * min(whole, label_yx.size):
                continue
        found.append(names[value])
    return found


def _crops(
    image_yx: np.ndarray,
    label_yx: np.ndarray,
    *,
    count: int,
    fraction: float,
    rng: np.random.Generator,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` square (image, label) crops: even ones centred on a structure's pixel."""
    height, width = image_yx.shape
    side = max(8, int(round(fraction * min(height, width))))
    crops = []
    for k in range(count):
        foreground = np.argwhere(label_yx > 0)
        if k % 2 == 0 and len(foreground):
            values = np.unique(label_yx[label_yx > 0])
            chosen = np.argwhere(label_yx == rng.choice(values))
            cy, cx = chosen[rng.integers(len(chosen))]
            y0, x0 = int(cy) - side // 2, int(cx) - side // 2
        else:
            y0, x0 = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
        y0, x0 = min(max(y0, 0), height - side), min(max(x0, 0), width - side)
        crops.append(
            (image_yx[y0 : y0 + side, x0 : x0 + side], label_yx[y0 : y0 + side, x0 : x0 + side])
        )
    return crops


def _write_png(path: Path, image_yx: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.ascontiguousarray(image_yx)).save(tmp, format="png")


def _case_pairs(
    case: Mapping[str, Any],
    *,
    z_values: Sequence[int],
    preprocessed_dir: Path,
    names: Mapping[int, str],
    crops_per_image: int,
    crop_fraction: float,
    seed: int,
) -> list[dict[str, Any]]:
    """Caption rows (with the image arrays under ``"array"``) of one preprocessed case."""
    case_id = str(case["case_id"])
    image_zyx = read_volume(image_path(preprocessed_dir, case_id), colour="grey").array_zyx
    if image_zyx.dtype != np.uint8:
        raise InputError(
            f"{image_path(preprocessed_dir, case_id)}: expected uint8, got {image_zyx.dtype}"
        )
    caption = str(case.get("caption") or "").strip()
    label_zyx = None
    if image_zyx.shape[0] > 1 or crops_per_image or not caption:
        label_zyx = read_volume(label_path(preprocessed_dir, case_id)).array_zyx
    return _image_pairs(
        {"dataset": preprocessed_dir.name, "case_id": case_id, "split": case["split"]},
        image_zyx,
        label_zyx,
        caption=caption,
        modality=str(case.get("modality") or ""),
        z_values=z_values,
        names=names,
        crops_per_image=crops_per_image,
        crop_fraction=crop_fraction,
        seed=seed,
    )


def _image_pairs(
    base_row: Mapping[str, Any],
    image_zyx: np.ndarray,
    label_zyx: np.ndarray | None,
    *,
    caption: str,
    modality: str,
    z_values: Sequence[int],
    names: Mapping[int, str],
    crops_per_image: int,
    crop_fraction: float,
    seed: int,
) -> list[dict[str, Any]]:
    """Caption rows of one uint8 ``(Z, Y, X)`` image (``base_row``: dataset, case_id,
    split): a 2D image with its case ``caption``, or each slice of ``z_values`` with the
    structures of its label slice, plus ``crops_per_image`` crops of each."""
    dataset, case_id = str(base_row["dataset"]), str(base_row["case_id"])
    is_2d = image_zyx.shape[0] == 1
    prefix = caption_prefix(caption, modality)
    rows = []
    for z in [0] if is_2d else z_values:
        base = {**base_row, "z": int(z)}
        stem = f"{case_id}_z{int(z):03d}"
        if is_2d and caption:
            text = caption
        else:
            word = "image" if is_2d else "slice"
            text = f"{prefix} {word} showing {structures_phrase(_present(label_zyx[z], names))}."
        rows.append(
            {
                **base,
                "stem": stem,
                "kind": "image" if is_2d else "slice",
                "caption": text,
                "array": image_zyx[z],
            }
        )
        if not crops_per_image:
            continue
        rng = case_rng(seed, f"{dataset}/{case_id}", "clip_crops", str(int(z)))
        for k, (crop, crop_label) in enumerate(
            _crops(
                image_zyx[z], label_zyx[z], count=crops_per_image, fraction=crop_fraction, rng=rng
            )
        ):
            shown = _present(crop_label, names, reference=label_zyx[z])
            text = f"{prefix} crop showing {structures_phrase(shown)}."
            if is_2d and caption and shown and shown == _present(label_zyx[z], names):
                text = caption  # the crop shows what the image's caption describes
            rows.append(
                {
                    **base,
                    "stem": f"{stem}_c{k}",
                    "kind": "crop",
                    "caption": text,
                    "array": crop,
                }
            )
    return rows


def phantom_pairs(
    dataset: str,
    dataset_spec: Mapping[str, Any],
    *,
    n: int,
    names: Mapping[int, str],
    seed: int,
    crops_per_image: int,
    crop_fraction: float,
    lesion_free: bool = False,
) -> list[dict[str, Any]]:
    """Caption rows of ``n`` extra phantoms of a ``phantom`` dataset (``dataset_spec``:
    its config entry, ``params`` and ``window``), generated with the dataset's own params
    but ids and seeds of their own (:func:`medsegflow.datasets.phantom.extra_cases`, split
    ``train``), normalised to uint8 as the dataset's images are; every slice of a 3D
    phantom is used. Phantoms are cheap: this is how a CLIP trained from scratch gets
    enough pairs to learn where a structure is.

    ``lesion_free`` (ultrasound phantoms): each extra phantom also comes without its
    lesion (the same background, distractors and speckle; id ``<id>_free``, whole image
    only) with its own caption ("Breast ultrasound with no lesion."): the pair differs
    from the lesion image only where the lesion is, the hard negative that teaches a CLIP
    trained from scratch which pixels its lesion caption is about."""
    from medsegflow.datasets.phantom import extra_cases
    from medsegflow.preprocess.intensity import normalise_intensity

    params = dataset_spec.get("params") or {}
    sources = [(s, crops_per_image, "") for s in extra_cases(params, seed=seed, n=n, prefix="clip")]
    if lesion_free:
        twins = extra_cases(params, seed=seed, n=n, prefix="clip", lesion=False)
        sources += [(s, 0, "_free") for s in twins]
    rows: list[dict[str, Any]] = []
    for source, crops, suffix in tqdm(sources, desc=f"phantom pairs {dataset}", unit="case"):
        case = source.load()
        image_zyx = normalise_intensity(
            case.image.array_zyx, modality=case.modality, window=dataset_spec.get("window")
        )
        rows += _image_pairs(
            {"dataset": dataset, "case_id": case.case_id + suffix, "split": case.split},
            image_zyx,
            case.label.array_zyx,
            caption=case.caption,
            modality=case.modality,
            z_values=range(image_zyx.shape[0]),
            names=names,
            crops_per_image=crops,
            crop_fraction=crop_fraction,
            seed=seed,
        )
    return rows


def write_caption_pairs(rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike) -> pd.DataFrame:
    """Write caption rows (with their image arrays under ``"array"`` and file stems under
    ``"stem"``, as :func:`phantom_pairs` returns them) as PNGs plus ``captions.csv``, last,
    into ``out_dir`` (module docstring); returns the table. ``rows`` are consumed."""
    out_dir = Path(out_dir)
    for row in rows:
        row["image"] = f"images/{row['dataset']}/{row.pop('stem')}.png"
        _write_png(out_dir / row["image"], row.pop("array"))
    table = pd.DataFrame(list(rows), columns=list(CAPTION_COLUMNS))
    write_csv_atomic(table, out_dir / "captions.csv", float_format=None)
    return table


def make_caption_table(
    *,
    datasets: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
    out_dir: str | os.PathLike,
    splits: Sequence[str] = ("train",),
    seed: int,
    crops_per_image: int = 0,
    crop_fraction: float = 0.5,
    phantoms: Mapping[str, Mapping[str, Any]] | None = None,
    phantom_images: int = 0,
    lesion_free: bool = False,
) -> pd.DataFrame:
    """Write the caption pairs of ``datasets`` into ``out_dir`` (module docstring).

    Args:
        datasets: ``(data_dir, preprocessed_dir)`` per dataset: ``results/data/{dataset}``
            (``cases.tsv``: captions, modality) and ``results/preprocessed/{dataset}``
            (uint8 images, cleaned labels, ``slices.tsv``, ``manifest.tsv``).
        splits: the splits whose cases (and labels) are used; ``test`` is refused.
        seed: seeds the crops (per case and slice, independent of processing order).
        phantoms: the config entries of the datasets that are ``phantom`` adapters, by
            name; each gets ``phantom_images`` extra generated pairs (:func:`phantom_pairs`).

    Returns:
        The ``captions.csv`` table.
    """
    bad = [s for s in splits if s not in TRAINING_SPLITS]
    if bad or not splits:
        raise ConfigError(f"clip captions: splits {list(splits)} must be among {TRAINING_SPLITS}")
    if crops_per_image < 0 or not 0 < crop_fraction <= 1:
        raise ConfigError(
            f"clip captions: crops_per_image {crops_per_image} must be >= 0 and "
            f"crop_fraction {crop_fraction} in (0, 1]"
        )
    out_dir = Path(out_dir)
    rows: list[dict[str, Any]] = []
    for data_dir, preprocessed_dir in datasets:
        data_dir, preprocessed_dir = Path(data_dir), Path(preprocessed_dir)
        cases = read_cases(data_dir).set_index("case_id", drop=False)
        manifest = read_preprocessed_manifest(preprocessed_dir, splits=splits)
        slices = read_table(preprocessed_dir / "slices.tsv", columns=SLICES_COLUMNS)
        names = {v: k for k, v in read_label_map(preprocessed_dir).items() if v != 0}
        for case_id in tqdm(
            sorted(manifest["case_id"]), desc=f"captions {preprocessed_dir.name}", unit="case"
        ):
            if case_id not in cases.index:
                raise InputError(
                    f"{data_dir / 'cases.tsv'}: case {case_id} of "
                    f"{preprocessed_dir / 'manifest.tsv'} is missing"
                )
            z_values = sorted(int(z) for z in slices.loc[slices["case_id"] == case_id, "z"])
            rows += _case_pairs(
                cases.loc[case_id].to_dict(),
                z_values=z_values,
                preprocessed_dir=preprocessed_dir,
                names=names,
                crops_per_image=crops_per_image,
                crop_fraction=crop_fraction,
                seed=seed,
            )
        if phantom_images and preprocessed_dir.name in (phantoms or {}):
            rows += phantom_pairs(
                preprocessed_dir.name,
                (phantoms or {})[preprocessed_dir.name],
                n=phantom_images,
                names=names,
                seed=seed,
                crops_per_image=crops_per_image,
                crop_fraction=crop_fraction,
                lesion_free=lesion_free,
            )
    if not rows:
        raise InputError(
            f"{', '.join(str(p) for _, p in datasets)}: no {'/'.join(splits)} case to caption"
        )
    table = write_caption_pairs(rows, out_dir)
    log.info(
        "%d image-caption pairs (%s), %d distinct captions, in %s",
        len(table),
        table["kind"].value_counts().to_dict(),
        table["caption"].nunique(),
        out_dir,
    )
    return table


def make_clip_captions(
    *,
    spec: Mapping[str, Any],
    name: str,
    cases: Sequence[str | os.PathLike],
    manifests: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    seed: int,
    phantoms: Mapping[str, Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """The caption job of a ``clip_models`` entry: :func:`make_caption_table` over the
    datasets of ``cases`` (``results/data/{dataset}/cases.tsv``) and ``manifests``
    (``results/preprocessed/{dataset}/manifest.tsv``), in the same order, with ``splits``,
    ``crops_per_image`` and ``crop_fraction`` from the entry's ``train:`` (demo) or
    ``finetune:`` block (:func:`~medsegflow.clip.finetune.training_block`). Crops default
    to 2 per image for the demo CLIP (trained from scratch, it must learn where things
    are) and to 0 for fine-tuning (MedCLIP-SAMv2 fine-tunes on whole images).
    ``phantoms``: the config entries of the training datasets that are ``phantom``
    adapters, which get the block's ``phantom_images`` extra generated pairs each."""
    from medsegflow.clip.finetune import training_block

    block = training_block(spec, name)
    if Path(out_csv).name != "captions.csv" or len(cases) != len(manifests):
        raise ValueError(f"{out_csv}: expected .../captions.csv and one manifest per cases.tsv")
    datasets = [(Path(c).parent, Path(m).parent) for c, m in zip(cases, manifests, strict=True)]
    mismatched = [(str(d), str(p)) for d, p in datasets if d.name != p.name]
    if mismatched:
        raise ValueError(f"cases and manifests of different datasets: {mismatched}")
    return make_caption_table(
        datasets=datasets,
        out_dir=Path(out_csv).parent,
        splits=tuple(block["splits"]),
        seed=seed,
        crops_per_image=int(block["crops_per_image"]),
        crop_fraction=float(block["crop_fraction"]),
        phantoms=phantoms,
        phantom_images=int(block.get("phantom_images", 0)),
        lesion_free=bool(block.get("lesion_free", False)),
    )
