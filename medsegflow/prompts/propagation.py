"""LiteMedSAM's official 3D protocol: one box per object, segment the middle slice, propagate.

Source: bowang-lab/MedSAM, branch ``LiteMedSAM``, ``CVPR24_LiteMedSAM_infer.py``,
``MedSAM_infer_npz_3D`` (revisions 2a5a0556cabee8a62c8c1ec7e7cd821909adcb0c and the older
0c044e9b4a6da58775cb4eb4b483aba3f2df5a45). For each object, given its 3D box
``[x_min, y_min, z_min, x_max, y_max, z_max]``, that code does this:

1. ``z_middle = int((z_max - z_min) / 2 + z_min)``, i.e. ``z_min + (z_max - z_min) // 2``.
2. It segments ``z_middle`` with the 3D box's own 2D part ``[x_min, y_min, x_max, y_max]``,
   not widened (only rescaled to the 256 frame by ``resize_box_to_256``).
3. It goes up, ``z = z_middle + 1, ...``: the box is ``get_bbox256`` of slice ``z - 1``'s
   prediction, taken after that mask is resized to the 256 frame. This is the tight box
   widened by ``bbox_shift=3`` on every side, a FIXED shift (the comment says
   "perturbation", but nothing is random), clipped to ``[0, 256]``. If that prediction is
   empty, the box falls back to the middle box of step 2.
4. It goes down, ``z = z_middle - 1, ...``, in the same way, from slice ``z + 1``.

Which slices are visited (``include_ends``). In the current revision (2a5a0556),
``z_max = min(z_max + 1, D)`` comes before ``range(z_middle, z_max)``, and
``z_min = max(-1, z_min - 1)`` comes before ``range(z_middle - 1, z_min, -1)``. So both
box ends are visited: the npz z bounds are read as inclusive. This matches this
pipeline's ``z_range``, so ``include_ends=True`` is the default. The older revision
(0c044e9b) ran ``range(z_middle, z_max)`` and ``range(z_middle - 1, z_min, -1)`` on the raw
bounds, so it skipped both end slices. ``include_ends=False`` gives that behaviour (why
2a5a0556 is taken as the current one: docs/families/sam.md, "Sources").

The frame: two rules for the neighbour's box (``neighbour_box`` of
:func:`propagate_box_3d`; the SAM family's ``propagation_box`` option).

- ``resized`` (the official one, :func:`box_from_mask_resized`): the neighbour's mask is
  resized with ``cv2.INTER_AREA`` to the model's input frame (LiteMedSAM: longest side
  256), zero-padded to the square input; its tight box of pixels > 0 is widened by 3
  pixels THERE and clamped to ``[0, 256]`` (the upper clamp is one past the last pixel); a
  resized mask that came out empty (a tiny prediction the resize erases) falls back to
  the middle box. The box is given to the prompt encoder as it is (no further rounding).
- ``original`` (:func:`box_from_mask_widened`): the box is measured on the
  full-resolution mask in the ORIGINAL slice frame, widened by ``margin_px`` original
  pixels, clipped to the last pixel (``W - 1``, ``H - 1``, as
  :func:`medsegflow.prompts.boxes.jitter_box`), and mapped into the model frame by the
  model's recipe. The official 3 px at 256 equals ``3 * max(H, W) / 256`` original pixels
  (6 px for a 512 x 512 slice; :func:`litemedsam_margin_px`), but the rounding of the
  model frame, the ``[0, 256]`` clamp and the fallback differ from the official code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from medsegflow.prompts.boxes import box_from_mask

logger = logging.getLogger(__name__)

LITEMEDSAM_SIDE = 256
"""LiteMedSAM resizes a slice's longest side to this many pixels."""

LITEMEDSAM_MARGIN_256 = 3.0
"""``get_bbox256``'s fixed ``bbox_shift``: the widening per side, in 256-frame pixels."""

SegmentSlice = Callable[[int, np.ndarray], np.ndarray]
"""segment(z, box_xyxy float64 (4,)) -> bool (H, W) mask of slice z (original frame)."""

