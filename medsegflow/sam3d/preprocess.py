"""SAM-Med3D's input pipeline in the original geometry, and its exact inverse.

Follows uni-medical/SAM-Med3D ``utils/infer_utils.py@7cead583`` (``data_preprocess`` /
``data_postprocess``), with torchio as there:

1. The image (and label) is read with its world affine, resampled to 1.5 mm isotropic
   (``tio.Resample(1.5)``: linear for the image, nearest for labels), then reoriented with
   ``tio.ToCanonical()`` (RAS). That resampled, canonical grid is the **model frame**; its
   voxel indices ``(i, j, k)`` are the tensor axes the network and its point prompts use
   (SAM-Med3D takes ``torch.argwhere`` indices of that tensor as click coordinates). The
   training loader (``utils/data_loader.py``) uses the same orientation (``sitk_to_nib``
   then ``tio.ToCanonical``).
2. A cube of ``size`` voxels (128 for turbo) is cut around a centre and zero-padded where it
   leaves the image (``tio.CropOrPad``: its default padding value is 0; a single-voxel mask
   at ``c`` puts ``c`` at index ``size // 2``, which :func:`crop_box` reproduces). The
   official script centres the crop on the ground-truth label (``mask_name='label'``),
   an oracle; here the centre is the first click or a box centre, and the GT's centre only
   when a caller asks for it (:func:`gt_centre`).
3. z-score normalisation of the crop over its voxels > 0 (``tio.ZNormalization(
   masking_method=lambda x: x > 0)``, after the crop, so padding is not foreground; unbiased
   std, applied to every voxel). Where the crop holds fewer than 2 such voxels or their std
   is 0 (torchio raises), all voxels are used instead; a constant crop becomes 0.

The inverse maps a crop's mask onto the original grid with nearest neighbours **from the
crop itself** (:func:`block_to_original`), as the official ``data_postprocess`` does: each
original voxel centre is mapped into the crop (``inv(crop_affine) @ original_affine``) and
takes the nearest crop voxel, 0 outside the crop; exact halves round up (towards the higher
index, as SimpleITK's nearest interpolator), after snapping to 1e-6. The crop reaches into
the zero padding beyond the resampled grid, so the original grid's outermost voxels, whose
centres lie up to half a voxel outside the 1.5 mm grid, get their prediction (pasting into
the 1.5 mm grid first would drop them). It gives exactly the input's shape; the caller keeps
the input's :class:`~medsegflow.io.Geometry`.

**The resampling grid depends on torchio's version** (``resample_grid``):

- ``"torchio"`` (default): torchio's own ``Resample(1.5)``, as installed (pinned 1.2.1).
  Since torchio 0.20.11 its grid has ``floor(extent / 1.5)`` voxels, centred on the
  original volume (:func:`torchio_grid_rule`).
- ``"ceil_corner"``: the grid of torchio before 0.20.11, which SAM-Med3D's
  ``infer_utils.py`` was written against: ``ceil(extent / 1.5)`` voxels, the outer corner
  of the first voxel kept in place (the first new voxel centre at old index
  ``0.5 * (1.5 / old_spacing - 1)``); computed here, torchio only interpolates onto it.

The two grids differ by up to a voxel, so inputs and masks differ widely between them
(about 100k of 700k voxels on a spleen CT); every run records which one it used
(:func:`grid_provenance`). Arrays outside this module are ``zyx`` (io's convention);
``ijk`` arrays are in the model frame. torch and torchio are imported inside the functions.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from itertools import product

import numpy as np

from medsegflow.io import Geometry, Volume

log = logging.getLogger(__name__)

TARGET_SPACING_MM = 1.5
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
RESAMPLE_GRIDS = ("torchio", "ceil_corner")
"""``resample_grid`` values: torchio's own grid as installed, or torchio < 0.20.11's."""
_SNAP = 1e-6


@dataclass
class ModelGrid:
    """A case resampled to the model frame (isotropic, RAS canonical, ``ijk`` axes).

    ``image_ijk`` float32 and ``label_ijk`` (uint8, nearest; None without a label) share
    ``affine`` (4x4 RAS, mm). ``original_affine`` is the RAS affine of the original
    ``xyz``-ordered grid of shape ``original_shape_zyx[::-1]``.
    """

    image_ijk: np.ndarray
    affine: np.ndarray
    original_shape_zyx: tuple[int, int, int]
    original_affine: np.ndarray
    geometry: Geometry
    label_ijk: np.ndarray | None = None
    resample_grid: str = "torchio"
    spacing_mm: float = TARGET_SPACING_MM

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.image_ijk.shape)


@dataclass(frozen=True)
class CropBox:
    """A cube ``[start, start + size)`` of the model frame (``start`` may be negative)."""

    start: tuple[int, int, int]
    size: int

    @property
    def stop(self) -> tuple[int, int, int]:
        return tuple(s + self.size for s in self.start)

    def to_crop(self, points_ijk: np.ndarray) -> np.ndarray:
        """Model-frame points ``(N, 3)`` in the crop's voxel frame."""
        return np.asarray(points_ijk, dtype=np.float64) - np.asarray(self.start)

    def contains(self, points_ijk: np.ndarray) -> np.ndarray:
        """Bool ``(N,)``: which points (model frame) fall inside the cube."""
        local = self.to_crop(points_ijk)
        return np.all((local >= -0.5) & (local < self.size - 0.5), axis=-1)


