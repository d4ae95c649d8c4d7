"""The sam2 family's declaration: registered with its promptable model, its method and
sam_models schemas fill the defaults, its checks and missing-weight lines name the key."""

from __future__ import annotations

import pytest

from medsegflow.errors import ConfigError
from medsegflow.families import sam2
from medsegflow.families.registry import FAMILIES, complete_method
from medsegflow.schema import complete


def _config(tmp_path, **method):
    weights = tmp_path / "MedSAM2_latest.pt"
    return {
        "datasets": {"ct": {}},
        "weights": {"medsam2": str(weights)},
        "sam_models": {
            "medsam2": {"family": "sam2", "config": "sam2.1_hiera_t512.yaml", "weights": "medsam2"},
            "sam_b": {"family": "sam", "arch": "vit_b", "weights": "medsam2"},
        },
        "prompts": {"box3d": {"type": "box3d"}, "boxes": {"type": "box"}},
        "methods": {"m": {"family": "sam2", "model": "medsam2", "prompts": "box3d", **method}},
    }


def test_the_family_is_registered_with_its_model_class():
    family = FAMILIES["sam2"]
    assert family is sam2.FAMILY and family.cache == "sam_embeddings" and family.env == "torch"
    cls = family.promptable()
    assert cls.__name__ == "Sam2Promptable" and cls.kind == "sam2" and cls.dims == 2
    assert {"box", "points", "logits", "key_slice_box"} <= cls.native_prompts


def test_method_and_model_defaults_come_from_the_schema():
    method = complete_method({"family": "sam2", "model": "medsam2", "prompts": "p"}, "m")
    assert method["propagation"] == "video" and method["multimask"] is True
    assert method["clicks3d"] == {"n": 0, "mode": "center", "mask_input": True}
    with pytest.raises(ConfigError, match=r"methods\.m\.propagation"):
        complete_method({"family": "sam2", "model": "x", "prompts": "p", "propagation": "up"}, "m")
    entry = complete(
        {"family": "sam2", "config": "configs/sam2.1/sam2.1_hiera_t.yaml", "weights": "w"},
        "families/sam2.schema.yaml#/$defs/sam_model",
        key="sam_models.s",
    )
    assert entry["overrides"] == [] and entry["largest_component"] is True
    assert entry["train"] is None and entry["arch"] == "sam2" and entry["precision"] == "auto"


def test_checks_name_the_key(tmp_path):
    config = _config(tmp_path)
    sam2.check_sam2(config)
    config["methods"]["m"]["model"] = "sam_b"
    with pytest.raises(ConfigError, match=r"methods\.m\.model: sam_models\.sam_b is of family sam"):
        sam2.check_sam2(config)
    config = _config(tmp_path, prompts="boxes", clicks3d={"n": 2})
    with pytest.raises(ConfigError, match=r"methods\.m\.clicks3d\.n: .*box3d"):
        sam2.check_sam2(config)
    config = _config(tmp_path, clicks3d={"n": 2, "mask_input": True})
    with pytest.raises(ConfigError, match=r"methods\.m\.clicks3d\.mask_input: set it to false"):
        sam2.check_sam2(config)
    sam2.check_sam2(_config(tmp_path, clicks3d={"n": 2, "mask_input": False}))
    sam2.check_sam2(_config(tmp_path, clicks3d={"n": 2}, propagation="harness"))


def test_a_missing_checkpoint_is_one_line_with_its_official_source(tmp_path, monkeypatch):
    config = _config(tmp_path)
    monkeypatch.setattr(sam2, "dataset_method_pairs", lambda config: [("ct", "m")])
    (line,) = sam2.missing_sam2_weights(config)
    assert line.startswith(f"weights.medsam2: file not found at {tmp_path / 'MedSAM2_latest.pt'}")
    assert "wanglab/MedSAM2" in line and "\n" not in line
    config["weights"]["medsam2"] = str(tmp_path / "sam2.1_hiera_tiny.pt")
    (line,) = sam2.missing_sam2_weights(config)
    assert "facebookresearch/sam2" in line and "sam2.1_hiera_tiny.pt" in line
    (tmp_path / "sam2.1_hiera_tiny.pt").write_bytes(b"x")
    assert sam2.missing_sam2_weights(config) == []


