"""The fine-tuning study configs (SAMed on Synapse, Med-SA on ISIC 2016): their plans,
their released-checkpoint entries and their missing-weights messages."""

from __future__ import annotations

import pytest
import yaml

from medsegflow import planning
from medsegflow import workflow as wf
from medsegflow.config import load_config
from medsegflow.datasets.synapse import TRANSUNET8, TRANSUNET_SPLIT
from medsegflow.errors import ConfigError


def _config(repo_root, path):
    with open(repo_root / path, encoding="utf-8") as handle:
        return load_config(yaml.safe_load(handle))


def _dry_run(snakemake, repo_root, tmp_path, study):
    result = snakemake(["-n"], cwd=tmp_path, config=repo_root / study, check=True)
    return result, snakemake.job_counts(result.stdout)


def test_samed_synapse_plans_released_retrained_and_zero_shot_rows(repo_root, tmp_path, snakemake):
    result, counts = _dry_run(snakemake, repo_root, tmp_path, "experiments/samed_synapse.yaml")
    # one dataset; SAMed and SAMed_s imported from their LoRA files, SAMed retrained here;
    # only zero-shot SAM (the one promptable row) uses the embedding cache
    assert counts == {
        "prepare_dataset": 1,
        "preprocess_dataset": 1,
        "train_sam_model": 3,
        "embed_images": 1,
        "make_prompts": 1,
        "predict_method": 4,
        "score_method": 4,
        "collect_tables": 1,
        "summarise_tables": 1,
        "plot_metric": 2,
        "plot_qualitative": 1,
        "rank_methods": 1,
        "plot_ranking": 1,
        "collect_conventions": 1,
        "plot_conventions": 1,
        "cost_table": 1,
        "plot_cost": 1,
        "compute_robustness": 1,  # zero-shot SAM, the promptable row
        "collect_robustness": 1,
        "plot_robustness": 1,
        "collect_clicks": 1,  # clicks.csv is always written (empty without interactive rows)
        "all": 1,
    }
    # the placeholder weights only warn in a dry-run, naming key, path and source
    assert "weights.samed_lora: file not found at /data/weights/samed/epoch_159.pth" in (
        result.stderr + result.stdout
    )


def test_samed_synapse_setting(repo_root):
    config = _config(repo_root, "experiments/samed_synapse.yaml")
    entry = config["datasets"]["synapse"]
    assert entry["adapter"] == "synapse"
    assert entry["params"] == {
        "root": "/data/Synapse/RawData/Training",
        "organs": "transunet8",
        "split": "transunet",
    }
    # SAMed's output channel i is label value i of TransUNet's data: classes in value order
    organs = [name for name, value in sorted(TRANSUNET8.items(), key=lambda kv: kv[1])][1:]
    assert organs[:3] == ["spleen", "right_kidney", "left_kidney"] and organs[-1] == "pancreas"
    assert len(TRANSUNET_SPLIT) == 30 and list(TRANSUNET_SPLIT.values()).count("train") == 18
    for name in ("samed_released", "samed_s_released", "samed_trained"):
        train = config["sam_models"][name]["train"]
        assert train["classes"] == organs and train["image_size"] == 512
    trained = config["sam_models"]["samed_trained"]["train"]
    assert trained["rank"] == 4 and trained["lr"] == 0.005 and trained["warmup"] == 250
    assert trained["iterations"] / trained["schedule_iterations"] == pytest.approx(0.8)
    inputs = planning.sam_train_inputs(config, "samed_released")
    assert inputs["released"] == "/data/weights/samed/epoch_159.pth"
    assert "preprocessed" not in inputs  # an import reads no data


