"""Dry-runs and lint of the workflow: expected jobs per rule, clear config errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# Jobs per rule of the demo (config.yaml) alone.
DEMO_COUNTS = {
    "prepare_dataset": 2,
    "preprocess_dataset": 2,
    "train_sam_model": 3,
    "make_prompts": 3,
    "embed_images": 4,
    "make_clip_captions": 1,
    "finetune_clip": 1,
    "compute_saliency": 1,
    "make_coarse_masks": 1,
    "make_mask_prompts": 1,
    "predict_pseudolabels": 1,
    "convert_nnunet_dataset": 2,
    "plan_nnunet_dataset": 2,
    "train_nnunet": 2,
    "predict_method": 15,
    "score_method": 15,
    "collect_tables": 1,
    "summarise_tables": 1,
    "plot_metric": 2,
    "plot_qualitative": 2,
    "rank_methods": 1,
    "plot_ranking": 2,
    "collect_conventions": 1,
    "plot_conventions": 1,
    "cost_table": 1,
    "plot_cost": 1,
    "collect_robustness": 1,
    "train_sam3d_model": 1,
    "score_clicks": 1,  # SAM-Med3D
    "collect_clicks": 1,
    "plot_clicks": 1,
    "all": 1,
}


def test_default_config_dry_run_has_one_job_per_dataset_and_method(snakemake, demo_plan):
    counts = snakemake.job_counts(demo_plan.stdout)
    # The demo's seed-system rows. phantom_us: 7 methods (otsu, kmeans, LiteMedSAM's box,
    # the text path's coarse masks and SAM, nnU-Net 2d and weak); phantom_ct: 8 (otsu,
    # kmeans, LiteMedSAM's box and 3D box, the three fine-tuned rows, SAM-Med3D trained
    # here). LiteMedSAM's weights are packaged; its three fine-tuned versions (MedSAM,
    # SAMed, Med-SA recipes) are trained here, and the two promptable ones embed phantom_ct
    # with their own encoders (SAMed's semantic model encodes as it predicts). GT box prompt
    # sets on both datasets, box3d on CT; one saliency, coarse-mask and mask-prompt job;
    # no robustness curves (the collected table is empty); one interactive method.
    assert counts == DEMO_COUNTS


def test_the_analyses_overlay_adds_the_analyses_to_the_demo(snakemake, analyses_plan):
    counts = snakemake.job_counts(analyses_plan.stdout)
    # experiments/demo_analyses.yaml over config.yaml. phantom_us: 16 methods (otsu, kmeans
    # + 1 grid point, 4 SAM methods on LiteMedSAM, SAM without text, 3 text-driven methods
    # + 3 grid points, nnU-Net 2d and weak); phantom_ct: 11 (otsu, kmeans + its grid point,
    # LiteMedSAM's box and 3D box, the 3D box with 3D clicks, the three fine-tuned rows,
    # SAM-Med3D trained here, nnU-Net 2d). 3 GT prompt sets on US, box and box3d on CT;
    # 4 saliency jobs (US: base, 2 prompt sets, tuned), 5 coarse-mask jobs, 2 prompt files
    # from coarse masks; one robustness job (LiteMedSAM on US), two interactive methods.
    assert counts == {
        **DEMO_COUNTS,
        "make_prompts": 5,
        "tune_text_method": 1,
        "compute_saliency": 4,
        "make_coarse_masks": 5,
        "make_mask_prompts": 2,
        "convert_nnunet_dataset": 3,
        "plan_nnunet_dataset": 3,
        "train_nnunet": 3,
        "predict_method": 27,
        "score_method": 27,
        "compute_robustness": 1,  # LiteMedSAM on phantom_us (robustness.datasets)
        "plot_robustness": 1,
        "score_clicks": 2,  # SAM-Med3D and LiteMedSAM's 3D box with 3D clicks
    }


def test_ablation_grid_and_dataset_restriction_change_the_dag(
    demo_analyses_config, tmp_path, snakemake
):
    config = demo_analyses_config
    config["ablations"]["kmeans_clusters"]["grid"] = {
        "n_clusters": [3, 4, 5],
        "polarity": ["auto", "dark"],
    }
    config["datasets"]["phantom_us"]["methods"] = ["otsu_box"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = snakemake(["-n"], cwd=tmp_path, config=path, check=True)
    counts = snakemake.job_counts(result.stdout)
    # phantom_ct: 10 configured methods (not sam_auto, the point prompts, clicks, the text
    # path, the weak nnU-Net) + 6 k-means points; phantom_us: otsu_box
    assert counts["predict_method"] == (10 + 6) + 1
    assert counts["score_method"] == 17
    assert counts["make_prompts"] == 2 + 1
    assert counts["embed_images"] == 3  # LiteMedSAM and its MedSAM and Med-SA versions


def test_single_figure_is_its_own_target(repo_root, tmp_path, snakemake):
    config = repo_root / "config.yaml"
    target = "results/figures/qualitative_phantom_us.png"
    result = snakemake([target, "-n"], cwd=tmp_path, config=config, check=True)
    counts = snakemake.job_counts(result.stdout)
    assert counts["plot_qualitative"] == 1
    assert counts["embed_images"] == 1  # LiteMedSAM's embeddings of phantom_us only
    assert "train_sam_model" not in counts and "collect_tables" not in counts
    target = "results/figures/ranking_phantom_us.png"
    ranking = snakemake.job_counts(
        snakemake([target, "-n"], cwd=tmp_path, config=config, check=True).stdout
    )
    assert ranking["plot_ranking"] == 1
    assert "rank_methods" not in ranking  # the figure ranks by itself
    assert ranking["collect_tables"] == 1


def test_bad_config_stops_before_any_job_naming_the_key(repo_root, tmp_path, snakemake):
    with open(repo_root / "config.yaml", encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    config["methods"]["otsu_box"]["algoritm"] = "otsu"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = snakemake(["-n"], cwd=tmp_path, config=path)
    assert result.returncode != 0
    assert (
        "invalid config: methods.otsu_box.algoritm: unknown key; allowed: algorithm,"
        in result.stderr + result.stdout
    )


def test_lint_is_clean(repo_root, snakemake):
    result = snakemake(["--lint"], cwd=repo_root, check=True)
    assert "Congratulations, your workflow is in a good condition" in result.stdout + result.stderr


def test_snakefmt_is_clean(repo_root):
    snakefmt = str(Path(sys.executable).with_name("snakefmt"))
    result = subprocess.run(
        [snakefmt, "--check", "Snakefile", "rules"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        encoding="utf-8",
    )
    assert result.returncode == 0, result.stderr


def test_ruff_is_clean(repo_root):
    ruff = str(Path(sys.executable).with_name("ruff"))
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run(
            [ruff, *args], cwd=repo_root, capture_output=True, text=True, encoding="utf-8"
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_scratch_sam_experiment_trains_one_model_and_embeds_with_both(
    repo_root, tmp_path, snakemake
):
    study = repo_root / "experiments" / "demo_sam_scratch.yaml"
    result = snakemake(["-n"], cwd=tmp_path, config=study, check=True)
    counts = snakemake.job_counts(result.stdout)
    assert counts["train_sam_model"] == 1  # sam_demo; LiteMedSAM's weights are packaged
    assert counts["embed_images"] == 2 and counts["predict_method"] == 3
    assert "results/models/sam_demo/sam.pth" in result.stdout


def test_robustness_jobs_follow_the_config(repo_root, tmp_path, snakemake):
    """Default: one job per SAM model a GT-prompted method decodes on each dataset; an
    explicit list replaces it, [] switches the curves off, unknown names stop the run."""
    from medsegflow import workflow as wf
    from medsegflow.config import load_config
    from medsegflow.errors import ConfigError

    with open(repo_root / "config.yaml", encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    raw.pop("robustness")
    config = load_config(raw)
    assert wf.robustness_pairs(config) == [
        ("phantom_ct", "lite_medsam"),
        ("phantom_ct", "lite_medsam_medsam"),
        ("phantom_ct", "lite_medsam_medsa"),
        ("phantom_us", "lite_medsam"),  # SAMed's semantic model takes no prompt: no curve
    ]
    assert "results/figures/robustness_phantom_ct.png" in wf.final_outputs(config)
    config = load_config({**raw, "robustness": {"models": []}})
    assert wf.robustness_pairs(config) == [] and wf.robustness_files(config) == []
    assert not any("robustness_" in f for f in wf.final_outputs(config))
    assert "results/tables/robustness.csv" in wf.final_outputs(config)  # an empty table
    for key, value, message in (
        ("models", ["sam_huge"], "robustness.models: unknown SAM model 'sam_huge'"),
        ("datasets", ["brats"], "robustness.datasets: unknown dataset 'brats'"),
    ):
        with pytest.raises(ConfigError, match=message):
            wf.check_config(load_config({**raw, "robustness": {key: value}}))
    # the figure is its own target: the curve job and its embeddings, nothing else
    target = "results/figures/robustness_phantom_us.png"
    config = [repo_root / "config.yaml", repo_root / "experiments/demo_analyses.yaml"]
    result = snakemake([target, "-n"], cwd=tmp_path, config=config, check=True)
    counts = snakemake.job_counts(result.stdout)
    assert counts["compute_robustness"] == 1 and counts["embed_images"] == 1
    assert "predict_method" not in counts and "train_sam_model" not in counts


def test_a_method_named_like_another_methods_derived_file_is_refused(demo_analyses_config):
    from medsegflow import workflow as wf
    from medsegflow.config import load_config
    from medsegflow.errors import ConfigError

    raw = demo_analyses_config
    pattern = re.compile(wf.interactive_method_pattern(load_config(raw)))
    assert sorted(m for m in raw["methods"] if pattern.fullmatch(m)) == [
        "sam3d_clicks",
        "sam_box3d_interactive",
    ]
    for name, source in (
        ("sam3d_clicks_clicks", "sam3d_clicks"),
        ("otsu_box_conventions", "otsu_box"),
    ):
        clash = {**raw, "methods": {**raw["methods"], name: raw["methods"]["otsu_box"]}}
        with pytest.raises(ConfigError, match=f"methods.{name}: .* methods.{source} writes"):
            wf.check_config(load_config(clash))


@pytest.mark.parametrize(
    ("target", "rule", "not_needed"),
    [
        ("results/figures/clicks_phantom_ct.png", "plot_clicks", "compute_robustness"),
        ("results/tables/clicks_auc.csv", "collect_clicks", "plot_qualitative"),
        ("results/figures/cost_pareto.png", "plot_cost", "plot_qualitative"),
        ("results/figures/conventions_rank.png", "plot_conventions", "score_clicks"),
        ("results/tables/robustness.csv", "collect_robustness", "predict_method"),
        ("results/figures/qualitative_phantom_ct.png", "plot_qualitative", "compute_robustness"),
    ],
)
def test_each_analysis_output_is_its_own_target(
    repo_root, tmp_path, snakemake, target, rule, not_needed
):
    result = snakemake([target, "-n"], cwd=tmp_path, config=repo_root / "config.yaml", check=True)
    counts = snakemake.job_counts(result.stdout)
    assert counts[rule] == 1
    assert not_needed not in counts
