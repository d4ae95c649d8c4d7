from __future__ import annotations

import copy

import pytest
import yaml

from medsegflow.config import ablation_origins, expand_ablations, load_config
from medsegflow.errors import ConfigError


@pytest.fixture()
def raw(repo_root):
    with open(repo_root / "config.yaml") as handle:
        return yaml.safe_load(handle)


def test_default_config_loads_with_defaults_and_ablations(raw):
    config = load_config(raw)
    assert config["methods"]["otsu_box"]["n_clusters"] == 2  # schema default filled
    assert config["methods"]["otsu_box"]["polarity"] == "auto"
    assert config["metrics"]["nsd_tolerance_mm"] == 2.0
    assert "kmeans_box__n_clusters-3" in config["methods"]
    assert config["methods"]["kmeans_box__n_clusters-3"]["n_clusters"] == 3
    assert config["methods"]["kmeans_box"]["n_clusters"] == 2
    assert raw["methods"]["kmeans_box"] == {
        "family": "classical",
        "algorithm": "kmeans",
        "prompts": "box_j20",
    }  # input not mutated


def test_grid_expands_every_combination_with_readable_names(raw):
    raw["ablations"] = {
        "grid2": {
            "base": "kmeans_box",
            "grid": {"n_clusters": [2, 3, 4], "polarity": ["dark", "auto"]},
        }
    }
    config = load_config(raw)
    generated = sorted(ablation_origins(config))
    assert len(generated) == 6
    assert "kmeans_box__n_clusters-4__polarity-dark" in generated
    assert config["methods"]["kmeans_box__n_clusters-4__polarity-dark"]["polarity"] == "dark"
    assert ablation_origins(config)["kmeans_box__n_clusters-2__polarity-auto"] == (
        "grid2",
        "kmeans_box",
    )


def test_dotted_grid_keys_reach_nested_parameters(raw):
    raw["methods"]["kmeans_box"]["extra"] = {"a": 1}
    config = {
        "methods": raw["methods"],
        "ablations": {"nested": {"base": "kmeans_box", "grid": {"extra.a": [5]}}},
    }
    methods = expand_ablations(config)
    assert methods["kmeans_box__extra.a-5"]["extra"] == {"a": 5}


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (
            lambda c: c.update(colour="red"),
            "<config>: Additional properties are not allowed ('colour' was unexpected)",
        ),
        (
            lambda c: c["methods"]["otsu_box"].update(algorithm="watershed"),
            "methods.otsu_box.algorithm: 'watershed' is not one of",
        ),
        (lambda c: c["methods"]["otsu_box"].update(n_cluster=3), "methods.otsu_box: Additional"),
        (lambda c: c["metrics"].update(nsd_tolerance_mm=-1), "metrics.nsd_tolerance_mm"),
        (
            lambda c: c["datasets"]["phantom_ct"].update(window="liver"),
            "datasets.phantom_ct.window",
        ),
        (lambda c: c["datasets"]["phantom_ct"].pop("adapter"), "datasets.phantom_ct: 'adapter'"),
        (
            lambda c: c["methods"]["otsu_box"].update(prompts="box_j5"),
            "methods.otsu_box.prompts: unknown prompt set 'box_j5'",
        ),
        (
            lambda c: c["ablations"]["kmeans_clusters"].update(base="nope"),
            "ablations.kmeans_clusters.base: unknown method 'nope'",
        ),
        (
            lambda c: c["ablations"]["kmeans_clusters"]["grid"].update(n_clusters=[1]),
            "ablations: generated method 'kmeans_box__n_clusters-1': n_clusters: 1 is less than",
        ),
        (lambda c: c["methods"].update({"bad name": c["methods"]["otsu_box"]}), "methods"),
    ],
)
def test_bad_config_names_the_key(raw, edit, needle):
    bad = copy.deepcopy(raw)
    edit(bad)
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message
