"""SAM-Med3D networks from medim's classes, and the official checkpoint loader.

The architecture is the one of medim 0.1.2's ``build_sam3D_vit_b_ori``
(``medim/models/sam_med3d.py``, registered as ``"SAM-Med3D"``), itself the official
``_build_sam3D_ori`` of uni-medical/SAM-Med3D
(``segment_anything/build_sam3D.py@1ebf2fe8``): an ``ImageEncoderViT3D`` (LayerNorm eps
1e-6, MLP ratio 4, qkv bias, relative positions, windows of 14 except the global blocks,
neck to the prompt dim), a ``PromptEncoder3D`` (mask channels 16) and a ``MaskDecoder3D``
(3 multimask outputs, IoU head depth 3 / width 256). :func:`build_sam3d` builds it from
those classes for a :class:`Sam3DSpec`; ``"turbo"`` is the released ``sam_med3d_turbo.pth``
(ViT-B 3D, image 128, patch 16, embed 768, depth 12, prompt dim 384) and ``"tiny"`` the
same classes, smaller, for the demo trained here.

Checkpoints: ``sam_med3d_turbo.pth`` is a ``torch.save`` dict with the weights under
``model_state_dict`` (train.py's ``save_checkpoint``, read that way by validation.py and by
medim's ``load_pretrained_weights(..., state_dict_key='model_state_dict')``); the official
``_build_sam3D_ori`` also loads a bare state dict. :func:`load_checkpoint` accepts both,
reads on the CPU and loads strictly (medim loads with ``strict=False``, which would hide a
wrong file). ``pixel_mean``/``pixel_std`` are non-persistent buffers, absent from the files.
The checkpoints train.py writes during training (``sam_model_dice_best.pth``,
``sam_model_latest.pth``) hold, beside ``model_state_dict``, the optimizer and scheduler
states and the run's ``args``, an ``argparse.Namespace`` (with a ``torch.device``): they are
read with ``weights_only=True`` and exactly ``argparse.Namespace`` allowed
(:data:`SAFE_GLOBALS`); any other pickled class is refused in one line naming the file.
A spec is a name of :data:`SPECS` or, from a config, a mapping of :class:`Sam3DSpec`'s
hyper-parameters (:func:`get_spec`). torch and medim are imported inside the functions.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsegflow.errors import InputError
from medsegflow.models.state_dicts import state_dict_mismatch

if TYPE_CHECKING:
    import torch
    from medim.models.sam_med3d import SAM_Med3D

STATE_DICT_KEY = "model_state_dict"
"""Where ``sam_med3d_turbo.pth`` keeps the weights (SAM-Med3D train.py's checkpoints)."""
SAFE_GLOBALS = (argparse.Namespace,)
"""The only classes beyond torch's ``weights_only`` defaults that a checkpoint may hold:
SAM-Med3D's train.py saves its ``args`` (an ``argparse.Namespace``) in every checkpoint."""


@dataclass(frozen=True)
class Sam3DSpec:
    """Hyper-parameters of a SAM-Med3D network (cubic crops of ``image_size`` voxels).

    ``window_size`` 0 makes every encoder block global. ``prompt_embed_dim`` must be a
    multiple of 48: the prompt encoder's random-Fourier position encoding has
    ``3 * (dim // 3)`` features and the decoder's attention (8 heads, downsampling 2)
    needs a multiple of 16.
    """

    name: str
    image_size: int = 128
    patch_size: int = 16
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    prompt_embed_dim: int = 384
    mask_in_chans: int = 16

    @property
    def embedding_size(self) -> int:
        """Image-embedding grid side, ``image_size // patch_size``."""
        return self.image_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's low-resolution logits (4x the embedding grid)."""
        return 4 * self.embedding_size

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SPECS: dict[str, Sam3DSpec] = {
    "turbo": Sam3DSpec("turbo"),
    "tiny": Sam3DSpec(
        "tiny",
        image_size=64,
        patch_size=16,
        encoder_embed_dim=192,
        encoder_depth=4,
        encoder_num_heads=6,
        global_attn_indexes=(),
        window_size=0,
        prompt_embed_dim=96,
    ),
}


def get_spec(spec: str | Sam3DSpec | Mapping[str, Any]) -> Sam3DSpec:
    """A spec by name (``"turbo"``, ``"tiny"``), the spec itself, or a config mapping of
    its hyper-parameters (``name`` optional, default ``"custom"``; the other fields default
    to turbo's), checked."""
    if isinstance(spec, Mapping):
        fields = dict(spec)
        fields.setdefault("name", "custom")
        known = set(Sam3DSpec.__dataclass_fields__)
        if unknown := sorted(set(fields) - known):
            raise ValueError(f"unknown SAM-Med3D spec keys {unknown}; known: {sorted(known)}")
        fields["global_attn_indexes"] = tuple(fields.get("global_attn_indexes", (2, 5, 8, 11)))
        spec = Sam3DSpec(**fields)
    if isinstance(spec, str):
        if spec not in SPECS:
            raise ValueError(f"unknown SAM-Med3D spec {spec!r}; known: {', '.join(SPECS)}")
        spec = SPECS[spec]
    if spec.image_size % spec.patch_size or spec.embedding_size < 1:
        raise ValueError(f"spec {spec.name}: image_size must be a multiple of patch_size")
    if spec.prompt_embed_dim % 48:
        raise ValueError(f"spec {spec.name}: prompt_embed_dim must be a multiple of 48")
    if spec.encoder_embed_dim % spec.encoder_num_heads:
        raise ValueError(f"spec {spec.name}: encoder heads must divide the embed dim")
    return spec


def build_sam3d(spec: str | Sam3DSpec = "turbo", *, device: str | None = None) -> SAM_Med3D:
    """A SAM-Med3D network with random weights, in eval mode.

    ``device`` may be ``"meta"`` (no memory: shapes only). Same constructor arguments as
    medim's ``build_sam3D_vit_b_ori`` for the turbo spec.
    """
    import torch
    from medim.models.sam_med3d import (
        ImageEncoderViT3D,
        MaskDecoder3D,
        PromptEncoder3D,
        SAM_Med3D,
    )

    spec = get_spec(spec)
    grid = spec.embedding_size
    with torch.device(device or "cpu"):
        model = SAM_Med3D(
            image_encoder=ImageEncoderViT3D(
                depth=spec.encoder_depth,
                embed_dim=spec.encoder_embed_dim,
                img_size=spec.image_size,
                mlp_ratio=4,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                num_heads=spec.encoder_num_heads,
                patch_size=spec.patch_size,
                qkv_bias=True,
                use_rel_pos=True,
                global_attn_indexes=spec.global_attn_indexes,
                window_size=spec.window_size,
                out_chans=spec.prompt_embed_dim,
            ),
            prompt_encoder=PromptEncoder3D(
                embed_dim=spec.prompt_embed_dim,
                image_embedding_size=(grid, grid, grid),
                input_image_size=(spec.image_size,) * 3,
                mask_in_chans=spec.mask_in_chans,
            ),
            mask_decoder=MaskDecoder3D(
                num_multimask_outputs=3,
                transformer_dim=spec.prompt_embed_dim,
                iou_head_depth=3,
                iou_head_hidden_dim=256,
            ),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )
    return model.eval()


def expected_state_dict_shapes(spec: str | Sam3DSpec = "turbo") -> dict[str, tuple[int, ...]]:
    """Every key of the spec's state dict with its shape, from a meta-device model
    (no weights allocated, fast even for the full-size turbo network)."""
    model = build_sam3d(spec, device="meta")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a turbo-layout (``model_state_dict``) or bare checkpoint file."""
    import torch

    if not path.is_file():
        raise InputError(f"{path}: SAM-Med3D checkpoint file not found")
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for damaged or pickled files
        raise InputError(f"{path}: cannot read SAM-Med3D checkpoint ({_load_error(err)})") from None
    if isinstance(payload, Mapping) and STATE_DICT_KEY in payload:
        payload = payload[STATE_DICT_KEY]
    if not isinstance(payload, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in payload.values()
    ):
        keys = list(payload)[:5] if isinstance(payload, Mapping) else type(payload).__name__
        raise InputError(
            f"{path}: not a SAM-Med3D checkpoint (expected tensors under "
            f"'{STATE_DICT_KEY}' or a bare state dict; got {keys})"
        )
    return {k.removeprefix("module."): v for k, v in payload.items()}


def _load_error(err: Exception) -> str:
    """One line for a failed ``torch.load``: the refused class when a pickled global is
    not allowed, else torch's message shortened."""
    text = " ".join(str(err).split())
    if "Unsupported global" in text:
        found = text.split("Unsupported global:", 1)[1].split(" was not ")[0]
        found = found.replace("GLOBAL", "").strip()
        allowed = ", ".join(f"{c.__module__}.{c.__qualname__}" for c in SAFE_GLOBALS)
        return (
            f"it pickles {found}, which is not allowed: weights_only loading accepts "
            f"tensors, plain data and {allowed}"
        )
    return text[:200]


def load_checkpoint(
    path: str | os.PathLike,
    spec: str | Sam3DSpec | Mapping[str, Any] = "turbo",
    *,
    device: str | None = None,
) -> SAM_Med3D:
    """Build the spec's network and load ``path`` into it strictly, in eval mode.

    The file is read with ``map_location="cpu"`` and ``weights_only=True`` with
    :data:`SAFE_GLOBALS` allowed (train.py's checkpoints); a ``module.`` prefix (DDP
    training) is removed. Raises :class:`InputError` naming the file when it is
    missing, unreadable, not a state dict, or its keys or shapes do not fit the spec (the
    first missing/unexpected/mismatched keys are named).
    """
    path = Path(path)
    state = _read_checkpoint(path)
    spec = get_spec(spec)
    model = build_sam3d(spec)
    if problem := state_dict_mismatch(state, model.state_dict(), what=f"SAM-Med3D {spec.name}"):
        raise InputError(f"{path}: {problem}")
    model.load_state_dict(state, strict=True)
    return model.to(device or "cpu").eval()


def save_checkpoint(model: SAM_Med3D, path: str | os.PathLike, **extra: Any) -> None:
    """Save ``model`` in the turbo layout, ``{"model_state_dict": ..., **extra}``,
    atomically (``extra`` must be plain data for ``weights_only`` loading)."""
    import torch

    from medsegflow.io import atomic_path

    with atomic_path(path, suffix=".pth") as tmp:
        torch.save({STATE_DICT_KEY: model.state_dict(), **extra}, tmp)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """``(all, trainable)`` parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)
