"""Deterministic abdominal CT phantoms with liver lesions (pure numpy + scipy.ndimage).

Anatomy is defined in physical mm around the centre of the field of view, so a
different voxel spacing gives the same organs at another sampling, and a smaller field of
view crops the body rather than shrinking it. Image convention (radiological): array row
``y`` grows towards the patient's back (posterior), column ``x`` grows towards the
patient's left, i.e. the patient's right side (liver) is on the image left.

Structures are smooth, slightly deformed ellipsoids described by an approximate signed
distance in mm (negative inside). Intensities are blended with a sigmoid of that distance
(partial volume, soft lesion edges); a structure's label is where the blend exceeds 0.5,
i.e. where the signed distance is negative.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import expit

log = logging.getLogger(__name__)

CT_LABEL_MAP: dict[str, int] = {"background": 0, "liver": 1, "spleen": 2, "kidney": 3, "lesion": 4}
"""Label values of :class:`PhantomCT` (both kidneys are 3; a lesion overrides the liver)."""

HU_AIR = -1000.0
HU_FAT = -100.0
HU_SOFT_TISSUE = 45.0
HU_LIVER = 60.0
HU_SPLEEN = 50.0
HU_KIDNEY = 150.0
HU_MIN, HU_MAX = -1024.0, 3071.0

MIN_LESION_RADIUS_MM = 8.5
"""Smallest lesion semi-axis: at the default spacing a lesion has well over 1000 voxels."""

_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five")
_LESION_GAP_MM = 4.0


@dataclass
class PhantomCT:
    """One generated CT case.

    ``image_zyx``: float32 ``(Z, Y, X)`` in Hounsfield units; ``label_zyx``: uint8 with the
    values of :data:`CT_LABEL_MAP`; ``spacing_zyx_mm``: voxel spacing in array order.
    """

    image_zyx: np.ndarray
    label_zyx: np.ndarray
    caption: str
    n_lesions: int
    spacing_zyx_mm: tuple[float, float, float]


@dataclass(frozen=True)
class _Blob:
    """A deformed ellipsoid: centre and semi-axes in mm (``zyx``), 6 smooth wobble terms."""

    center_zyx: tuple[float, float, float]
    semi_zyx: tuple[float, float, float]
    wobble: tuple[float, ...] = (0.0,) * 6

    def reach_mm(self) -> np.ndarray:
        """Largest extent from the centre along each axis (``zyx``, mm)."""
        return np.asarray(self.semi_zyx) * (1.0 + float(np.abs(self.wobble).sum()))


class _Grid:
    """Voxel-centre coordinates in mm, centred on the field of view, broadcastable ``zyx``."""

    def __init__(self, shape_zyx: tuple[int, int, int], spacing_zyx_mm: tuple[float, ...]):
        self.shape = tuple(int(n) for n in shape_zyx)
        self.spacing = tuple(float(s) for s in spacing_zyx_mm)
        self.axes = [
            ((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32)
            for n, s in zip(self.shape, self.spacing, strict=True)
        ]

    def box(self, blobs: list[_Blob], margin_mm: float) -> tuple[slice, slice, slice]:
        """Index slices covering ``blobs`` plus ``margin_mm`` (clipped to the grid)."""
        lo = np.min([np.subtract(b.center_zyx, b.reach_mm()) for b in blobs], axis=0)
        hi = np.max([np.add(b.center_zyx, b.reach_mm()) for b in blobs], axis=0)
        out = []
        for ax, (a, b) in enumerate(zip(lo - margin_mm, hi + margin_mm, strict=True)):
            n, s = self.shape[ax], self.spacing[ax]
            start = int(np.clip(np.floor(a / s + (n - 1) / 2.0), 0, n))
            stop = int(np.clip(np.ceil(b / s + (n - 1) / 2.0) + 1, 0, n))
            out.append(slice(start, stop))
        return tuple(out)

    def coords(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, ...]:
        """Broadcastable ``(z, y, x)`` mm coordinates of the voxels in ``box``."""
        z, y, x = (ax[sl] for ax, sl in zip(self.axes, box, strict=True))
        return z[:, None, None], y[None, :, None], x[None, None, :]


def _blob_distance(blob: _Blob, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Approximate signed distance (mm, negative inside) from points to a deformed ellipsoid.

    First-order distance ``(r - 1) / |grad r|`` of the normalised radius ``r``, minus a
    smooth radial displacement (low-order polynomial of the direction) that deforms it.
    Inputs are broadcastable mm coordinates; the result is float32.
    """
    az, ay, ax = blob.semi_zyx
    uz, uy, ux = (
        (z - blob.center_zyx[0]) / az,
        (y - blob.center_zyx[1]) / ay,
        (x - blob.center_zyx[2]) / ax,
    )
    r = np.sqrt(uz * uz + uy * uy + ux * ux)
    grad = np.sqrt((uz / az) ** 2 + (uy / ay) ** 2 + (ux / ax) ** 2)
    mean_axis = float(np.cbrt(az * ay * ax))
    dist = (r - 1.0) * (r + 1e-6) / (grad + 1e-6 / mean_axis)
    if any(blob.wobble):
        inv = 1.0 / np.maximum(r, 1e-6)
        nz, ny, nx = uz * inv, uy * inv, ux * inv
        c = blob.wobble
        shift = (
            c[0] * nx * ny
            + c[1] * ny * nz
            + c[2] * nx * nz
            + c[3] * nx
            + c[4] * ny
            + c[5] * (nz * nz - 0.5 * (nx * nx + ny * ny))
        )
        dist = dist - mean_axis * shift
    return dist.astype(np.float32)


