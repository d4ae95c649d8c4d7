"""The sam family's promptable model (SamPromptable): a thin wrapper of SAM's own code.

Its decode is :func:`decode_prompts` on the slice's cached embedding, its model.json names
it, old caches (no family recorded) still build it, and a ``sam_models`` entry is built
by a promptable family only.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medsegflow.config import load_config
from medsegflow.errors import ConfigError, InputError
from medsegflow.families.registry import FAMILIES
from medsegflow.models.sam_archs import build_sam
from medsegflow.models.sam_cache import MODEL_CLASS_KEY, model_class, read_model_info
from medsegflow.promptable.interface import Prompt2D, PromptableModel
from medsegflow.promptable.predict2d import load_cached_model
from medsegflow.promptable.sam_model import SamPromptable, decode_prompts

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sam_fixtures import TINY_SAM, promptable, save_tiny_sam  # noqa: E402


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_sam(TINY_SAM)


def test_decode_is_sams_decoder_on_the_cached_embedding(net):
    model = promptable(net)
    assert isinstance(model, PromptableModel) and model.dims == 2
    assert {"box", "points", "logits"} <= model.native_prompts
    embedding = np.random.default_rng(0).normal(size=(32, 4, 4)).astype(np.float32)
    prompts = [
        Prompt2D(np.array([4.0, 6.0, 30.0, 20.0]), np.zeros((0, 3))),
        Prompt2D(None, np.array([[12, 10, 1], [30, 25, 0]])),
    ]
    sizes = {"original_size": (37, 53), "input_size": (45, 64)}
    ours = model.decode({"embeddings": embedding}, prompts, multimask=True, **sizes)
    direct = decode_prompts(net, embedding, prompts, multimask=True, **sizes)
    np.testing.assert_array_equal(ours.logits_pyx, direct.logits_pyx)
    np.testing.assert_array_equal(ours.low_res_pchw, direct.low_res_pchw)
    assert model.propagation_box_rule() == "original"  # SAM's recipe, not LiteMedSAM's


def test_cache_records_the_model_class_and_old_caches_build_sam(net, tmp_path):
    checkpoint = save_tiny_sam(net, tmp_path / "model" / "sam.pth")
    built = SamPromptable.build({"arch": "demo"}, checkpoint, device="cpu", encoder=False)
    info = built.describe()
    assert info["family"] == "sam" and info["image_size"] == 64
    assert built.count_parameters() == sum(t.numel() for t in net.state_dict().values())
    cache = tmp_path / "emb"
    cache.mkdir()
    legacy = {"arch": "demo", "checkpoint": str(checkpoint), "image_size": 64}
    (cache / "model.json").write_text(json.dumps(legacy), encoding="utf-8")
    assert model_class(read_model_info(cache), source="x") is SamPromptable  # before family
    loaded = load_cached_model({"embeddings": cache / "manifest.tsv", "checkpoint": checkpoint})
    assert isinstance(loaded.model, SamPromptable)
    broken = {**legacy, "family": "sam", MODEL_CLASS_KEY: "medsegflow.nowhere:Model"}
    (cache / "model.json").write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(InputError, match=r"model\.json: model class 'medsegflow.nowhere:Model'"):
        load_cached_model({"embeddings": cache / "manifest.tsv", "checkpoint": checkpoint})


def test_sam_models_family_must_be_a_promptable_family(repo_root):
    with open(repo_root / "config.yaml", encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    config = load_config(copy.deepcopy(raw))
    assert {spec["family"] for spec in config["sam_models"].values()} == {"sam"}  # default
    plain = next(name for name, family in FAMILIES.items() if family.promptable is None)
    model = next(iter(raw["sam_models"]))
    raw["sam_models"][model]["family"] = plain
    with pytest.raises(ConfigError, match=rf"sam_models\.{model}\.family: '{plain}' is not a"):
        load_config(raw)
