"""SAM decoding from cached image embeddings: prompt encoder + mask decoder only.

The image encoder ran once per slice in the embedding stage
(:mod:`medsegflow.models.sam_cache`); here every prompt of a slice is decoded against
that slice's cached embedding, as segment_anything's ``SamPredictor.predict`` does after
``set_image``:

- prompts come in the ORIGINAL slice frame (pixels, x = column; ``XYXY`` boxes,
  ``[x, y, label]`` points) and are mapped into the model frame by the model's official
  recipe (``model.input_recipe``, :mod:`medsegflow.models.input_recipes`), the one that
  made the image's embedding (SAM: ``ResizeLongestSide``; MedSAM: ``1024 / W, 1024 / H``;
  LiteMedSAM: ``int(v * 256 / max(H, W))``);
- the decoder's low-resolution logits (``4 x`` the embedding grid: 256 x 256 for the
  official models) go back to the original frame by the same recipe, in its official
  order of operations; foreground is ``logit > model.mask_threshold`` (0.0), which is
  the recipe's ``probability > 0.5``.

Prompts of one slice are decoded in batches of up to ``batch_size`` prompts that share a
shape (box or not, number of points), so no padding point changes a result: each prompt
gives the mask ``SamPredictor`` gives for it alone. torch is imported lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from medsegflow.prompts.clicks import next_click

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam


@dataclass(frozen=True)
class SamPrompt:
    """One decoder prompt in the original slice frame.

    Attributes:
        box_xyxy: float64 ``(4,)`` ``[x_min, y_min, x_max, y_max]`` or None.
        points_xyl: ``(N, 3)`` ``[x, y, label]`` rows (label 1 positive, 0 negative);
            N may be 0 when there is a box.
    """

    box_xyxy: np.ndarray | None
    points_xyl: np.ndarray

    @property
    def signature(self) -> tuple[bool, int]:
        """Prompts with equal signatures are batched together."""
        return self.box_xyxy is not None, len(self.points_xyl)


@dataclass
class Decoded:
    """Decoder output for ``P`` prompts of one slice, for the chosen mask of each (or for
    all 3 outputs of each, ``3 P`` rows, with ``decode_prompts(..., all_masks=True)``).

    Attributes:
        logits_pyx: float32 ``(P, H, W)`` mask logits in the original slice frame.
        low_res_pchw: float32 ``(P, 1, 4h, 4w)`` low-resolution logits (model frame), the
            ``mask_input`` of a next round.
        iou_p: float32 ``(P,)`` predicted IoU of the chosen mask.
        threshold: the model's ``mask_threshold``; foreground is ``logits > threshold``.
    """

    logits_pyx: np.ndarray
    low_res_pchw: np.ndarray
    iou_p: np.ndarray
    threshold: float

    @property
    def masks_pyx(self) -> np.ndarray:
        """bool ``(P, H, W)`` foreground masks."""
        return self.logits_pyx > self.threshold

    @property
    def probs_pyx(self) -> np.ndarray:
        """float32 ``(P, H, W)`` foreground probabilities (sigmoid of the logits)."""
        return (0.5 * (1.0 + np.tanh(0.5 * self.logits_pyx))).astype(np.float32)


def _decode_batch(
    model: Sam,
    embedding: torch.Tensor,
    prompts: Sequence[SamPrompt],
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
    prompts: Sequence[SamPrompt],
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


def refine_with_clicks(
    model: Sam,
    embedding_chw: np.ndarray,
    prompts: Sequence[SamPrompt],
    *,
    first: Decoded,
    targets_pyx: np.ndarray,
    rounds: int,
    mode: str,
    rng: np.random.Generator,
    mask_input: bool = True,
    sizes: tuple[tuple[int, int], tuple[int, int]],
    batch_size: int = 64,
) -> tuple[Decoded, list[SamPrompt]]:
    """``rounds`` rounds of simulated corrective clicks after the first decoding.

    Each round, every prompt whose mask still differs from its target gets one click
    (:func:`~medsegflow.prompts.clicks.next_click`: the largest error region, positive
    for a miss, negative for a false positive) appended to its points, and is decoded
    again with a single output mask (SAM's output for unambiguous, multi-prompt input)
    and, with ``mask_input``, its previous chosen low-res logits as SAM's mask input. A
    prompt whose mask matches its target keeps it.

    Args:
        first: the round-0 decoding of ``prompts``.
        targets_pyx: bool ``(P, H, W)`` reference mask of each prompt's object (oracle).
        mode: ``"center"`` or ``"random"`` click placement.
        rng: draws of the ``"random"`` mode.
        mask_input: feed the previous low-res logits back (SAM's protocol); False decodes
            the accumulated points (and box) alone.
        sizes: ``(original_size, input_size)``.

    Returns:
        The final :class:`Decoded` and the prompts with their clicks added.
    """
    current = Decoded(
        first.logits_pyx.copy(), first.low_res_pchw.copy(), first.iou_p.copy(), first.threshold
    )
    prompts = list(prompts)
    for _ in range(rounds):
        active = []
        masks_pyx = current.masks_pyx
        for i, prompt in enumerate(prompts):
            click = next_click(masks_pyx[i], targets_pyx[i], mode=mode, rng=rng)
            if click is not None:
                points = np.concatenate([np.asarray(prompt.points_xyl).reshape(-1, 3), click[None]])
                prompts[i] = SamPrompt(prompt.box_xyxy, points)
                active.append(i)
        if not active:
            break
        again = decode_prompts(
            model,
            embedding_chw,
            [prompts[i] for i in active],
            original_size=sizes[0],
            input_size=sizes[1],
            multimask=False,
            batch_size=batch_size,
            mask_inputs=current.low_res_pchw[active] if mask_input else None,
        )
        current.logits_pyx[active] = again.logits_pyx
        current.low_res_pchw[active] = again.low_res_pchw
        current.iou_p[active] = again.iou_p
    return current, prompts
