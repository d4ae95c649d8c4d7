"""Tiny CLIP checkpoints in the official on-disk formats, and small phantom datasets.

Import from a test module with ``tests/`` on ``sys.path`` (as ``test_slurm.py`` does):

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from clip_fixtures import ...

The checkpoints are built with open_clip's classes directly, independently of
``medsegflow.clip``, so the loaders are tested against files they did not write:

- :func:`write_tiny_biomedclip`: BiomedCLIP's Hugging Face repository layout
  (``open_clip_config.json`` with a timm vision tower and a BERT text tower named
  ``microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract``, ``open_clip_pytorch_model.bin``
  holding the stale ``position_ids`` buffer like the real file, the tokenizer files, and
  no BERT ``config.json``) with timm's ``test_vit`` and a 2-layer BERT of width 48;
- :func:`write_tiny_openai`: an OpenAI-format file (fp16 state dict or TorchScript) of a
  tiny native CLIP registered in open_clip as :data:`TINY_OPENAI_ARCH`.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import torch

from medsegflow.datasets.registry import prepare_dataset
from medsegflow.stages.preprocess import preprocess_dataset

TINY_OPENAI_ARCH = "MedSegFlowTiny-ViT-8"
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
TINY_WORDS = ["a", "the", "liver", "lesion", "kidney", "spleen", "slice", "showing", "ct"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BIOMEDCLIP_MODEL_CFG = {
    "embed_dim": 32,
    "vision_cfg": {
        "timm_model_name": "test_vit",
        "timm_model_pretrained": False,
        "timm_pool": "",
        "timm_proj": "linear",
        "image_size": 160,
    },
    "text_cfg": {
        "hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
        "hf_tokenizer_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
        "hf_proj_type": "mlp",
        "hf_pooler_type": "cls_last_hidden_state_pooler",
        "context_length": 16,
    },
}
TINY_BERT = {
    "model_type": "bert",
    "hidden_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 12,
    "intermediate_size": 96,
    "max_position_embeddings": 64,
    "type_vocab_size": 2,
    "pad_token_id": 0,
}


def _write_bert_tokenizer(folder: Path, vocab: list[str]) -> None:
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    names = ["pad_token", "unk_token", "cls_token", "sep_token", "mask_token"]
    special = dict(zip(names, SPECIALS, strict=True))
    (folder / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")
    config = {"do_lower_case": True, "tokenizer_class": "BertTokenizer", **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def write_tiny_biomedclip(
    folder: Path, *, seed: int = 0, with_pooler: bool = False
) -> dict[str, torch.Tensor]:
    """Write a tiny BiomedCLIP-layout folder; returns the state dict saved (with the stale
    ``text.transformer.embeddings.position_ids`` entry and, ``with_pooler``, the BERT
    pooler's weights that the model does not use)."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIALS + TINY_WORDS + ["."]
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        bert = {**TINY_BERT, "vocab_size": len(vocab)}
        (Path(tmp) / "config.json").write_text(json.dumps(bert), encoding="utf-8")
        text_cfg = {
            **BIOMEDCLIP_MODEL_CFG["text_cfg"],
            "hf_model_name": tmp,
            "hf_model_pretrained": False,
        }
        cfg = {k: v for k, v in BIOMEDCLIP_MODEL_CFG.items() if k != "text_cfg"}
        model = open_clip.CustomTextCLIP(**cfg, text_cfg=text_cfg)
    state = dict(model.state_dict())
    state["text.transformer.embeddings.position_ids"] = torch.arange(64)[None]
    if with_pooler:
        width = TINY_BERT["hidden_size"]
        state["text.transformer.pooler.dense.weight"] = torch.randn(width, width)
        state["text.transformer.pooler.dense.bias"] = torch.randn(width)
    torch.save(state, folder / "open_clip_pytorch_model.bin")
    config = {
        "model_cfg": BIOMEDCLIP_MODEL_CFG,
        "preprocess_cfg": {"mean": OPENAI_MEAN, "std": OPENAI_STD},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    _write_bert_tokenizer(folder, vocab)
    return state


def register_tiny_openai_arch(config_dir: Path) -> str:
    """Add :data:`TINY_OPENAI_ARCH` (image 32, patch 8, width 64) to open_clip's configs."""
    import open_clip

    if open_clip.get_model_config(TINY_OPENAI_ARCH) is None:
        config_dir.mkdir(parents=True, exist_ok=True)
        path = config_dir / f"{TINY_OPENAI_ARCH}.json"
        cfg = {
            "embed_dim": 32,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
            "text_cfg": {
                "context_length": 77,
                "vocab_size": 49408,
                "width": 32,
                "heads": 2,
                "layers": 2,
            },
        }
        path.write_text(json.dumps(cfg), encoding="utf-8")
        open_clip.add_model_config(path)
    return TINY_OPENAI_ARCH


def write_tiny_openai(path: Path, *, jit: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """Write an OpenAI-format CLIP file of :data:`TINY_OPENAI_ARCH` (call
    :func:`register_tiny_openai_arch` first): an fp16 state dict like OpenAI's weights, or
    a TorchScript archive. Returns the float32 state dict."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_OPENAI_ARCH, force_quick_gelu=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    if jit:
        with warnings.catch_warnings():  # torch.jit is deprecated; OpenAI's files use it
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.script(model.eval()).save(str(path))
    else:
        torch.save({k: v.half() for k, v in model.state_dict().items()}, path)
    return {k: v.clone() for k, v in model.state_dict().items()}


def make_phantom_datasets(root: Path, *, seed: int = 3) -> list[tuple[Path, Path]]:
    """Small CT-like 3D and ultrasound-like 2D phantoms, canonical and preprocessed:
    ``[(data_dir, preprocessed_dir), ...]``."""
    out = []
    for name, params in [
        ("ct", {"kind": "ct", "n_cases": 4, "shape": [16, 48, 48]}),
        ("us", {"kind": "us", "n_cases": 4, "shape": [48, 48]}),
    ]:
        data_dir, pre_dir = root / "data" / name, root / "pre" / name
        prepare_dataset(adapter="phantom", params=params, seed=seed, out_dir=data_dir)
        preprocess_dataset(
            data_dir=data_dir,
            out_dir=pre_dir,
            cleaning={"min_voxels_3d": 0, "min_pixels_2d": 20},
            n_empty_slices=1,
            seed=seed,
        )
        out.append((data_dir, pre_dir))
    return out