def _jitter_blob(
    rng: np.random.Generator,
    center: tuple[float, ...],
    semi: tuple[float, ...],
    *,
    size: float = 0.12,
    shift_mm: float = 3.0,
    wobble: float = 0.06,
) -> _Blob:
    """``center``/``semi`` (``zyx`` mm) with random size, position and shape jitter."""
    c = tuple(float(v) for v in np.add(center, rng.uniform(-shift_mm, shift_mm, 3)))
    s = tuple(float(v) for v in np.multiply(semi, rng.uniform(1 - size, 1 + size, 3)))
    w = tuple(float(v) for v in rng.uniform(-wobble, wobble, 6))
    return _Blob(c, s, w)


@dataclass
class _Canvas:
    """The image (HU) and label volumes being painted, with their grid and body cavity."""

    grid: _Grid
    image_zyx: np.ndarray
    label_zyx: np.ndarray
    cavity_mm: np.ndarray

    def paint(
        self,
        parts: list[_Blob],
        *,
        hu: float,
        label: int | None,
        edge_mm: float = 0.6,
        in_cavity: bool = True,
    ) -> tuple[tuple[slice, ...], np.ndarray]:
        """Blend ``hu`` into the union of ``parts`` by ``sigmoid(-distance / edge_mm)``.

        ``label`` is set where the distance is negative: ``None`` leaves labels alone
        (inner structure of a labelled organ), ``0`` clears them (an unlabelled structure
        covering an organ). With ``in_cavity`` the structure is kept 2 mm inside the body
        cavity. Returns the painted box and the signed distance (mm) there.
        """
        box = self.grid.box(parts, 3.0)
        coords = self.grid.coords(box)
        dist = np.min([_blob_distance(p, *coords) for p in parts], axis=0)
        if in_cavity:
            dist = np.maximum(dist, self.cavity_mm[box] + 2.0)
        weight = expit(-dist / edge_mm).astype(np.float32)
        sub = self.image_zyx[box]
        sub += weight * (np.float32(hu) - sub)
        if label is not None:
            self.label_zyx[box][dist < 0] = label
        return box, dist