def ras_affine(geometry: Geometry) -> np.ndarray:
    """4x4 RAS affine of the ``xyz``-ordered voxel grid (``array_zyx.transpose(2, 1, 0)``).

    ITK's world frame is LPS: ``world = origin + direction @ (spacing * index_xyz)``.
    """
    direction = np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(geometry.spacing_xyz, dtype=np.float64)
    lps[:3, 3] = geometry.origin_xyz
    return _LPS_TO_RAS @ lps


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def torchio_grid_rule(version: str | None = None) -> str:
    """The grid rule of torchio's ``Resample(spacing)`` for ``version`` (default: the
    installed one): ``"floor_centred"`` from 0.20.11 on, ``"ceil_corner"`` before."""
    if version is None:
        import torchio

        version = torchio.__version__
    return "floor_centred" if _version_tuple(version) >= (0, 20, 11) else "ceil_corner"


def grid_provenance(resample_grid: str = "torchio") -> dict[str, str]:
    """What a run records about its resampling: ``torchio`` (the installed version),
    ``resample_grid`` (the option) and ``grid_rule`` (``floor_centred`` or
    ``ceil_corner``: the grid that option gives with that torchio)."""
    import torchio

    if resample_grid not in RESAMPLE_GRIDS:
        raise ValueError(f"resample_grid must be one of {RESAMPLE_GRIDS}, got {resample_grid!r}")
    rule = torchio_grid_rule(torchio.__version__) if resample_grid == "torchio" else resample_grid
    return {"torchio": torchio.__version__, "resample_grid": resample_grid, "grid_rule": rule}


def ceil_corner_grid(
    shape_xyz: tuple[int, ...], affine: np.ndarray, spacing_mm: float = TARGET_SPACING_MM
) -> tuple[tuple[int, int, int], np.ndarray]:
    """``(shape, affine)`` of torchio < 0.20.11's ``Resample(spacing_mm)`` reference grid
    for an image of ``shape_xyz`` and RAS ``affine``: ``ceil(extent / spacing)`` voxels
    (singleton axes stay 1), same direction, the first voxel centre at the old continuous
    index ``0.5 * (spacing / old_spacing - 1)`` (the outer corner kept in place)."""
    affine = np.asarray(affine, dtype=np.float64)
    old_spacing = np.linalg.norm(affine[:3, :3], axis=0)
    old_size = np.asarray(shape_xyz, dtype=np.float64)
    new_size = np.ceil(old_size * old_spacing / spacing_mm).astype(int)
    new_size[old_size == 1] = 1
    first_index = 0.5 * (spacing_mm / old_spacing - 1.0)
    new = np.eye(4)
    new[:3, :3] = affine[:3, :3] / old_spacing * spacing_mm
    new[:3, 3] = affine[:3, :3] @ first_index + affine[:3, 3]
    return tuple(int(n) for n in new_size), new


