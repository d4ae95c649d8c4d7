"""SAM-family image-encoder input and the encoding of grey slices.

A slice becomes encoder input by its model's official recipe (``model.input_recipe``,
:mod:`medsegflow.models.input_recipes`): SAM's longest-side resize, pixel normalisation and
padding; MedSAM's square resize and min-max; LiteMedSAM's area resize, min-max and
padding. Under a 16-bit autocast the encoder runs with each convolution's batch norm
folded into it (:func:`inference_encoder`); in float32 it runs as loaded, as the official
code does (the fold moves float32 rounding enough to flip a pixel of LiteMedSAM's 3D
conformance case, whose propagation then differs). torch is imported lazily.
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


def inference_encoder(encoder: torch.nn.Module) -> torch.nn.Module:
    """The encoder for inference: an eval-mode encoder with ``nn.Sequential`` blocks in
    which a ``Conv2d`` is followed by a ``BatchNorm2d`` (TinyViT's ``Conv2d_BN``) comes back
    as a copy with each such batch norm folded into its convolution
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``); any other encoder comes back as it is.

    The same function with one operation fewer per such layer (the timings are in
    ``docs/benchmarks.md``; ``tests/unit/test_sam_encode.py`` checks the outputs). The
    model's own modules, state dict and checkpoint stay unchanged."""
    import copy
    import itertools

    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def pairs(module: nn.Module) -> list[tuple[nn.Module, str, str]]:
        found = []
        for parent in module.modules():
            if not isinstance(parent, nn.Sequential):  # there children run in their order
                continue
            children = list(parent.named_children())
            for (a, first), (b, second) in itertools.pairwise(children):
                if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d):
                    found.append((parent, a, b))
        return found

    if encoder.training or not pairs(encoder):
        return encoder
    fused = copy.deepcopy(encoder)
    for parent, conv, norm in pairs(fused):
        setattr(parent, conv, fuse_conv_bn_eval(getattr(parent, conv), getattr(parent, norm)))
        setattr(parent, norm, nn.Identity())
    return fused


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
        sixteen_bit = torch.is_autocast_enabled(torch.device(device).type)
        dtype = np.float16 if sixteen_bit else np.float32
        # folded batch norms only in 16 bits: in float32 the encoder runs as the official
        # code's does, and the cache holds exactly its values
        encoder = inference_encoder(model.image_encoder) if sixteen_bit else model.image_encoder
        for start in range(0, len(slices_zyx), batch_size):
            batch = model_input(slices_zyx[start : start + batch_size], model=model, device=device)
            features = encoder(batch)
            out.append(features.float().cpu().numpy().astype(dtype))
    return np.concatenate(out) if out else np.zeros(shape, dtype=dtype)
