"""The demo CLIP trained inside the pipeline, and the folder layout every trained CLIP is
saved in.

The demo CLIP is a small open_clip ``CustomTextCLIP``: open_clip's native
``VisionTransformer`` (default 64 x 64 input, 8 x 8 patches, 10 blocks of width 64, so the
vision-layer ablation of M2IB over blocks 7-9 has blocks to read) and a small Hugging Face
BERT text tower (4 layers of width 64, mean-pooled, :data:`DEMO_ARCH`) whose WordPiece vocabulary is
built from the words of the training captions and text prompts (plus single characters as
``##`` pieces, so that unseen words still tokenize, letter by letter).

:func:`write_clip_folder` saves any bundle in BiomedCLIP's hub layout, plus the BERT
``config.json``::

    open_clip_config.json       {"model_cfg": ..., "preprocess_cfg": {"mean", "std"}}
    open_clip_pytorch_model.bin torch.save(model.state_dict())
    config.json                 Hugging Face text tower config (Hugging Face text only)
    vocab.txt, tokenizer_config.json, special_tokens_map.json   (BERT tokenizer only)

so :func:`medsegflow.clip.backends.load_clip_folder` loads it by BiomedCLIP's code path.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import string
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from medsegflow.clip.backends import (
    CONFIG_ATTR,
    CONFIG_FILE,
    TEXT_CONFIG_FILE,
    WEIGHTS_FILE,
    build_open_clip_model,
    make_tokenizer,
)
from medsegflow.clip.bundle import ClipBundle
from medsegflow.clip.registry import OPENAI_MEAN, OPENAI_STD

SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
DEMO_TEXT_NAME = "medsegflow-demo-bert"
"""``hf_model_name`` of the demo text tower (a name only: its config is in the folder)."""

DEMO_ARCH: dict[str, Any] = {
    "image_size": 64,
    "patch_size": 8,
    "vision_width": 64,
    "vision_layers": 10,
    "vision_head_width": 16,
    "text_width": 64,
    "text_layers": 4,
    "text_heads": 4,
    "embed_dim": 64,
    "context_length": 32,
    "text_pooler": "mean_pooler",
    "vision_pool": "tok",
}
"""Defaults of :func:`build_demo_clip` (about 0.7 M parameters with the phantoms'
vocabulary; an 8 x 8 patch grid)."""


def demo_vocab(words: Iterable[str]) -> list[str]:
    """WordPiece vocabulary: special tokens, punctuation, digits and letters, their ``##``
    continuations, then the lowercase words (``[a-z0-9]+`` runs) of ``words``, sorted."""
    found = {w for text in words for w in re.findall(r"[a-z0-9]+", str(text).lower())}
    chars = list(string.ascii_lowercase + string.digits)
    base = [*SPECIAL_TOKENS.values(), *string.punctuation, *chars, *(f"##{c}" for c in chars)]
    return base + sorted(found - set(base))


def write_bert_tokenizer(
    folder: Path, vocab: list[str], *, context_length: int, lowercase: bool = True
) -> None:
    """``vocab.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json`` of a BERT
    WordPiece tokenizer (the files of BiomedCLIP's repository)."""
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(
        json.dumps(SPECIAL_TOKENS, indent=2) + "\n", encoding="utf-8"
    )
    tokenizer_config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": lowercase,
        "model_max_length": int(context_length),
        **SPECIAL_TOKENS,
    }
    (folder / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config, indent=2) + "\n", encoding="utf-8"
    )


