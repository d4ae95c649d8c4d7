"""SAM-family image-encoder input and the encoding of grey slices.

A slice becomes encoder input by its model's official recipe (``model.input_recipe``,
:mod:`medsegflow.models.input_recipes`): SAM's longest-side resize, pixel normalisation and
padding; MedSAM's square resize and min-max; LiteMedSAM's area resize, min-max and
padding. torch is imported lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from medsegflow.models.sam_loader import autocast

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam


def model_input(
    slices_yx: Sequence[np.ndarray], *, model: Sam, device: torch.device | str
) -> torch.Tensor:
    """``(B, 3, S, S)`` float32 encoder input of ``B`` uint8 slices (``(H, W)`` grey or
    ``(H, W, 3)`` RGB), each by ``model.input_recipe.prepare_image``, on ``device``."""
    import torch

    recipe = model.input_recipe
    return torch.from_numpy(np.stack([recipe.prepare_image(s) for s in slices_yx])).to(device)


def encode_slices(
    slices_zyx: np.ndarray,
    *,
    model: Sam,
    device: torch.device,
    batch_size: int,
    precision: str = "auto",
) -> np.ndarray:
    """Image embeddings of ``N`` slices, in batches of ``batch_size``.

    Args:
        slices_zyx: ``(N, H, W)`` uint8 grey slices or ``(N, H, W, 3)`` RGB images.
        precision: the encoder's autocast (:func:`~medsegflow.models.sam_loader.autocast`).

    Returns:
        ``(N, C, h, w)`` (``C = model.prompt_encoder.embed_dim``, ``(h, w) =
        model.prompt_encoder.image_embedding_size``; 256 x 64 x 64 for official models):
        float32 when the encoder ran in float32 (``precision`` ``fp32``, or ``auto`` off
        CUDA), so that the cache holds exactly what the official code computes; float16
        after a bf16/fp16 autocast (half the cache; the encoder's own output was 16-bit).
    """
    import torch

    shape = (0, model.prompt_encoder.embed_dim, *model.prompt_encoder.image_embedding_size)
    out: list[np.ndarray] = []
    with torch.inference_mode(), autocast(device, precision):
        # 16-bit storage only where the encoder really ran under a 16-bit autocast (its
        # last LayerNorm may still hand back float32 values of bf16 precision)
        dtype = np.float16 if torch.is_autocast_enabled(torch.device(device).type) else np.float32
        for start in range(0, len(slices_zyx), batch_size):
            batch = model_input(slices_zyx[start : start + batch_size], model=model, device=device)
            features = model.image_encoder(batch)
            out.append(features.float().cpu().numpy().astype(dtype))
    return np.concatenate(out) if out else np.zeros(shape, dtype=dtype)
