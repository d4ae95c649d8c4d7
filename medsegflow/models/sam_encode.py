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
    """``(B, 3, S, S)`` float32 encoder input of ``B`` grey ``(H, W)`` uint8 slices, each by
    ``model.input_recipe.prepare_image``, on ``device``."""
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
        slices_zyx: ``(N, H, W)`` uint8 slices.
        precision: the encoder's autocast (:func:`~medsegflow.models.sam_loader.autocast`).

    Returns:
        ``(N, C, h, w)`` float16 (``C = model.prompt_encoder.embed_dim``, ``(h, w) =
        model.prompt_encoder.image_embedding_size``; 256 x 64 x 64 for official models).
    """
    import torch

    out = [
        np.zeros(
            (0, model.prompt_encoder.embed_dim, *model.prompt_encoder.image_embedding_size),
            dtype=np.float16,
        )
    ]
    with torch.inference_mode(), autocast(device, precision):
        for start in range(0, len(slices_zyx), batch_size):
            batch = model_input(slices_zyx[start : start + batch_size], model=model, device=device)
            features = model.image_encoder(batch)
            out.append(features.float().cpu().numpy().astype(np.float16))
    return np.concatenate(out)
