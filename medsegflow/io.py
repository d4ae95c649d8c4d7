"""Image I/O: the only module that touches SimpleITK.

Arrays are returned in numpy axis order ``zyx`` (SimpleITK's ``GetArrayFromImage``
order); spacing is kept in the same order and always in mm. A 2D image is a
volume with one slice (``shape_zyx == (1, H, W)``).

Every writer is atomic: data go to a temporary file in the destination folder,
which is renamed into place only when complete, so an interrupted job never
leaves a half-written file that a later job would read.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import math
import os
import re
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsegflow.errors import InputError


@dataclass(frozen=True)
class Geometry:
    """Physical placement of a voxel grid (ITK conventions, ``xyz`` order).

    ``spacing_zyx`` is the same spacing in array order, for computations.
    """

    spacing_xyz: tuple[float, float, float]
    origin_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return (self.spacing_xyz[2], self.spacing_xyz[1], self.spacing_xyz[0])

    def matches(self, other: Geometry, *, tol: float = 1e-3) -> bool:
        """True when spacing, origin and direction agree within ``tol`` (relative for spacing)."""
        sp = np.allclose(self.spacing_xyz, other.spacing_xyz, rtol=tol, atol=1e-6)
        org = np.allclose(self.origin_xyz, other.origin_xyz, rtol=0, atol=max(tol, 1e-3) * 10)
        drc = np.allclose(self.direction, other.direction, atol=tol)
        return bool(sp and org and drc)


@dataclass
class Volume:
    """A voxel array in ``zyx`` order with its geometry."""

    array_zyx: np.ndarray
    geometry: Geometry = field(default_factory=lambda: Geometry((1.0, 1.0, 1.0)))

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return self.geometry.spacing_zyx


def stale_temporaries(path: str | os.PathLike, suffix: str) -> list[Path]:
    """Temporary files of :func:`atomic_path` for ``path`` left by a killed writer.

    Their names are ``.<stem>.<8 random characters><suffix>`` (``tempfile.mkstemp``'s
    names) in ``path``'s folder; nothing else matches.
    """
    path = Path(path)
    stem = path.name.split(".")[0]
    name = re.compile(rf"\.{re.escape(stem)}\.[a-z0-9_]{{8}}{re.escape(suffix)}")
    return sorted(p for p in path.parent.glob(f".{glob.escape(stem)}.*") if name.fullmatch(p.name))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary name keeps the file's full suffix (``.nii.gz``, ``.csv``) so that
    writers choosing a format by extension still work. On error the temporary
    file is removed and ``path`` is left untouched. Temporaries of ``path`` that a
    killed earlier writer left (:func:`stale_temporaries`; one job writes a given path
    at a time) are removed first, so a resumed run leaves none behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes) or ".tmp"
    for leftover in stale_temporaries(path, suffix):
        leftover.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name.split('.')[0]}.", suffix=suffix, dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _sitk():
    import SimpleITK as sitk

    return sitk


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a NIfTI (or any ITK-readable) image as a 3D ``zyx`` array with geometry.

    2D files become one-slice volumes. Raises :class:`InputError` naming the file when
    it is missing, unreadable/truncated, or has more than 3 dimensions or channels.
    NaN/inf voxels of NIfTI float data are returned as stored (ITK 5 alone reads them as 0).
    """
    sitk = _sitk()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if path.name.lower().endswith(".nii.gz") and path.with_suffix("").is_file():
        # nifticlib resolves "x.nii.gz" to "x.nii" when both exist and would read the wrong file
        raise InputError(
            f"{path}: ambiguous, {path.with_suffix('')} also exists and ITK would "
            "read that file instead; remove one of them"
        )
    try:
        image = sitk.ReadImage(str(path))
        array = sitk.GetArrayFromImage(image)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = next((ln.strip() for ln in first if "ERROR" in ln or "rror" in ln), "")
        raise InputError(
            f"{path}: cannot read image (corrupt or truncated file) {detail}".strip()
        ) from None
    truncated = _check_nifti_payload(path, image, array)
    if truncated:
        raise InputError(f"{path}: cannot read image (corrupt or truncated file) {truncated}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{path}: image has {image.GetNumberOfComponentsPerPixel()} channels "
            "per voxel, expected a single-channel image"
        )
    dim = image.GetDimension()
    if dim > 3:
        raise InputError(f"{path}: image is {dim}D with size {image.GetSize()}, expected 2D or 3D")
    if dim == 2:
        array = array[None]
        sx, sy = image.GetSpacing()
        ox, oy = image.GetOrigin()
        d = image.GetDirection()
        geometry = Geometry(
            (sx, sy, 1.0), (ox, oy, 0.0), (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0)
        )
    else:
        geometry = Geometry(
            tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection())
        )
    return Volume(array, geometry)


