"""Load every CLIP backend into a :class:`ClipBundle` through open_clip's own model classes.

Two on-disk formats are read, both offline (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` are
set while loading and no pretrained tower is ever requested):

- the **open_clip folder** of a Hugging Face hub repository, BiomedCLIP's layout:
  ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``), the weights
  (``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``: a state dict of the
  whole CLIP) and, for a Hugging Face text tower, the tokenizer files (``vocab.txt``,
  ``tokenizer_config.json``, ``special_tokens_map.json``). The text tower's
  ``config.json`` is not in BiomedCLIP's repository: when the folder lacks it, a BERT
  config is written to a temporary folder from PubMedBERT-base's hyper-parameters
  (:data:`PUBMEDBERT_BASE`), with the sizes read from the checkpoint's tensors (the head
  count, not stored in tensors, stays 12 whenever it divides the width). Folders written
  by :func:`write_clip_folder` (demo and fine-tuned models) have the same layout plus
  ``config.json``, so one code path loads them all.
- **OpenAI CLIP files** (``ViT-B-16.pt``: TorchScript, or a plain state dict), loaded
  into open_clip's built-in architecture ``open_clip_arch`` with QuickGELU (OpenAI's
  activation) and OpenAI's normalisation; the tokenizer is open_clip's BPE tokenizer.

Weights are read with ``map_location="cpu"`` (``weights_only=True`` except for TorchScript
archives, which only ``torch.jit.load`` reads) and loaded strictly after a check that
names the file and the first missing, unexpected or mis-shaped tensors.

The loaded model carries its open_clip config as the attribute ``open_clip_config``
(``{"model_cfg": ..., "preprocess_cfg": ...}``), which :func:`write_clip_folder` saves.
torch, transformers and open_clip are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsegflow import paths
from medsegflow.clip.bundle import ClipBundle
from medsegflow.clip.registry import (
    OPENAI_MEAN,
    OPENAI_STD,
    check_clip_weights,
    is_trained_clip,
)
from medsegflow.errors import ConfigError, InputError
from medsegflow.models.state_dicts import state_dict_mismatch

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_pytorch_model.bin"
WEIGHT_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
)
"""Weight files looked for in a folder, in open_clip's order of preference."""
TEXT_CONFIG_FILE = "config.json"
TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
)
CONFIG_ATTR = "open_clip_config"

PUBMEDBERT_BASE: dict[str, Any] = {
    "model_type": "bert",
    "architectures": ["BertModel"],
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}
"""``microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract`` (BERT-base, uncased)."""

