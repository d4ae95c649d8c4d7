"""Adapter ``phantom``: generated CT-like 3D or ultrasound-like 2D cases with captions.

Params (all validated here; a bad one raises :class:`ConfigError` naming ``params.<key>``):

- ``kind`` (required): ``"ct"`` (abdominal CT, labels liver/spleen/kidney/lesion) or
  ``"us"`` (breast ultrasound, label lesion).
- ``n_cases`` (int >= 3, default 12): case ids are ``ct_000, ct_001, ...`` / ``us_000, ...``.
- ``splits`` (default ``{train: 0.5, val: 0.17, test: 0.33}``): split fractions.
- ``shape``: grid size, ``[z, y, x]`` for ct (default ``[40, 128, 128]``), ``[y, x]`` for us
  (default ``[128, 128]``).
- ``spacing_mm``: spacing in the same order as ``shape`` (defaults ``[2.5, 0.8, 0.8]`` and
  ``[0.2, 0.2]``).
- ``noise``: ct: noise sd in HU (default 15); us: speckle exponent in [0, 1] (default 0.8).

Each case is generated from ``case_rng(seed, case_id, "phantom")``, so a case stays the
same when ``n_cases`` or the splits change. Lesion counts (ct) and lesion kinds (us) follow
a fixed schedule by case index, so that every set of 4 or more CT cases has cases
without a lesion and every set of ultrasound cases has both kinds.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from medsegflow.datasets.canonical import (
    SPLITS,
    AdapterResult,
    CanonicalCase,
    CaseSource,
    assign_splits,
)
from medsegflow.errors import ConfigError
from medsegflow.io import Geometry, Volume
from medsegflow.phantoms import (
    CT_LABEL_MAP,
    LESION_KINDS,
    US_LABEL_MAP,
    generate_ct_case,
    generate_us_case,
)
from medsegflow.seeding import case_rng

log = logging.getLogger(__name__)

KINDS = ("ct", "us")
KNOWN_KEYS = ("kind", "n_cases", "splits", "shape", "spacing_mm", "noise")
DEFAULT_SPLITS = {"train": 0.5, "val": 0.17, "test": 0.33}
DEFAULT_SHAPE = {"ct": (40, 128, 128), "us": (128, 128)}
DEFAULT_SPACING_MM = {"ct": (2.5, 0.8, 0.8), "us": (0.2, 0.2)}
DEFAULT_NOISE = {"ct": 15.0, "us": 0.8}
CT_LESION_SCHEDULE = (1, 0, 2, 3, 1, 2, 0, 1)
"""Requested lesions per CT case, by case index modulo its length."""


@dataclass(frozen=True)
class PhantomParams:
    """Validated adapter params; ``shape``/``spacing_mm`` in array order (``zyx`` or ``yx``)."""

    kind: str
    n_cases: int
    splits: dict[str, float]
    shape: tuple[int, ...]
    spacing_mm: tuple[float, ...]
    noise: float


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _parse_splits(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"params.splits: expected a mapping of {SPLITS} to fractions, got {value!r}"
        )
    for key, fraction in value.items():
        if key not in SPLITS:
            raise ConfigError(
                f"params.splits.{key}: unknown split; known splits: {', '.join(SPLITS)}"
            )
        if not _is_number(fraction) or fraction < 0:
            raise ConfigError(f"params.splits.{key}: expected a fraction >= 0, got {fraction!r}")
    if sum(value.values()) <= 0:
        raise ConfigError(f"params.splits: fractions {dict(value)} must add up to more than 0")
    return {str(k): float(v) for k, v in value.items()}


def _parse_list(
    params: Mapping[str, Any], key: str, *, kind: str, default: tuple, integer: bool
) -> tuple:
    """``params[key]`` as a tuple of one value per axis of ``kind`` (ints >= 16 or mm > 0)."""
    value = params.get(key, default)
    order = "[z, y, x]" if kind == "ct" else "[y, x]"
    if not isinstance(value, list | tuple) or len(value) != len(default):
        raise ConfigError(
            f"params.{key}: expected a list {order} of {len(default)} values for "
            f"kind '{kind}', got {value!r}"
        )
    for item in value:
        ok = (_is_int(item) and item >= 16) if integer else (_is_number(item) and item > 0)
        if not ok:
            what = "integers >= 16" if integer else "spacings in mm > 0"
            raise ConfigError(f"params.{key}: expected {what}, got {value!r}")
    return tuple(int(v) if integer else float(v) for v in value)


def parse_params(params: Mapping[str, Any]) -> PhantomParams:
    """Validate ``params`` and fill defaults; :class:`ConfigError` naming ``params.<key>``."""
    if not isinstance(params, Mapping):
        raise ConfigError(f"params: expected a mapping, got {params!r}")
    for key in params:
        if key not in KNOWN_KEYS:
            raise ConfigError(
                f"params.{key}: unknown parameter for the phantom adapter; "
                f"known: {', '.join(KNOWN_KEYS)}"
            )
    kind = params.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"params.kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    n_cases = params.get("n_cases", 12)
    if not _is_int(n_cases) or n_cases < 3:
        raise ConfigError(f"params.n_cases: expected an integer >= 3, got {n_cases!r}")
    noise = params.get("noise", DEFAULT_NOISE[kind])
    noise_max = 1.0 if kind == "us" else math.inf
    if not _is_number(noise) or not 0 <= noise <= noise_max:
        limits = "in [0, 1] (speckle exponent)" if kind == "us" else ">= 0 (HU)"
        raise ConfigError(f"params.noise: expected a number {limits}, got {noise!r}")
    return PhantomParams(
        kind=kind,
        n_cases=int(n_cases),
        splits=_parse_splits(params.get("splits", DEFAULT_SPLITS)),
        shape=_parse_list(params, "shape", kind=kind, default=DEFAULT_SHAPE[kind], integer=True),
        spacing_mm=_parse_list(
            params, "spacing_mm", kind=kind, default=DEFAULT_SPACING_MM[kind], integer=False
        ),
        noise=float(noise),
    )


def build(params: Mapping[str, Any], *, seed: int) -> AdapterResult:
    """Validate ``params`` now and return the label map and a lazy stream of cases.

    Images are float32 (HU for ct, grey levels 0-255 for us), labels uint8; a 2D
    ultrasound image is a ``(1, H, W)`` volume with spacing ``(x, y, 1.0)`` mm. Origin is
    0 and direction identity.
    """
    cfg = parse_params(params)
    ids = [f"{cfg.kind}_{index:03d}" for index in range(cfg.n_cases)]
    splits = assign_splits(ids, cfg.splits, seed=seed)
    load = _ct_case if cfg.kind == "ct" else _us_case
    sources = [
        CaseSource(case_id, f"phantom {case_id}", partial(load, cfg, index, case_id, splits, seed))
        for index, case_id in enumerate(ids)
    ]
    return AdapterResult(dict(CT_LABEL_MAP if cfg.kind == "ct" else US_LABEL_MAP), sources)


def extra_cases(
    params: Mapping[str, Any], *, seed: int, n: int, prefix: str, lesion: bool = True
) -> list[CaseSource]:
    """``n`` further cases of the same kind, grid and noise as ``build(params)``'s, split
    ``train``, with ids ``{prefix}_{kind}_{index:04d}``: each drawn from its own id's seed,
    so none repeats a case of the dataset (e.g. extra image-caption pairs for a CLIP).
    ``lesion=False`` (``us`` only): the same images without their lesion
    (:func:`~medsegflow.phantoms.generate_us_case`), empty labels."""
    cfg = parse_params(params)
    if not lesion and cfg.kind != "us":
        raise ConfigError(f"lesion-free extra phantoms exist for kind 'us' only, not '{cfg.kind}'")
    ids = [f"{prefix}_{cfg.kind}_{index:04d}" for index in range(n)]
    splits = dict.fromkeys(ids, "train")
    load = _ct_case if cfg.kind == "ct" else partial(_us_case, lesion=lesion)
    return [
        CaseSource(case_id, f"phantom {case_id}", partial(load, cfg, index, case_id, splits, seed))
        for index, case_id in enumerate(ids)
    ]


def _ct_case(
    cfg: PhantomParams, index: int, case_id: str, splits: Mapping[str, str], seed: int
) -> CanonicalCase:
    geometry = Geometry(spacing_xyz=tuple(reversed(cfg.spacing_mm)))
    case = generate_ct_case(
        case_rng(seed, case_id, "phantom"),
        shape_zyx=cfg.shape,
        spacing_zyx_mm=cfg.spacing_mm,
        noise_hu=cfg.noise,
        n_lesions=CT_LESION_SCHEDULE[index % len(CT_LESION_SCHEDULE)],
    )
    log.debug("generated %s: %s", case_id, case.caption)
    return CanonicalCase(
        case_id=case_id,
        split=splits[case_id],
        modality="CT",
        image=Volume(case.image_zyx, geometry),
        label=Volume(case.label_zyx, geometry),
        caption=case.caption,
    )


def _us_case(
    cfg: PhantomParams,
    index: int,
    case_id: str,
    splits: Mapping[str, str],
    seed: int,
    *,
    lesion: bool = True,
) -> CanonicalCase:
    geometry = Geometry(spacing_xyz=(cfg.spacing_mm[1], cfg.spacing_mm[0], 1.0))
    case = generate_us_case(
        case_rng(seed, case_id, "phantom"),
        shape_yx=cfg.shape,
        spacing_yx_mm=cfg.spacing_mm,
        speckle=cfg.noise,
        kind=LESION_KINDS[index % len(LESION_KINDS)],
        lesion=lesion,
    )
    log.debug("generated %s: %s", case_id, case.caption)
    return CanonicalCase(
        case_id=case_id,
        split=splits[case_id],
        modality="US",
        image=Volume(case.image_yx[None], geometry),
        label=Volume(case.mask_yx[None], geometry),
        caption=case.caption,
    )