def test_medsa_isic_trains_on_the_official_training_set_and_scores_its_test_set(
    repo_root, tmp_path, snakemake
):
    _, counts = _dry_run(snakemake, repo_root, tmp_path, "experiments/medsa_isic.yaml")
    # one dataset (the isic2016 adapter: official training set -> train/val, test -> test),
    # 3 rows, 2 encoders (SAM and SAM with Med-SA's adapters)
    assert counts["train_sam_model"] == 1
    assert counts["prepare_dataset"] == 1 and counts["preprocess_dataset"] == 1
    assert counts["predict_method"] == 3 and counts["score_method"] == 3
    assert counts["embed_images"] == 2 and counts["make_prompts"] == 2
    assert counts["plot_qualitative"] == 1
    assert counts["compute_robustness"] == 2  # both encoders' curves, on the same grid
    config = _config(repo_root, "experiments/medsa_isic.yaml")
    assert config["datasets"]["isic2016"]["adapter"] == "isic2016"
    train = config["sam_models"]["sam_vit_b_medsa"]["train"]
    assert train["datasets"] == ["isic2016"] and train["prompt"] == "points"
    assert train["batch_size"] == 32 and train["lr"] == 0.0001


def test_missing_released_checkpoint_names_key_path_and_source(repo_root, tmp_path):
    config = _config(repo_root, "experiments/samed_synapse.yaml")
    present = tmp_path / "sam.pth"
    present.touch()
    config["weights"] = {**config["weights"], "sam_vit_b": str(present)}
    lines = wf.missing_weights(config)
    assert len(lines) == 2
    samed = next(line for line in lines if line.startswith("weights.samed_lora:"))
    assert "/data/weights/samed/epoch_159.pth" in samed
    assert "sam_models.samed_released.train" in samed and "hitachinsk/SAMed" in samed
    with pytest.raises(ConfigError, match=r"weights\.samed_s_lora"):
        wf.check_weights(config, dry_run=False)


def test_a_samed_import_needs_its_class_names(repo_root):
    config = _config(repo_root, "experiments/samed_synapse.yaml")
    config["sam_models"]["samed_released"]["train"]["classes"] = None
    with pytest.raises(ConfigError, match=r"^sam_models\.samed_released\.train\.classes: name"):
        planning.check_sam_models(config)


def test_longer_demo_fine_tuning_plans_three_trainings(repo_root, tmp_path, snakemake):
    _, counts = _dry_run(snakemake, repo_root, tmp_path, "experiments/demo_finetune_longer.yaml")
    assert counts["train_sam_model"] == 3
    assert counts["embed_images"] == 3  # LiteMedSAM, its MedSAM and Med-SA versions
    assert counts["predict_method"] == 4 and counts["score_method"] == 4
    assert counts["compute_robustness"] == 3 and counts["plot_robustness"] == 1


def test_a_dataset_with_no_methods_is_only_trained_on(repo_root):
    """methods: [] keeps a dataset for training (its preprocessed data) and plans no rows
    or figure for it; null (the default) means every method."""
    config = _config(repo_root, "config.yaml")
    config["datasets"]["phantom_us"]["methods"] = []
    assert planning.methods_for_dataset(config, "phantom_us") == []
    assert "sam_box" in planning.methods_for_dataset(config, "phantom_ct")
    figures = wf.figure_files(config)
    assert "results/figures/qualitative_phantom_ct.png" in figures
    assert not any("phantom_us" in f for f in figures)


