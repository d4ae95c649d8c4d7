"""SAMed's semantic SAM: a SAM whose mask decoder has one output per class plus background.

SAMed (hitachinsk/SAMed ``segment_anything/build_sam.py`` @ f3c4b44) builds the mask
decoder with ``num_multimask_outputs = num_classes`` and keeps every one of its
``num_classes + 1`` mask tokens (``mask_decoder.py``: the output slice is commented out),
so with no prompt the decoder gives ``num_classes + 1`` logits maps, read with a softmax.
From SAM's weights (``load_from``) it drops the mask tokens, hyper-network MLPs and IoU
head (other shapes) and, at another input size (512), interpolates the position
embedding (bilinear) and the global attention blocks' relative positions to the new grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from medsegflow.models.sam_archs import arch_spec, build_sam

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

CLASS_HEAD_KEYS = ("mask_tokens", "output_hypernetworks_mlps", "iou_prediction_head")
"""Mask-decoder tensors whose shape depends on the number of outputs (re-initialised)."""


def semantic_spec(
    base_spec: Mapping[str, Any], *, n_classes: int, image_size: int | None
) -> dict[str, Any]:
    """The base architecture with ``n_classes`` outputs (+ background) and SAMed's input
    recipe at ``image_size`` (None: the base's; TinyViT only takes its own size)."""
    spec = dict(base_spec)
    size = int(image_size or spec["img_size"])
    if spec["encoder"] != "vit" and size != spec["img_size"]:
        raise ValueError(f"the TinyViT encoder takes {spec['img_size']} x {spec['img_size']} only")
    spec.update({"mask_outputs": int(n_classes), "input_recipe": "samed", "img_size": size})
    return arch_spec(spec)


def resize_vit_state(
    state: Mapping[str, torch.Tensor], spec: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """A ViT state dict at another input size: ``pos_embed`` resized bilinearly to the new
    token grid, the global blocks' ``rel_pos_h/w`` to ``2 * grid - 1`` rows (SAMed)."""
    import torch.nn.functional as F

    state = dict(state)
    grid = int(spec["img_size"]) // int(spec["patch_size"])
    pos = state.get("image_encoder.pos_embed")
    if pos is None or pos.shape[1] == grid:
        return state
    pos = F.interpolate(pos.permute(0, 3, 1, 2).float(), (grid, grid), mode="bilinear")
    state["image_encoder.pos_embed"] = pos.permute(0, 2, 3, 1)
    for index in spec["global_attn_indexes"]:
        for axis in ("h", "w"):
            key = f"image_encoder.blocks.{index}.attn.rel_pos_{axis}"
            rel = state[key].float()[None, None]
            rel = F.interpolate(rel, (2 * grid - 1, rel.shape[-1]), mode="bilinear")
            state[key] = rel[0, 0]
    return state


def semantic_from_base(base: Sam, base_spec: Mapping[str, Any], spec: Mapping[str, Any]) -> Sam:
    """A semantic SAM of ``spec`` holding ``base``'s weights, except the class head
    (:data:`CLASS_HEAD_KEYS`, freshly initialised) and with a resized ViT grid."""
    model = build_sam(spec)
    state = (
        resize_vit_state(base.state_dict(), spec) if spec["encoder"] == "vit" else base.state_dict()
    )
    wanted = model.state_dict()
    kept = {
        k: v
        for k, v in state.items()
        if k in wanted
        and not any(part in k for part in CLASS_HEAD_KEYS)
        and tuple(v.shape) == tuple(wanted[k].shape)
    }
    missing = [k for k in wanted if k not in kept and not any(p in k for p in CLASS_HEAD_KEYS)]
    if missing:
        raise ValueError(
            f"base model lacks {len(missing)} tensors of the semantic SAM: {missing[:3]}"
        )
    model.load_state_dict(kept, strict=False)
    return model


def decode_semantic(model: Sam, embeddings: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` embeddings -> ``(B, n_classes + 1, 4h, 4w)`` logits, no prompt."""
    import torch

    sparse, dense = model.prompt_encoder(points=None, boxes=None, masks=None)
    image_pe = model.prompt_encoder.get_dense_pe()
    out = []
    for i in range(embeddings.shape[0]):
        masks, _ = model.mask_decoder.predict_masks(embeddings[i : i + 1], image_pe, sparse, dense)
        out.append(masks)
    return torch.cat(out)
