"""Build SAM models from segment_anything's own classes and load official checkpoints.

Official checkpoints (``sam_vit_b_01ec64.pth``, ``sam_vit_l_0b3195.pth``,
``sam_vit_h_4b8939.pth`` and MedSAM's ``medsam_vit_b.pth``) are plain state dicts as
``torch.save(model.state_dict())`` writes them, keyed ``image_encoder.*``,
``prompt_encoder.*``, ``mask_decoder.*``. They are read with ``map_location="cpu"`` and
``weights_only=True`` (segment_anything's own builders call ``torch.load`` without
``map_location``, which fails on CPU-only machines) and loaded strictly.

A model trained by the pipeline (the demo model, arch ``"demo"``, is the same
architecture, smaller; fine-tuned models keep their base's) is saved by
:func:`save_sam_model` as the same kind of state dict plus its model card (``model.json``
beside it, :mod:`medsegflow.models.model_card`): the loader builds the card's
architecture, adds the modules its recipe added (:mod:`medsegflow.models.sam_modules`)
and loads the weights strictly, through the same code as an official checkpoint.
torch and segment_anything are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsegflow.errors import InputError
from medsegflow.io import atomic_path
from medsegflow.models.model_card import card_path, read_card, write_card
from medsegflow.models.sam_archs import OFFICIAL_ARCHS, arch_label, arch_spec, build_sam
from medsegflow.models.sam_modules import apply_modules
from medsegflow.models.sam_registry import PACKAGED_SAM_WEIGHTS, packaged_weights_path
from medsegflow.models.state_dicts import state_dict_mismatch

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

log = logging.getLogger(__name__)


def select_device(device: str | None = None) -> torch.device:
    """``device`` as a ``torch.device``; None or ``"auto"``: CUDA when available, else CPU.

    Raises ``ValueError`` when CUDA is asked for and not available.
    """
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen = torch.device(device)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' requested but CUDA is not available")
    return chosen


def autocast(
    device: torch.device | str, precision: str = "auto"
) -> contextlib.AbstractContextManager:
    """Mixed precision for inference or training on ``device``: ``precision`` (``auto``,
    ``fp32`` or ``bf16``) as :func:`medsegflow.precision.autocast` decides it on this
    machine (``auto``: bf16 on CUDA or on a CPU with native bf16, float32 otherwise)."""
    from medsegflow.precision import autocast as precision_autocast

    return precision_autocast(device, precision)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch

    if not path.is_file():
        raise InputError(f"{path}: checkpoint file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for damaged files
        reason = " ".join(str(err).split())[:200]
        raise InputError(f"{path}: cannot read checkpoint ({reason})") from None
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        got = type(state).__name__
        if isinstance(state, Mapping):
            got = f"a mapping with non-tensor entries, keys {list(state)[:5]}"
            if isinstance(state.get("model"), Mapping):
                got += "; its 'model' entry may be the state dict (save that entry alone)"
        raise InputError(
            f"{path}: not a SAM state dict (expected parameter names mapped to tensors, got {got})"
        )
    return dict(state)


def _guess_arch(state: Mapping[str, torch.Tensor]) -> str:
    """A short description of the encoder stored in ``state``, for error messages."""
    weight = state.get("image_encoder.patch_embed.proj.weight")
    if weight is None:
        return "no SAM image encoder found"
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    known = {
        (s["embed_dim"], s["depth"]): n
        for n, s in OFFICIAL_ARCHS.items()
        if s["encoder"] == "vit" and n != "medsam"
    }
    name = known.get((int(weight.shape[0]), depth), "")
    return f"file holds embed dim {int(weight.shape[0])}, {depth} blocks" + (
        f" (looks like {name})" if name else ""
    )


def _check_state_dict(
    path: Path, state: Mapping[str, torch.Tensor], expected: Mapping[str, Any], *, arch: str
) -> None:
    """One-line :class:`InputError` for missing/unexpected keys or a shape mismatch."""
    if problem := state_dict_mismatch(state, expected, what=f"SAM {arch}"):
        raise InputError(f"{path}: {problem}; {_guess_arch(state)}")


def check_packaged_weights(path: Path, *, arch: str | Mapping[str, Any]) -> None:
    """For the weights file a package ships (LiteMedSAM's), :class:`InputError` naming it
    unless its size and SHA-256 are the official file's. Other files are not hashed."""
    if not isinstance(arch, str):  # an explicit-hyper-parameter arch: no packaged file
        return
    packaged = PACKAGED_SAM_WEIGHTS.get(arch)
    official = packaged_weights_path(arch)
    if packaged is None or official is None or not path.is_file():
        return
    if path.resolve() != official.resolve():
        return
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    size = path.stat().st_size
    if size != packaged.size or digest.hexdigest() != packaged.sha256:
        raise InputError(
            f"{path}: not the official {arch} checkpoint of {packaged.requirement} "
            f"(size {size}, sha256 {digest.hexdigest()}; expected {packaged.size}, "
            f"{packaged.sha256}); reinstall the package"
        )


def model_architecture(
    checkpoint_path: str | os.PathLike, *, arch: str | Mapping[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Hyper-parameters and recipe modules of the network a checkpoint needs.

    With a model card beside the checkpoint (a model trained by the pipeline) they are
    the card's; otherwise those of ``arch`` (an official name, or a mapping of explicit
    hyper-parameters, :func:`~medsegflow.models.sam_archs.arch_spec`). :class:`InputError`
    names the card when its arch is not ``arch``, the checkpoint when arch ``demo`` has no
    card or when a mapping is not a SAM architecture.
    """
    path = Path(checkpoint_path)
    card = read_card(path)
    if card is None:
        if arch == "demo":
            raise InputError(
                f"{path}: arch demo is trained by the pipeline; its model card "
                f"{card_path(path)} is missing"
            )
        try:
            return arch_spec(arch), []
        except (ValueError, TypeError) as err:
            raise InputError(f"{path}: arch {arch!r} is not a SAM architecture ({err})") from None
    if card["arch"] != arch:
        raise InputError(
            f"{card_path(path)}: the model card says arch {card['arch']!r}, not {arch!r}"
        )
    try:
        return arch_spec(card["spec"]), list(card["modules"])
    except (ValueError, TypeError) as err:
        raise InputError(f"{card_path(path)}: not a SAM architecture ({err})") from None


def save_sam_model(
    model: Sam,
    weights_path: str | os.PathLike,
    *,
    model_name: str,
    arch: str,
    spec: Mapping[str, Any],
    recipe: Mapping[str, Any],
    base: Mapping[str, Any] | None = None,
    modules: Sequence[Mapping[str, Any]] = (),
    training: Mapping[str, Any] | None = None,
    classes: Sequence[str] | None = None,
) -> None:
    """Save a model trained by the pipeline: its card, then (last, the job's target) its
    state dict in the official key layout, both atomically.

    Args:
        model: a SAM built by :func:`build_sam` from ``spec`` with ``modules`` added.
        arch: its base architecture name (``demo``, ``vit_b``, ...).
        spec: the hyper-parameters it was built from (:func:`arch_spec`).
        recipe: the complete ``train:`` block that trained it.
        base: where its start weights came from (None: from scratch).
        modules: the modules its recipe added (card entries).
        training: statistics for the card (iterations, seconds, parameters, ...).
        classes: the label names of a semantic model's output channels 1, 2, ...
    """
    import torch

    write_card(
        weights_path,
        model=model_name,
        arch=arch,
        spec=arch_spec(spec),
        modules=modules,
        recipe=recipe,
        base=base,
        training=training or {},
        classes=classes,
    )
    with atomic_path(weights_path) as tmp:
        torch.save(model.state_dict(), tmp)


def load_sam_model(
    checkpoint_path: str | os.PathLike,
    *,
    arch: str | Mapping[str, Any],
    device: str | None = None,
    image_encoder: bool = True,
) -> tuple[Sam, torch.device]:
    """Load a SAM checkpoint in the official format, in eval mode, on ``device``.

    Args:
        checkpoint_path: a state dict file as ``torch.save(sam.state_dict())`` writes it.
        arch: ``"vit_b"``, ``"vit_l"``, ``"vit_h"``, ``"medsam"``, ``"lite_medsam"``,
            ``"demo"``, or a mapping of explicit hyper-parameters (``sam_models.<name>.arch``,
            :func:`~medsegflow.models.sam_archs.arch_spec`); a model trained by the
            pipeline is rebuilt from its card (:func:`model_architecture`).
        device: see :func:`select_device`.
        image_encoder: False loads the prompt encoder and mask decoder only (the image
            encoder is a weightless stand-in, :func:`~medsegflow.models.sam_archs.build_sam`):
            what decoding cached embeddings needs, without the encoder's build and load.

    A ViT model is built on the meta device and the checkpoint's tensors (as float32) are
    assigned to it, so no memory is spent on a random initialisation.

    Raises:
        InputError: one line naming the file: missing, unreadable, not a state dict,
            missing or unexpected keys, or tensor shapes of another architecture.
    """
    import torch

    path = Path(checkpoint_path)
    check_packaged_weights(path, arch=arch)
    state = _read_state_dict(path)
    spec, modules = model_architecture(path, arch=arch)
    # the ViT is built without memory; TinyViT computes buffers (attention-bias indices,
    # not in the state dict) from values at construction, so it is built for real (10 M);
    # so is a model without its encoder (small, and building on the meta device imports
    # torch._dynamo, about 1 s)
    built_for_real = spec["encoder"] == "tiny_vit" or not image_encoder
    where = contextlib.nullcontext() if built_for_real else torch.device("meta")
    with where:
        model = build_sam(spec, image_encoder=image_encoder)
        model = apply_modules(model, modules, source=str(card_path(path)))
    if not image_encoder:
        state = {k: v for k, v in state.items() if not k.startswith("image_encoder.")}
    _check_state_dict(path, state, model.state_dict(), arch=arch_label(arch))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.pixel_mean = torch.tensor(spec["pixel_mean"], dtype=torch.float32).view(-1, 1, 1)
    model.pixel_std = torch.tensor(spec["pixel_std"], dtype=torch.float32).view(-1, 1, 1)
    on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if on_meta:
        raise RuntimeError(f"{path}: tensors left unloaded: {on_meta[:3]}")
    chosen = select_device(device)
    model = model.to(chosen).eval()
    n_params = sum(p.numel() for p in model.parameters())
    label = arch_label(arch)
    log.info("loaded SAM %s (%.1f M parameters) from %s on %s", label, n_params / 1e6, path, chosen)
    return model, chosen