def test_the_config_checks_sam2_entries_by_the_familys_schema(repo_root):
    import copy

    import yaml

    from medsegflow.config import validate_config

    config = yaml.safe_load((repo_root / "config.yaml").read_text(encoding="utf-8"))
    config.setdefault("weights", {})["medsam2"] = "/data/MedSAM2_latest.pt"
    entry = {"family": "sam2", "config": "configs/sam2.1/sam2.1_hiera_t.yaml", "weights": "medsam2"}
    config["sam_models"]["medsam2"] = entry
    done = validate_config(config)
    assert done["sam_models"]["medsam2"]["overrides"] == []
    assert done["sam_models"]["medsam2"]["arch"] == "sam2"
    sam_entries = [m for m in done["sam_models"].values() if m["family"] == "sam"]
    assert sam_entries and all("embed_batch_size" in m for m in sam_entries)
    for bad, problem in (
        ({k: v for k, v in entry.items() if k != "config"}, "'config' is a required property"),
        ({**entry, "family": "sam"}, "config: unknown key"),
        ({**entry, "depth": 3}, "depth: unknown key"),
    ):
        config = copy.deepcopy(config)
        config["sam_models"]["medsam2"] = bad
        with pytest.raises(ConfigError, match=rf"sam_models\.medsam2.*{problem}"):
            validate_config(config)


def test_the_run_names_a_missing_sam2_checkpoint_once_with_its_source(repo_root):
    import yaml

    from medsegflow.config import validate_config
    from medsegflow.workflow import missing_weights

    config = yaml.safe_load((repo_root / "config.yaml").read_text(encoding="utf-8"))
    config.setdefault("weights", {})["medsam2"] = "/nonexistent/MedSAM2_latest.pt"
    config["sam_models"]["medsam2"] = {
        "family": "sam2",
        "config": "configs/sam2.1/sam2.1_hiera_t.yaml",
        "weights": "medsam2",
    }
    box3d = next(k for k, v in config["prompts"].items() if v.get("type") == "box3d")
    config["methods"]["medsam2_video"] = {"family": "sam2", "model": "medsam2", "prompts": box3d}
    lines = [line for line in missing_weights(validate_config(config)) if "medsam2" in line]
    assert lines == [
        "weights.medsam2: file not found at /nonexistent/MedSAM2_latest.pt (needed by "
        f"sam_models.medsam2); {sam2.MEDSAM2_SOURCE}"
    ]


def test_a_sam2_method_plans_through_the_shared_rules(repo_root, tmp_path, snakemake):
    import yaml

    config = yaml.safe_load((repo_root / "config.yaml").read_text(encoding="utf-8"))
    weights = tmp_path / "MedSAM2_latest.pt"
    weights.write_bytes(b"dry-run only")
    config.setdefault("weights", {})["medsam2"] = str(weights)
    config["sam_models"]["medsam2"] = {
        "family": "sam2",
        "config": "configs/sam2.1/sam2.1_hiera_t.yaml",
        "overrides": ["++model.image_size=512"],
        "weights": "medsam2",
    }
    box3d = next(k for k, v in config["prompts"].items() if v.get("type") == "box3d")
    config["methods"] = {
        "medsam2_video": {"family": "sam2", "model": "medsam2", "prompts": box3d},
        "medsam2_harness": {
            "family": "sam2",
            "model": "medsam2",
            "prompts": box3d,
            "propagation": "harness",
        },
    }
    config["ablations"] = {}
    for dataset in config["datasets"].values():
        dataset["methods"] = list(config["methods"])
        dataset.pop("exclude_methods", None)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = snakemake(["-n"], cwd=tmp_path, config=path, check=True)
    counts = snakemake.job_counts(result.stdout)
    n_datasets = len(config["datasets"])
    assert counts["embed_images"] == n_datasets  # one cache of medsam2 per dataset
    assert counts["predict_method"] == 2 * n_datasets
