"""Med-SA's network (``-net sam -mod sam_adpt``): its image encoder and mask decoder, with the
official key names, so that a checkpoint of Med-SA's ``train.py`` loads strictly.

Written here from the behaviour documented for KidsWithTokens/Medical-SAM-Adapter @ 4dcdc63
(``models/sam/build_sam.py``, ``models/ImageEncoder/vit/adapter_block.py``,
``models/sam/modeling/*``) and checked against golden outputs of that code
(``tests/conformance/test_conformance_medsa.py``). Where it differs from segment_anything:

Image encoder (:class:`MedsaImageEncoder`):

- ``pos_embed`` has its own grid (``pos_embed_grid``; ``1024 // patch_size`` = 64 in the
  official builder, whatever ``img_size``); when it is not the token grid it is resized to
  it with bicubic interpolation (``align_corners=False``) on every forward.
- Every block is an :class:`AdapterBlock`: a window block pads the token grid and splits it
  into windows *before* ``norm1`` (padding tokens enter the attention as ``norm1(0)``, the
  LayerNorm bias); the attention's relative-position tables are ``attn.rel_h`` /
  ``attn.rel_w``; ``Space_Adapter`` (with skip) adapts the attention output before the
  windows are merged; then ``x + mlp(norm2(x)) + scale * MLP_Adapter(norm2(x))``
  (``MLP_Adapter`` without skip). ``Depth_Adapter`` is the 3D branch (``-thd``): held (its
  weights are in every checkpoint), not used on 2D images.

Mask decoder (:class:`MedsaMaskDecoder`): segment_anything's, except

- the two-way blocks' self-attention (:class:`MedsaTwoWayBlock`): the first layer (no
  positional encoding) adds a residual (``q = q + attn(q, q, q)``; SAM replaces the
  queries); later layers add the query positional encoding to the queries for good and
  attend with ``q = k = v = queries + pe``, adding the residual to ``queries + pe``;
- the token MLP is ``mlp.layers.0.0`` (Linear + ReLU) and ``mlp.fc`` (SAM: ``lin1``/``lin2``);
- the output is always mask token 0 (the ``multimask_output`` flag is ignored).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d, MLPBlock
from segment_anything.modeling.image_encoder import (
    PatchEmbed,
    add_decomposed_rel_pos,
    window_partition,
    window_unpartition,
)
from segment_anything.modeling.mask_decoder import MaskDecoder
from segment_anything.modeling.transformer import Attention, TwoWayTransformer
from torch import nn

from medsegflow.models.sam_adapters import Adapter, adapter_hidden

# segment_anything key -> Med-SA key (a SAM base file carries the former)
SAM_TO_MEDSA_KEYS = (
    (".attn.rel_pos_h", ".attn.rel_h"),
    (".attn.rel_pos_w", ".attn.rel_w"),
    (".mlp.lin1.", ".mlp.layers.0.0."),
    (".mlp.lin2.", ".mlp.fc."),
)


class MedsaAttention(nn.Module):
    """Multi-head self-attention with decomposed relative positions (``rel_h``, ``rel_w``:
    ``(2 * size - 1, head_dim)``) over a ``(B, H, W, C)`` token grid."""

    def __init__(self, dim: int, num_heads: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        head_dim = dim // num_heads
        self.num_heads, self.scale = num_heads, head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
        self.rel_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, h * w, -1).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = add_decomposed_rel_pos(attn, q, self.rel_h, self.rel_w, (h, w), (h, w))
        out = (attn.softmax(dim=-1) @ v).view(b, self.num_heads, h, w, -1)
        return self.proj(out.permute(0, 2, 3, 1, 4).reshape(b, h, w, -1))


class AdapterBlock(nn.Module):
    """Med-SA's encoder block (module docstring). ``window_size`` 0 = global attention over
    the ``grid x grid`` tokens."""

    def __init__(self, spec: Mapping[str, Any], *, window_size: int, grid: int) -> None:
        super().__init__()
        dim = int(spec["embed_dim"])
        hidden = adapter_hidden(dim, float(spec["adapter_ratio"]))
        act = str(spec["adapter_activation"])
        self.window_size = int(window_size)
        size = self.window_size or grid
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MedsaAttention(dim, int(spec["num_heads"]), (size, size))
        self.Space_Adapter = Adapter(dim, hidden, activation=act, skip=True)
        self.MLP_Adapter = Adapter(dim, hidden, activation=act, skip=False)
        self.Depth_Adapter = Adapter(dim, hidden, activation=act, skip=False)
        self.scale = float(spec["adapter_scale"])
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * float(spec["mlp_ratio"])), nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        height, width = x.shape[1], x.shape[2]
        if self.window_size > 0:
            x, pad_hw = window_partition(x, self.window_size)  # padded before norm1
        x = self.Space_Adapter(self.attn(self.norm1(x)))
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (height, width))
        x = shortcut + x
        xn = self.norm2(x)
        return x + self.mlp(xn) + self.scale * self.MLP_Adapter(xn)


class MedsaImageEncoder(nn.Module):
    """Med-SA's ViT image encoder: ``(B, 3, S, S)`` -> ``(B, out_chans, S / p, S / p)``."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        super().__init__()
        dim, patch = int(spec["embed_dim"]), int(spec["patch_size"])
        self.img_size = int(spec["img_size"])
        grid = self.img_size // patch
        self.patch_embed = PatchEmbed((patch, patch), (patch, patch), in_chans=3, embed_dim=dim)
        pos = int(spec["pos_embed_grid"])
        self.pos_embed = nn.Parameter(torch.zeros(1, pos, pos, dim))
        globals_ = set(spec["global_attn_indexes"])
        self.blocks = nn.ModuleList(
            AdapterBlock(
                spec, window_size=0 if i in globals_ else int(spec["window_size"]), grid=grid
            )
            for i in range(int(spec["depth"]))
        )
        out = int(spec["out_chans"])
        self.neck = nn.Sequential(
            nn.Conv2d(dim, out, kernel_size=1, bias=False),
            LayerNorm2d(out),
            nn.Conv2d(out, out, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, h, w, C)
        pos = self.pos_embed
        if tuple(pos.shape[1:3]) != tuple(x.shape[1:3]):
            pos = F.interpolate(
                pos.permute(0, 3, 1, 2), x.shape[1:3], mode="bicubic", align_corners=False
            ).permute(0, 2, 3, 1)
        x = x + pos
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))


