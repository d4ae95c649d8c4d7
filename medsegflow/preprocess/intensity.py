"""Intensity normalisation to ``uint8`` 0..255, the input range of SAM-family models.

CT is windowed in Hounsfield units (level/width presets). An 8-bit image of any other
modality but MR (a PNG/JPG ultrasound, X-ray, endoscopy or dermoscopy image, grey or RGB,
stored as uint8) is already in the models' input range and is kept unchanged: no official
recipe clips such images (MedSAM's ``pre_grey_rgb.py``, LiteMedSAM's CVPR24 data, SAM's
``SamPredictor``), and clipping them changed MedSAM's masks (Dice 0.968-0.982 against the
official mask on the raw PNG). MR, and any modality stored with more than 8 bits (int16,
float), is clipped to the 0.5th/99.5th percentiles of its foreground, as MedSAM's
``pre_CT_MR.py`` does.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from medsegflow.errors import ConfigError

WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "abdomen": (40.0, 400.0),
    "chest": (-600.0, 1500.0),
    "brain": (40.0, 80.0),
}
"""CT windows by name: ``(level, width)`` in HU."""

DEFAULT_WINDOW = "abdomen"
DEFAULT_PERCENTILES = (0.5, 99.5)

WindowSpec = str | Mapping[str, float] | None


def _scale_to_uint8(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Clip ``image`` to ``[lo, hi]`` and map it linearly onto 0..255 (rounded), as uint8."""
    clipped = np.clip(image.astype(np.float64, copy=False), lo, hi)
    scaled = (clipped - lo) * (255.0 / (hi - lo))
    return np.rint(scaled).astype(np.uint8)


def window_ct(image_hu: np.ndarray, *, level: float, width: float) -> np.ndarray:
    """Window a CT image: clip to ``[level - width/2, level + width/2]`` HU, scale to 0..255.

    Args:
        image_hu: any shape, any numeric dtype, intensities in HU.
        level: window centre in HU.
        width: window width in HU, > 0.

    Returns:
        ``uint8`` array of the same shape; the lower window edge maps to 0, the upper to
        255, values in between linearly (rounded to the nearest integer).
    """
    if not width > 0:
        raise ValueError(f"CT window width must be > 0 HU, got {width}")
    half = width / 2.0
    return _scale_to_uint8(np.asarray(image_hu), level - half, level + half)


def normalise_percentiles(
    image: np.ndarray,
    *,
    lower: float = DEFAULT_PERCENTILES[0],
    upper: float = DEFAULT_PERCENTILES[1],
) -> np.ndarray:
    """Clip to the ``lower``/``upper`` percentiles of the foreground and scale to 0..255.

    The foreground is every voxel brighter than the image minimum, i.e. the zero/black
    background around an MR or ultrasound field of view is excluded from the
    percentiles (MedSAM's rule). The background is below the lower clip value, so it
    maps to 0.

    Args:
        image: any shape, any numeric dtype.
        lower, upper: percentiles in ``[0, 100]``, ``lower < upper``.

    Returns:
        ``uint8`` array of the same shape. All zeros when there is no foreground
        (a constant image); when the foreground percentiles coincide, the foreground is
        255 and the background 0.
    """
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(
            f"percentiles must satisfy 0 <= lower < upper <= 100, got lower={lower}, upper={upper}"
        )
    image = np.asarray(image)
    if image.size == 0:
        return np.zeros(image.shape, dtype=np.uint8)
    foreground = image > image.min()
    if not foreground.any():
        return np.zeros(image.shape, dtype=np.uint8)
    lo, hi = np.percentile(image[foreground], [lower, upper])
    if hi <= lo:
        return np.where(image >= hi, 255, 0).astype(np.uint8)
    return _scale_to_uint8(image, float(lo), float(hi))


def is_ct(modality: str) -> bool:
    """True for the CT modality (case-insensitive), which is windowed in HU."""
    return modality.strip().upper() == "CT"


PERCENTILE_ALWAYS = ("MR", "MRI")
"""Modalities normalised to percentiles whatever their dtype (MedSAM's ``pre_CT_MR.py``)."""


def keeps_8bit(modality: str, dtype: np.dtype | type | None) -> bool:
    """True when an image of ``modality`` stored as ``dtype`` goes to the models unchanged:
    uint8 (an 8-bit raster, grey or RGB) of any modality but CT and MR."""
    if dtype is None or np.dtype(dtype) != np.uint8 or is_ct(modality):
        return False
    return modality.strip().upper() not in PERCENTILE_ALWAYS


def resolve_window(window: WindowSpec) -> tuple[float, float]:
    """``(level, width)`` in HU from a preset name, a ``{"level", "width"}`` mapping or None.

    None gives the ``"abdomen"`` preset. Raises :class:`ConfigError` naming the value for
    an unknown preset or a malformed mapping.
    """
    if window is None:
        window = DEFAULT_WINDOW
    if isinstance(window, str):
        if window not in WINDOW_PRESETS:
            raise ConfigError(
                f"window '{window}' is not a CT window preset; presets: "
                f"{', '.join(sorted(WINDOW_PRESETS))}, or give "
                "{level: <HU>, width: <HU>}"
            )
        return WINDOW_PRESETS[window]
    if isinstance(window, Mapping):
        keys = set(window)
        if keys != {"level", "width"}:
            raise ConfigError(
                f"window {dict(window)} must have exactly the keys 'level' and "
                f"'width' (HU); got {sorted(keys)}"
            )
        level, width = float(window["level"]), float(window["width"])
        if not width > 0:
            raise ConfigError(f"window {dict(window)}: width must be > 0 HU")
        return level, width
    raise ConfigError(
        f"window {window!r} must be a preset name "
        f"({', '.join(sorted(WINDOW_PRESETS))}) or {{level: .., width: ..}}"
    )


def describe_intensity(
    *, modality: str, window: WindowSpec, dtype: np.dtype | type | None = None
) -> str:
    """How :func:`normalise_intensity` treats ``modality`` (stored as ``dtype``):
    ``"window 40/400"``, ``"8-bit unchanged"`` or ``"percentile 0.5-99.5"`` (for manifests
    and logs)."""
    if is_ct(modality):
        level, width = resolve_window(window)
        return f"window {level:g}/{width:g}"
    if keeps_8bit(modality, dtype):
        return "8-bit unchanged"
    return f"percentile {DEFAULT_PERCENTILES[0]:g}-{DEFAULT_PERCENTILES[1]:g}"


def normalise_intensity(image_zyx: np.ndarray, *, modality: str, window: WindowSpec) -> np.ndarray:
    """Map an image to ``uint8`` 0..255 by modality.

    CT (``modality`` "CT", any case) is windowed with :func:`window_ct`, ``window`` being a
    preset name of :data:`WINDOW_PRESETS`, a ``{"level": HU, "width": HU}`` mapping, or
    None for ``"abdomen"``. A uint8 image of another modality but MR (an 8-bit raster,
    :func:`keeps_8bit`) is returned unchanged. Every other image uses
    :func:`normalise_percentiles` with 0.5/99.5 over the whole volume; ``window`` is then
    ignored.

    Args:
        image_zyx: ``(Z, Y, X)`` intensities (HU for CT), or ``(Z, Y, X, 3)`` uint8 RGB;
            any shape works.

    Returns:
        ``uint8`` array of the same shape.
    """
    if is_ct(modality):
        level, width = resolve_window(window)
        return window_ct(image_zyx, level=level, width=width)
    if keeps_8bit(modality, np.asarray(image_zyx).dtype):
        return np.array(image_zyx, dtype=np.uint8, copy=True)
    return normalise_percentiles(image_zyx)
