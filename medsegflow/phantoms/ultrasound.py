"""Deterministic breast-ultrasound phantoms with one hypoechoic lesion (pure numpy + scipy).

The image is a B-mode-like ``(H, W)`` array: row ``y`` is depth from the transducer (skin
at row 0), column ``x`` is lateral position. It is built as a mean echogenicity map
(skin, subcutaneous fat, fibroglandular tissue, fascia, pectoral muscle, Cooper's
ligaments), into which the lesion and unlabelled hypoechoic distractors are blended with
soft edges; then a posterior acoustic effect under the lesion, depth attenuation and
multiplicative Rayleigh speckle are applied.

Geometry is in mm for a reference field of view of :data:`REFERENCE_FOV_MM`; a larger field
keeps these sizes (more tissue around), a smaller one scales the whole phantom down so
that the lesion stays well inside the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import expit

US_LABEL_MAP: dict[str, int] = {"background": 0, "lesion": 1}
REFERENCE_FOV_MM = 25.6
LESION_KINDS = ("benign", "malignant")


@dataclass
class PhantomUS:
    """One generated ultrasound case.

    ``image_yx``: float32 ``(H, W)`` grey levels in [0, 255]; ``mask_yx``: uint8 ``(H, W)``,
    1 on the lesion; ``kind``: "benign" or "malignant"; ``spacing_yx_mm``: pixel spacing.
    """

    image_yx: np.ndarray
    mask_yx: np.ndarray
    caption: str
    kind: str
    spacing_yx_mm: tuple[float, float]


@dataclass(frozen=True)
class _Outline:
    """A star-shaped outline: centre (mm), semi-axes (mm), tilt (rad), radial perturbation."""

    center_yx: tuple[float, float]
    semi_yx: tuple[float, float]
    tilt: float
    harmonics: tuple[tuple[int, float, float], ...] = ()  # (k, amplitude, phase)
    spikes: tuple[tuple[float, float, float], ...] = ()  # (angle, height, width)

    def boundary(self, theta: np.ndarray) -> np.ndarray:
        """Boundary radius ``R(theta)`` in units of the semi-axes (at least 0.3)."""
        radius = np.ones_like(theta)
        for k, amp, phase in self.harmonics:
            radius += amp * np.cos(k * theta + phase)
        for angle, height, width in self.spikes:
            delta = np.angle(np.exp(1j * (theta - angle)))
            radius += height * np.exp(-0.5 * (delta / width) ** 2)
        return np.maximum(radius, 0.3)

    def max_radius(self) -> float:
        """Largest distance (mm) from the centre to the outline."""
        return max(self.semi_yx) * float(self.boundary(np.linspace(-np.pi, np.pi, 721)).max())


def _outline_distance(outline: _Outline, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Approximate signed distance (mm, negative inside) to ``outline``; float32 like ``y+x``.

    The boundary is ``r(theta) = R(theta)`` in the tilted, axis-normalised frame, with
    ``R = 1 + sum a_k cos(k theta + phi_k) + sum spikes``; the distance is ``(r - R)``
    scaled by the mean semi-axis.
    """
    cos_t, sin_t = np.cos(outline.tilt), np.sin(outline.tilt)
    dy, dx = y - outline.center_yx[0], x - outline.center_yx[1]
    v = (cos_t * dy - sin_t * dx) / outline.semi_yx[0]
    u = (sin_t * dy + cos_t * dx) / outline.semi_yx[1]
    r = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    mean_semi = float(np.sqrt(outline.semi_yx[0] * outline.semi_yx[1]))
    return ((r - outline.boundary(theta)) * mean_semi).astype(np.float32)


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, ...], *, sigma_px: np.ndarray
) -> np.ndarray:
    """Gaussian-smoothed white noise of unit sd; ``shape`` is ``(N, H, W)``, smoothed per
    image with ``sigma_px`` (rows, columns)."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=(0.0, *sigma_px))
    return (noise / (noise.std(axis=(1, 2), keepdims=True) + 1e-12)).astype(np.float32)


def _wavy(
    rng: np.random.Generator, x: np.ndarray, *, base: float, amp: float, width: float
) -> np.ndarray:
    """``base`` plus 3 random sine harmonics over the lateral ``width`` (mm); shape of ``x``."""
    out = np.full_like(x, base)
    for k in (1, 2, 3):
        out += (
            rng.uniform(0.3, 1.0)
            * amp
            / k
            * np.sin(2 * np.pi * k * x / width + rng.uniform(0, 2 * np.pi))
        )
    return out


def _tissue(
    rng: np.random.Generator,
    y: np.ndarray,
    x: np.ndarray,
    *,
    fov_x: float,
    texture_yx: np.ndarray,
) -> np.ndarray:
    """Mean echogenicity (0..1) of the layered breast background; float32 ``(H, W)``.

    Layer shapes come from ``rng``; ``texture_yx`` (unit sd) modulates the gland.
    """
    skin = _wavy(rng, x, base=0.7, amp=0.1, width=fov_x)
    fat = _wavy(rng, x, base=rng.uniform(3.5, 5.5), amp=1.2, width=fov_x)
    gland = _wavy(rng, x, base=rng.uniform(18.0, 20.0), amp=1.2, width=fov_x)
    echo_gland = rng.uniform(0.5, 0.6) * (1 + 0.18 * np.tanh(texture_yx))
    tilt = rng.uniform(-0.08, 0.08)
    stripes = np.maximum(np.cos(2 * np.pi * (y - tilt * x) / rng.uniform(1.0, 1.5)), 0) ** 4
    echo_muscle = 0.3 + 0.18 * stripes
    to_fat, to_gland, to_muscle = (expit((y - d) / 0.25) for d in (skin, fat, gland))
    echo = 0.85 + (0.27 - 0.85) * to_fat
    echo = echo + (echo_gland - echo) * to_gland
    echo = echo + (echo_muscle - echo) * to_muscle
    fascia = np.exp(-0.5 * ((y - gland) / 0.18) ** 2)
    echo = np.maximum(echo, 0.9 * fascia)
    for _ in range(int(rng.integers(2, 5))):  # Cooper's ligaments: bright arcs
        depth = rng.uniform(1.5, 14.0)
        x0, half = rng.uniform(0, fov_x), rng.uniform(2.0, 6.0)
        arc = depth + rng.uniform(0.5, 2.0) * np.cos(np.pi * (x - x0) / (2 * half))
        along = np.clip(1 - np.abs(x - x0) / half, 0, 1)
        echo = np.maximum(echo, 0.9 * along * np.exp(-0.5 * ((y - arc) / 0.12) ** 2))
    return echo.astype(np.float32)


def _lesion_outline(
    rng: np.random.Generator,
    kind: str,
    *,
    fov_yx: tuple[float, float],
) -> _Outline:
    """Benign: wider-than-tall smooth oval; malignant: taller, irregular and spiculated."""
    center = (
        rng.uniform(0.44, 0.54) * min(fov_yx[0], REFERENCE_FOV_MM),
        fov_yx[1] / 2 + rng.uniform(-0.08, 0.08) * REFERENCE_FOV_MM,
    )
    if kind == "benign":
        lateral = rng.uniform(3.0, 5.2)
        semi = (lateral * rng.uniform(0.55, 0.8), lateral)
        harmonics = tuple((k, rng.uniform(0.0, 0.05), rng.uniform(0, 2 * np.pi)) for k in (2, 3))
        return _Outline(center, semi, rng.uniform(-0.25, 0.25), harmonics)
    lateral = rng.uniform(2.6, 3.8)
    semi = (lateral * rng.uniform(1.0, 1.2), lateral)
    harmonics = tuple(
        (k, rng.uniform(0.02, 0.07) / np.sqrt(k - 2), rng.uniform(0, 2 * np.pi))
        for k in range(3, 9)
    )
    spikes = tuple(
        (rng.uniform(-np.pi, np.pi), rng.uniform(0.15, 0.3), rng.uniform(0.06, 0.12))
        for _ in range(int(rng.integers(3, 7)))
    )
    return _Outline(center, semi, rng.uniform(-0.5, 0.5), harmonics, spikes)


def _distractors(
    rng: np.random.Generator,
    lesion: _Outline,
    *,
    y: np.ndarray,
    x: np.ndarray,
    fov_yx: tuple[float, float],
) -> list[np.ndarray]:
    """Signed distances (mm) of 2-3 unlabelled hypoechoic blobs that do not touch the lesion.

    The first sits just beside or above the lesion (it may enter the lesion's box); the
    others anywhere in the tissue. None lies in the band below the lesion.
    """
    lesion_dist = _outline_distance(lesion, y, x)
    out: list[np.ndarray] = []
    for index in range(int(rng.integers(2, 4))):
        for _ in range(30):
            radius = rng.uniform(0.8, 2.0)
            if index == 0:
                angle = rng.uniform(-np.pi, 0.0)  # beside or above (y grows downwards)
                reach = lesion.max_radius() * rng.uniform(0.8, 1.2) + radius
                center = (
                    lesion.center_yx[0] + reach * np.sin(angle),
                    lesion.center_yx[1] + reach * np.cos(angle),
                )
            else:
                center = (rng.uniform(0.25, 0.85) * fov_yx[0], rng.uniform(0.1, 0.9) * fov_yx[1])
            blob = _Outline(
                center, (radius * rng.uniform(0.5, 0.9), radius), rng.uniform(-0.3, 0.3)
            )
            dist = _outline_distance(blob, y, x)
            below = (
                abs(center[1] - lesion.center_yx[1]) < lesion.max_radius() + radius
                and center[0] > lesion.center_yx[0]
            )
            if not below and not np.any((dist < 0.5) & (lesion_dist < 0.5)):
                out.append(dist)
                break
    return out


def _insert_lesion(
    rng: np.random.Generator,
    echo_yx: np.ndarray,
    *,
    lesion_dist: np.ndarray,
    kind: str,
    texture_yx: np.ndarray,
) -> np.ndarray:
    """Blend the hypoechoic lesion into ``echo_yx`` and apply its posterior effect.

    The lesion's internal echoes vary with ``texture_yx`` (unit sd). Benign: sharper edge,
    enhancement (gain > 1) below; malignant: blurrier edge, shadowing (gain < 1). The
    effect covers every pixel below the lesion in its columns.
    """
    edge = 0.12 if kind == "benign" else 0.3
    weight = expit(-lesion_dist / edge).astype(np.float32)
    level = rng.uniform(0.1, 0.2) if kind == "benign" else rng.uniform(0.08, 0.16)
    lesion_echo = level * (1 + 0.3 * np.tanh(texture_yx))
    echo_yx = echo_yx + weight * (lesion_echo - echo_yx)
    gain = rng.uniform(1.5, 1.9) if kind == "benign" else rng.uniform(0.4, 0.6)
    posterior = np.maximum.accumulate(weight, axis=0) * (1 - weight)
    return echo_yx * (1 + (gain - 1) * posterior)


def _speckle(
    rng: np.random.Generator,
    shape_yx: tuple[int, int],
    *,
    spacing_yx_mm: tuple[float, float],
    exponent: float,
) -> np.ndarray:
    """Unit-mean multiplicative speckle: Rayleigh envelope (to the power ``exponent``) of a
    complex Gaussian field correlated over ~0.1 mm axially and ~0.2 mm laterally."""
    field = rng.standard_normal((2, *shape_yx))
    sigma = (0.1 / spacing_yx_mm[0], 0.22 / spacing_yx_mm[1])
    envelope = np.hypot(*(ndimage.gaussian_filter(f, sigma) for f in field)) ** exponent
    return (envelope / envelope.mean()).astype(np.float32)


NO_LESION_CAPTION = "Breast ultrasound with no lesion."


def us_caption(kind: str | None) -> str:
    """Caption naming the lesion kind, e.g. "Breast ultrasound with a benign hypoechoic lesion.";
    :data:`NO_LESION_CAPTION` for ``None`` (an image without its lesion)."""
    return (
        NO_LESION_CAPTION if kind is None else f"Breast ultrasound with a {kind} hypoechoic lesion."
    )


def generate_us_case(
    rng: np.random.Generator,
    *,
    shape_yx: tuple[int, int] = (128, 128),
    spacing_yx_mm: tuple[float, float] = (0.2, 0.2),
    speckle: float = 0.8,
    kind: str | None = None,
    lesion: bool = True,
) -> PhantomUS:
    """Generate one breast-ultrasound phantom with one benign or malignant lesion.

    ``shape_yx``/``spacing_yx_mm`` give the grid (rows = depth, mm). ``speckle`` in [0, 1] is
    the exponent applied to unit-mean Rayleigh speckle (1: fully developed, 0: none).
    ``kind`` (default: drawn from ``rng``) selects the outline and the posterior effect:
    benign lesions are smooth ovals with posterior enhancement, malignant ones irregular
    and spiculated with posterior shadowing. All randomness comes from ``rng``.

    ``lesion=False`` makes the same image without its lesion (every draw is made, the
    lesion and its posterior effect are not blended in): background, distractors and
    speckle are identical to the ``lesion=True`` image of the same ``rng`` state; the mask
    is empty and the caption :data:`NO_LESION_CAPTION` (a hard negative for a CLIP).
    """
    if kind is None:
        kind = LESION_KINDS[int(rng.integers(2))]
    if kind not in LESION_KINDS:
        raise ValueError(f"kind: '{kind}' is not one of {LESION_KINDS}")
    if not 0.0 <= speckle <= 1.0:
        raise ValueError(f"speckle: {speckle} is outside [0, 1]")
    fov = tuple(n * s for n, s in zip(shape_yx, spacing_yx_mm, strict=True))
    scale = min(1.0, min(fov) / REFERENCE_FOV_MM)
    fov_yx = (fov[0] / scale, fov[1] / scale)  # field of view in phantom mm
    y = ((np.arange(shape_yx[0]) + 0.5) * spacing_yx_mm[0] / scale)[:, None].astype(np.float32)
    x = ((np.arange(shape_yx[1]) + 0.5) * spacing_yx_mm[1] / scale)[None, :].astype(np.float32)
    # Grid-sized fields and the grid-dependent distractor search use their own streams,
    # so the anatomy draws (and the lesion) do not depend on the grid.
    texture_rng, speckle_rng, blob_rng = (
        np.random.default_rng(s) for s in rng.integers(0, 2**63, 3)
    )
    textures = _smooth_noise(
        texture_rng, (2, *shape_yx), sigma_px=np.divide(1.2 * scale, spacing_yx_mm)
    )
    echo = _tissue(rng, y, x, fov_x=fov_yx[1], texture_yx=textures[0])
    outline = _lesion_outline(rng, kind, fov_yx=fov_yx)
    lesion_dist = _outline_distance(outline, y, x)
    for dist in _distractors(blob_rng, outline, y=y, x=x, fov_yx=fov_yx):
        echo += expit(-dist / 0.25) * (blob_rng.uniform(0.2, 0.32) - echo)
    with_lesion = _insert_lesion(
        rng, echo, lesion_dist=lesion_dist, kind=kind, texture_yx=textures[1]
    )
    echo = with_lesion if lesion else echo
    echo *= np.exp(-rng.uniform(0.02, 0.035) * y)
    speckle_yx = _speckle(speckle_rng, shape_yx, spacing_yx_mm=spacing_yx_mm, exponent=speckle)
    image = np.clip(255.0 * 0.85 * echo * speckle_yx, 0, 255)
    return PhantomUS(
        image_yx=image.astype(np.float32),
        mask_yx=((lesion_dist < 0) & lesion).astype(np.uint8),
        caption=us_caption(kind if lesion else None),
        kind=kind,
        spacing_yx_mm=(float(spacing_yx_mm[0]), float(spacing_yx_mm[1])),
    )