_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}
"""NIfTI ``datatype`` codes of real floating-point voxels and their numpy kinds."""


def _check_nifti_payload(path: Path, image, array: np.ndarray) -> str:
    """Check a NIfTI file's voxel bytes; put back non-finite values ITK read as 0.

    ITK 5's NIfTI reader (its vendored nifticlib) silently fills a truncated ``.nii`` or
    ``.nii.gz`` with zeros, and replaces every NaN/inf voxel with 0 (fixed only in ITK 6,
    InsightSoftwareConsortium/ITK#6683). So the stored bytes are compared with the size the
    header declares (gzip streams must also end complete and CRC-valid), and the non-finite
    voxels of float data are written back into ``array`` (in place, same ``zyx`` order) so
    later checks see them. Returns why the file is truncated or corrupt, "" when it is not.
    """
    name = path.name.lower()
    meta = {k: image.GetMetaData(k) for k in image.GetMetaDataKeys()}
    if not name.endswith((".nii", ".nii.gz")) or not {
        "vox_offset",
        "bitpix",
        "dim[0]",
        "datatype",
    } <= set(meta):
        return ""
    n_vox = math.prod(int(meta[f"dim[{i}]"]) for i in range(1, int(meta["dim[0]"]) + 1))
    offset = int(float(meta["vox_offset"]))
    expected = offset + n_vox * int(meta["bitpix"]) // 8
    kind = _NIFTI_FLOAT_TYPES.get(int(meta["datatype"]))
    if not name.endswith(".gz") and kind is None:
        stored = path.stat().st_size
        return (
            ""
            if stored >= expected
            else (f"holds {stored} bytes, the NIfTI header declares {expected}")
        )
    try:
        with (gzip.open if name.endswith(".gz") else open)(path, "rb") as handle:
            raw = handle.read()
    except (EOFError, OSError, zlib.error) as err:
        return f"voxel data ends early or is damaged ({err})"
    if len(raw) < expected:
        return f"holds {len(raw)} bytes, the NIfTI header declares {expected}"
    if kind is not None and array.size == n_vox and np.issubdtype(array.dtype, np.floating):
        order = "<" if int.from_bytes(raw[:4], "little") in (348, 540) else ">"
        values = np.frombuffer(raw, dtype=order + kind, count=n_vox, offset=offset)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            array.flat[bad] = values[bad]
    return ""


def write_volume(path: str | os.PathLike, volume: Volume) -> None:
    """Write a ``zyx`` volume atomically as NIfTI (or by the path's extension)."""
    sitk = _sitk()
    array = np.asarray(volume.array_zyx)
    if array.ndim != 3:
        raise ValueError(f"{path}: expected a 3D zyx array, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in volume.geometry.spacing_xyz))
    image.SetOrigin(tuple(float(o) for o in volume.geometry.origin_xyz))
    image.SetDirection(tuple(float(d) for d in volume.geometry.direction))
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


def read_raster(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG/JPEG/BMP/TIFF as an ``(H, W)`` or ``(H, W, C)`` uint8/uint16 array.

    Raises :class:`InputError` naming the file when it is missing or unreadable.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("P", "LA", "PA", "CMYK", "YCbCr", "1"):
                img = img.convert("RGBA" if "A" in img.mode else "RGB")
            array = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise InputError(f"{path}: cannot read image (corrupt or truncated file): {err}") from None
    return array