NeighbourBox = Callable[[np.ndarray], "np.ndarray | None"]
"""neighbour_box(mask_yx) -> the box of the next slice from its neighbour's bool (H, W)
mask, in the frame ``segment`` takes, or None to fall back to the middle box."""


def litemedsam_margin_px(shape_yx: tuple[int, int]) -> float:
    """The official 3-pixel widening (256 frame), converted to pixels of an ``(H, W)`` slice.

    Returns ``3 * max(H, W) / 256``. Pass it as ``margin_px`` to reproduce the official scale.
    """
    height, width = (int(s) for s in shape_yx)
    if height <= 0 or width <= 0:
        raise ValueError(f"shape_yx must be two positive sizes, got {tuple(shape_yx)}")
    return LITEMEDSAM_MARGIN_256 * max(height, width) / LITEMEDSAM_SIDE


def box_from_mask_widened(
    mask_yx: np.ndarray, margin_px: float, shape_yx: tuple[int, int]
) -> np.ndarray:
    """Tight box of a 2D mask, each side moved outward by ``margin_px``, clipped to the image.

    Args:
        mask_yx: ``(H, W)`` mask, non-zero = object; it must not be empty.
        margin_px: outward shift of every side, in original pixels, >= 0 (fixed, not random).
        shape_yx: ``(H, W)`` of the slice; it must equal ``mask_yx.shape``.

    Returns:
        float64 ``[x_min, y_min, x_max, y_max]``: inclusive pixel corners, x = column,
        x clipped to ``[0, W - 1]`` and y to ``[0, H - 1]``.
    """
    mask_yx = np.asarray(mask_yx)
    shape = tuple(int(s) for s in shape_yx)
    if mask_yx.shape != shape:
        raise ValueError(f"mask shape {mask_yx.shape} does not match shape_yx {shape}")
    margin = _check_margin(margin_px)
    box = box_from_mask(mask_yx) + margin * np.array([-1.0, -1.0, 1.0, 1.0])
    height, width = shape
    box[[0, 2]] = np.clip(box[[0, 2]], 0.0, width - 1)
    box[[1, 3]] = np.clip(box[[1, 3]], 0.0, height - 1)
    return box


def box_from_mask_resized(
    mask_yx: np.ndarray,
    *,
    input_size: tuple[int, int],
    image_size: int,
    margin: float = LITEMEDSAM_MARGIN_256,
) -> np.ndarray | None:
    """The official LiteMedSAM propagation box (``get_bbox256`` on the resized mask).

    ``CVPR24_LiteMedSAM_infer.py`` (``MedSAM_infer_npz_3D``): the previous slice's mask is
    resized with ``cv2.resize(..., interpolation=cv2.INTER_AREA)`` to the resized slice's
    size, zero-padded bottom/right to ``S x S`` (``pad_image``), and ``get_bbox256`` takes
    the tight box of its pixels > 0, each side moved outward by ``bbox_shift = 3`` and
    clamped to ``[0, S]`` (``min(W, x_max + 3)``: ``S`` itself is allowed).

    Args:
        mask_yx: ``(H, W)`` mask of the neighbour slice, original frame, non-zero =
            object; it is resized as uint8 0/1 (the official code resizes 0/k with k the
            object's 1-based index; for k > 1 its resize keeps a few more border pixels).
        input_size: ``(h, w)`` of the resized slice before padding (the recipe's
            ``input_size``).
        image_size: ``S``, the side of the square model input.
        margin: the outward shift, in model-frame pixels.

    Returns:
        float64 ``[x_min, y_min, x_max, y_max]`` in the MODEL frame (``S x S``), or None
        when the resized mask is empty (the caller falls back to the middle box).
    """
    import cv2

    height, width = (int(s) for s in input_size)
    if not 0 < height <= image_size or not 0 < width <= image_size:
        raise ValueError(
            f"input_size {tuple(input_size)} must lie inside {image_size} x {image_size}"
        )
    mask = (np.asarray(mask_yx) != 0).astype(np.uint8)
    resized = cv2.resize(mask, (width, height), interpolation=cv2.INTER_AREA)
    ys, xs = np.nonzero(resized)
    if ys.size == 0:
        return None
    shift = _check_margin(margin)
    box = np.array([xs.min() - shift, ys.min() - shift, xs.max() + shift, ys.max() + shift])
    return np.clip(box.astype(np.float64), 0.0, float(image_size))