def _body(rng: np.random.Generator, grid: _Grid, *, texture_rng: np.random.Generator) -> _Canvas:
    """Canvas with air, subcutaneous fat and abdominal content (soft tissue and fat) in HU.

    The elliptical cross-section changes smoothly along z (shape from ``rng``); the
    soft-tissue/fat texture inside comes from ``texture_rng``. The canvas' cavity distance
    is the signed distance (mm) to the inner wall of the fat ring.
    """
    z, y, x = grid.coords((slice(None),) * 3)
    scale = rng.uniform(0.93, 1.07)
    phase = rng.uniform(0, 2 * np.pi, 2)
    semi_x = 42.0 * scale * (1 + 0.04 * np.sin(2 * np.pi * z / 140.0 + phase[0]))
    semi_y = 31.0 * scale * (1 + 0.04 * np.sin(2 * np.pi * z / 140.0 + phase[1]))
    fat_mm = rng.uniform(3.0, 5.5)

    def ellipse_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ux, uy = x / a, y / b
        r = np.sqrt(ux * ux + uy * uy)
        grad = np.sqrt((ux / a) ** 2 + (uy / b) ** 2)
        return (r - 1.0) * (r + 1e-6) / (grad + 1e-6 / np.sqrt(a * b))

    outer = ellipse_distance(semi_x, semi_y)
    inner = ellipse_distance(semi_x - fat_mm, semi_y - 1.3 * fat_mm)
    noise = texture_rng.standard_normal(grid.shape, dtype=np.float32)
    texture = ndimage.gaussian_filter(noise, sigma=[3.5 / s for s in grid.spacing])
    fat_share = expit((texture / (texture.std() + 1e-12) - 0.3) * 4.0)
    content = HU_SOFT_TISSUE * (1 - fat_share) + (HU_FAT + 10.0) * fat_share
    body = HU_FAT + rng.uniform(-8, 8) + (content - HU_FAT) * expit(-inner / 0.6)
    image = HU_AIR + (body - HU_AIR) * expit(-outer / 0.5)
    label = np.zeros(grid.shape, dtype=np.uint8)
    return _Canvas(grid, image.astype(np.float32), label, inner.astype(np.float32))


def _paint_skeleton_and_vessels(rng: np.random.Generator, canvas: _Canvas) -> None:
    """Vertebra (cancellous body, cortical rim, discs), aorta and IVC: bright distractors."""
    long = 400.0  # semi-axis along z of the "cylinders"
    spine = _Blob((0.0, 13.0 + rng.uniform(-1.5, 1.5), rng.uniform(-1, 1)), (long, 7.0, 7.5))
    box = canvas.grid.box([spine], 1.0)
    z, y, x = canvas.grid.coords(box)
    dist = _blob_distance(spine, z, y, x)
    disc = np.cos(np.pi * (z - rng.uniform(0, 30.0)) / 30.0) ** 16
    bone_hu = rng.uniform(250, 350) * (1 - disc) + 80.0 * disc
    sub = canvas.image_zyx[box]
    sub += expit(-dist / 0.5) * (bone_hu - sub)
    rim = expit(-(np.abs(dist + 0.8) - 0.8) / 0.3) * (1 - disc)
    sub += rim * (rng.uniform(600, 700) - sub)
    canvas.label_zyx[box][dist < 0] = 0
    process = _Blob((0.0, spine.center_zyx[1] + 9.5, spine.center_zyx[2]), (long, 4.0, 2.5))
    canvas.paint([process], hu=rng.uniform(450, 600), label=0, in_cavity=False)
    aorta = _Blob((0.0, 0.0, 6.0), (long, 5.5, 5.5))
    canvas.paint([aorta], hu=rng.uniform(160, 190), label=0, in_cavity=False)
    vena_cava = _Blob((0.0, 0.0, -9.0), (long, 6.5, 5.5))
    canvas.paint([vena_cava], hu=rng.uniform(100, 120), label=0, in_cavity=False)


