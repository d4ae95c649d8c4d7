"""SAM image-encoder input and encoding of grey slices, as ``SamPredictor.set_image`` does.

Each slice is turned into SAM input exactly as segment_anything's predictor does: grey
``uint8`` to 3 channels, ``ResizeLongestSide`` on the ``H x W x 3`` image (longest side =
the encoder's input size), to a ``3 x h x w`` tensor, then ``Sam.preprocess`` (pixel
normalisation, zero padding to a square). torch is imported lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from medsegflow.models.sam_cache import resize_transform
from medsegflow.models.sam_loader import autocast

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam


def grey_to_rgb_resized(image_yx: np.ndarray, *, image_size: int) -> np.ndarray:
    """A grey slice as SAM's predictor resizes it.

    Args:
        image_yx: ``(H, W)`` uint8 slice.
        image_size: the encoder's square input side (1024 for the official models).

    Returns:
        ``(h, w, 3)`` uint8, longest side ``image_size`` (``ResizeLongestSide.apply_image``,
        bilinear via PIL), the grey value repeated in the 3 channels.
    """
    if image_yx.ndim != 2 or image_yx.dtype != np.uint8:
        raise ValueError(f"expected an (H, W) uint8 slice, got {image_yx.dtype} {image_yx.shape}")
    rgb_yxc = np.repeat(image_yx[:, :, None], 3, axis=2)
    return resize_transform(image_size).apply_image(rgb_yxc)


def model_input(
    images_yxc: Sequence[np.ndarray], *, model: Sam, device: torch.device
) -> torch.Tensor:
    """``(B, 3, S, S)`` float32 encoder input: ``Sam.preprocess`` of each resized image.

    Args:
        images_yxc: ``(h, w, 3)`` uint8 images from :func:`grey_to_rgb_resized`.
        model: supplies pixel mean/std and ``S = model.image_encoder.img_size``.
        device: where the batch is built.
    """
    import torch

    tensors = [
        model.preprocess(torch.as_tensor(img, device=device).permute(2, 0, 1).float())
        for img in images_yxc
    ]
    return torch.stack(tensors)


def encode_slices(
    slices_zyx: np.ndarray, *, model: Sam, device: torch.device, batch_size: int
) -> np.ndarray:
    """Image embeddings of ``N`` slices, in batches of ``batch_size``.

    Args:
        slices_zyx: ``(N, H, W)`` uint8 slices.

    Returns:
        ``(N, C, h, w)`` float16 (``C = model.prompt_encoder.embed_dim``, ``(h, w) =
        model.prompt_encoder.image_embedding_size``; 256 x 64 x 64 for official models).
    """
    import torch

    size = model.image_encoder.img_size
    out = [
        np.zeros(
            (0, model.prompt_encoder.embed_dim, *model.prompt_encoder.image_embedding_size),
            dtype=np.float16,
        )
    ]
    with torch.inference_mode(), autocast(device):
        for start in range(0, len(slices_zyx), batch_size):
            chunk = slices_zyx[start : start + batch_size]
            resized = [grey_to_rgb_resized(s, image_size=size) for s in chunk]
            features = model.image_encoder(model_input(resized, model=model, device=device))
            out.append(features.float().cpu().numpy().astype(np.float16))
    return np.concatenate(out)
