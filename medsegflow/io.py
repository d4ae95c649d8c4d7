"""Image I/O: the only module that touches SimpleITK, h5py and MATLAB files.

:func:`read_image` reads every supported format into the same :class:`Volume`:

=====================================  ===================================  ==============
format                                 reader                               spacing
=====================================  ===================================  ==============
NIfTI, NRRD, MHA/MHD, single DICOM     SimpleITK (:func:`read_volume`)      from the file
DICOM series (a folder)                SimpleITK's series reader            from the file
PNG, JPEG, BMP, TIFF                   Pillow (:func:`read_raster`)         unknown
``.npz``                               numpy, array ``key``                 ``spacing`` key
HDF5 (``.h5``, ``.hdf5``)              h5py, dataset ``key``                ``spacing`` attr
MATLAB ``.mat`` v7.3 / v5              h5py / scipy, variable ``key``       unknown
=====================================  ===================================  ==============

Where the file cannot know its spacing, the volume gets 1 mm and ``spacing_known=False``;
adapters write that flag into ``cases.tsv`` so distance metrics are reported in pixels.

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
import logging
import math
import os
import re
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsegflow.errors import InputError

log = logging.getLogger(__name__)


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
        return not self.differences(other, tol=tol)

    def differences(self, other: Geometry, *, tol: float = 1e-3) -> list[str]:
        """Which of ``spacing``, ``origin``, ``direction`` differ from ``other``'s (beyond
        the tolerances of :meth:`matches`), in that order; empty when they match."""
        agree = {
            "spacing": np.allclose(self.spacing_xyz, other.spacing_xyz, rtol=tol, atol=1e-6),
            "origin": np.allclose(
                self.origin_xyz, other.origin_xyz, rtol=0, atol=max(tol, 1e-3) * 10
            ),
            "direction": np.allclose(self.direction, other.direction, atol=tol),
        }
        return [name for name, same in agree.items() if not same]


@dataclass
class Volume:
    """A voxel array in ``zyx`` order with its geometry.

    ``spacing_known`` is False when the source format stores no spacing (PNG, JPEG, an
    ``.npz`` without ``spacing``): the geometry's spacing is then a 1 mm placeholder.
    """

    array_zyx: np.ndarray
    geometry: Geometry = field(default_factory=lambda: Geometry((1.0, 1.0, 1.0)))
    spacing_known: bool = True

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
        tmp.write_text(text, encoding="utf-8")


def write_csv_atomic(
    table: Any,
    path: str | os.PathLike,
    *,
    sep: str = ",",
    float_format: str | None = "%.6g",
    na_rep: str = "",
) -> None:
    """Write a pandas ``table`` to ``path`` without the index, atomically (:func:`atomic_path`).

    Floats use ``float_format``: 6 significant digits by default (the result tables);
    ``None`` keeps every digit (the stage tables that later jobs read back). NaN is
    written as ``na_rep`` (an empty field by default), booleans as True/False;
    ``sep="\t"`` writes the ``.tsv`` stage tables.
    """
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep=sep, index=False, float_format=float_format, na_rep=na_rep)
    log.info("wrote %s (%d rows)", os.fspath(path), len(table))


def _sitk():
    import SimpleITK as sitk

    return sitk


def read_volume(
    path: str | os.PathLike, *, channel: int | None = None, colour: str = "error"
) -> Volume:
    """Read a NIfTI (or any ITK-readable) image as a 3D ``zyx`` array with geometry.

    2D files become one-slice volumes. ``channel`` selects one channel of a multi-channel
    image: a 4D NIfTI (MSD's multi-modal tasks, the channel the 4th axis) or a vector
    image; the geometry is the first three axes'. ``colour`` says what the caller does
    with a colour image (an RGB vector image, 3 components: how the canonical layout
    stores a colour 2D image, see :func:`colour_or_grey`): ``"rgb"`` returns it as a
    ``(Z, Y, X, 3)`` array, ``"grey"`` converts it to one uint8 channel
    (:func:`grey_of`, for the steps that need one), ``"error"`` refuses it. Raises
    :class:`InputError` naming the file when it is missing, unreadable/truncated, or has
    more than 3 dimensions or channels without ``channel`` (or ``colour``), or no such
    channel.
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
    if bad_header := _nifti_header_problem(path):
        raise InputError(f"{path}: {bad_header}")
    if channel is not None:
        return _channel_volume(path, image, array, channel)
    if colour not in COLOUR_MODES:
        raise ValueError(f"colour {colour!r} is not one of {COLOUR_MODES}")
    components = image.GetNumberOfComponentsPerPixel()
    rgb = components == COLOUR_CHANNELS and colour != "error" and array.dtype == np.uint8
    if components != 1 and not rgb:
        hint = " (an RGB image: this step reads one channel)" if components == 3 else ""
        raise InputError(
            f"{path}: image has {components} channels per voxel, expected a "
            f"single-channel image{hint}"
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
    if rgb and colour == "grey":
        array = grey_of(array)
    return Volume(array, geometry)


def _channel_volume(path: Path, image, array: np.ndarray, channel: int) -> Volume:
    """Channel ``channel`` of a 4D image (array ``(C, z, y, x)``), a vector image
    (``(..., C)``) or a 3D one (only channel 0)."""
    components = image.GetNumberOfComponentsPerPixel()
    dim = image.GetDimension()
    if components > 1:
        n, take = components, lambda c: array[..., c]
    elif dim == 4:
        n, take = array.shape[0], lambda c: array[c]
    else:
        n, take = 1, lambda c: array
    if not 0 <= channel < n:
        raise InputError(f"{path}: no channel {channel}; the image has {n}")
    selected = np.ascontiguousarray(take(channel))
    if selected.ndim == 2:
        selected = selected[None]
    spacing, origin = image.GetSpacing(), image.GetOrigin()
    if dim >= 3:
        d = image.GetDirection()
        direction = tuple(d[r * dim + c] for r in range(3) for c in range(3))
        geometry = Geometry(tuple(spacing[:3]), tuple(origin[:3]), direction)
    else:
        geometry = Geometry((spacing[0], spacing[1], 1.0), (origin[0], origin[1], 0.0))
    return Volume(selected, geometry)


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


def _nifti_header_problem(path: Path) -> str:
    """What is wrong with the header of a file named ``.nii``/``.nii.gz``: no NIfTI header at
    all (ITK reads a PNG or JPEG by its content, whatever its name), or a voxel spacing
    (``pixdim[1..3]``) that is zero, negative or not finite; "" when it is fine.

    ITK's reader replaces a zero spacing by 1 mm and a negative one by its absolute value
    without a word, which changes every distance (HD95, NSD, ASSD); the raw header is read here.
    """
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return ""
    try:
        with open(path, "rb") as handle:
            zipped = handle.read(2) == b"\x1f\x8b"  # by content: ITK reads a plain file too
        with (gzip.open if zipped else open)(path, "rb") as handle:
            header = handle.read(540)
    except (EOFError, OSError, zlib.error):
        return ""  # the payload check names a damaged file
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            dims = struct.unpack(order + "8h", header[40:56])
            pixdim = struct.unpack(order + "8f", header[76:108])
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            dims = struct.unpack(order + "8q", header[16:80])
            pixdim = struct.unpack(order + "8d", header[104:168])
            break
    else:
        kind = next((k for magic, k in _MAGIC if header.startswith(magic)), "")
        return f"not a NIfTI file{f' (it holds a {kind} image)' if kind else ''}"
    n = min(max(int(dims[0]), 1), 3)
    spacing = pixdim[1 : n + 1]
    if all(math.isfinite(v) and v > 0 for v in spacing):
        return ""
    shown = ", ".join(f"{v:g}" for v in spacing)
    return (
        f"voxel spacing ({shown}) in the NIfTI header (pixdim) is zero, negative or not "
        "a number; fix the header (every distance metric depends on it)"
    )


_MAGIC = ((b"\x89PNG", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"))
"""Leading bytes of the raster formats ITK reads whatever a file's name says."""


def write_volume(path: str | os.PathLike, volume: Volume) -> None:
    """Write a ``zyx`` volume atomically as NIfTI (or by the path's extension); a
    ``(Z, Y, X, 3)`` uint8 colour volume is written as an RGB vector image."""
    sitk = _sitk()
    array = np.asarray(volume.array_zyx)
    colour = is_colour(array)
    if array.ndim != 3 and not colour:
        raise ValueError(f"{path}: expected a 3D zyx array, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(array, isVector=colour)
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
    except (
        UnidentifiedImageError,  # not an image Pillow knows
        OSError,  # truncated or damaged data ("image file is truncated", decoder errors)
        SyntaxError,  # damaged PNG chunk or TIFF header
        ValueError,  # inconsistent header values
        struct.error,  # header shorter than its fields
        zlib.error,  # damaged compressed stream
        Image.DecompressionBombError,  # header declares a size beyond Pillow's limit
    ) as err:
        raise InputError(
            f"{path}: cannot read image (corrupt or truncated file): {type(err).__name__}: {err}"
        ) from None
    return array


LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights for R, G, B (the weights PIL's ``convert("L")`` uses)."""

ITK_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".gipl")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ARRAY_SUFFIXES = (".npz", ".npy", ".h5", ".hdf5", ".mat")
IMAGE_SUFFIXES = ITK_SUFFIXES + RASTER_SUFFIXES + ARRAY_SUFFIXES


def image_suffix(path: str | os.PathLike) -> str:
    """The format suffix of ``path`` (``.nii.gz`` counts as one), lower case; "" for none."""
    name = Path(path).name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), "")


COLOUR_CHANNELS = 3
COLOUR_MODES = ("error", "rgb", "grey")
"""How :func:`read_volume` treats a colour image (its ``colour`` argument)."""


def is_colour(array: np.ndarray) -> bool:
    """True for a colour volume of the canonical layout: ``(Z, Y, X, 3)`` uint8 (RGB)."""
    array = np.asarray(array)
    return array.ndim == 4 and array.shape[-1] == COLOUR_CHANNELS and array.dtype == np.uint8


def colour_or_grey(raster: np.ndarray) -> np.ndarray:
    """A raster as the canonical layout stores it: an 8-bit colour image with different
    channels stays ``(H, W, 3)`` uint8 RGB (alpha dropped): the SAM-family recipes take
    RGB, as the official code does; anything else becomes one channel (:func:`to_grey`:
    grey as it is, equal channels as one, other colour depths as luminance)."""
    if raster.ndim == 3 and raster.shape[-1] >= COLOUR_CHANNELS and raster.dtype == np.uint8:
        rgb = raster[..., :COLOUR_CHANNELS]
        equal = np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(
            rgb[..., 0], rgb[..., 2]
        )
        if not equal:
            return np.ascontiguousarray(rgb)
    return to_grey(raster)


def grey_of(array: np.ndarray) -> np.ndarray:
    """One channel of a colour array ``(..., 3)`` uint8: BT.601 luminance
    (:data:`LUMA_WEIGHTS`) rounded to uint8, the explicit conversion of the steps that
    need one channel (classical baselines, nnU-Net, saliency, coarse masks); a grey
    array is returned as it is."""
    array = np.asarray(array)
    if array.ndim < 3 or array.shape[-1] != COLOUR_CHANNELS or array.dtype != np.uint8:
        return array
    luma = array.astype(np.float32) @ np.asarray(LUMA_WEIGHTS, dtype=np.float32)
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)


def to_grey(image: np.ndarray) -> np.ndarray:
    """One channel ``(H, W)`` from an ``(H, W)`` or ``(H, W, C)`` raster.

    Greyscale keeps its dtype; RGB whose channels are all equal keeps one channel; other
    colour images become float32 luminance (:data:`LUMA_WEIGHTS`, not rounded). Alpha is
    ignored.
    """
    if image.ndim == 2:
        return image
    rgb = image[..., :3] if image.shape[-1] >= 3 else image[..., :1]
    if all(np.array_equal(rgb[..., 0], rgb[..., c]) for c in range(1, rgb.shape[-1])):
        return np.ascontiguousarray(rgb[..., 0])
    return rgb.astype(np.float32) @ np.asarray(LUMA_WEIGHTS, dtype=np.float32)


def read_image(
    path: str | os.PathLike,
    *,
    key: str | None = None,
    spacing_xyz: tuple[float, ...] | None = None,
    channels_last: bool = False,
    channel: int | None = None,
) -> Volume:
    """Read any supported image or label file (module table) as a ``zyx`` :class:`Volume`.

    ``key`` names the array inside ``.npz`` / HDF5 / ``.mat`` files (``"cjdata/image"`` or
    ``"cjdata.image"`` for a MATLAB struct field). ``spacing_xyz`` overrides the file's
    spacing (an adapter that knows it, e.g. from a dataset's documentation); 2 values are
    taken as ``(sx, sy)`` of a 2D image. ``channels_last``: a 3D array ``(H, W, C)`` from an
    array file is one colour image, turned into luminance (:func:`to_grey`), not a volume.
    ``channel`` selects one channel of a 4D or vector ITK image (:func:`read_volume`).
    A folder is read as one DICOM series. Raises :class:`InputError` naming the file.
    """
    path = Path(path)
    if path.is_dir():
        volume = read_dicom_series(path)
    else:
        suffix = image_suffix(path)
        if suffix in RASTER_SUFFIXES:
            array = to_grey(read_raster(path))[None]
            volume = Volume(array, Geometry((1.0, 1.0, 1.0)), spacing_known=False)
        elif suffix in ARRAY_SUFFIXES:
            arrays, spacing = _read_array_file(path, [key] if key else [])
            array = arrays[key] if key else next(iter(arrays.values()))
            volume = _array_volume(array, spacing, path=path, channels_last=channels_last)
        else:
            volume = read_volume(path, channel=channel)
    if spacing_xyz is not None:
        volume = _with_spacing(volume, spacing_xyz, path=path)
    return volume


def read_arrays(path: str | os.PathLike, keys: list[str]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of one ``.npz`` / HDF5 / ``.mat`` file, opened once.

    MATLAB v7.3 arrays come back in MATLAB's own (column-major) axis order, as
    ``scipy.io.loadmat`` gives them for older files. Raises :class:`InputError` naming
    the file and the keys it holds when a key is missing.
    """
    return _read_array_file(Path(path), keys)[0]


_NUMPY_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    NotImplementedError,
    zlib.error,
    zipfile.BadZipFile,
)
"""What numpy raises for a damaged ``.npz`` (a zip) or ``.npy``: truncated or garbled
archive or member, bad header (``ValueError``), a damaged zip directory claiming an
unsupported compression method or zip version (``NotImplementedError``)."""
_HDF5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)
"""What h5py raises for a damaged HDF5 / MATLAB v7.3 file: ``OSError`` for a truncated or
unreadable file, ``RuntimeError`` ("Object visitation failed") for damaged metadata."""
_MAT_V5_ERRORS = (OSError, ValueError, EOFError, IndexError, TypeError, struct.error, zlib.error)
"""What ``scipy.io.loadmat`` raises for a damaged v4-v7 file, besides its own
``MatReadError`` (an empty file): 21 bytes of garbage ``IndexError``, a truncated header
``TypeError`` ("buffer is too small"), damaged compressed data ``zlib.error``."""


def _read_array_file(
    path: Path, keys: list[str]
) -> tuple[dict[str, np.ndarray], tuple[float, ...] | None]:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    suffix = image_suffix(path)
    kind = "MATLAB .mat" if suffix == ".mat" else suffix
    if path.stat().st_size == 0:
        raise InputError(f"{path}: cannot read {kind} file (corrupt or truncated): empty file")
    errors: tuple[type[BaseException], ...] = _NUMPY_ERRORS
    try:
        if suffix == ".npz":
            return _read_npz(path, keys)
        if suffix == ".npy":
            if keys:
                raise InputError(f"{path}: a .npy file holds one array, no key '{keys[0]}'")
            return {"": np.load(path, allow_pickle=False)}, None
        if suffix == ".mat" and not _is_hdf5(path):
            from scipy.io.matlab import MatReadError

            errors = (*_MAT_V5_ERRORS, MatReadError, NotImplementedError)
            return _read_mat_v5(path, keys), None
        errors = _HDF5_ERRORS
        return _read_hdf5(path, keys, matlab=suffix == ".mat")
    except InputError:
        raise
    except errors as err:
        raise InputError(
            f"{path}: cannot read {kind} file (corrupt or truncated): "
            f"{type(err).__name__}: {str(err).strip() or 'no detail'}"
        ) from None


def _read_npz(path: Path, keys: list[str]) -> tuple[dict[str, np.ndarray], tuple | None]:
    with np.load(path, allow_pickle=False) as data:
        names = list(data.files)
        wanted = keys or [n for n in names if n != "spacing"][:1]
        missing = [k for k in wanted if k not in names]
        if missing or not wanted:
            raise InputError(f"{path}: no array {missing or keys}; it holds {names}")
        arrays = {k: data[k] for k in wanted}
        spacing = tuple(float(v) for v in np.ravel(data["spacing"])) if "spacing" in names else None
    return arrays, spacing


def _is_hdf5(path: Path) -> bool:
    import h5py

    return bool(h5py.is_hdf5(path))


def _split_key(key: str) -> list[str]:
    return [part for part in re.split(r"[./]", key) if part]


def _read_hdf5(
    path: Path, keys: list[str], *, matlab: bool
) -> tuple[dict[str, np.ndarray], tuple | None]:
    import h5py

    with h5py.File(path, "r") as handle:
        names: list[str] = []
        handle.visit(lambda n: names.append(n) if isinstance(handle[n], h5py.Dataset) else None)
        names = [n for n in names if not n.startswith("#")]
        wanted = keys or [n for n in names if n != "spacing"][:1]
        arrays: dict[str, np.ndarray] = {}
        spacing = None
        for key in wanted:
            node = "/".join(_split_key(key))
            if node not in handle or not isinstance(handle[node], h5py.Dataset):
                raise InputError(f"{path}: no dataset '{key}'; it holds {names}")
            dataset = handle[node]
            array = dataset[()]
            if matlab and array.ndim >= 2:
                array = array.T  # MATLAB writes column-major; h5py reads the axes reversed
            arrays[key] = np.asarray(array)
            if "spacing" in dataset.attrs and spacing is None:
                spacing = tuple(float(v) for v in np.ravel(dataset.attrs["spacing"]))
        if spacing is None and "spacing" in handle and not matlab:
            spacing = tuple(float(v) for v in np.ravel(handle["spacing"][()]))
    return arrays, spacing


def _read_mat_v5(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    from scipy.io import loadmat

    data = loadmat(path, squeeze_me=False, struct_as_record=True)
    names = [n for n in data if not n.startswith("__")]
    wanted = keys or names[:1]
    arrays = {}
    for key in wanted:
        parts = _split_key(key)
        value: Any = data.get(parts[0])
        for part in parts[1:]:
            if value is None:
                break
            names = getattr(getattr(value, "dtype", None), "names", None) or ()
            value = value[part][0, 0] if part in names and value.size else None
        if value is None:
            raise InputError(f"{path}: no variable '{key}'; it holds {names}")
        arrays[key] = np.asarray(value)
    return arrays


def _array_volume(
    array: np.ndarray, spacing: tuple[float, ...] | None, *, path: Path, channels_last: bool
) -> Volume:
    array = np.asarray(array)
    if channels_last and array.ndim == 3:
        array = to_grey(array)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise InputError(
            f"{path}: array has shape {array.shape}, expected a 2D (H, W) or 3D (D, H, W) array"
        )
    if spacing is None:
        return Volume(np.ascontiguousarray(array), Geometry((1.0, 1.0, 1.0)), spacing_known=False)
    return _with_spacing(Volume(np.ascontiguousarray(array)), spacing, path=path)


def _with_spacing(volume: Volume, spacing: tuple[float, ...], *, path: Path) -> Volume:
    values = tuple(float(v) for v in spacing)
    if len(values) == 2:
        values = (*values, volume.geometry.spacing_xyz[2])
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError(f"{path}: spacing {list(spacing)} is not 2 or 3 positive numbers")
    geometry = Geometry(values, volume.geometry.origin_xyz, volume.geometry.direction)
    return Volume(volume.array_zyx, geometry, spacing_known=True)


def read_dicom_series(folder: str | os.PathLike) -> Volume:
    """The one DICOM series in ``folder`` as a volume, geometry kept (SimpleITK, GDCM order).

    Raises :class:`InputError` naming the folder when it holds no series or several.
    """
    sitk = _sitk()
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: DICOM folder not found")
    try:
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as err:
        raise InputError(f"{folder}: cannot list the DICOM files: {str(err).strip()}") from None
    if not series:
        raise InputError(f"{folder}: no DICOM series in this folder")
    if len(series) > 1:
        raise InputError(
            f"{folder}: {len(series)} DICOM series in one folder ({', '.join(series)}); "
            "give one folder per series"
        )
    try:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(f"{folder}: cannot read the DICOM series: {str(err).strip()}") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{folder}: DICOM series is not single-channel")
    array = sitk.GetArrayFromImage(image)
    geometry = Geometry(
        tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection())
    )
    return Volume(array, geometry)
