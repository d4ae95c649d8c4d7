"""The ``sam`` family's promptable model: SAM, MedSAM, LiteMedSAM, the SAMs trained or
imported here (SAMed, Med-SA) behind :class:`~medsegflow.promptable.interface.PromptableModel`.

It wraps the family's own code and adds none: the official loader
(:func:`medsegflow.models.sam_loader.load_sam_model`), the model's official input recipe
(``net.input_recipe``, :mod:`medsegflow.models.input_recipes`), the encoder
(:func:`medsegflow.models.sam_encode.encode_slices`) and the decoder
(:func:`decode_prompts`, here). Its cached features are ``{"embeddings": (N, C, h, w)}``,
the image encoder's output. torch and segment_anything are imported lazily.

Decoding (:func:`decode_prompts`) runs the prompt encoder and mask decoder only: the
image encoder ran once per slice in the embedding stage, and every prompt of a slice is
decoded against that slice's cached embedding, as segment_anything's
``SamPredictor.predict`` does after ``set_image``:

- prompts come in the ORIGINAL slice frame (pixels, x = column; ``XYXY`` boxes,
  ``[x, y, label]`` points) and are mapped into the model frame by the model's official
  recipe (``net.input_recipe``, :mod:`medsegflow.models.input_recipes`), the one that
  made the image's embedding (SAM: ``ResizeLongestSide``; MedSAM: ``1024 / W, 1024 / H``;
  LiteMedSAM: ``int(v * 256 / max(H, W))``);
- the decoder's low-resolution logits (``4 x`` the embedding grid: 256 x 256 for the
  official models) go back to the original frame by the same recipe, in its official
  order of operations; foreground is ``logit > net.mask_threshold`` (0.0), which is
  the recipe's ``probability > 0.5``.

Prompts of one slice are decoded in batches of up to ``batch_size`` prompts that share a
shape (box or not, number of points), so no padding point changes a result: each prompt
gives the mask ``SamPredictor`` gives for it alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from medsegflow.promptable.interface import Decoded, Prompt2D, PromptableModel, SliceFeatures

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

EMBEDDINGS = "embeddings"
"""The name of SAM's one cached feature array (the image encoder's output)."""


class SamPromptable(PromptableModel):
    """A SAM-architecture network (``net``) on ``device``.

    Attributes:
        net: the ``segment_anything`` :class:`Sam` (with its ``input_recipe``).
        device: where it runs.
        arch: its ``sam_models`` arch (a name or a mapping of hyper-parameters).
        checkpoint: the weights it was loaded from.
        precision: what the encoder and decoder run in (``fp32``/``bf16``/``fp16``).
        requested: the precision asked for (``auto`` resolved per device to ``precision``).
    """

    kind: ClassVar[str] = "sam"
    dims: ClassVar[int] = 2
    native_prompts: ClassVar[frozenset[str]] = frozenset({"box", "points", "logits"})

    def __init__(
        self,
        net: Sam,
        device: torch.device,
        *,
        arch: str | Mapping[str, Any],
        checkpoint: str | os.PathLike,
        precision: str = "auto",
    ) -> None:
        from medsegflow.precision import resolve_precision

        self.net = net
        self.device = device
        self.arch = arch
        self.checkpoint = str(checkpoint)
        self.requested = precision
        self.precision = resolve_precision(precision, device)
        self.mask_threshold = float(net.mask_threshold)

    @classmethod
    def build(
        cls,
        spec: Mapping[str, Any],
        checkpoint: str | os.PathLike | None,
        *,
        device: str | None = None,
        precision: str = "auto",
        encoder: bool = True,
    ) -> SamPromptable:
        """The network of ``spec["arch"]`` (resolved: a base's arch filled in) with the
        official-format state dict at ``checkpoint``; ``encoder=False`` leaves the image
        encoder out (decoding cached embeddings)."""
        from medsegflow.errors import ConfigError
        from medsegflow.models.sam_loader import load_sam_model

        if checkpoint is None:
            raise ConfigError("sam: a SAM model needs a checkpoint")
        net, chosen = load_sam_model(
            checkpoint, arch=spec["arch"], device=device, image_encoder=encoder
        )
        return cls(net, chosen, arch=spec["arch"], checkpoint=checkpoint, precision=precision)

    @property
    def image_size(self) -> int:
        """The side of the square encoder input."""
        return int(self.net.image_encoder.img_size)

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.kind,
            "arch": self.arch,
            "checkpoint": self.checkpoint,
            "image_size": self.image_size,
            "precision": self.precision,
            "input_recipe": self.net.input_recipe.name,
        }

    def count_parameters(self) -> int | None:
        """Parameters of the checkpoint's state dict (the cost table's count)."""
        from medsegflow.models.state_dicts import count_parameters

        return count_parameters(Path(self.checkpoint))

    def encode_slices(self, slices: np.ndarray, *, batch_size: int = 1) -> SliceFeatures:
        from medsegflow.models.sam_encode import encode_slices

        embeddings = encode_slices(
            slices,
            model=self.net,
            device=self.device,
            batch_size=batch_size,
            precision=self.requested,
        )
        original_size = (int(slices.shape[1]), int(slices.shape[2]))
        return SliceFeatures(
            {EMBEDDINGS: embeddings},
            original_size=original_size,
            input_size=self.net.input_recipe.input_size(original_size),
            image_size=self.image_size,
        )

    def decode(
        self,
        features: Mapping[str, np.ndarray],
        prompts: Sequence[Prompt2D],
        *,
        original_size: tuple[int, int],
        input_size: tuple[int, int],
        multimask: bool,
        mask_inputs: np.ndarray | None = None,
        all_masks: bool = False,
        batch_size: int = 64,
    ) -> Decoded:
        """:func:`decode_prompts` of the slice's embedding,
        under the autocast of :attr:`precision` (the cache encoder's)."""
        from medsegflow.models.sam_loader import autocast

        with autocast(self.device, self.precision):
            return decode_prompts(
                self.net,
                features[EMBEDDINGS],
                prompts,
                original_size=original_size,
                input_size=input_size,
                multimask=multimask,
                batch_size=batch_size,
                mask_inputs=mask_inputs,
                all_masks=all_masks,
            )

    def propagation_box_rule(self) -> str:
        """``resized`` for LiteMedSAM's recipe (its official 3D protocol measures the
        neighbour's box in the 256 frame), ``original`` for the others."""
        return "resized" if self.net.input_recipe.name == "lite_medsam" else "original"

    def box_to_original(self, box_model: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """A box in the original frame that the recipe maps back to exactly ``box_model``.
        LiteMedSAM's recipe truncates (``int(v * S / max(H, W))``): the centre of the model
        pixel, ``(b + 0.5) * max(H, W) / S``; the other recipes scale each axis, inverted."""
        recipe = self.net.input_recipe
        box_model = np.asarray(box_model, dtype=np.float64)
        if recipe.name == "lite_medsam":
            out = (box_model + 0.5) * (max(original_size) / recipe.image_size)
        else:
            scale = recipe.map_boxes(np.ones((1, 4)), original_size)[0]
            out = box_model / scale
        back = recipe.map_boxes(out[None], original_size)[0]
        if not np.allclose(back, box_model, rtol=0, atol=1e-6):
            raise ValueError(
                f"cannot map model-frame box {box_model.tolist()} back ({back.tolist()})"
            )
        return out


def _decode_batch(
    model: Sam,
    embedding: torch.Tensor,
    prompts: Sequence[Prompt2D],
    *,
    sizes: tuple[tuple[int, int], tuple[int, int]],
    multimask: bool,
    mask_input: np.ndarray | None,
    all_masks: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode prompts of one signature; returns (logits, low-res logits, iou) as numpy.

    With ``all_masks`` (and ``multimask``) the rows are every output of every prompt,
    prompt-major (row ``3 * i + j`` is output ``j`` of prompt ``i``).
    """
    import torch

    original_size, input_size = sizes
    device = model.device
    recipe = model.input_recipe
    points = boxes = masks = None
    if prompts[0].box_xyxy is not None:
        box = recipe.map_boxes(np.stack([p.box_xyxy for p in prompts]), original_size)
        boxes = torch.as_tensor(box, dtype=torch.float, device=device)
    if len(prompts[0].points_xyl):
        xyl = np.stack([np.asarray(p.points_xyl, dtype=np.float64) for p in prompts])
        coords = recipe.map_points(xyl[:, :, :2], original_size)
        points = (
            torch.as_tensor(coords, dtype=torch.float, device=device),
            torch.as_tensor(xyl[:, :, 2], dtype=torch.int, device=device),
        )
    if mask_input is not None:
        masks = torch.as_tensor(mask_input, dtype=torch.float, device=device)
    sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=masks)
    low_res, iou = model.mask_decoder(
        image_embeddings=embedding,
        image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )
    if all_masks:
        chosen = low_res.reshape(-1, 1, *low_res.shape[-2:]).float()
        chosen_iou = iou.reshape(-1)
    else:
        choice = iou.argmax(dim=1) if multimask else torch.zeros(len(prompts), dtype=torch.long)
        rows = torch.arange(len(prompts), device=low_res.device)
        chosen = low_res[rows, choice.to(low_res.device)][:, None].float()
        chosen_iou = iou[rows, choice.to(iou.device)]
    _, logits = recipe.postprocess(chosen, original_size=original_size, input_size=input_size)
    return logits.float().cpu().numpy(), chosen.cpu().numpy(), chosen_iou.float().cpu().numpy()


def decode_prompts(
    model: Sam,
    embedding_chw: np.ndarray,
    prompts: Sequence[Prompt2D],
    *,
    original_size: tuple[int, int],
    input_size: tuple[int, int],
    multimask: bool,
    batch_size: int = 64,
    mask_inputs: np.ndarray | None = None,
    all_masks: bool = False,
) -> Decoded:
    """Decode every prompt of one slice against its cached image embedding.

    Args:
        model: a SAM whose image encoder made ``embedding_chw``.
        embedding_chw: ``(C, h, w)`` image embedding (float32, or float16 after bf16).
        prompts: ``P`` prompts in the original slice frame.
        original_size: ``(H, W)`` of the slice.
        input_size: ``(h, w)`` of the resized slice before padding (from the cache).
        multimask: ask for 3 masks per prompt and keep the one with the highest predicted
            IoU; False keeps the single output (mask 0).
        batch_size: most prompts per decoder call.
        mask_inputs: optional float ``(P, 1, 4h, 4w)`` low-res logits of a previous round.
        all_masks: with ``multimask``, keep all 3 outputs of every prompt instead of the
            best one (SAM's automatic mask generator does): ``3 P`` rows, row ``3 i + j``
            is output ``j`` of prompt ``i``.

    Returns:
        :class:`Decoded` for the ``P`` prompts (``3 P`` rows with ``all_masks``), in order.
    """
    import torch

    if not prompts:
        raise ValueError("decode_prompts: no prompts")
    if all_masks and not multimask:
        raise ValueError("decode_prompts: all_masks needs multimask=True")
    per_prompt = 3 if all_masks else 1
    rows = len(prompts) * per_prompt
    height, width = (int(s) for s in original_size)
    grid = 4 * np.array(model.prompt_encoder.image_embedding_size)
    out = Decoded(
        np.zeros((rows, height, width), np.float32),
        np.zeros((rows, 1, *grid), np.float32),
        np.zeros(rows, np.float32),
        float(model.mask_threshold),
    )
    groups: dict[tuple[bool, int], list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(prompt.signature, []).append(i)
    with torch.inference_mode():
        embedding = torch.from_numpy(np.asarray(embedding_chw)).float()[None].to(model.device)
        for members in groups.values():
            for start in range(0, len(members), batch_size):
                idx = members[start : start + batch_size]
                logits, low_res, iou = _decode_batch(
                    model,
                    embedding,
                    [prompts[i] for i in idx],
                    sizes=((height, width), tuple(int(s) for s in input_size)),
                    multimask=multimask,
                    mask_input=None if mask_inputs is None else mask_inputs[idx],
                    all_masks=all_masks,
                )
                out_rows = [per_prompt * i + j for i in idx for j in range(per_prompt)]
                out.logits_pyx[out_rows], out.low_res_pchw[out_rows] = logits, low_res
                out.iou_p[out_rows] = iou
    return out