def build_demo_clip(
    *,
    words: Iterable[str],
    image_size: int = DEMO_ARCH["image_size"],
    patch_size: int = DEMO_ARCH["patch_size"],
    vision_width: int = DEMO_ARCH["vision_width"],
    vision_layers: int = DEMO_ARCH["vision_layers"],
    vision_head_width: int = DEMO_ARCH["vision_head_width"],
    text_width: int = DEMO_ARCH["text_width"],
    text_layers: int = DEMO_ARCH["text_layers"],
    text_heads: int = DEMO_ARCH["text_heads"],
    embed_dim: int = DEMO_ARCH["embed_dim"],
    context_length: int = DEMO_ARCH["context_length"],
    text_pooler: str = DEMO_ARCH["text_pooler"],
    vision_pool: str = DEMO_ARCH["vision_pool"],
    seed: int = 0,
) -> ClipBundle:
    """A randomly initialised demo CLIP (seeded with ``seed``) whose tokenizer knows
    ``words``; see the module docstring. Inputs are normalised with OpenAI's mean/std.
    ``text_pooler`` is open_clip's ``hf_pooler_type``: the mean of the token states by
    default (why: docs/families/text_sam.md, "The demo CLIP")."""
    import torch
    from transformers import BertConfig

    if image_size % patch_size or vision_width % vision_head_width or text_width % text_heads:
        raise ValueError(
            f"demo CLIP: image_size {image_size} must be a multiple of patch_size "
            f"{patch_size}, widths multiples of the head width/count"
        )
    vocab = demo_vocab(words)
    model_cfg = {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": image_size,
            "patch_size": patch_size,
            "width": vision_width,
            "layers": vision_layers,
            "head_width": vision_head_width,
            "pool_type": vision_pool,
        },
        "text_cfg": {
            "hf_model_name": DEMO_TEXT_NAME,
            "hf_tokenizer_name": DEMO_TEXT_NAME,
            "hf_proj_type": "mlp",
            "hf_pooler_type": text_pooler,
            "context_length": context_length,
        },
    }
    bert = BertConfig(
        vocab_size=len(vocab),
        hidden_size=text_width,
        num_hidden_layers=text_layers,
        num_attention_heads=text_heads,
        intermediate_size=4 * text_width,
        max_position_embeddings=context_length,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
    )
    torch.manual_seed(int(seed))
    with tempfile.TemporaryDirectory(prefix="medsegflow-demo-clip-") as tmp:
        text_dir = Path(tmp)
        bert.to_json_file(text_dir / TEXT_CONFIG_FILE)
        write_bert_tokenizer(text_dir, vocab, context_length=context_length)
        model = build_open_clip_model(model_cfg, text_dir=text_dir)
        tokenizer = make_tokenizer(model_cfg["text_cfg"], text_dir=text_dir)
    preprocess = {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)}
    setattr(model, CONFIG_ATTR, {"model_cfg": model_cfg, "preprocess_cfg": preprocess})
    return ClipBundle(
        model=model.eval(),
        tokenizer=tokenizer,
        image_size=image_size,
        mean=OPENAI_MEAN,
        std=OPENAI_STD,
        name="demo",
        kind="demo",
    )


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``folder``; on success it replaces ``folder`` (any
    previous content is removed), on error it is deleted and ``folder`` left untouched."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_tokenizer(tokenizer: Any, folder: Path) -> None:
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is None:  # open_clip's BPE tokenizer ships with open_clip
        return
    vocab = inner.get_vocab()
    ordered = sorted(vocab, key=vocab.get)
    if type(inner).__name__.startswith("Bert") and [vocab[t] for t in ordered] == list(
        range(len(ordered))
    ):
        lowercase = bool(inner.init_kwargs.get("do_lower_case", True))
        write_bert_tokenizer(
            folder, ordered, context_length=tokenizer.context_length, lowercase=lowercase
        )
    else:
        inner.save_pretrained(folder)


def write_clip_folder(
    bundle: ClipBundle,
    folder: str | os.PathLike,
    *,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Save ``bundle`` in the open_clip folder layout (module docstring), atomically: the
    files go to a temporary folder that replaces ``folder`` when complete.

    Args:
        bundle: a bundle from :func:`build_demo_clip` or :mod:`medsegflow.clip.backends`
            (its model carries ``open_clip_config``).
        extra_files: more text files to write in the folder (name -> content), e.g. the
            training log.
    """
    import torch

    model = bundle.model
    config = copy.deepcopy(getattr(model, CONFIG_ATTR, None))
    if not config:
        raise ValueError(
            f"{bundle.name}: the model has no {CONFIG_ATTR} (not loaded by medsegflow)"
        )
    config.setdefault("preprocess_cfg", {}).update(mean=list(bundle.mean), std=list(bundle.std))
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_folder(folder) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        torch.save(state, tmp / WEIGHTS_FILE)
        if config["model_cfg"]["text_cfg"].get("hf_model_name"):
            model.text.config.to_json_file(tmp / TEXT_CONFIG_FILE)
            _write_tokenizer(bundle.tokenizer, tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    return Path(folder)