def _paint_organs(rng: np.random.Generator, canvas: _Canvas) -> tuple[tuple, np.ndarray, float]:
    """Kidneys (with perirenal fat and sinus), spleen, then liver.

    Returns the liver's box, its signed distance there (mm) and its HU.
    """
    for side in (-1.0, 1.0):
        center = (-22.0 if side < 0 else -9.0, 13.0, 19.0 * side)
        kidney = _jitter_blob(rng, center, (16.0, 8.0, 6.5))
        halo = _Blob(kidney.center_zyx, tuple(s + 3.5 for s in kidney.semi_zyx), kidney.wobble)
        canvas.paint([halo], hu=HU_FAT + 20.0, label=0, edge_mm=1.0)
        hu = HU_KIDNEY + rng.uniform(-10, 10)
        canvas.paint([kidney], hu=hu, label=CT_LABEL_MAP["kidney"])
        (cz, cy, cx), (az, ay, ax) = kidney.center_zyx, kidney.semi_zyx
        sinus = _Blob((cz, cy, cx - side * 0.45 * ax), (0.5 * az, 0.35 * ay, 0.35 * ax))
        canvas.paint([sinus], hu=rng.uniform(20, 40), label=None, edge_mm=1.0)
    spleen = _jitter_blob(rng, (12.0, 5.0, 27.0), (16.0, 11.0, 8.0), wobble=0.08)
    canvas.paint([spleen], hu=HU_SPLEEN + rng.uniform(-4, 4), label=CT_LABEL_MAP["spleen"])
    right_lobe = _jitter_blob(rng, (8.0, -3.0, -14.0), (34.0, 23.0, 22.0), wobble=0.08)
    left_lobe = _jitter_blob(rng, (16.0, -15.0, 6.0), (16.0, 8.0, 16.0), size=0.15)
    liver_hu = HU_LIVER + rng.uniform(-4, 4)
    box, dist = canvas.paint([right_lobe, left_lobe], hu=liver_hu, label=CT_LABEL_MAP["liver"])
    return box, dist, liver_hu


def _lesion_room(
    grid: _Grid,
    coords: tuple[np.ndarray, ...],
    *,
    liver_mm: np.ndarray,
    lesion: _Blob,
    placed: list[_Blob],
) -> np.ndarray:
    """Boolean mask (liver box) of the centres where ``lesion`` may go.

    A centre must lie at least 0.6 semi-axes deep in the liver (so at most a small cap is
    cut by the capsule), keep the whole lesion in the field of view, and keep
    :data:`_LESION_GAP_MM` between it and the ``placed`` lesions.
    """
    semi = max(lesion.semi_zyx)
    ok = liver_mm < -0.6 * semi
    for ax, (coord, half) in enumerate(zip(coords, lesion.reach_mm(), strict=True)):
        ok &= np.abs(coord) < grid.axes[ax][-1] - half - grid.spacing[ax]
    for other in placed:
        gap = 1.05 * (semi + max(other.semi_zyx)) + _LESION_GAP_MM
        ok &= sum((c - o) ** 2 for c, o in zip(coords, other.center_zyx, strict=True)) > gap**2
    return ok


def _place_lesions(
    rng: np.random.Generator, grid: _Grid, *, liver_box: tuple, liver_mm: np.ndarray, n_lesions: int
) -> list[_Blob]:
    """Up to ``n_lesions`` lesions, each centred at a random allowed liver voxel.

    A lesion that finds no room is retried at the minimum size; fewer lesions are returned
    (and logged) when the visible liver has no room left.
    """
    coords = grid.coords(liver_box)
    lesions: list[_Blob] = []
    for _ in range(n_lesions):
        radius = rng.uniform(MIN_LESION_RADIUS_MM, MIN_LESION_RADIUS_MM + 3.0)
        shape = rng.uniform(1.0, 1.12, 3)
        wobble = tuple(float(v) for v in rng.uniform(-0.03, 0.03, 6))
        for size in (radius, MIN_LESION_RADIUS_MM):
            lesion = _Blob((0.0, 0.0, 0.0), tuple(float(v) for v in size * shape), wobble)
            ok = _lesion_room(grid, coords, liver_mm=liver_mm, lesion=lesion, placed=lesions)
            candidates = np.flatnonzero(ok)
            if candidates.size:
                break
        else:
            log.info("liver has room for %d of %d requested lesions", len(lesions), n_lesions)
            break
        idx = np.unravel_index(candidates[rng.integers(candidates.size)], ok.shape)
        center = tuple(float(c.ravel()[i]) for c, i in zip(coords, idx, strict=True))
        lesions.append(_Blob(center, lesion.semi_zyx, wobble))
    return lesions


