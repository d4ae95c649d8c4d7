"""The official input/output recipe of each SAM-family architecture.

Each official model is run with its own official pre- and post-processing: how the
slice (grey, or RGB for colour datasets) becomes the encoder input, how prompts are
mapped into the model frame and how the decoder's low-resolution logits become a mask in
the original frame. One frozen dataclass per recipe, all with the :class:`InputRecipe`
interface; :func:`recipe_for` picks one by name.

Frames: the *original frame* is the slice's pixel grid, ``(H, W)``; the *model frame*
is the encoder input's grid, ``S x S`` with ``S = image_size``. Points are ``(x, y)``
with x the column; boxes are ``XYXY`` in pixels. Foreground is always ``probs > 0.5``.

Recipes: ``"sam"`` (:class:`SamRecipe`), ``"medsam"`` (:class:`MedSamRecipe`),
``"lite_medsam"`` (:class:`LiteMedSamRecipe`), ``"samed"`` (:class:`SamedRecipe`) and
``"medsa"`` (:class:`MedsaRecipe`, whose foreground is ``logits > 0.5`` on raw logits).
skimage, scipy, cv2 and segment_anything are imported lazily, by the recipe that needs them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from segment_anything.utils.transforms import ResizeLongestSide

PIXEL_MEAN = (123.675, 116.28, 103.53)
"""SAM's per-channel (R, G, B) pixel mean, 0-255 scale (``segment_anything/build_sam.py``)."""
PIXEL_STD = (58.395, 57.12, 57.375)

# torch.logit clamps probabilities to [eps, 1 - eps] so that logits stay finite (|x| <= 13.8).
LOGIT_EPS = 1e-6
# The smallest float32 above 0.5: SAM's probabilities are lifted to it where logits > 0.
_ABOVE_HALF = float(np.nextafter(np.float32(0.5), np.float32(1.0)))


