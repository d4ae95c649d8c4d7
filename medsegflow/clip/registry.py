"""CLIP backends of the ``clip_models:`` config block: what each needs and where to get it.

Pure data and path checks (no torch), so the workflow can report a missing download at
parse time, before any job starts.

``clip_models.<name>.arch``:

- ``biomedclip``: ``weights: <key>``; ``weights.<key>`` is a local folder with the files of
  the Hugging Face repository :data:`BIOMEDCLIP_HUB_ID` (``open_clip_config.json``,
  ``open_clip_pytorch_model.bin`` or ``open_clip_model.safetensors``, ``vocab.txt``,
  ``tokenizer_config.json``, ``special_tokens_map.json``);
- ``openai``: ``weights: <key>``; ``weights.<key>`` is OpenAI's CLIP file (TorchScript or a
  plain state dict), ``open_clip_arch`` names its open_clip architecture (default
  ``ViT-B-16``);
- ``demo``: trained from scratch by the pipeline into ``results/models/<name>/``;
- ``finetuned``: a folder written by the pipeline's fine-tuning, ``results/models/<name>/``.

A ``biomedclip`` or ``openai`` entry with a ``finetune:`` block is fine-tuned by the
pipeline: its base weights must exist, and later stages load the fine-tuned folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BIOMEDCLIP_HUB_ID = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
"""Hugging Face hub id of BiomedCLIP (``hf-hub:`` + this id in open_clip)."""

OPENAI_VIT_B_16_URL = (
    "https://openaipublic.azureedge.net/clip/models/"
    "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt"
)
"""OpenAI's published ViT-B/16 CLIP file (the ``_MODELS`` table of openai/CLIP)."""

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
"""OpenAI CLIP's RGB normalisation (BiomedCLIP's ``preprocess_cfg`` uses the same)."""

DOWNLOADED_ARCHS = ("biomedclip", "openai")
TRAINED_ARCHS = ("demo", "finetuned")
CLIP_ARCHS = DOWNLOADED_ARCHS + TRAINED_ARCHS


@dataclass(frozen=True)
class OfficialClip:
    """What a downloaded backend's ``weights.<key>`` must be, and its official source."""

    is_folder: bool
    expected: str
    source: str


OFFICIAL_CLIP_WEIGHTS: dict[str, OfficialClip] = {
    "biomedclip": OfficialClip(
        True,
        "a folder with the BiomedCLIP repository's files (open_clip_config.json, "
        "open_clip_pytorch_model.bin, vocab.txt, tokenizer_config.json, "
        "special_tokens_map.json)",
        f"https://huggingface.co/{BIOMEDCLIP_HUB_ID} (download the whole repository, e.g. "
        f"`huggingface-cli download {BIOMEDCLIP_HUB_ID} --local-dir <folder>`)",
    ),
    "openai": OfficialClip(
        False,
        "OpenAI's CLIP model file (e.g. ViT-B-16.pt)",
        f"{OPENAI_VIT_B_16_URL} (the _MODELS table of github.com/openai/CLIP, clip/clip.py)",
    ),
}


def is_trained_clip(spec: Mapping[str, Any]) -> bool:
    """True when the pipeline writes the model's folder (demo, finetuned, ``finetune:``)."""
    return spec.get("arch") in TRAINED_ARCHS or bool(spec.get("finetune"))


def check_clip_weights(
    spec: Mapping[str, Any], name: str, weights: Mapping[str, str | os.PathLike]
) -> str | None:
    """One line naming the config keys, the expected path and the official source when
    the downloaded weights of ``clip_models.<name>`` are missing; None when usable or when
    the model is trained from scratch by the pipeline.

    Only the presence and kind (folder or file) of the path are checked: the files
    themselves are verified when loaded (:func:`medsegflow.clip.backends.load_clip`).
    """
    arch = spec.get("arch")
    key = f"clip_models.{name}"
    if arch in TRAINED_ARCHS:
        return None
    if arch not in OFFICIAL_CLIP_WEIGHTS:
        return f"{key}.arch: unknown CLIP arch {arch!r}; known: {', '.join(CLIP_ARCHS)}"
    official = OFFICIAL_CLIP_WEIGHTS[arch]
    weight_key = spec.get("weights")
    if not weight_key:
        return f"{key}.weights: required for arch '{arch}' ({official.expected}; {official.source})"
    if weight_key not in weights:
        return f"{key}.weights: '{weight_key}' is not a key under weights:"
    path = Path(weights[weight_key])
    found = path.is_dir() if official.is_folder else path.is_file()
    if found:
        return None
    state = "not found"
    if path.exists():
        state = "is a file, expected a folder" if official.is_folder else "is a folder"
    return (
        f"weights.{weight_key} (used by {key}, arch {arch}): {path} {state}; expected "
        f"{official.expected}; official source: {official.source}"
    )


def missing_clip_weights(config: Mapping[str, Any], *, names: list[str] | None = None) -> list[str]:
    """:func:`check_clip_weights` lines for ``names`` (default: every ``clip_models`` entry)."""
    clips = config.get("clip_models") or {}
    weights = config.get("weights") or {}
    lines = []
    for name in clips if names is None else names:
        line = check_clip_weights(clips[name], name, weights)
        if line:
            lines.append(line)
    return lines
