"""LoRA for SAM-family networks (SAMed): low-rank updates of chosen output rows of linear layers.

SAMed (Zhang & Liu 2023, hitachinsk/SAMed ``sam_lora_image_encoder.py``) adds, to the fused
``qkv`` projection of every image-encoder attention block, a rank-``r`` update of the query
rows and one of the value rows (not the keys): ``q += B_q A_q x``, ``v += B_v A_v x``, with
``A`` Kaiming-uniform and ``B`` zero at the start (so the adapted network starts as the
base network) and no scaling. SAMed_s (``sam_lora_image_encoder_mask_decoder.py``) also
adapts the ``q_proj`` and ``v_proj`` of every attention of the mask decoder's transformer.

Why not ``peft``: peft's LoRA wraps whole ``nn.Linear`` modules, so on SAM's fused ``qkv``
it would adapt the keys too and could not hold separate query and value factors; SAMed's
checkpoints store exactly those (``w_a_000`` = block 0 query, ``w_a_001`` = block 0 value,
...). :class:`LoRALinear` is a ``nn.Linear`` (its ``weight`` and ``bias`` keep their
state-dict keys, so official weights load unchanged) with one low-rank pair per group of
output rows. It works on the ViT's ``qkv`` (rows ``[0, C)`` and ``[2C, 3C)``) and on
TinyViT's (queries and values interleaved per head), and :func:`merge_lora` folds the
updates into plain ``nn.Linear`` weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

LORA_TARGETS = ("encoder_qv", "decoder_qv")
"""``encoder_qv``: query and value rows of every image-encoder attention (SAMed);
``decoder_qv``: ``q_proj`` and ``v_proj`` of every mask-decoder attention (SAMed_s)."""


class LowRank(nn.Module):
    """``B A x``: ``a`` (in -> rank, Kaiming-uniform), ``b`` (rank -> out, zero)."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.a = nn.Linear(in_features, rank, bias=False)
        self.b = nn.Linear(rank, out_features, bias=False)
        if not self.a.weight.is_meta:
            nn.init.kaiming_uniform_(self.a.weight, a=math.sqrt(5))
            nn.init.zeros_(self.b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


class LoRALinear(nn.Linear):
    """A linear layer plus low-rank updates of groups of its output rows.

    Attributes:
        lora: ``{group: LowRank}``; group ``g`` updates output rows ``rows_<g>``.
        scaling: ``alpha / rank`` (SAMed: 1).
    """

    def __init__(
        self, base: nn.Linear, rows: Mapping[str, torch.Tensor], *, rank: int, alpha: float
    ) -> None:
        super().__init__(
            base.in_features, base.out_features, bias=base.bias is not None, device="meta"
        )
        self.weight = base.weight
        self.bias = base.bias
        self.scaling = float(alpha) / float(rank)
        self.lora = nn.ModuleDict()
        for group, index in rows.items():
            index = torch.as_tensor(index, dtype=torch.long, device="cpu")
            self.register_buffer(f"rows_{group}", index, persistent=False)
            self.lora[group] = LowRank(base.in_features, int(index.numel()), rank).to(
                device=base.weight.device
            )

    def groups(self) -> Iterator[tuple[torch.Tensor, LowRank]]:
        for group, pair in self.lora.items():
            yield getattr(self, f"rows_{group}"), pair

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.linear(x, self.weight, self.bias)
        for index, pair in self.groups():
            out = out.index_add(-1, index.to(out.device), pair(x).to(out.dtype), alpha=self.scaling)
        return out

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the updates folded into its weight."""
        plain = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        plain = plain.to(device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            weight = self.weight.detach().clone()
            for index, pair in self.groups():
                weight[index] += self.scaling * (pair.b.weight @ pair.a.weight)
            plain.weight.copy_(weight)
            if self.bias is not None:
                plain.bias.copy_(self.bias)
        return plain


def _qkv_rows(attn: nn.Module, out_features: int) -> dict[str, torch.Tensor]:
    """Output rows of the query and value in a fused ``qkv`` layer.

    SAM's ViT: ``[q | k | v]``, ``C`` rows each. TinyViT (LiteMedSAM): per head
    ``[q (key_dim) | k (key_dim) | v (d)]``.
    """
    if hasattr(attn, "key_dim"):  # TinyViT Attention
        key_dim, d, heads = int(attn.key_dim), int(attn.d), int(attn.num_heads)
        stride = 2 * key_dim + d
        q = [h * stride + i for h in range(heads) for i in range(key_dim)]
        v = [h * stride + 2 * key_dim + i for h in range(heads) for i in range(d)]
        return {"q": torch.tensor(q, device="cpu"), "v": torch.tensor(v, device="cpu")}
    dim = out_features // 3
    cpu = torch.device("cpu")
    return {"q": torch.arange(0, dim, device=cpu), "v": torch.arange(2 * dim, 3 * dim, device=cpu)}


def encoder_attentions(model: Sam) -> list[nn.Module]:
    """Every attention module of the image encoder, in block order (ViT or TinyViT)."""
    encoder = model.image_encoder
    if hasattr(encoder, "blocks"):
        return [block.attn for block in encoder.blocks]
    return [
        block.attn
        for layer in encoder.layers
        for block in getattr(layer, "blocks", [])
        if hasattr(block, "attn")
    ]


def encoder_blocks(model: Sam) -> list[nn.Module]:
    """Every transformer block of the image encoder (ViT ``Block`` or ``TinyViTBlock``)."""
    encoder = model.image_encoder
    if hasattr(encoder, "blocks"):
        return list(encoder.blocks)
    return [
        block
        for layer in encoder.layers
        for block in getattr(layer, "blocks", [])
        if hasattr(block, "attn")
    ]


def decoder_attentions(model: Sam) -> list[nn.Module]:
    """The mask decoder's attentions in SAMed_s order: per layer self, token-to-image,
    image-to-token; then the final token-to-image."""
    transformer = model.mask_decoder.transformer
    found = []
    for layer in transformer.layers:
        found += [layer.self_attn, layer.cross_attn_token_to_image, layer.cross_attn_image_to_token]
    return [*found, transformer.final_attn_token_to_image]


def add_lora(model: Sam, settings: Mapping[str, Any]) -> None:
    """Insert LoRA (card entry ``{"kind": "lora", "rank", "alpha", "targets"}``, and
    ``layers``: the image-encoder blocks that get it, SAMed's ``lora_layer``; absent or
    None: every block) in place."""
    rank, alpha = int(settings["rank"]), float(settings.get("alpha", settings["rank"]))
    targets = list(settings.get("targets", ["encoder_qv"]))
    unknown = [t for t in targets if t not in LORA_TARGETS]
    if unknown or rank < 1:
        raise ValueError(f"lora: rank {rank}, targets {targets}; known targets {LORA_TARGETS}")
    if "encoder_qv" in targets:
        attentions = encoder_attentions(model)
        layers = settings.get("layers")
        chosen = range(len(attentions)) if layers is None else sorted({int(i) for i in layers})
        if any(not 0 <= i < len(attentions) for i in chosen):
            raise ValueError(
                f"lora: layers {list(chosen)}; the encoder has blocks 0..{len(attentions) - 1}"
            )
        for index in chosen:
            attn = attentions[index]
            rows = _qkv_rows(attn, attn.qkv.out_features)
            attn.qkv = LoRALinear(attn.qkv, rows, rank=rank, alpha=alpha)
    if "decoder_qv" in targets:
        for attn in decoder_attentions(model):
            for name in ("q_proj", "v_proj"):
                linear = getattr(attn, name)
                rows = {"w": torch.arange(linear.out_features, device="cpu")}
                setattr(attn, name, LoRALinear(linear, rows, rank=rank, alpha=alpha))


def lora_layers(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` of ``model`` by its merged ``nn.Linear`` (in
    place): the state dict is then the base architecture's plain layout."""
    for name, layer in lora_layers(model):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.merged())
    return model
