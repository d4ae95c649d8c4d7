"""Shared steps of the 2D SAM-family conformance tests (tests/conformance/test_conformance_*.py).

A fixture's checkpoint goes through the path a user's config goes through: a ``weights:``
key and a ``sam_models:`` entry added to the repository's ``config.yaml``, validated by
:func:`medsegflow.config.load_config`, resolved by :mod:`medsegflow.planning` (arch and
checkpoint), built by its family's promptable class
(:meth:`medsegflow.promptable.sam_model.SamPromptable.build`, the official loader); images
are embedded by :meth:`~medsegflow.promptable.sam_model.SamPromptable.encode_slices` at the
entry's precision,
written to and read back from the embedding cache (:mod:`medsegflow.models.sam_cache`),
and decoded by :func:`medsegflow.promptable.sam_model.decode_prompts`, as the embed and
predict stages do. Nothing here reimplements a recipe: the tests compare these outputs with
the official code's golden files.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medsegflow import planning
from medsegflow.config import load_config
from medsegflow.families.registry import family_named
from medsegflow.models.sam_cache import CaseEmbeddings, load_case_embeddings, save_case_embeddings
from medsegflow.precision import encoder_batch_size

REPO = Path(__file__).resolve().parents[1]

TINY_SAM_ARCH = {"embed_dim": 64, "depth": 3, "num_heads": 2, "global_attn_indexes": [2]}
"""The tiny SAM of ``../shared/conformance/sam/arch.json``: ViT encoder sizes; the rest
(image 1024, patch 16, window 14, the default prompt encoder and mask decoder) is ViT-B's."""


@dataclass
class ConfiguredModel:
    """A SAM-family model loaded from a config entry, as the embed/predict stages do:
    ``promptable`` is the family's model, ``model`` its segment_anything network."""

    name: str
    config: dict[str, Any]
    arch: Any
    checkpoint: str
    precision: str
    model: Any
    device: Any
    promptable: Any


def configured_model(
    name: str, entry: dict[str, Any], weights: dict[str, str] | None = None
) -> ConfiguredModel:
    """Load ``sam_models.<name>: entry`` (with ``weights``) through the user's config path."""
    with open(REPO / "config.yaml", encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    raw = copy.deepcopy(raw)
    raw.setdefault("weights", {}).update(weights or {})
    raw["sam_models"][name] = entry
    config = load_config(raw)
    arch = planning.sam_model_arch(config, name)
    checkpoint = planning.sam_checkpoint(config, name)
    spec = config["sam_models"][name]
    precision = spec["precision"]
    built = (
        family_named(spec["family"])
        .promptable()
        .build({**spec, "arch": arch}, checkpoint, device="cpu", precision=precision)
    )
    return ConfiguredModel(
        name, config, arch, checkpoint, precision, built.net, built.device, built
    )


def embed_through_cache(
    loaded: ConfiguredModel, slices: np.ndarray, cache_dir: Path, case_id: str
) -> CaseEmbeddings:
    """Embed ``(N, H, W[, 3])`` uint8 slices and return them as read back from the cache."""
    features = loaded.promptable.encode_slices(
        slices,
        batch_size=encoder_batch_size(
            loaded.config["sam_models"][loaded.name]["embed_batch_size"], "cpu"
        ),
    )
    cached = CaseEmbeddings(
        case_id=case_id,
        z=np.arange(len(slices), dtype=np.int64),
        arrays=features.arrays,
        original_size=features.original_size,
        input_size=features.input_size,
        image_size=features.image_size,
    )
    path = Path(cache_dir) / f"{case_id}.npz"
    save_case_embeddings(path, cached)
    return load_case_embeddings(path)


def assert_masks_equal_except_near(
    ours: np.ndarray, reference: np.ndarray, reference_margin: np.ndarray, tol: float, what: str
) -> int:
    """Masks equal, except where ``|reference_margin| <= tol`` (the README's rule: a pixel
    may differ only where the reference's upsampled logit/probability is that close to the
    threshold). Returns the number of such tolerated pixels that differ."""
    ours, reference = np.asarray(ours, bool), np.asarray(reference, bool)
    assert ours.shape == reference.shape, f"{what}: shape {ours.shape} != {reference.shape}"
    differ = ours != reference
    unexplained = differ & (np.abs(reference_margin) > tol)
    assert not unexplained.any(), (
        f"{what}: {int(unexplained.sum())} pixels differ away from the threshold "
        f"({int(differ.sum())} differ in all)"
    )
    return int(differ.sum())
