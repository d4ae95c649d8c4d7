"""The transformer blocks of a CLIP tower that M2IB places its bottleneck after.

open_clip models come with four kinds of towers, each holding its blocks elsewhere:

============================  ======================================  ==================
tower                         blocks                                  layout
============================  ======================================  ==================
open_clip VisionTransformer   ``model.visual.transformer.resblocks``  ``batch_first`` of
  (OpenAI CLIP, demo CLIP)                                            the transformer
timm ViT (BiomedCLIP)         ``model.visual.trunk.blocks``           (B, N, D)
Hugging Face BERT             ``model.text.transformer.encoder.layer``  (B, L, D); older
  (BiomedCLIP, demo CLIP)                                             versions: tuples
open_clip text transformer    ``model.transformer.resblocks`` (CLIP)  ``batch_first`` of
  (OpenAI CLIP)               ``model.text.transformer.resblocks``    the transformer
                              (CustomTextCLIP)
============================  ======================================  ==================

Layers are **0-based block indices**, as in M2IB's and MedCLIP-SAMv2's code (which pick
the child named ``str(layer)`` of the block list, i.e. the hidden state
``hidden_states[layer + 1]``): ``vlayer: 7`` is the output of the 8th of BiomedCLIP's 12
vision blocks, the value MedCLIP-SAMv2 uses.

When a tower's embedding reads a single token of the last block's output (the class
token of a ViT with ``tok``/``token`` pooling, BERT's ``[CLS]``, CLIP's end-of-text token),
the other tokens of the last block never reach the embedding: a bottleneck there gives a
flat map, so the last block is refused for such towers (:func:`check_layer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medsegflow.errors import ConfigError

VISION, TEXT = "vision", "text"


@dataclass(frozen=True)
class TowerBlocks:
    """The block list of one tower and how to read its outputs.

    Attributes:
        blocks: the ``nn.ModuleList``/``nn.Sequential`` of transformer blocks.
        tower: ``vision`` or ``text``.
        kind: ``open_clip`` (native), ``timm`` or ``hf``.
        batch_first: block outputs are ``(B, N, D)``; else ``(N, B, D)``.
        single_token_pool: the embedding reads one token of the last block's output.
        patch_size: ``(ph, pw)`` pixels per patch of a vision tower (None for text).
    """

    blocks: Any
    tower: str
    kind: str
    batch_first: bool = True
    single_token_pool: bool = True
    patch_size: tuple[int, int] | None = None

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def grid(self, image_size: int) -> tuple[int, int]:
        """``(gh, gw)`` patch grid of a square ``image_size`` input; the tokens before the
        ``gh * gw`` patch tokens are prefix tokens (class, registers)."""
        if self.patch_size is None:
            raise ValueError(f"the {self.tower} tower has no patch grid")
        return image_size // self.patch_size[0], image_size // self.patch_size[1]


def _has(obj: Any, *path: str) -> bool:
    for name in path:
        if not hasattr(obj, name):
            return False
        obj = getattr(obj, name)
    return True


def vision_blocks(model: Any, *, name: str = "clip") -> TowerBlocks:
    """The vision tower's blocks of an open_clip model (``name`` is for messages).

    Raises:
        ConfigError: the vision tower is neither open_clip's ``VisionTransformer`` nor a
            timm ViT (e.g. a ResNet CLIP), which M2IB here does not support.
    """
    visual = getattr(model, "visual", None)
    if _has(visual, "trunk", "blocks"):
        trunk = visual.trunk
        head_pool = _has(visual, "head", "pool")  # open_clip's attention pooling head
        patch = tuple(int(p) for p in trunk.patch_embed.patch_size)
        return TowerBlocks(
            blocks=trunk.blocks,
            tower=VISION,
            kind="timm",
            batch_first=True,
            single_token_pool=getattr(trunk, "global_pool", "token") == "token" and not head_pool,
            patch_size=(patch[0], patch[1]),
        )
    if _has(visual, "transformer", "resblocks"):
        patch = tuple(int(p) for p in visual.patch_size)
        return TowerBlocks(
            blocks=visual.transformer.resblocks,
            tower=VISION,
            kind="open_clip",
            batch_first=bool(getattr(visual.transformer, "batch_first", True)),
            single_token_pool=getattr(visual, "attn_pool", None) is None
            and getattr(visual, "pool_type", "tok") == "tok",
            patch_size=(patch[0], patch[1]),
        )
    raise ConfigError(
        f"clip model {name}: vision tower {type(visual).__name__} has no transformer blocks "
        "for M2IB (supported: open_clip VisionTransformer, timm ViT)"
    )


def text_blocks(model: Any, *, name: str = "clip") -> TowerBlocks:
    """The text tower's blocks of an open_clip model (``name`` is for messages).

    Raises:
        ConfigError: the text tower is neither a Hugging Face BERT-like encoder nor
            open_clip's text transformer.
    """
    text = getattr(model, "text", None)  # CustomTextCLIP
    if _has(text, "transformer", "encoder", "layer"):
        return TowerBlocks(
            blocks=text.transformer.encoder.layer,
            tower=TEXT,
            kind="hf",
            batch_first=True,
            # open_clip's ClsPooler / ClsLastHiddenStatePooler carry the CLS position
            single_token_pool=hasattr(getattr(text, "pooler", None), "cls_token_position"),
        )
    if _has(text, "transformer", "resblocks"):
        transformer, pool = text.transformer, getattr(text, "pool_type", "argmax")
    elif text is None and _has(model, "transformer", "resblocks"):  # CLIP
        transformer, pool = model.transformer, getattr(model, "text_pool_type", "argmax")
    else:
        tower = type(text if text is not None else model).__name__
        raise ConfigError(
            f"clip model {name}: text tower {tower} has no transformer blocks for M2IB "
            "(supported: Hugging Face BERT-like encoders, open_clip text transformer)"
        )
    return TowerBlocks(
        blocks=transformer.resblocks,
        tower=TEXT,
        kind="open_clip",
        batch_first=bool(getattr(transformer, "batch_first", True)),
        single_token_pool=pool != "none",
    )


def check_layer(blocks: TowerBlocks, layer: Any, *, key: str, model_name: str) -> int:
    """``layer`` as an int if it is a usable 0-based block index of ``blocks``.

    Raises:
        ConfigError: naming ``key`` (e.g. ``methods.<m>.saliency.vlayer``) when ``layer`` is
            not an integer in ``0..depth-1``, or is the last block of a tower that pools a
            single token (the map would be flat; see the module docstring).
    """
    depth = blocks.depth
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ConfigError(f"{key}: {layer!r} must be an integer block index")
    if not 0 <= layer < depth:
        raise ConfigError(
            f"{key}: {layer} is outside 0..{depth - 1} for clip model {model_name} "
            f"({depth} {blocks.tower} blocks, 0-based as in M2IB)"
        )
    if layer == depth - 1 and blocks.single_token_pool:
        raise ConfigError(
            f"{key}: {layer} is the last {blocks.tower} block of clip model {model_name}, "
            "whose embedding reads a single token of it, so every other token's bottleneck "
            f"is irrelevant and the map flat; use 0..{depth - 2}"
        )
    return int(layer)