def _paint_lesions(
    rng: np.random.Generator,
    canvas: _Canvas,
    *,
    lesions: list[_Blob],
    liver_box: tuple,
    liver_mm: np.ndarray,
    liver_hu: float,
) -> None:
    """Blend hypodense lesions into the liver with soft edges; label them inside the liver."""
    coords = canvas.grid.coords(liver_box)
    in_liver = expit(-liver_mm / 0.6)
    sub_image, sub_label = canvas.image_zyx[liver_box], canvas.label_zyx[liver_box]
    for lesion in lesions:
        dist = _blob_distance(lesion, *coords)
        weight = expit(-dist / rng.uniform(0.8, 1.3)) * in_liver
        sub_image += weight * (np.float32(liver_hu - rng.uniform(30.0, 42.0)) - sub_image)
        sub_label[(dist < 0) & (sub_label == CT_LABEL_MAP["liver"])] = CT_LABEL_MAP["lesion"]


def ct_caption(n_lesions: int) -> str:
    """Caption naming the lesion count in words, e.g. "... with two hypodense liver lesions."."""
    if n_lesions == 0:
        return "Axial abdominal CT with no liver lesion."
    word = _NUMBER_WORDS[n_lesions] if n_lesions < len(_NUMBER_WORDS) else str(n_lesions)
    plural = "s" if n_lesions > 1 else ""
    return f"Axial abdominal CT with {word} hypodense liver lesion{plural}."


def generate_ct_case(
    rng: np.random.Generator,
    *,
    shape_zyx: tuple[int, int, int] = (40, 128, 128),
    spacing_zyx_mm: tuple[float, float, float] = (2.5, 0.8, 0.8),
    noise_hu: float = 15.0,
    n_lesions: int | None = None,
) -> PhantomCT:
    """Generate one contrast-enhanced abdominal CT phantom with 0-3 hypodense liver lesions.

    ``shape_zyx``/``spacing_zyx_mm`` give the grid (array order, mm); anatomy is in mm
    around the grid centre. ``noise_hu`` is the sd (HU) of the spatially correlated noise
    added after a small blur. ``n_lesions`` (default: drawn from ``rng`` in 0..3) is a
    request; fewer are placed when the visible liver is too small (see the result's
    ``n_lesions``). All randomness comes from ``rng``, in a fixed order.
    """
    grid = _Grid(shape_zyx, spacing_zyx_mm)
    # Anatomy draws a fixed amount of numbers whatever the grid; grid-sized fields come
    # from their own streams, so a different spacing samples the same anatomy.
    texture_rng, noise_rng = (np.random.default_rng(s) for s in rng.integers(0, 2**63, 2))
    if n_lesions is None:
        n_lesions = int(rng.integers(0, 4))
    canvas = _body(rng, grid, texture_rng=texture_rng)
    _paint_skeleton_and_vessels(rng, canvas)
    liver_box, liver_mm, liver_hu = _paint_organs(rng, canvas)
    lesions = _place_lesions(rng, grid, liver_box=liver_box, liver_mm=liver_mm, n_lesions=n_lesions)
    _paint_lesions(
        rng, canvas, lesions=lesions, liver_box=liver_box, liver_mm=liver_mm, liver_hu=liver_hu
    )
    label = canvas.label_zyx
    image = ndimage.gaussian_filter(canvas.image_zyx, sigma=[0.5 / s for s in grid.spacing])
    noise = ndimage.gaussian_filter(
        noise_rng.standard_normal(grid.shape, dtype=np.float32),
        sigma=[0.0, *(0.4 / s for s in grid.spacing[1:])],
    )
    image += noise * np.float32(noise_hu / (noise.std() + 1e-12))
    np.clip(image, HU_MIN, HU_MAX, out=image)
    return PhantomCT(
        image_zyx=image.astype(np.float32, copy=False),
        label_zyx=label,
        caption=ct_caption(len(lesions)),
        n_lesions=len(lesions),
        spacing_zyx_mm=grid.spacing,
    )