_DROPPABLE = {
    "text.transformer.embeddings.position_ids",
    "text.transformer.embeddings.token_type_ids",
    "input_resolution",
    "context_length",
    "vocab_size",
    "attn_mask",
    "text.transformer.pooler.dense.weight",
    "text.transformer.pooler.dense.bias",
}
"""Tensors a file may hold that the model does not use (dropped only when unexpected):
buffers of older versions, and the BERT pooler, which open_clip builds only for
``hf_pooler_type: cls_pooler`` (BiomedCLIP pools with ``cls_last_hidden_state_pooler``)."""


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update(dict.fromkeys(keys, "1"))
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (a zip with a ``code/`` folder), e.g. OpenAI's files."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/", 1)[-1].startswith("code/") for name in archive.namelist())


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A CLIP state dict from ``.bin``/``.pt`` (plain or TorchScript) or ``.safetensors``,
    on the CPU; :class:`InputError` naming the file when missing, unreadable or not a
    mapping of tensors. A ``state_dict`` entry and a ``module.`` prefix are unwrapped."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: CLIP weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif _is_torchscript(path):
            with warnings.catch_warnings():  # OpenAI's official format; torch.jit is deprecated
                warnings.simplefilter("ignore", FutureWarning)
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch/safetensors raise many types for damaged files
        reason = " ".join(str(err).split())[:200]
        raise InputError(f"{path}: cannot read CLIP weights ({reason})") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state:
        raise InputError(f"{path}: not a CLIP state dict (got {type(state).__name__})")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(
            f"{path}: not a CLIP state dict (non-tensor entries, keys {list(state)[:5]})"
        )
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def read_open_clip_config(folder: str | os.PathLike) -> dict[str, Any]:
    """``open_clip_config.json`` of a folder: ``{"model_cfg": ..., "preprocess_cfg": ...}``."""
    path = Path(folder) / CONFIG_FILE
    if not Path(folder).is_dir():
        raise InputError(f"{folder}: CLIP model folder not found")
    if not path.is_file():
        raise InputError(f"{path}: file not found (an open_clip model folder needs it)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    model_cfg = config.get("model_cfg") if isinstance(config, dict) else None
    if not isinstance(model_cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(
        model_cfg
    ):
        raise InputError(f"{path}: needs a model_cfg with embed_dim, vision_cfg and text_cfg")
    return config


def _bert_config_from_weights(state: Mapping[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """PubMedBERT-base's config with the sizes of the checkpoint's text tower."""
    prefix = "text.transformer."
    word = state.get(prefix + "embeddings.word_embeddings.weight")
    if word is None:
        raise InputError(
            f"{path}: no BERT text tower in the weights "
            f"({prefix}embeddings.word_embeddings.weight missing)"
        )
    layer_prefix = prefix + "encoder.layer."
    layers = {k[len(layer_prefix) :].split(".")[0] for k in state if k.startswith(layer_prefix)}
    hidden = int(word.shape[1])
    config = {**PUBMEDBERT_BASE, "vocab_size": int(word.shape[0]), "hidden_size": hidden}
    config["num_hidden_layers"] = len(layers)
    config["num_attention_heads"] = 12 if hidden % 12 == 0 else 1
    sizes = {
        "intermediate_size": ("encoder.layer.0.intermediate.dense.weight", 0),
        "max_position_embeddings": ("embeddings.position_embeddings.weight", 0),
        "type_vocab_size": ("embeddings.token_type_embeddings.weight", 0),
    }
    for key, (name, dim) in sizes.items():
        if prefix + name in state:
            config[key] = int(state[prefix + name].shape[dim])
    return config


@contextlib.contextmanager
def _text_folder(
    folder: Path, model_cfg: Mapping[str, Any], state: Mapping[str, torch.Tensor], weights: Path
) -> Iterator[Path | None]:
    """The folder holding the Hugging Face text tower's ``config.json`` and tokenizer:
    ``folder`` itself when it has ``config.json``, else a temporary copy of its tokenizer
    files with a PubMedBERT config; None for open_clip's own text tower."""
    if not model_cfg["text_cfg"].get("hf_model_name"):
        yield None
        return
    if not any((folder / f).is_file() for f in ("vocab.txt", "tokenizer.json")):
        raise InputError(f"{folder}: no tokenizer files (vocab.txt or tokenizer.json)")
    if (folder / TEXT_CONFIG_FILE).is_file():
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="medsegflow-clip-text-") as tmp:
        text_dir = Path(tmp)
        config = _bert_config_from_weights(state, weights)
        (text_dir / TEXT_CONFIG_FILE).write_text(
            json.dumps(config, indent=2) + "\n", encoding="utf-8"
        )
        for name in TOKENIZER_FILES:
            if (folder / name).is_file():
                shutil.copyfile(folder / name, text_dir / name)
        log.info(
            "%s: no %s; BERT text tower config from PubMedBERT-base with the checkpoint's "
            "sizes (vocab %d, width %d, %d layers)",
            folder,
            TEXT_CONFIG_FILE,
            config["vocab_size"],
            config["hidden_size"],
            config["num_hidden_layers"],
        )
        yield text_dir


def build_open_clip_model(model_cfg: Mapping[str, Any], *, text_dir: Path | None) -> Any:
    """A randomly initialised open_clip ``CLIP``/``CustomTextCLIP`` from ``model_cfg``
    (as open_clip's factory builds it), never fetching pretrained towers: a Hugging Face
    text tower is built from ``text_dir/config.json``."""
    import open_clip

    cfg = copy.deepcopy(dict(model_cfg))
    if "multimodal_cfg" in cfg:
        raise ValueError("CoCa models (multimodal_cfg) are not supported")
    vision, text = dict(cfg.pop("vision_cfg")), dict(cfg.pop("text_cfg"))
    custom = bool(cfg.pop("custom_text", False)) or bool(text.get("hf_model_name"))
    if vision.get("timm_model_name"):
        vision["timm_model_pretrained"] = False
    if text.get("hf_model_name"):
        if text_dir is None:
            raise ValueError("a Hugging Face text tower needs a folder with config.json")
        text["hf_model_name"] = str(text_dir)
        text["hf_model_pretrained"] = False
    model_class = open_clip.CustomTextCLIP if custom else open_clip.CLIP
    with _offline():
        return model_class(**cfg, vision_cfg=vision, text_cfg=text)


def make_tokenizer(text_cfg: Mapping[str, Any], *, text_dir: Path | None) -> Any:
    """open_clip's tokenizer for ``text_cfg``: ``HFTokenizer`` from ``text_dir`` for a
    Hugging Face text tower, else open_clip's BPE ``SimpleTokenizer``."""
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    context_length = int(text_cfg.get("context_length", 77))
    if not text_cfg.get("hf_model_name"):
        return SimpleTokenizer(context_length=context_length)
    with _offline():
        return HFTokenizer(
            str(text_dir),
            context_length=context_length,
            tokenizer_mode=text_cfg.get("tokenizer_mode"),
            **dict(text_cfg.get("tokenizer_kwargs") or {}),
        )


def load_state_checked(
    model: Any, state: Mapping[str, torch.Tensor], *, path: Path, what: str
) -> None:
    """Load ``state`` into ``model`` strictly; :class:`InputError` naming ``path`` and the
    first missing, unexpected or mis-shaped tensors when it does not fit."""
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if k in expected or k not in _DROPPABLE}
    scale = state.get("logit_scale")
    if scale is not None and "logit_scale" in expected:
        state["logit_scale"] = scale.reshape(expected["logit_scale"].shape)
    if problem := state_dict_mismatch(state, expected, what=what):
        raise InputError(f"{path}: {problem}")
    model.load_state_dict(state, strict=True)


def _bundle(
    model: Any, tokenizer: Any, config: dict[str, Any], *, name: str, kind: str, device: str
) -> ClipBundle:
    preprocess = config.get("preprocess_cfg") or {}
    mean = tuple(float(v) for v in preprocess.get("mean", OPENAI_MEAN))
    std = tuple(float(v) for v in preprocess.get("std", OPENAI_STD))
    size = model.visual.image_size
    setattr(model, CONFIG_ATTR, copy.deepcopy(config))
    model = model.to(device).eval()
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "CLIP %s (%s): %.1f M parameters, input %s, on %s", name, kind, n_params / 1e6, size, device
    )
    return ClipBundle(
        model=model,
        tokenizer=tokenizer,
        image_size=int(size[0] if isinstance(size, (tuple, list)) else size),
        mean=mean,
        std=std,
        name=name,
        kind=kind,
    )


def _weights_in(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise InputError(f"{folder}: no CLIP weights file (expected one of {', '.join(WEIGHT_FILES)})")


def load_clip_folder(
    folder: str | os.PathLike, *, name: str, kind: str, device: str = "cpu"
) -> ClipBundle:
    """Load an open_clip model folder (BiomedCLIP's hub layout, or a folder written by
    :func:`write_clip_folder`) offline; see the module docstring.

    Raises:
        InputError: one line naming the folder or file: missing folder, config, weights or
            tokenizer files, unreadable JSON or weights, or tensors that do not fit.
    """
    folder = Path(folder)
    config = read_open_clip_config(folder)
    model_cfg = config["model_cfg"]
    weights = _weights_in(folder)
    state = read_state_dict(weights)
    with _text_folder(folder, model_cfg, state, weights) as text_dir:
        try:
            model = build_open_clip_model(model_cfg, text_dir=text_dir)
            tokenizer = make_tokenizer(model_cfg["text_cfg"], text_dir=text_dir)
        except (TypeError, ValueError, RuntimeError, OSError) as err:
            reason = " ".join(str(err).split())[:200]
            raise InputError(f"{folder / CONFIG_FILE}: cannot build the model ({reason})") from None
    load_state_checked(model, state, path=weights, what=f"{kind} CLIP ({folder / CONFIG_FILE})")
    return _bundle(model, tokenizer, config, name=name, kind=kind, device=device)


def load_openai_clip(
    path: str | os.PathLike, *, arch: str = "ViT-B-16", name: str, device: str = "cpu"
) -> ClipBundle:
    """Load an OpenAI CLIP file into open_clip's built-in architecture ``arch`` (any name
    known to ``open_clip.list_models()``, including configs added with
    ``open_clip.add_model_config``), with QuickGELU and OpenAI's normalisation."""
    import open_clip

    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise ConfigError(
            f"clip_models.{name}.open_clip_arch: unknown open_clip architecture '{arch}'"
        )
    model_cfg = {**copy.deepcopy(model_cfg), "quick_gelu": True}
    state = read_state_dict(path)
    model = build_open_clip_model(model_cfg, text_dir=None)
    load_state_checked(model, state, path=Path(path), what=f"OpenAI CLIP {arch}")
    tokenizer = make_tokenizer(model_cfg["text_cfg"], text_dir=None)
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)},
    }
    return _bundle(model, tokenizer, config, name=name, kind="openai", device=device)