@dataclass(frozen=True)
class InputRecipe(ABC):
    """One architecture's official pre- and post-processing (the shared interface).

    Attributes:
        image_size: ``S``, the side of the square encoder input, in pixels.
    """

    name: ClassVar[str]
    image_size: int

    def __post_init__(self) -> None:
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int | np.integer):
            raise ValueError(f"image_size must be an int, got {self.image_size!r}")
        if self.image_size <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size}")

    def _checked(
        self,
        low_res_logits: torch.Tensor,
        original_size: tuple[int, int],
        input_size: tuple[int, int],
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """float32 ``(N, 1, h', w')`` logits and ``(H, W)``, after checking both sizes."""
        original_size = _check_size(original_size)
        expected = self.input_size(original_size)
        if tuple(input_size) != expected:
            raise ValueError(
                f"input_size {tuple(input_size)} does not match {self.name}'s input size "
                f"{expected} for original size {original_size}"
            )
        return _check_logits(low_res_logits), original_size

    @abstractmethod
    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """``(h, w)`` of the resized image before padding, in the model frame (pixels)."""

    @abstractmethod
    def prepare_image(self, image_yx: np.ndarray) -> np.ndarray:
        """The encoder input of a slice.

        Args:
            image_yx: ``(H, W)`` uint8 grey slice (repeated to 3 channels) or
                ``(H, W, 3)`` uint8 RGB image, original frame.

        Returns:
            ``(3, S, S)`` float32, model frame: the tensor the official script passes to
            ``image_encoder`` (batch axis dropped).
        """

    @abstractmethod
    def map_boxes(self, boxes_xyxy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``(N, 4)`` XYXY pixel boxes, original frame -> ``(N, 4)`` float64, model frame."""

    @abstractmethod
    def map_points(self, coords_xy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``(..., 2)`` ``(x, y)`` pixel points, original frame -> float64, model frame."""

    @abstractmethod
    def postprocess(
        self,
        low_res_logits: torch.Tensor,
        *,
        original_size: tuple[int, int],
        input_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder logits -> ``(probs, logits)`` in the original frame.

        Args:
            low_res_logits: ``(N, 1, h', w')`` float decoder logits, model frame
                (``256 x 256`` for the official models).
            original_size: ``(H, W)`` of the slice.
            input_size: ``self.input_size(original_size)``.

        Returns:
            ``probs`` and ``logits``, float32 ``(N, H, W)``, original frame, on the device
            of ``low_res_logits``. Foreground is exactly ``probs > 0.5``.
        """

    def postprocess_classes(
        self,
        low_res_logits: torch.Tensor,
        *,
        original_size: tuple[int, int],
        input_size: tuple[int, int],
    ) -> torch.Tensor:
        """Semantic decoder logits (one channel per class, channel 0 background) ->
        ``(N, H, W)`` int64 channel indices in the original frame.

        SAMed's rule (``utils.test_single_volume``): bilinear to the ``S x S`` input
        square, arg-max over the channels, then ``scipy.ndimage.zoom(labels, (H / h,
        W / w), order=0)`` to ``(H, W)``; the padding (recipes that pad) is cropped before
        the last step. scipy's zoom reads input index ``floor(i * (h - 1) / (H - 1) +
        0.5)`` (not torch's ``floor(i * h / H)``), and gives 0 where floating-point error
        puts that index past the edge: for some sizes (H = 166 from 512, for one) the
        last row is 0 whatever the network says, as in SAMed's own predictions.
        """
        original_size = _check_size(original_size)
        if tuple(input_size) != self.input_size(original_size):
            raise ValueError(f"input_size {tuple(input_size)} does not match {self.name}'s")
        if low_res_logits.ndim != 4:
            raise ValueError(f"logits must be (N, C, h, w), got {tuple(low_res_logits.shape)}")
        size = (self.image_size, self.image_size)
        logits = F.interpolate(low_res_logits.float(), size, mode="bilinear", align_corners=False)
        from scipy.ndimage import zoom

        channels = logits.argmax(dim=1)[..., : input_size[0], : input_size[1]].cpu().numpy()
        height, width = channels.shape[-2:]
        factors = (original_size[0] / height, original_size[1] / width)
        resized = [zoom(c, factors, order=0) for c in channels]
        out = np.stack(resized) if resized else np.zeros((0, *original_size), np.int64)
        return torch.from_numpy(out.astype(np.int64)).to(low_res_logits.device)


def _check_image(image_yx: np.ndarray) -> np.ndarray:
    """The ``(H, W, 3)`` uint8 image the official scripts feed: a grey ``(H, W)`` slice
    repeated to 3 channels (as all of them do), an RGB ``(H, W, 3)`` image as it is
    (channels in R, G, B order, never converted to grey)."""
    colour = isinstance(image_yx, np.ndarray) and image_yx.ndim == 3 and image_yx.shape[-1] == 3
    grey = isinstance(image_yx, np.ndarray) and image_yx.ndim == 2
    if not (grey or colour) or image_yx.dtype != np.uint8:
        shape = getattr(image_yx, "shape", None)
        dtype = getattr(image_yx, "dtype", type(image_yx).__name__)
        raise ValueError(
            f"expected a uint8 (H, W) grey or (H, W, 3) RGB slice, got shape {shape} dtype {dtype}"
        )
    if image_yx.size == 0:
        raise ValueError(f"expected a non-empty slice, got shape {image_yx.shape}")
    if colour:
        return np.ascontiguousarray(image_yx)
    return np.repeat(image_yx[:, :, None], 3, axis=-1)


def _check_size(original_size: tuple[int, int]) -> tuple[int, int]:
    size = tuple(original_size)
    if len(size) != 2 or not all(isinstance(s, int | np.integer) and s > 0 for s in size):
        raise ValueError(f"original_size must be (H, W) positive ints, got {original_size!r}")
    return int(size[0]), int(size[1])


def _check_boxes(boxes_xyxy: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) XYXY, got shape {boxes.shape}")
    return boxes


def _check_points(coords_xy: np.ndarray) -> np.ndarray:
    coords = np.asarray(coords_xy, dtype=np.float64)
    if coords.ndim == 0 or coords.shape[-1] != 2:
        raise ValueError(f"points must be (..., 2) (x, y), got shape {coords.shape}")
    return coords


def _check_logits(low_res_logits: torch.Tensor) -> torch.Tensor:
    if not isinstance(low_res_logits, torch.Tensor) or low_res_logits.ndim != 4:
        shape = tuple(getattr(low_res_logits, "shape", ()))
        raise ValueError(f"low_res_logits must be a (N, 1, h, w) tensor, got shape {shape}")
    if low_res_logits.shape[1] != 1:
        raise ValueError(
            f"low_res_logits must have one mask channel, got shape {tuple(low_res_logits.shape)}"
        )
    return low_res_logits.float()


def _min_max(image: np.ndarray) -> np.ndarray:
    """MedSAM's and LiteMedSAM's normalisation to [0, 1] over the whole array (float64)."""
    return (image - image.min()) / np.clip(image.max() - image.min(), a_min=1e-8, a_max=None)


def _to_chw_float32(image_yxc: np.ndarray) -> np.ndarray:
    """``torch.tensor(img).float().permute(2, 0, 1)`` of the official scripts, in numpy."""
    return np.ascontiguousarray(image_yxc.astype(np.float32).transpose(2, 0, 1))


@dataclass(frozen=True)
class SamRecipe(InputRecipe):
    """segment_anything's ``SamPredictor`` recipe (SAM ViT-B/L/H, small SAM models).

    Source: facebookresearch/segment-anything (identical in the installed
    segment_anything 1.0): ``segment_anything/predictor.py`` @ 5717941
    (``set_image``, ``set_torch_image``, ``predict``), ``segment_anything/utils/transforms.py``
    @ 2dbf79f (``ResizeLongestSide``), ``segment_anything/modeling/sam.py`` @ 28a9f5d
    (``preprocess``, ``postprocess_masks``, ``mask_threshold = 0.0``).

    - Image: ``ResizeLongestSide(S).apply_image`` on the ``H x W x 3`` uint8 image
      (torchvision ``resize`` of ``to_pil_image(image)``: PIL bilinear, longest side
      ``S``), then ``Sam.preprocess``: ``(x - pixel_mean) / pixel_std`` in float32, then
      zero padding bottom/right to ``S x S``.
    - Boxes and points: ``ResizeLongestSide.apply_boxes`` / ``apply_coords``: x times
      ``w / W``, y times ``h / H`` with ``(h, w) = get_preprocess_shape`` (``int(v + 0.5)``).
    - Masks: ``Sam.postprocess_masks`` (bilinear to ``S x S``, crop to ``input_size``,
      bilinear to ``(H, W)``, ``align_corners=False``) on the logits; foreground
      ``logits > 0``. ``probs`` is ``sigmoid(logits)``, lifted to the float32 just above
      0.5 where ``0 < logits`` is too small for float32 sigmoid to exceed 0.5, so that
      ``probs > 0.5`` is exactly ``logits > 0``.

    Attributes:
        image_size: ``S`` (``image_encoder.img_size``; 1024 for the official models).
        pixel_mean: per-channel (R, G, B) mean of ``Sam.preprocess``, 0-255 scale.
        pixel_std: per-channel (R, G, B) std of ``Sam.preprocess``, 0-255 scale.
    """

    name: ClassVar[str] = "sam"
    image_size: int = 1024
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD

    def __post_init__(self) -> None:
        super().__post_init__()
        for label in ("pixel_mean", "pixel_std"):
            values = tuple(float(v) for v in getattr(self, label))
            if len(values) != 3:
                raise ValueError(f"{label} must have 3 values, got {values!r}")
            object.__setattr__(self, label, values)
        if min(self.pixel_std) <= 0:
            raise ValueError(f"pixel_std must be positive, got {self.pixel_std!r}")

    def _transform(self) -> ResizeLongestSide:
        from segment_anything.utils.transforms import ResizeLongestSide

        return ResizeLongestSide(self.image_size)

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """``(h, w)``, longest side ``S``: ``ResizeLongestSide.get_preprocess_shape``."""
        from segment_anything.utils.transforms import ResizeLongestSide

        height, width = _check_size(original_size)
        return ResizeLongestSide.get_preprocess_shape(height, width, self.image_size)

    def prepare_image(self, image_yx: np.ndarray) -> np.ndarray:
        """``(H, W)`` or ``(H, W, 3)`` uint8 -> ``(3, S, S)`` float32, normalised, padded."""
        resized = self._transform().apply_image(_check_image(image_yx))  # (h, w, 3) uint8
        x = torch.as_tensor(resized).permute(2, 0, 1).contiguous()
        mean = torch.tensor(self.pixel_mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.pixel_std, dtype=torch.float32).view(-1, 1, 1)
        x = (x - mean) / std
        pad_h, pad_w = self.image_size - x.shape[-2], self.image_size - x.shape[-1]
        return F.pad(x, (0, pad_w, 0, pad_h)).numpy()

    def map_boxes(self, boxes_xyxy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``(N, 4)`` XYXY, original frame -> float64 model frame (``apply_boxes``)."""
        return self._transform().apply_boxes(_check_boxes(boxes_xyxy), _check_size(original_size))

    def map_points(self, coords_xy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``(..., 2)`` (x, y), original frame -> float64 model frame (``apply_coords``)."""
        return self._transform().apply_coords(_check_points(coords_xy), _check_size(original_size))

    def postprocess(
        self,
        low_res_logits: torch.Tensor,
        *,
        original_size: tuple[int, int],
        input_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 1, h', w')`` logits -> float32 ``(N, H, W)`` ``(probs, logits)``.

        Order: upsample logits to ``S x S``, crop to ``input_size``, upsample to
        ``original_size``; foreground ``logits > 0`` (``== probs > 0.5``).
        """
        masks, original_size = self._checked(low_res_logits, original_size, input_size)
        size = (self.image_size, self.image_size)
        masks = F.interpolate(masks, size, mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        logits = F.interpolate(masks, original_size, mode="bilinear", align_corners=False)[:, 0]
        probs = torch.sigmoid(logits)
        probs = torch.where(logits > 0, probs.clamp(min=_ABOVE_HALF), probs.clamp(max=0.5))
        return probs, logits


@dataclass(frozen=True)
class _SquareResizeRecipe(InputRecipe):
    """Recipes that resize the whole slice to the ``S x S`` input (aspect not kept): boxes
    ``box / [W, H, W, H] * S``, points ``(x, y) / [W, H] * S``."""

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """``(S, S)``: the whole slice is resized to the square input."""
        _check_size(original_size)
        return self.image_size, self.image_size

    def map_boxes(self, boxes_xyxy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``(N, 4)`` XYXY, original frame -> float64 model frame: ``box / [W, H, W, H] * S``."""
        height, width = _check_size(original_size)
        return _check_boxes(boxes_xyxy) / np.array([width, height, width, height]) * self.image_size

    def map_points(self, coords_xy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``(..., 2)`` (x, y) -> float64 model frame, the boxes' scaling: ``/ [W, H] * S``."""
        height, width = _check_size(original_size)
        return _check_points(coords_xy) / np.array([width, height]) * self.image_size


@dataclass(frozen=True)
class MedSamRecipe(_SquareResizeRecipe):
    """MedSAM's recipe (MedSAM ViT-B, 1024).

    Source: bowang-lab/MedSAM ``MedSAM_Inference.py`` (main) @ 3ead5b7 (same
    pre/post-processing @ 3e56a52), module body and ``medsam_inference``.

    - Image: ``skimage.transform.resize(img_3c, (S, S), order=3, preserve_range=True,
      anti_aliasing=True).astype(np.uint8)`` (both sides to ``S``: the aspect ratio is not
      kept), then min-max to [0, 1] over the whole image (denominator clipped at 1e-8).
      No pixel mean/std, no padding: the image encoder is called directly.
    - Boxes: ``box / [W, H, W, H] * S``. Points: the official script takes only boxes;
      points get the same scaling, ``(x, y) / [W, H] * S``.
    - Masks: ``sigmoid`` of the low-res logits, bilinear (``align_corners=False``) to
      ``(H, W)``, foreground ``> 0.5``. The probabilities are upsampled, so ``logits`` is
      ``logit(probs)`` with probs clipped to ``[LOGIT_EPS, 1 - LOGIT_EPS]``.
    """

    name: ClassVar[str] = "medsam"
    image_size: int = 1024

    def prepare_image(self, image_yx: np.ndarray) -> np.ndarray:
        """``(H, W)`` or ``(H, W, 3)`` uint8 -> ``(3, S, S)`` float32 in [0, 1]."""
        from skimage import transform

        img_3c = _check_image(image_yx)
        size = (self.image_size, self.image_size)
        resized = transform.resize(
            img_3c, size, order=3, preserve_range=True, anti_aliasing=True
        ).astype(np.uint8)
        return _to_chw_float32(_min_max(resized))

    def postprocess(
        self,
        low_res_logits: torch.Tensor,
        *,
        original_size: tuple[int, int],
        input_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 1, h', w')`` logits -> float32 ``(N, H, W)`` ``(probs, logits)``.

        Order: sigmoid, then bilinear to ``original_size`` (no crop); foreground
        ``probs > 0.5``.
        """
        masks, original_size = self._checked(low_res_logits, original_size, input_size)
        low_res_probs = torch.sigmoid(masks)
        probs = F.interpolate(low_res_probs, original_size, mode="bilinear", align_corners=False)
        probs = probs[:, 0]
        return probs, torch.logit(probs, eps=LOGIT_EPS)


@dataclass(frozen=True)
class LiteMedSamRecipe(InputRecipe):
    """LiteMedSAM's recipe (TinyViT encoder, 256).

    Source: bowang-lab/MedSAM ``CVPR24_LiteMedSAM_infer.py`` (branch LiteMedSAM) @ 2a5a055
    (same pre/post-processing @ 0c044e9): ``resize_longest_side``, ``pad_image``,
    ``resize_box_to_256``, ``MedSAM_Lite.postprocess_masks``, ``medsam_inference``,
    ``MedSAM_infer_npz_2D``.

    - Image: ``cv2.resize(img_3c, (w, h), interpolation=cv2.INTER_AREA)`` with
      ``(h, w) = int(H * S / max(H, W) + 0.5), int(W * S / max(H, W) + 0.5)``, min-max to
      [0, 1] over the resized image (denominator clipped at 1e-8), zero padding
      bottom/right to ``S x S``. No pixel mean/std.
    - Boxes: ``resize_box_to_256``: each coordinate ``int(v * (S / max(H, W)))``, truncated
      (computed in float64). Points: the official script takes only boxes; points get the
      same scaling and truncation.
    - Masks: low-res logits cropped to ``input_size`` (they are in the ``S x S`` input
      frame), bilinear (``align_corners=False``) to ``(H, W)``, sigmoid, foreground
      ``> 0.5``. The logits are upsampled, so ``logits`` is the upsampled logits.
    """

    name: ClassVar[str] = "lite_medsam"
    image_size: int = 256

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """``(h, w)``, longest side ``S``, as ``resize_longest_side`` computes it."""
        old_h, old_w = _check_size(original_size)
        scale = self.image_size * 1.0 / max(old_h, old_w)
        return int(old_h * scale + 0.5), int(old_w * scale + 0.5)

    def prepare_image(self, image_yx: np.ndarray) -> np.ndarray:
        """``(H, W)`` or ``(H, W, 3)`` uint8 -> ``(3, S, S)`` float32, [0, 1], zero padding."""
        import cv2

        img_3c = _check_image(image_yx)
        new_h, new_w = self.input_size(image_yx.shape[:2])
        resized = cv2.resize(img_3c, (new_w, new_h), interpolation=cv2.INTER_AREA)
        normalised = _min_max(resized)
        pad = ((0, self.image_size - new_h), (0, self.image_size - new_w), (0, 0))
        return _to_chw_float32(np.pad(normalised, pad))

    def _scale_truncate(self, values: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        ratio = self.image_size / max(_check_size(original_size))
        return np.trunc(values * ratio)

    def map_boxes(self, boxes_xyxy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``(N, 4)`` XYXY -> float64 model frame: ``int(v * S / max(H, W))`` per coordinate."""
        return self._scale_truncate(_check_boxes(boxes_xyxy), original_size)

    def map_points(self, coords_xy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``(..., 2)`` (x, y) -> float64 model frame, the boxes' scaling and truncation."""
        return self._scale_truncate(_check_points(coords_xy), original_size)

    def postprocess(
        self,
        low_res_logits: torch.Tensor,
        *,
        original_size: tuple[int, int],
        input_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 1, S, S)`` logits -> float32 ``(N, H, W)`` ``(probs, logits)``.

        Order: crop to ``input_size``, bilinear to ``original_size``, sigmoid; foreground
        ``probs > 0.5``. The low-res side must be ``S``: the official crop is in its frame.
        """
        masks, original_size = self._checked(low_res_logits, original_size, input_size)
        if tuple(masks.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"lite_medsam low_res_logits must be {self.image_size} x {self.image_size}, "
                f"got shape {tuple(masks.shape)}"
            )
        masks = masks[..., : input_size[0], : input_size[1]]
        logits = F.interpolate(masks, original_size, mode="bilinear", align_corners=False)[:, 0]
        return torch.sigmoid(logits), logits


@dataclass(frozen=True)
class SamedRecipe(_SquareResizeRecipe):
    """SAMed's recipe (SAM ViT-B with LoRA, 512; any ``S``).

    Source: hitachinsk/SAMed ``utils.test_single_volume`` and ``train.py`` @ f3c4b44
    (``pixel_mean=[0, 0, 0], pixel_std=[1, 1, 1]``); the Synapse slices it reads are CT
    clipped to [-125, 275] HU and scaled to [0, 1] (``preprocess/preprocess_data.py``),
    which the pipeline's windowed uint8 slices divided by 255 are.

    - Image: values / 255 (a float slice, SAMed's own ``[0, 1]`` CT, as it is); with
      ``zoom_size`` ``N`` (``test.py``'s ``--input_size``, 224 by default there) first
      ``scipy.ndimage.zoom(slice, (N / H, N / W), order=3)`` unless the slice is already
      ``N x N``, then, unless ``S x S`` already, ``zoom(..., (S / h, S / w), order=3)``;
      repeated to 3 channels; no pixel mean/std, no padding. ``zoom_size`` None (or ``S``)
      is one zoom straight to ``S`` (``--input_size 512``).
    - Boxes and points (SAMed takes none; for other uses of the recipe): ``/ [W, H] * S``.
    - Masks: bilinear to ``S x S`` (``Sam.postprocess_masks``), then to ``(H, W)``.
      Semantic outputs: :meth:`InputRecipe.postprocess_classes`.
    """

    name: ClassVar[str] = "samed"
    image_size: int = 512
    zoom_size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.zoom_size is not None and (
            isinstance(self.zoom_size, bool) or int(self.zoom_size) < 1
        ):
            raise ValueError(f"zoom_size must be a positive int or None, got {self.zoom_size!r}")

    def prepare_image(self, image_yx: np.ndarray) -> np.ndarray:
        """``(H, W)`` uint8 (or float32 in [0, 1]) -> ``(3, S, S)`` float32 (cubic zooms
        may overshoot [0, 1])."""
        from scipy.ndimage import zoom

        if isinstance(image_yx, np.ndarray) and image_yx.ndim == 2 and image_yx.dtype.kind == "f":
            scaled = image_yx.astype(np.float32)
        else:
            _check_image(image_yx)
            if image_yx.ndim != 2:
                raise ValueError(f"SAMed takes a grey (H, W) slice, got shape {image_yx.shape}")
            scaled = image_yx.astype(np.float32) / 255.0
        for side in (self.zoom_size, self.image_size):
            if side is None or scaled.shape == (side, side):
                continue
            height, width = scaled.shape
            scaled = zoom(scaled, (side / height, side / width), order=3)
        return np.ascontiguousarray(np.repeat(scaled[None], 3, axis=0), dtype=np.float32)

    def postprocess(
        self,
        low_res_logits: torch.Tensor,
        *,
        original_size: tuple[int, int],
        input_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 1, h', w')`` logits -> float32 ``(N, H, W)`` ``(probs, logits)``: bilinear to
        ``S x S``, bilinear to ``(H, W)``, sigmoid."""
        masks, original_size = self._checked(low_res_logits, original_size, input_size)
        size = (self.image_size, self.image_size)
        masks = F.interpolate(masks, size, mode="bilinear", align_corners=False)
        logits = F.interpolate(masks, original_size, mode="bilinear", align_corners=False)[:, 0]
        return torch.sigmoid(logits), logits


CLICK_ORDERS = ("xy", "row_col")
"""How a recipe hands clicks to the prompt encoder: ``xy`` as ``(x, y)`` (SAM's order);
``row_col`` as ``(row, column)``, which the prompt encoder reads as ``(x, y)``: the
transposed point, as Med-SA's official code does."""

MEDSA_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)
"""Med-SA's ``eval_seg`` thresholds, applied to the raw logits (no sigmoid)."""


@dataclass(frozen=True)
class MedsaRecipe(_SquareResizeRecipe):
    """Med-SA's recipe (``-net sam -mod sam_adpt``; any ``S``, the ``-image_size``).

    Source: KidsWithTokens/Medical-SAM-Adapter @ 4dcdc63 ``dataset/isic.py`` (ISIC),
    ``function.validation_sam``, ``utils.eval_seg``, ``utils.random_click``; checked against
    its golden outputs (``tests/conformance/test_conformance_medsa.py``).

    - Image: PIL RGB, ``transforms.Resize((S, S))`` (Pillow bilinear: both sides to ``S``,
      the aspect ratio is not kept), ``ToTensor()`` (values / 255). No pixel mean/std: the
      validation path never calls ``Sam.preprocess``. A grey slice is repeated to RGB.
    - Boxes and points: ``/ [W, H] * S``. With ``click_order="row_col"`` (the official
      code's) each point is then handed over as ``(row, column)``, which the prompt encoder
      reads as ``(x, y)``; ``"xy"`` hands over ``(x, y)``. Boxes stay XYXY.
    - Masks: the low-res logits nearest-upsampled (``F.interpolate`` default) to ``(H, W)``;
      ``eval_seg`` thresholds the raw logits at :data:`MEDSA_THRESHOLDS`
      (:meth:`threshold_masks`). The single mask is ``logits > mask_threshold`` (0.5, the
      middle threshold; ``probs`` is ``sigmoid(logits)``, so it is ``probs >
      sigmoid(0.5)``, not ``probs > 0.5``).

    Attributes:
        click_order: one of :data:`CLICK_ORDERS`.
    """

    name: ClassVar[str] = "medsa"
    mask_threshold: ClassVar[float] = 0.5
    image_size: int = 1024
    click_order: str = "row_col"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.click_order not in CLICK_ORDERS:
            raise ValueError(f"click_order {self.click_order!r} is not one of {CLICK_ORDERS}")

    def prepare_image(self, image_yx: np.ndarray) -> np.ndarray:
        """``(H, W)`` or ``(H, W, 3)`` uint8 -> ``(3, S, S)`` float32 in [0, 1]."""
        from PIL import Image

        image = Image.fromarray(_check_image(image_yx), mode="RGB")
        resized = image.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        scaled = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1).float().div(255)
        return np.ascontiguousarray(scaled.numpy())

    def map_points(self, coords_xy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``(..., 2)`` (x, y) -> float64 model frame, ``/ [W, H] * S``, then swapped to
        ``(row, column)`` with ``click_order="row_col"``."""
        mapped = super().map_points(coords_xy, original_size)
        return mapped[..., ::-1].copy() if self.click_order == "row_col" else mapped

    def postprocess(
        self,
        low_res_logits: torch.Tensor,
        *,
        original_size: tuple[int, int],
        input_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 1, h', w')`` logits -> float32 ``(N, H, W)`` ``(sigmoid(logits), logits)``:
        nearest-neighbour to ``original_size``; foreground ``logits > mask_threshold``."""
        masks, original_size = self._checked(low_res_logits, original_size, input_size)
        logits = F.interpolate(masks, original_size, mode="nearest")[:, 0]
        return torch.sigmoid(logits), logits

    @staticmethod
    def threshold_masks(logits: torch.Tensor | np.ndarray) -> np.ndarray:
        """bool ``(5, ...)``: ``logits > t`` for each of :data:`MEDSA_THRESHOLDS`."""
        values = np.asarray(logits.detach().cpu() if isinstance(logits, torch.Tensor) else logits)
        return np.stack([values > t for t in MEDSA_THRESHOLDS])


_RECIPES: dict[str, type[InputRecipe]] = {
    SamRecipe.name: SamRecipe,
    MedSamRecipe.name: MedSamRecipe,
    LiteMedSamRecipe.name: LiteMedSamRecipe,
    SamedRecipe.name: SamedRecipe,
    MedsaRecipe.name: MedsaRecipe,
}
# The sizes the official MedSAM and LiteMedSAM scripts hard-code; SAM takes any size.
_OFFICIAL_SIZES: dict[str, int] = {MedSamRecipe.name: 1024, LiteMedSamRecipe.name: 256}


def recipe_for(name: str, image_size: int) -> InputRecipe:
    """The official recipe ``name`` (``"sam"``, ``"medsam"``, ``"lite_medsam"``).

    Args:
        name: the recipe's name.
        image_size: ``S``, the encoder's square input side; any positive size for
            ``"sam"``, 1024 for ``"medsam"`` and 256 for ``"lite_medsam"`` (their
            scripts hard-code it; build the dataclass directly for another size).

    Raises:
        ValueError: unknown ``name``, or a size the official recipe does not use.
    """
    if name not in _RECIPES:
        raise ValueError(f"unknown input recipe {name!r}; known: {sorted(_RECIPES)}")
    official = _OFFICIAL_SIZES.get(name)
    if official is not None and image_size != official:
        raise ValueError(
            f"input recipe {name!r} is defined at image_size {official}, got {image_size}"
        )
    return _RECIPES[name](image_size=image_size)


def input_recipe(
    name: str,
    image_size: int,
    *,
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN,
    pixel_std: tuple[float, float, float] = PIXEL_STD,
    click_order: str = "row_col",
) -> InputRecipe:
    """Recipe ``name`` at any ``image_size`` (small models trained here and in tests use
    an official recipe at another size); ``pixel_mean``/``pixel_std`` are SAM's only,
    ``click_order`` Med-SA's only."""
    if name not in _RECIPES:
        raise ValueError(f"unknown input recipe {name!r}; known: {sorted(_RECIPES)}")
    if name == SamRecipe.name:
        return SamRecipe(image_size, tuple(pixel_mean), tuple(pixel_std))
    if name == MedsaRecipe.name:
        return MedsaRecipe(image_size, click_order)
    return _RECIPES[name](image_size)
