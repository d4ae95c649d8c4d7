"""Adapter for a folder of 2D images (PNG, JPEG, ...) with one mask image each.

Parameters (``params.<key>``)::

    root        dataset folder (required)
    images      glob relative to root                           default "images/*.png"
    mask        mask path relative to root; ``{stem}`` is the image file name without its
                extension and ``{dir}`` its folder relative to root  default "masks/{stem}.png"
    mask_mode   "binary" or "colors"                             default "binary"
    colors      for "colors": {label name: [[r, g, b], ...]}; black is background unless
                a "background" entry is given
    spacing_mm  pixel spacing [sx, sy] in mm                     default [1.0, 1.0]
    labels      label map {name: value}; binary default background 0, foreground 1;
                colors default background 0 then the colour names numbered 1, 2, ...
    modality    e.g. "US", "XR" (required)
    splits | split | split_all, captions | caption   see :mod:`medsegflow.datasets._params`

Images become one-slice volumes with ``Geometry(spacing_xyz=(sx, sy, 1))``. An 8-bit
colour image whose channels differ stays RGB: a ``(1, H, W, 3)`` uint8 volume, stored as
an RGB vector NIfTI (the canonical layout's colour 2D image; ISIC, Kvasir-SEG), because the
SAM-family recipes take RGB as the official code does; the steps that need one channel
convert it explicitly (``medsegflow.io.grey_of``). Greyscale images keep their dtype
(uint8, uint16, ...) as ``(1, H, W)``; an RGB image whose channels are all equal keeps one
channel; colour images of more than 8 bits become float32 luminance
``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, not rounded). Alpha is ignored.

Binary masks: a pixel is foreground when its grey value (max over RGB) is > 127, which reads
0/255 masks and antialiased or JPEG masks; a mask whose values are all 0 or 1 is read as a
0/1 mask. Colour masks: each pixel takes the label of the nearest listed colour within a
maximum absolute channel difference of 40; any other colour stops the run naming the mask
file, the colour and its pixel count. Case ids are the image file stems. Files matching the
images glob that are another image's mask (e.g. ``images: "*.png"`` with
``mask: "{stem}-mask.png"``) are skipped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    get_label_map,
    get_mapping,
    get_path_template,
    get_root,
    get_spacing,
    get_str,
    list_images,
    plan_cases,
    warn_unmatched_labels,
)
from medsegflow.datasets.canonical import AdapterResult, CanonicalCase, CaseSource
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import Geometry, Volume, colour_or_grey, read_raster

log = logging.getLogger(__name__)

ADAPTER = "png_folder"
KEYS = (*COMMON_KEYS, "mask", "mask_mode", "colors", "spacing_mm")
DEFAULT_IMAGES = "images/*.png"
DEFAULT_MASK = "masks/{stem}.png"
COLOR_TOLERANCE = 40
"""Largest absolute difference in any RGB channel for a pixel to match a listed colour."""


@dataclass(frozen=True)
class MaskRule:
    """How mask pixels become label values.

    ``palette_rgb`` is ``(P, 3)`` int32 and ``palette_value`` ``(P,)`` int64, one row per
    listed colour (``colors`` mode); ``foreground`` is the label value of binary masks.
    """

    mode: str
    foreground: int = 1
    palette_rgb: np.ndarray | None = None
    palette_value: np.ndarray | None = None
    palette_text: str = ""


def build(params: Mapping[str, Any], *, seed: int) -> AdapterResult:
    """List the image/mask pairs under ``params.root`` and return them as lazy cases.

    Raises :class:`ConfigError` naming ``params.<key>`` for a bad parameter and
    :class:`InputError` naming the folder or file for a missing folder, no matching image,
    a missing mask or a duplicate case id, before any image is read.
    """
    check_keys(params, KEYS, adapter=ADAPTER)
    root = get_root(params)
    pattern = get_str(params, "images", default=DEFAULT_IMAGES)
    modality = get_str(params, "modality")
    template = _get_mask_template(params)
    spacing_xy = get_spacing(params, "spacing_mm", lengths=(2,)) or (1.0, 1.0)
    rule, label_map = get_mask_rule(params)
    found = list_images(root, pattern)
    masks = {img: root / _mask_relpath(img.relative_to(root), template) for img in found}
    mask_names = {os.path.normpath(m) for m in masks.values()}
    images = [img for img in found if os.path.normpath(img) not in mask_names]
    if not images:
        raise InputError(f"{root}: every file matching '{pattern}' is the mask of another")
    case_ids = {img: img.stem for img in images}
    check_case_ids(case_ids)
    check_labels_exist([(img, masks[img]) for img in images], kind="mask")
    warn_unmatched_labels([(img, masks[img]) for img in found], pattern=pattern, kind="mask")
    plans = plan_cases(
        [(case_ids[img], img, masks[img]) for img in images], params, modality=modality, seed=seed
    )
    log.info(
        "%s: %d cases under %s (images '%s', %s masks)",
        ADAPTER,
        len(plans),
        root,
        pattern,
        rule.mode,
    )
    geometry = Geometry((spacing_xy[0], spacing_xy[1], 1.0))
    known = "spacing_mm" in params
    load = partial(_load_case, modality=modality, rule=rule, geometry=geometry, known=known)
    return AdapterResult(
        label_map, [CaseSource(p.case_id, str(p.image), partial(load, p)) for p in plans]
    )


def _load_case(
    plan: CasePlan, *, modality: str, rule: MaskRule, geometry: Geometry, known: bool
) -> CanonicalCase:
    image_yx, label_yx = read_image_and_masks(plan.image, [plan.label], rule)
    return CanonicalCase(
        case_id=plan.case_id,
        split=plan.split,
        modality=modality,
        image=Volume(image_yx[None], geometry, spacing_known=known),
        label=Volume(label_yx[None], geometry, spacing_known=known),
        caption=plan.caption,
        image_source=str(plan.image),
        label_source=str(plan.label),
    )


def read_image_and_masks(
    image_path: Path, mask_paths: Sequence[Path], rule: MaskRule
) -> tuple[np.ndarray, np.ndarray]:
    """``(image_yx, label_yx)``: the image as the canonical layout stores it (an 8-bit
    colour image ``(H, W, 3)`` RGB, any other one channel: :func:`~medsegflow.io.colour_or_grey`)
    and the union of its masks' labels (a later mask wins where they overlap);
    :class:`InputError` names a mask whose size differs from the image's."""
    image_yx = colour_or_grey(read_raster(image_path))
    label_yx = None
    for path in mask_paths:
        mask = read_raster(path)
        if image_yx.shape[:2] != mask.shape[:2]:
            raise InputError(
                f"{path}: mask size {_size(mask)} differs from image "
                f"{image_path} size {_size(image_yx)} (width x height)"
            )
        labels = mask_to_label(mask, rule, path=path)
        label_yx = labels if label_yx is None else np.where(labels > 0, labels, label_yx)
    if label_yx is None:
        raise ValueError(f"{image_path}: no mask file given")
    return image_yx, label_yx