def test_medsam_flare22_plans_box_rows_with_medsams_setting(repo_root, tmp_path, snakemake):
    result, counts = _dry_run(snakemake, repo_root, tmp_path, "experiments/medsam_flare22.yaml")
    # one dataset; 3 encoders (MedSAM, LiteMedSAM, SAM) embed once, 2 prompt sets (2D, 3D)
    assert counts == {
        "prepare_dataset": 1,
        "preprocess_dataset": 1,
        "embed_images": 3,
        "make_prompts": 2,
        "predict_method": 4,
        "score_method": 4,
        "collect_tables": 1,
        "summarise_tables": 1,
        "plot_metric": 2,
        "plot_qualitative": 1,
        "rank_methods": 1,
        "plot_ranking": 1,
        "collect_conventions": 1,
        "plot_conventions": 1,
        "cost_table": 1,
        "plot_cost": 1,
        "compute_robustness": 3,  # one per promptable model
        "collect_robustness": 1,
        "plot_robustness": 1,
        "collect_clicks": 1,  # clicks.csv is always written (empty without interactive rows)
        "all": 1,
    }
    assert "weights.medsam_vit_b: file not found at /data/weights/medsam_vit_b.pth" in (
        result.stderr + result.stdout
    )
    config = _config(repo_root, "experiments/medsam_flare22.yaml")
    entry = config["datasets"]["flare22"]
    assert entry["adapter"] == "flare22" and entry["params"]["split"] == "medsam"
    assert "duodenum" not in entry["params"]["keep_labels"]
    assert len(entry["params"]["keep_labels"]) == 12
    assert entry["window"] == {"level": 40, "width": 400}
    assert config["preprocess"]["cleaning"] == {"min_voxels_3d": 1000, "min_pixels_2d": 100}
    assert {m["model"] for m in config["methods"].values()} == {
        "medsam",
        "lite_medsam",
        "sam_vit_b",
    }


def test_study_configs_name_the_seed_datasets_adapters(repo_root):
    adapters = {
        "experiments/medclip_samv2.yaml": {
            "busi": "busi",
            "brain_mri": "figshare_brain",
            "lung_xray": "covid_qu_ex",
            "lung_ct": "lung_ct",
        },
        "experiments/samed_synapse.yaml": {"synapse": "synapse"},
        "experiments/medsa_isic.yaml": {"isic2016": "isic2016"},
        "experiments/medsam_flare22.yaml": {"flare22": "flare22"},
    }
    for path, expected in adapters.items():
        config = _config(repo_root, path)
        assert {d: e["adapter"] for d, e in config["datasets"].items()} == expected, path


def test_sammed3d_study_plans_the_interactive_protocol_for_both_models(
    repo_root, tmp_path, snakemake
):
    result, counts = _dry_run(snakemake, repo_root, tmp_path, "experiments/sammed3d.yaml")
    # 3 datasets x 2 methods: SAM-Med3D-turbo (no embedding cache, nothing trained) and
    # LiteMedSAM's 3D box with 3D clicks; every row also scored click by click
    assert counts == {
        "prepare_dataset": 3,
        "preprocess_dataset": 3,
        "embed_images": 3,  # LiteMedSAM only: SAM-Med3D encodes each crop as it predicts
        "make_prompts": 3,
        "predict_method": 6,
        "score_method": 6,
        "score_clicks": 6,
        "collect_clicks": 1,
        "plot_clicks": 3,
        "compute_robustness": 3,  # LiteMedSAM, the promptable 2D model
        "collect_robustness": 1,
        "plot_robustness": 3,
        "collect_tables": 1,
        "summarise_tables": 1,
        "plot_metric": 2,
        "plot_qualitative": 3,
        "rank_methods": 1,
        "plot_ranking": 3,
        "collect_conventions": 1,
        "plot_conventions": 1,
        "cost_table": 1,
        "plot_cost": 1,
        "all": 1,
    }
    assert "weights.sam_med3d_turbo: file not found at /data/weights/sam_med3d_turbo.pth" in (
        result.stderr + result.stdout
    )
    config = _config(repo_root, "experiments/sammed3d.yaml")
    turbo = config["methods"]["sammed3d_turbo"]
    assert turbo["spec"] == "turbo" and turbo["crop_centre"] == "first_click"  # no oracle
    assert turbo["clicks"] == {"n": 5, "first": "center", "mode": "center"}
    assert config["methods"]["litemedsam_box3d"]["clicks3d"]["n"] == 5
    assert config["prompts"]["box3d"]["type"] == "box3d"
    assert wf.interactive_pairs(config) == [
        (d, m) for d in ("flare22", "spleen", "prostate") for m in config["methods"]
    ]