def to_model_grid(
    image: Volume,
    *,
    label: Volume | None = None,
    spacing_mm: float = TARGET_SPACING_MM,
    resample_grid: str = "torchio",
) -> ModelGrid:
    """Resample ``image`` (and ``label``) to ``spacing_mm`` isotropic in RAS canonical
    orientation (steps 1 of the module docstring) on the ``resample_grid`` grid
    (:data:`RESAMPLE_GRIDS`). ``label`` must have the image's shape; it is resampled as is
    (nearest), any integer values."""
    import torch
    import torchio as tio

    if resample_grid not in RESAMPLE_GRIDS:
        raise ValueError(f"resample_grid must be one of {RESAMPLE_GRIDS}, got {resample_grid!r}")

    array = np.asarray(image.array_zyx)
    if array.ndim != 3:
        raise ValueError(f"SAM-Med3D needs a 3D image, got shape {array.shape}")
    affine = ras_affine(image.geometry)
    items = {"image": tio.ScalarImage(tensor=_to_tensor(array, torch.float32), affine=affine)}
    if label is not None:
        if label.array_zyx.shape != array.shape:
            raise ValueError(
                f"label shape {label.array_zyx.shape} differs from image shape {array.shape}"
            )
        items["label"] = tio.LabelMap(
            tensor=_to_tensor(label.array_zyx, torch.int16), affine=affine
        )
    subject = _to_model_frame(array.shape, affine, spacing_mm, resample_grid)(tio.Subject(**items))
    label_ijk = None
    if label is not None:
        label_ijk = subject["label"].data[0].numpy().astype(np.uint8)
    return ModelGrid(
        image_ijk=subject["image"].data[0].numpy().astype(np.float32),
        affine=np.asarray(subject["image"].affine, dtype=np.float64),
        original_shape_zyx=tuple(int(s) for s in array.shape),
        original_affine=affine,
        geometry=image.geometry,
        label_ijk=label_ijk,
        resample_grid=resample_grid,
        spacing_mm=spacing_mm,
    )


def _to_model_frame(shape_zyx: tuple[int, ...], affine: np.ndarray, spacing_mm: float, rule: str):
    """torchio's transform from an original grid to the model frame (resample, then RAS)."""
    import torchio as tio

    if rule == "ceil_corner":
        resample = tio.Resample(target=ceil_corner_grid(tuple(shape_zyx)[::-1], affine, spacing_mm))
    else:
        resample = tio.Resample(spacing_mm)
    return tio.Compose([resample, tio.ToCanonical()])


def label_to_model(label_zyx: np.ndarray, grid: ModelGrid) -> np.ndarray:
    """A label volume (or an object's mask) of the original grid on ``grid``'s model frame,
    uint8: the same nearest-neighbour resampling as :func:`to_model_grid`'s ``label``, so
    ``label_to_model(label == v, grid)`` is ``to_model_grid(image, label=label).label_ijk
    == v`` (a voxel of the model frame takes the label of one original voxel whatever the
    values). ``ValueError`` when the shape is not the grid's original one."""
    import torch
    import torchio as tio

    label_zyx = np.asarray(label_zyx)
    if label_zyx.shape != tuple(grid.original_shape_zyx):
        raise ValueError(
            f"label shape {label_zyx.shape} differs from the grid's {grid.original_shape_zyx}"
        )
    transform = _to_model_frame(
        label_zyx.shape, grid.original_affine, grid.spacing_mm, grid.resample_grid
    )
    image = tio.LabelMap(tensor=_to_tensor(label_zyx, torch.int16), affine=grid.original_affine)
    out = transform(tio.Subject(label=image))["label"]
    if out.data.shape[1:] != grid.shape or not np.allclose(out.affine, grid.affine, atol=1e-6):
        raise ValueError("label_to_model: the label's model frame differs from the grid's")
    return out.data[0].numpy().astype(np.uint8)


def _to_tensor(array_zyx: np.ndarray, dtype):
    import torch

    xyz = np.ascontiguousarray(np.asarray(array_zyx).transpose(2, 1, 0))
    return torch.from_numpy(xyz.astype(np.float32 if dtype == torch.float32 else np.int16))[None]


def original_to_model(points_zyx: np.ndarray, grid: ModelGrid) -> np.ndarray:
    """Original voxel indices ``(N, 3)`` zyx to model-frame indices ``(N, 3)`` ijk (float)."""
    xyz = np.asarray(points_zyx, dtype=np.float64).reshape(-1, 3)[:, ::-1]
    homogeneous = np.c_[xyz, np.ones(len(xyz))]
    return (np.linalg.inv(grid.affine) @ grid.original_affine @ homogeneous.T).T[:, :3]


def model_to_original(points_ijk: np.ndarray, grid: ModelGrid) -> np.ndarray:
    """Model-frame indices ``(N, 3)`` ijk to original voxel indices ``(N, 3)`` zyx (float)."""
    ijk = np.asarray(points_ijk, dtype=np.float64).reshape(-1, 3)
    homogeneous = np.c_[ijk, np.ones(len(ijk))]
    xyz = (np.linalg.inv(grid.original_affine) @ grid.affine @ homogeneous.T).T[:, :3]
    return xyz[:, ::-1].copy()


