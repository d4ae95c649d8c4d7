"""The loaded CLIP model that the text-driven stages share (saliency, fine-tuning).

Every backend (BiomedCLIP hub folder, OpenAI CLIP file, the demo CLIP, checkpoints
fine-tuned by this pipeline) is loaded through ``open_clip`` into a :class:`ClipBundle`,
so the M2IB saliency and the DHN-NCE trainer see one interface whatever the backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass
class ClipBundle:
    """A CLIP model ready for inference or fine-tuning.

    Attributes:
        model: the ``open_clip`` model (``CLIP`` or ``CustomTextCLIP``); ``encode_image``
            takes ``(B, 3, S, S)`` float tensors normalised with ``mean``/``std``,
            ``encode_text`` takes the tokenizer's output.
        tokenizer: ``list[str] -> LongTensor (B, context_length)``.
        image_size: ``S``, the square input side of the vision tower.
        mean, std: per-channel RGB normalisation of inputs in [0, 1].
        name: the ``clip_models:`` key (or a description) for logs and errors.
        kind: backend kind: ``biomedclip``, ``openai``, ``demo`` or ``finetuned``.
    """

    model: Any
    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str = "clip"
    kind: str = "demo"

    def image_tensor(self, images_u8: Sequence[np.ndarray]) -> torch.Tensor:
        """``(B, 3, S, S)`` float32 input from 2D uint8 grey (H, W) or RGB (H, W, 3) images.

        Each image is resized (bicubic, no crop: the whole field of view is kept, as the
        saliency maps must cover the whole image) to ``S x S``, scaled to [0, 1] and
        normalised.
        """
        import numpy as np
        import torch
        import torch.nn.functional as F

        batch = []
        for image in images_u8:
            array = np.asarray(image)
            if array.dtype != np.uint8:
                raise ValueError(f"{self.name}: images must be uint8, got {array.dtype}")
            if array.ndim == 2:
                array = np.repeat(array[..., None], 3, axis=-1)
            if array.ndim != 3 or array.shape[-1] != 3:
                raise ValueError(f"{self.name}: image shape {array.shape} is not (H, W[, 3])")
            tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 255
            tensor = F.interpolate(
                tensor[None],
                size=(self.image_size, self.image_size),
                mode="bicubic",
                align_corners=False,
            )[0].clamp(0, 1)
            batch.append(tensor)
        x = torch.stack(batch)
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std
