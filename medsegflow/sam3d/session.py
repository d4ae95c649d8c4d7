"""A SAM-Med3D crop's image embedding, computed once, and the decoder calls on it.

Follows uni-medical/SAM-Med3D ``utils/infer_utils.py@7cead583`` (``sam_model_infer``): the
crop is encoded once (``model.image_encoder``); each decoder call takes the points so far
and the previous low-resolution logits as the mask prompt, ``multimask_output=False``,
and the logits are upsampled trilinearly (``align_corners=False``) to the crop. The
precision defaults to float32, as the official script runs (``precision``:
:mod:`medsegflow.precision`). torch is imported inside.
Shared by :mod:`medsegflow.sam3d.infer` (the interactive loop) and
:mod:`medsegflow.sam3d.windows` (sliding crops).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


class CropSession:
    """A crop's image embedding, computed once, and the decoder calls on it."""

    def __init__(
        self, model: Any, crop: np.ndarray, *, device: str | None = None, precision: str = "fp32"
    ) -> None:
        import torch

        from medsegflow.models.sam_loader import autocast, select_device

        self.model = model
        self.device = select_device(device)
        self.precision = precision
        self.size = int(crop.shape[0])
        self._autocast = autocast
        model.to(self.device).eval()
        tensor = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))[None, None]
        with torch.inference_mode(), autocast(self.device, precision):
            self.embedding = model.image_encoder(tensor.to(self.device))

    def empty_logits(self) -> torch.Tensor:
        """The mask prompt before the first click: zeros ``(1, 1, s/4, s/4, s/4)``."""
        import torch

        side = self.size // 4
        return torch.zeros((1, 1, side, side, side), device=self.device)

    def decode(
        self, points: np.ndarray, labels: np.ndarray, mask_logits: torch.Tensor
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Low-res logits ``(1, 1, s/4, s/4, s/4)`` float32 and the crop's probability
        float32 ``(s, s, s)`` for crop-frame ``points`` ``(N, 3)`` with ``labels`` ``(N,)``."""
        import torch
        import torch.nn.functional as F

        model = self.model
        coords = torch.as_tensor(np.asarray(points, dtype=np.float32)[None], device=self.device)
        tags = torch.as_tensor(np.asarray(labels, dtype=np.int64)[None], device=self.device)
        with torch.inference_mode(), self._autocast(self.device, self.precision):
            sparse, dense = model.prompt_encoder(
                points=[coords, tags], boxes=None, masks=mask_logits
            )
            low_res, _ = model.mask_decoder(
                image_embeddings=self.embedding,
                image_pe=model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
        low_res = low_res.float()
        logits = F.interpolate(
            low_res, size=(self.size,) * 3, mode="trilinear", align_corners=False
        )
        return low_res, torch.sigmoid(logits)[0, 0].cpu().numpy()