class MedsaTokenMLP(nn.Module):
    """The decoder block's MLP: ``layers.0.0`` (Linear + ReLU), ``fc`` (Linear)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, hidden), nn.ReLU()))
        self.fc = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layers(x))


class MedsaTwoWayBlock(nn.Module):
    """Med-SA's two-way attention block (module docstring); segment_anything's key names
    except the MLP."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, *, first: bool) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, heads, downsample_rate=2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MedsaTokenMLP(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, heads, downsample_rate=2)
        self.skip_first_layer_pe = bool(first)

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.skip_first_layer_pe:
            queries = queries + query_pe  # kept: q, k and v all carry the encoding
        queries = self.norm1(queries + self.self_attn(q=queries, k=queries, v=queries))
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q=q, k=k, v=keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(q=k, k=q, v=queries))
        return queries, keys


class MedsaMaskDecoder(MaskDecoder):
    """segment_anything's mask decoder on Med-SA's two-way blocks; always mask token 0."""

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        masks, iou = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        return masks[:, :1], iou[:, :1]


def medsa_mask_decoder(spec: Mapping[str, Any]) -> MedsaMaskDecoder:
    """Med-SA's mask decoder for ``spec`` (SAM's hyper-parameters)."""
    dim, depth = int(spec["out_chans"]), int(spec["decoder_depth"])
    heads, mlp_dim = int(spec["decoder_num_heads"]), int(spec["decoder_mlp_dim"])
    transformer = TwoWayTransformer(
        depth=depth, embedding_dim=dim, num_heads=heads, mlp_dim=mlp_dim
    )
    transformer.layers = nn.ModuleList(
        MedsaTwoWayBlock(dim, heads, mlp_dim, first=i == 0) for i in range(depth)
    )
    return MedsaMaskDecoder(
        num_multimask_outputs=int(spec["mask_outputs"]),
        transformer=transformer,
        transformer_dim=dim,
        iou_head_depth=3,
        iou_head_hidden_dim=int(spec["iou_head_hidden_dim"]),
    )


def medsa_state_from_sam(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A segment_anything state dict with Med-SA's key names (``rel_h``/``rel_w``,
    ``mlp.layers.0.0``/``mlp.fc``); other keys unchanged."""
    renamed = {}
    for key, value in state.items():
        for old, new in SAM_TO_MEDSA_KEYS:
            if old in key and (not old.startswith(".mlp") or key.startswith("mask_decoder.")):
                key = key.replace(old, new)
        renamed[key] = value
    return renamed