def load_clip(
    spec: Mapping[str, Any],
    *,
    name: str,
    weights: Mapping[str, str | os.PathLike],
    device: str = "cpu",
    folder: str | os.PathLike | None = None,
    base: bool = False,
) -> ClipBundle:
    """Load ``clip_models.<name>`` (``spec``) for inference or fine-tuning.

    Args:
        spec: the config entry (``arch``, ``weights``, ``open_clip_arch``, ``finetune``).
        weights: the config's ``weights:`` block (key -> local path).
        folder: where the pipeline wrote a trained model (``demo``, ``finetuned`` or a
            ``finetune:`` block); default ``results/models/<name>``.
        base: load the downloaded base weights of a ``finetune:`` entry instead of the
            fine-tuned folder (what the fine-tuning job starts from).

    Raises:
        InputError: missing or unusable weights (the message names the config keys, the
            path and the official source, or the file and what is wrong).
        ConfigError: an unknown arch, or ``base`` for a model trained from scratch.
    """
    arch = spec.get("arch")
    if is_trained_clip(spec) and not base:
        kind = "demo" if arch == "demo" else "finetuned"
        default = Path(paths.fill(paths.CLIP_MODEL, clip=name)).parent
        return load_clip_folder(folder or default, name=name, kind=kind, device=device)
    if arch in ("demo", "finetuned"):
        raise ConfigError(f"clip_models.{name}: arch '{arch}' has no downloaded base weights")
    problem = check_clip_weights(spec, name, weights)
    if problem:
        if problem.startswith(f"clip_models.{name}"):
            raise ConfigError(problem)
        raise InputError(problem)
    path = Path(weights[spec["weights"]])
    if arch == "biomedclip":
        return load_clip_folder(path, name=name, kind="biomedclip", device=device)
    return load_openai_clip(
        path, arch=str(spec.get("open_clip_arch", "ViT-B-16")), name=name, device=device
    )