def mask_to_label(mask: np.ndarray, rule: MaskRule, *, path: str | os.PathLike) -> np.ndarray:
    """Label values ``(H, W)`` (uint8, or uint16 above 255) from a mask raster.

    Raises :class:`InputError` naming ``path`` for a colour that matches no listed colour.
    """
    if rule.mode == "binary":
        grey = mask if mask.ndim == 2 else mask[..., :3].max(axis=-1)
        threshold = 0.5 if grey.max(initial=0) <= 1 else 127
        dtype = np.uint8 if rule.foreground < 256 else np.uint16
        return ((grey > threshold) * rule.foreground).astype(dtype)
    if mask.dtype != np.uint8:
        raise InputError(f"{path}: colour masks must be 8-bit, got {mask.dtype}")
    rgb = np.repeat(mask[..., None], 3, axis=-1) if mask.ndim == 2 else mask[..., :3]
    packed = (
        (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    )
    colours, inverse, counts = np.unique(packed.ravel(), return_inverse=True, return_counts=True)
    colours_rgb = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], axis=1)
    distance = np.abs(colours_rgb[:, None, :] - rule.palette_rgb[None, :, :]).max(axis=-1)
    nearest = distance.argmin(axis=1)
    unmatched = np.flatnonzero(distance[np.arange(len(colours)), nearest] > COLOR_TOLERANCE)
    if unmatched.size:
        worst = unmatched[np.argmax(counts[unmatched])]
        others = ""
        if unmatched.size > 1:
            others = (
                f"; {unmatched.size - 1} more unknown colours on "
                f"{int(counts[unmatched].sum() - counts[worst])} pixels"
            )
        raise InputError(
            f"{path}: colour {tuple(int(v) for v in colours_rgb[worst])} on "
            f"{int(counts[worst])} pixels matches no colour of params.colors "
            f"({rule.palette_text}) within {COLOR_TOLERANCE}{others}"
        )
    values = rule.palette_value[nearest]
    dtype = np.uint8 if values.max() < 256 else np.uint16
    return values.astype(dtype)[inverse].reshape(mask.shape[:2])


