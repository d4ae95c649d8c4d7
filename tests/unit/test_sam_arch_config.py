"""sam_models.<name>.arch given as explicit hyper-parameters (a mapping): config validation."""

from __future__ import annotations

import copy

import pytest
import yaml

from medsegflow import planning
from medsegflow.config import load_config
from medsegflow.errors import ConfigError
from medsegflow.models.sam_archs import arch_is, arch_label, arch_spec


@pytest.fixture(scope="module")
def raw(repo_root):
    with open(repo_root / "config.yaml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def with_model(raw, arch, **extra):
    config = copy.deepcopy(raw)
    config.setdefault("weights", {})["tiny"] = "/nowhere/tiny_sam.pth"
    config["sam_models"]["tiny"] = {"arch": arch, "weights": "tiny", **extra}
    return config


TINY = {"like": "vit_b", "embed_dim": 64, "depth": 3, "num_heads": 2, "global_attn_indexes": [2]}


def test_a_mapping_arch_validates_and_resolves_to_its_hyper_parameters(raw):
    config = load_config(with_model(raw, TINY))
    arch = planning.sam_model_arch(config, "tiny")
    assert arch == TINY
    spec = arch_spec(arch)
    assert (spec["embed_dim"], spec["depth"], spec["num_heads"]) == (64, 3, 2)
    assert spec["img_size"] == 1024 and spec["window_size"] == 14  # vit_b's
    assert spec["input_recipe"] == "sam" and "like" not in spec
    assert arch_spec({**TINY, "like": "medsam"})["input_recipe"] == "medsam"
    assert arch_is(arch, "vit_b") and not arch_is(arch, "medsam")
    assert arch_label(arch) == "custom (like vit_b)"


def test_a_model_trained_from_a_mapping_arch_base_inherits_it(raw):
    config = with_model(raw, TINY)
    config["sam_models"]["tuned"] = {"base": "tiny", "train": {"recipe": "finetune"}}
    assert planning.sam_model_arch(load_config(config), "tuned") == TINY


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ({**TINY, "depht": 3}, "depht"),  # schema: unknown key
        ({**TINY, "like": "vit_x"}, "like"),  # schema: unknown base arch
        ({**TINY, "depth": 0}, "depth"),  # schema: minimum
        ({**TINY, "global_attn_indexes": [5]}, "global_attn_indexes"),  # outside depth
        ({**TINY, "num_heads": 3}, "num_heads"),  # 64 is not a multiple of 3
        ({**TINY, "img_size": 1000}, "patch_size"),
        ({**TINY, "encoder": "tiny_vit"}, "encoder"),  # differs from vit_b's
        ({}, "arch"),  # an empty mapping
    ],
)
def test_bad_mapping_archs_name_the_key(raw, arch, message):
    with pytest.raises(ConfigError, match=r"sam_models\.tiny\.arch") as err:
        load_config(with_model(raw, arch))
    assert message in str(err.value)
    assert "\n" not in str(err.value)