def box_to_model(box_zyx: np.ndarray, grid: ModelGrid) -> tuple[np.ndarray, np.ndarray]:
    """A box ``[[z0, y0, x0], [z1, y1, x1]]`` of original voxel indices (inclusive) as the
    model-frame ``(lo_ijk, hi_ijk)`` enclosing its 8 corners."""
    box = np.asarray(box_zyx, dtype=np.float64).reshape(2, 3)
    corners = np.array([[box[a, 0], box[b, 1], box[c, 2]] for a, b, c in product((0, 1), repeat=3)])
    model = original_to_model(corners, grid)
    return model.min(axis=0), model.max(axis=0)


def gt_centre(label_ijk: np.ndarray) -> np.ndarray:
    """Centre of the bounding box of ``label_ijk > 0``: the official (oracle) crop centre."""
    where = np.argwhere(np.asarray(label_ijk) > 0)
    if where.size == 0:
        raise ValueError("gt_centre: the label is empty")
    return (where.min(axis=0) + where.max(axis=0)) / 2.0


def crop_box(centre_ijk: np.ndarray, size: int) -> CropBox:
    """The ``size``-cube whose voxel ``size // 2`` (each axis) is the rounded centre
    (``tio.CropOrPad``'s placement for a mask centred there; halves round up)."""
    centre = np.floor(np.asarray(centre_ijk, dtype=np.float64).reshape(3) + 0.5).astype(int)
    return CropBox(tuple(int(c - size // 2) for c in centre), int(size))


def extract(array_ijk: np.ndarray, box: CropBox, *, fill: float = 0.0) -> np.ndarray:
    """The cube of ``array_ijk`` under ``box``, ``fill`` where it leaves the array."""
    out = np.full((box.size,) * 3, fill, dtype=array_ijk.dtype)
    src, dst = _overlap(box, array_ijk.shape)
    if src is not None:
        out[dst] = array_ijk[src]
    return out


def paste(values: np.ndarray, box: CropBox, shape: tuple[int, int, int], *, fill=0) -> np.ndarray:
    """A ``shape`` array, ``fill`` except the in-bounds part of the cube ``values``."""
    out = np.full(shape, fill, dtype=values.dtype)
    src, dst = _overlap(box, shape)
    if src is not None:
        out[src] = values[dst]
    return out


def _overlap(box: CropBox, shape: tuple[int, ...]) -> tuple[tuple, tuple] | tuple[None, None]:
    """Slices of the array (``src``) and of the cube (``dst``) where they overlap."""
    src, dst = [], []
    for start, stop, n in zip(box.start, box.stop, shape, strict=True):
        lo, hi = max(start, 0), min(stop, n)
        if lo >= hi:
            return None, None
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    return tuple(src), tuple(dst)


def znormalise(crop: np.ndarray) -> np.ndarray:
    """z-score over the voxels > 0 (torchio's ``ZNormalization.znorm``), float32; see the
    module docstring for the fallback when there are too few or constant ones."""
    import torch
    import torchio as tio

    tensor = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))
    mask = tensor > 0
    out = tio.ZNormalization.znorm(tensor, mask) if int(mask.sum()) >= 2 else None
    if out is None or not bool(torch.isfinite(out).all()):
        out = tio.ZNormalization.znorm(tensor, torch.ones_like(mask))
    if out is None:
        log.warning("constant SAM-Med3D crop: normalised to zeros")
        return np.zeros_like(crop, dtype=np.float32)
    return out.numpy()


def prepare_crop(grid: ModelGrid, box: CropBox) -> np.ndarray:
    """The normalised float32 ``(size, size, size)`` model input under ``box``."""
    return znormalise(extract(grid.image_ijk, box, fill=0.0))


def to_original(mask_ijk: np.ndarray, grid: ModelGrid) -> np.ndarray:
    """A model-frame label array (the grid's shape) back on the original grid: uint8
    ``original_shape_zyx`` (:func:`block_to_original` of the whole grid)."""
    mask_ijk = np.asarray(mask_ijk)
    if mask_ijk.shape != grid.shape:
        raise ValueError(f"mask shape {mask_ijk.shape} is not the model grid's {grid.shape}")
    return block_to_original(mask_ijk, (0, 0, 0), grid)


def block_to_original(
    values_ijk: np.ndarray, start_ijk: tuple[int, int, int], grid: ModelGrid
) -> np.ndarray:
    """A model-frame block (a crop) back on the original grid, uint8 ``original_shape_zyx``.

    ``values_ijk[a, b, c]`` is model-frame voxel ``start_ijk + (a, b, c)``; the block may
    reach beyond the grid (a crop's padding). Each original voxel takes the value of the
    block voxel nearest to its centre, 0 outside the block: the rule of the module
    docstring (SAM-Med3D's ``data_postprocess``, torchio/SimpleITK nearest resampling from
    the crop's affine onto the original image).
    """
    values = np.asarray(values_ijk)
    to_block = np.linalg.inv(grid.affine) @ grid.original_affine
    to_block[:3, 3] -= np.asarray(start_ijk, dtype=np.float64)
    if (np.abs(to_block[:3, :3]) > 1e-9).sum(axis=1).tolist() == [1, 1, 1]:
        return _axis_aligned_to_original(values, to_block, grid.original_shape_zyx)
    return _oblique_to_original(values, to_block, grid.original_shape_zyx)


def _oblique_to_original(
    values: np.ndarray, to_block: np.ndarray, shape_zyx: tuple[int, int, int]
) -> np.ndarray:
    """:func:`block_to_original` for any affine: every original voxel, slice by slice."""
    n_z, n_y, n_x = shape_zyx
    x = np.arange(n_x, dtype=np.float64)[None, :]
    y = np.arange(n_y, dtype=np.float64)[:, None]
    out = np.zeros(shape_zyx, dtype=np.uint8)
    for z in range(n_z):
        index = []
        for axis in range(3):
            row = to_block[axis]
            continuous = row[0] * x + row[1] * y + (row[2] * z + row[3])
            index.append(_nearest_index(continuous))
        inside = np.ones((n_y, n_x), dtype=bool)
        for axis, side in enumerate(values.shape):
            inside &= (index[axis] >= 0) & (index[axis] < side)
        out[z][inside] = values[index[0][inside], index[1][inside], index[2][inside]]
    return out


def _nearest_index(continuous: np.ndarray) -> np.ndarray:
    """Nearest voxel index, exact halves up, after snapping to :data:`_SNAP`."""
    return np.floor(np.round(continuous / _SNAP) * _SNAP + 0.5).astype(np.int64)


def _axis_aligned_to_original(
    values: np.ndarray, to_block: np.ndarray, shape_zyx: tuple[int, int, int]
) -> np.ndarray:
    """:func:`block_to_original` when each block axis follows one original axis (no
    obliquity): one index vector per axis, one gather."""
    shape_xyz = shape_zyx[::-1]
    source = [int(np.flatnonzero(np.abs(to_block[a, :3]) > 1e-9)[0]) for a in range(3)]
    if sorted(source) != [0, 1, 2]:
        raise ValueError("block_to_original: the affines map two block axes to one")
    out_xyz = np.zeros(shape_xyz, dtype=np.uint8)
    gathered = values
    where: list[slice] = [slice(0, 0)] * 3
    for axis, j in enumerate(source):
        found = _nearest_index(to_block[axis, j] * np.arange(shape_xyz[j]) + to_block[axis, 3])
        inside = np.flatnonzero((found >= 0) & (found < values.shape[axis]))
        if not inside.size:
            return np.ascontiguousarray(out_xyz.transpose(2, 1, 0))
        where[j] = slice(int(inside[0]), int(inside[-1]) + 1)  # monotonic: one run
        gathered = np.take(gathered, found[inside], axis=axis)
    out_xyz[tuple(where)] = gathered.transpose(np.argsort(source))  # block axes as x, y, z
    return np.ascontiguousarray(out_xyz.transpose(2, 1, 0))


def window_boxes(
    lo_ijk: np.ndarray, hi_ijk: np.ndarray, size: int, *, min_overlap: float = 0.25
) -> list[CropBox]:
    """Cubes of ``size`` covering the model-frame extent ``[lo, hi]`` (inclusive voxels).

    An axis whose extent fits in one cube gets one cube centred on it; a longer axis gets
    the fewest cubes, evenly spaced from ``lo`` to ``hi``, that overlap their neighbours by
    at least ``min_overlap * size`` voxels. The result is the product over the 3 axes, in
    raster order.
    """
    if not 0 <= min_overlap < 1:
        raise ValueError(f"min_overlap must be in [0, 1), got {min_overlap}")
    lo = np.floor(np.asarray(lo_ijk, dtype=np.float64)).astype(int)
    hi = np.ceil(np.asarray(hi_ijk, dtype=np.float64)).astype(int)
    stride = max(1, int(size - math.ceil(min_overlap * size)))
    starts_per_axis = []
    for a, b in zip(lo, hi, strict=True):
        extent = int(b - a + 1)
        if extent <= size:
            starts_per_axis.append([crop_box(np.full(3, (a + b) / 2.0), size).start[0]])
            continue
        n = math.ceil((extent - size) / stride) + 1
        starts_per_axis.append([int(round(v)) for v in np.linspace(a, b - size + 1, n)])
    return [CropBox(tuple(s), int(size)) for s in product(*starts_per_axis)]