def get_mask_rule(params: Mapping[str, Any]) -> tuple[MaskRule, dict[str, int]]:
    """Mask rule and label map from ``params.mask_mode``, ``params.colors``, ``params.labels``."""
    mode = params.get("mask_mode", "binary")
    colors = get_mapping(params, "colors")
    if mode not in ("binary", "colors"):
        raise ConfigError(f"params.mask_mode: expected 'binary' or 'colors', got {mode!r}")
    if mode == "colors":
        if not colors:
            raise ConfigError("params.colors: required with mask_mode 'colors'")
        return _colour_rule(params, colors)
    if colors is not None:
        raise ConfigError("params.colors: only used with mask_mode 'colors'")
    label_map = get_label_map(params, default=BINARY_LABELS)
    if len(label_map) != 2:
        raise ConfigError(
            f"params.labels: binary masks need 'background' and one foreground label, "
            f"got {label_map}"
        )
    return MaskRule("binary", foreground=max(label_map.values())), label_map


def _colour_rule(
    params: Mapping[str, Any], colors: Mapping[str, Any]
) -> tuple[MaskRule, dict[str, int]]:
    named = {name: _parse_colours(name, value) for name, value in colors.items()}
    named.setdefault("background", [(0, 0, 0)])
    names = [n for n in colors if n != "background"]
    label_map = get_label_map(
        params, default={"background": 0, **{n: i + 1 for i, n in enumerate(names)}}
    )
    owner: dict[tuple[int, int, int], str] = {}
    for name, colour_list in named.items():
        if name not in label_map:
            raise ConfigError(
                f"params.colors.{name}: no value for '{name}' in params.labels {label_map}"
            )
        for colour in colour_list:
            if colour in owner:
                raise ConfigError(
                    f"params.colors.{name}: colour {list(colour)} is also listed for "
                    f"'{owner[colour]}'"
                )
            owner[colour] = name
    text = "; ".join(f"{n} " + ", ".join(str(list(c)) for c in cs) for n, cs in named.items())
    rule = MaskRule(
        "colors",
        palette_rgb=np.array(list(owner), dtype=np.int32),
        palette_value=np.array([label_map[n] for n in owner.values()], dtype=np.int64),
        palette_text=text,
    )
    return rule, label_map


def _parse_colours(name: str, value: Any) -> list[tuple[int, int, int]]:
    """``[[r, g, b], ...]`` (or a single ``[r, g, b]``) as a list of int triples."""
    if _is_rgb(value):
        value = [value]
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not value
        or not all(_is_rgb(c) for c in value)
    ):
        raise ConfigError(
            f"params.colors.{name}: expected a list of [r, g, b] triples of integers 0..255, "
            f"got {value!r}"
        )
    return [(int(c[0]), int(c[1]), int(c[2])) for c in value]


def _is_rgb(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    )


def _get_mask_template(params: Mapping[str, Any]) -> str:
    return get_path_template(params, "mask", "stem", default=DEFAULT_MASK)


def _mask_relpath(image_rel: Path, template: str) -> str:
    return template.format(stem=image_rel.stem, dir=image_rel.parent.as_posix())


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[0]}"
