"""The ``import`` recipe: a released checkpoint in its authors' key layout, loaded onto the
pipeline's architecture and saved as a pipeline model (weights and model card), so that
it is then loaded like every other model (:func:`medsegflow.models.sam_loader.load_sam_model`).

Layouts (``train.format``), as the authors' code saves them:

- ``samed``: SAMed's ``epoch_159.pth`` (hitachinsk/SAMed ``sam_lora_image_encoder.py``
  ``save_lora_parameters`` @ f3c4b44): ``w_a_{i:03d}`` / ``w_b_{i:03d}`` (``i = 2 * block``
  the query, ``2 * block + 1`` the value; A ``(r, C)``, B ``(C, r)``), then every
  ``prompt_encoder.*`` and ``mask_decoder.*`` tensor of the semantic SAM. The image
  encoder's own weights come from the base model (``sam_vit_b_01ec64.pth``), resized to
  the input size.
- ``samed_s``: SAMed_s's ``epoch_159.pth`` (``sam_lora_image_encoder_mask_decoder.py``):
  the same ``w_a``/``w_b``; per decoder layer ``sa_a/b`` (self-attention), ``cti_a/b``
  (token to image), ``cit_a/b`` (image to token), each ``2 * layer`` the query and
  ``2 * layer + 1`` the value; ``fati_qa/qb/va/vb`` (final token-to-image attention);
  ``prompt_encoder.*`` and the ``mask_decoder.*`` tensors outside its transformer.
- ``medsa``: a checkpoint of Med-SA's ``train.py`` (KidsWithTokens/Medical-SAM-Adapter,
  ``utils.save_checkpoint``): ``{"epoch", "model", "state_dict", "optimizer", "best_tol",
  "path_helper"}`` whose ``state_dict`` is Med-SA's whole network (``-net sam -mod
  sam_adpt``; a ``module.`` prefix of ``-distributed`` runs is removed), loaded strictly
  into Med-SA's architecture (:mod:`medsegflow.models.medsa_arch`: ``attn.rel_h``/
  ``rel_w``, decoder ``mlp.layers.0.0``/``mlp.fc``, ``Space_Adapter``/``MLP_Adapter``/
  ``Depth_Adapter``) with its recipe (``medsa``; clicks handed over as (row, column),
  ``click_order``). The architecture is the config's (``arch``: a Med-SA one such as
  ``medsa_vit_b``, or a SAM ViT, whose dims are put on Med-SA's network with the official
  64 x 64 position-embedding grid); the adapter bottleneck is read from the file. The
  repository links no trained adapters; the authors point to a "Medical-Adapter-Zoo" on
  the Hugging Face hub (issues #59, #95), whose layout could not be checked from here.

Every tensor of the file must be used and every tensor of the model given (by the file
or the base): one line naming the file otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsegflow.errors import InputError
from medsegflow.models.sam_modules import apply_modules
from medsegflow.models.semantic_sam import semantic_from_base, semantic_spec
from medsegflow.models.state_dicts import state_dict_mismatch
from medsegflow.training.base_model import load_base
from medsegflow.training.recipe import TrainedModel

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

log = logging.getLogger(__name__)

FORMATS = ("samed", "samed_s", "medsa")
_DECODER_LORA = (("sa", "self_attn"), ("cti", "cross_attn_token_to_image"),
                 ("cit", "cross_attn_image_to_token"))  # fmt: skip


def read_released(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a released checkpoint (``state_dict`` entry when it has one)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for damaged files
        raise InputError(
            f"{path}: cannot read checkpoint ({' '.join(str(err).split())[:200]})"
        ) from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise InputError(f"{path}: not a state dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def samed_keys(model: Sam, *, decoder: bool) -> dict[str, str]:
    """``{file key: model key}`` of SAMed's (``decoder``: SAMed_s's) LoRA tensors."""
    names: dict[str, str] = {}
    encoder = model.image_encoder
    for block in range(len(encoder.blocks)):
        for offset, group in enumerate(("q", "v")):
            i = 2 * block + offset
            stem = f"image_encoder.blocks.{block}.attn.qkv.lora.{group}"
            names[f"w_a_{i:03d}"] = f"{stem}.a.weight"
            names[f"w_b_{i:03d}"] = f"{stem}.b.weight"
    if decoder:
        layers = model.mask_decoder.transformer.layers
        for layer in range(len(layers)):
            for short, attn in _DECODER_LORA:
                for offset, proj in enumerate(("q_proj", "v_proj")):
                    i = 2 * layer + offset
                    stem = f"mask_decoder.transformer.layers.{layer}.{attn}.{proj}.lora.w"
                    names[f"{short}_a_{i:03d}"] = f"{stem}.a.weight"
                    names[f"{short}_b_{i:03d}"] = f"{stem}.b.weight"
        for proj, q_or_v in (("q_proj", "q"), ("v_proj", "v")):
            stem = f"mask_decoder.transformer.final_attn_token_to_image.{proj}.lora.w"
            names[f"fati_{q_or_v}a"] = f"{stem}.a.weight"
            names[f"fati_{q_or_v}b"] = f"{stem}.b.weight"
    return names


def _load_checked(model: Sam, given: Mapping[str, torch.Tensor], path: Path, what: str) -> None:
    """Load ``given`` over ``model``'s own tensors; every given key must be the model's."""
    expected = model.state_dict()
    unexpected = [k for k in given if k not in expected]
    if unexpected:
        raise InputError(
            f"{path}: not a {what} checkpoint: {len(unexpected)} unexpected keys "
            f"({', '.join(unexpected[:3])})"
        )
    merged = {**expected, **given}
    if problem := state_dict_mismatch(merged, expected, what=what):
        raise InputError(f"{path}: {problem}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in merged.items()})


def import_samed(
    path: Path, base_model: Sam, base_spec: Mapping[str, Any], settings: Mapping[str, Any]
) -> tuple[Sam, dict[str, Any], list[dict[str, Any]]]:
    from medsegflow.training.samed import lora_module

    decoder = settings["format"] == "samed_s"
    state = read_released(path)
    if "w_a_000" not in state:
        raise InputError(f"{path}: not a SAMed LoRA checkpoint (no w_a_000 tensor)")
    rank = int(state["w_a_000"].shape[0])
    if rank != int(settings["rank"]):
        raise InputError(f"{path}: LoRA rank {rank}, the config's train.rank is {settings['rank']}")
    n_classes = len(settings["classes"])
    spec = semantic_spec(base_spec, n_classes=n_classes, image_size=settings["image_size"])
    model = semantic_from_base(base_model, base_spec, spec)
    module = lora_module({**settings, "decoder_lora": decoder})
    apply_modules(model, [module], source=str(path))
    names = samed_keys(model, decoder=decoder)
    given = {names.get(key, key): value for key, value in state.items()}

    def from_file(key: str) -> bool:
        if ".lora." in key:
            return True
        if key.startswith("prompt_encoder."):
            return True
        return key.startswith("mask_decoder.") and not (decoder and ".transformer." in key)

    wanted = {k for k in model.state_dict() if from_file(k)}
    missing = sorted(wanted - set(given))
    if missing:
        raise InputError(
            f"{path}: not a {settings['format']} checkpoint of {n_classes} classes at rank "
            f"{rank}: {len(missing)} missing tensors ({', '.join(missing[:3])})"
        )
    _load_checked(model, given, path, settings["format"])
    return model, spec, [module]


def import_medsa(
    path: Path, spec: Mapping[str, Any], settings: Mapping[str, Any]
) -> tuple[Sam, dict[str, Any], list[dict[str, Any]]]:
    """Med-SA's network of ``spec``'s dims (its adapter bottleneck from the file), with the
    tensors of ``path`` loaded strictly; no modules are added."""
    from medsegflow.models.sam_archs import build_sam, medsa_spec

    state = read_released(path)
    fc1 = state.get("image_encoder.blocks.0.MLP_Adapter.D_fc1.weight")
    if fc1 is None:
        raise InputError(f"{path}: not a Med-SA checkpoint (no image_encoder MLP_Adapter tensors)")
    hidden, dim = (int(n) for n in fc1.shape)
    ratio = hidden / dim if int(dim * (hidden / dim)) == hidden else (hidden + 0.5) / dim
    adapters = {
        "adapter_ratio": ratio,
        "adapter_activation": settings["activation"],
        "adapter_scale": float(settings["scale"]),
        "click_order": settings["click_order"],
    }
    if spec["encoder"] == "vit":  # the official builder's grid, whatever img_size
        adapters["pos_embed_grid"] = 1024 // int(spec["patch_size"])
    try:
        spec = medsa_spec(spec, **adapters)
    except ValueError as err:
        raise InputError(f"{path}: format medsa: {err}") from None
    model = build_sam(spec)
    if problem := state_dict_mismatch(state, model.state_dict(), what=f"Med-SA {_dims(spec)}"):
        raise InputError(f"{path}: {problem}{_size_hint(state, spec)}")
    model.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True
    )
    return model, spec, []


def _size_hint(state: Mapping[str, torch.Tensor], spec: Mapping[str, Any]) -> str:
    """A hint naming the ``img_size`` (Med-SA's ``-image_size``) the file was trained at,
    read from its first global-attention block, when it is not the config's."""
    index = spec["global_attn_indexes"][0] if spec["global_attn_indexes"] else None
    table = state.get(f"image_encoder.blocks.{index}.attn.rel_h")
    if table is None:
        return ""
    size = (int(table.shape[0]) + 1) // 2 * int(spec["patch_size"])
    if size == spec["img_size"]:
        return ""
    return (
        f" (the file's global attention fits img_size {size}: arch {{like: ..., img_size: {size}}})"
    )


def _dims(spec: Mapping[str, Any]) -> str:
    return (
        f"(img_size {spec['img_size']}, embed_dim {spec['embed_dim']}, depth {spec['depth']}, "
        f"num_heads {spec['num_heads']}, global_attn_indexes {spec['global_attn_indexes']})"
    )


def import_checkpoint(
    *,
    arch: str | Mapping[str, Any],
    settings: Mapping[str, Any],
    pairs: Any = None,
    seed: int = 0,
    base: Mapping[str, Any] | None = None,
    checkpoint: str | Path,
) -> TrainedModel:
    """Load ``checkpoint`` (layout ``settings["format"]``) as a pipeline model."""
    from medsegflow.models.sam_archs import arch_spec

    path = Path(checkpoint)
    fmt = settings["format"]
    if fmt in ("samed", "samed_s"):
        base_model, base_spec, _ = load_base(base, arch=arch, recipe="import")
        model, spec, modules = import_samed(path, base_model, base_spec, settings)
        classes = list(settings["classes"])
    elif fmt == "medsa":  # the whole network is in the file; a base only gives its shape
        from medsegflow.models.sam_loader import model_architecture

        spec = model_architecture(base["checkpoint"], arch=arch)[0] if base else arch_spec(arch)
        model, spec, modules = import_medsa(path, spec, settings)
        classes = None
    else:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    log.info("imported %s (%s layout) onto arch %s", path, fmt, arch)
    return TrainedModel(model.eval(), spec, modules, [], classes=classes)