def box_3d_from_mask(mask_zyx: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """An object's 3D box prompt: its 2D box over all of its slices, and its z extent.

    This is the CVPR 2024 challenge's ``boxes`` entry ``[x_min, y_min, z_min, x_max, y_max,
    z_max]``, split into ``(box_xyxy, (z_min, z_max))``: x/y over all of the object's
    slices, z its inclusive min/max, no padding and no jitter (the official inference uses
    the x/y part directly as the middle slice's box; where this layout comes from:
    docs/families/sam.md, "Sources").

    Args:
        mask_zyx: ``(Z, Y, X)`` mask of one object, non-zero = object.

    Returns:
        ``(box_xyxy, (z_min, z_max))``. ``box_xyxy`` is float64 ``[x_min, y_min, x_max,
        y_max]`` (inclusive pixel indices, x = column) of the union over z. The z bounds
        are inclusive slice indices (axis 0).
    """
    mask_zyx = np.asarray(mask_zyx)
    if mask_zyx.ndim != 3:
        raise ValueError(f"box_3d_from_mask expects a (Z, Y, X) mask, got shape {mask_zyx.shape}")
    z_present = np.flatnonzero(mask_zyx.reshape(mask_zyx.shape[0], -1).any(axis=1))
    if z_present.size == 0:
        raise ValueError(f"box_3d_from_mask: the {mask_zyx.shape} mask is empty, it has no box")
    return box_from_mask(mask_zyx.any(axis=0)), (int(z_present[0]), int(z_present[-1]))


def propagation_order(
    z_range: tuple[int, int], *, include_ends: bool = True, z_key: int | None = None
) -> list[int]:
    """The slices :func:`propagate_box_3d` visits, in order: middle, then up, then down.

    ``z_key`` (inside the range) replaces the middle slice as the start (a key slice
    chosen otherwise, e.g. the reference's largest slice; None: the middle).

    With ``include_ends=True``: ``z_mid, z_mid + 1, ..., z_max, z_mid - 1, ..., z_min``.
    With ``include_ends=False`` (the older official revision): ``z_mid`` followed by
    ``z_mid + 1 .. z_max - 1``, then ``z_mid - 1 .. z_min + 1``. Here ``z_mid = z_min +
    (z_max - z_min) // 2``. In both modes the middle slice is always visited. Where
    ``z_min == z_max``, the official code asserts instead; here the one slice is visited.
    """
    z_min, z_max = (int(z) for z in z_range)
    if z_min > z_max:
        raise ValueError(f"z_range {tuple(z_range)} is reversed: z_min must be <= z_max")
    z_mid = z_min + (z_max - z_min) // 2 if z_key is None else int(z_key)
    if not z_min <= z_mid <= z_max:
        raise ValueError(f"key slice {z_mid} is outside z_range {tuple(z_range)}")
    end = 0 if include_ends else 1
    up = range(z_mid + 1, z_max + 1 - end)
    down = range(z_mid - 1, z_min - 1 + end, -1)
    return [z_mid, *up, *down]


def propagate_box_3d(
    segment: SegmentSlice,
    *,
    box_xyxy: np.ndarray,
    z_range: tuple[int, int],
    shape_zyx: tuple[int, int, int],
    margin_px: float = 3.0,
    include_ends: bool = True,
    neighbour_box: NeighbourBox | None = None,
    z_key: int | None = None,
) -> dict[int, np.ndarray]:
    """Segment one object from one 3D box: the middle slice first, then propagate up and down.

    The middle slice gets ``box_xyxy`` as it is. Every other visited slice gets the
    prediction of the slice visited just before it (``z - 1`` going up, ``z + 1`` going
    down), boxed by :func:`box_from_mask_widened` with ``margin_px``. If that prediction is
    empty, the slice gets ``box_xyxy`` again. Slices outside :func:`propagation_order` are
    never requested. See the module docstring for how this maps onto the official code.

    Args:
        segment: ``segment(z, box_xyxy)`` returns the ``(H, W)`` mask of slice ``z``. It
            receives a fresh float64 ``(4,)`` array each call.
        box_xyxy: the 3D box's 2D part, ``[x_min, y_min, x_max, y_max]``, in original
            pixels (x = column, inclusive corners), e.g. from :func:`box_3d_from_mask`.
        z_range: ``(z_min, z_max)``, inclusive slice indices, inside the volume.
        shape_zyx: ``(Z, H, W)`` of the volume.
        margin_px: widening per side, in original pixels, >= 0. The official value is
            :func:`litemedsam_margin_px` of the slice shape.
        include_ends: visit ``z_min`` and ``z_max`` themselves. The default, True, follows
            the current official code. False follows its older revision.
        neighbour_box: the box rule for the slices after the middle one; None is
            :func:`box_from_mask_widened` with ``margin_px`` (the ``original`` rule), for an
            empty neighbour mask the middle box. A callable returning None for a neighbour
            mask falls back to the middle box (the ``resized`` rule: wrap
            :func:`box_from_mask_resized`).
        z_key: the slice to start from instead of the middle one (:func:`propagation_order`).

    Returns:
        ``{z: bool (H, W) mask}`` for every visited slice, in visiting order.
    """
    box = _check_box(box_xyxy)
    depth, height, width = _check_shape(shape_zyx)
    z_min, z_max = (int(z) for z in z_range)
    if not 0 <= z_min <= z_max < depth:
        raise ValueError(
            f"z_range {tuple(z_range)} must satisfy 0 <= z_min <= z_max < {depth} (volume depth)"
        )
    margin = _check_margin(margin_px)
    order = propagation_order((z_min, z_max), include_ends=include_ends, z_key=z_key)
    z_mid = order[0]
    masks: dict[int, np.ndarray] = {}
    for z in order:
        neighbour = None if z == z_mid else masks[z - 1 if z > z_mid else z + 1]
        prompt = None
        if neighbour is not None and neighbour_box is not None:
            prompt = neighbour_box(neighbour)
        elif neighbour is not None and neighbour.any():
            prompt = box_from_mask_widened(neighbour, margin, (height, width))
        if prompt is None:
            if neighbour is not None:
                logger.debug("slice %d: neighbour prediction empty, reusing the middle box", z)
            prompt = box.copy()
        masks[z] = _check_mask(segment(z, prompt), z, (height, width))
    return masks


def _check_box(box_xyxy: np.ndarray) -> np.ndarray:
    box = np.asarray(box_xyxy, dtype=np.float64)
    if box.shape != (4,):
        raise ValueError(f"box_xyxy must be [x_min, y_min, x_max, y_max], got shape {box.shape}")
    if not np.isfinite(box).all() or box[0] > box[2] or box[1] > box[3]:
        raise ValueError(f"box_xyxy {box.tolist()} must be finite with min <= max")
    return box.copy()


def _check_shape(shape_zyx: tuple[int, int, int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape_zyx)
    if len(shape) != 3 or min(shape) <= 0:
        raise ValueError(f"shape_zyx must be three positive sizes (Z, H, W), got {shape}")
    return shape


def _check_margin(margin_px: float) -> float:
    margin = float(margin_px)
    if not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin_px must be a finite number >= 0, got {margin_px}")
    return margin


def _check_mask(mask_yx: np.ndarray, z: int, shape_yx: tuple[int, int]) -> np.ndarray:
    mask_yx = np.asarray(mask_yx)
    if mask_yx.shape != shape_yx:
        raise ValueError(f"segment(z={z}) returned shape {mask_yx.shape}, expected {shape_yx}")
    return mask_yx.astype(bool)
