"""experiments/interactive3d_ct.yaml (issue 27, item 5): MedSAM2 and nnInteractive next to
LiteMedSAM, SAM-Med3D and nnU-Net on the same CT data, prompts and simulated user; it
dry-runs without any weight file, warning with each one's official source."""

from __future__ import annotations

import yaml

from medsegflow import workflow as wf
from medsegflow.config import load_config

STUDY = "experiments/interactive3d_ct.yaml"


def test_study_plans_every_family_on_the_same_data_and_prompts(repo_root, tmp_path, snakemake):
    with open(repo_root / STUDY, encoding="utf-8") as handle:
        config = load_config(yaml.safe_load(handle))
    methods = config["methods"]
    assert {spec["family"] for spec in methods.values()} == {
        "sam",
        "sam2",
        "nninteractive",
        "sam3d",
        "nnunet",
    }
    prompted = [m for m, spec in methods.items() if spec.get("prompts")]
    assert len(prompted) == 3 and {methods[m]["prompts"] for m in prompted} == {"box3d"}
    assert {methods[m]["clicks3d"]["n"] for m in prompted} == {5}
    assert methods["sammed3d_turbo"]["clicks"]["n"] == 6  # its first click in the box's place
    interactive = {m for m in methods if m != "nnunet_3d"}
    datasets = ("flare22", "spleen")
    assert set(wf.interactive_pairs(config)) == {(d, m) for d in datasets for m in interactive}

    result = snakemake(["-n"], cwd=tmp_path, config=repo_root / STUDY, check=True)
    counts = snakemake.job_counts(result.stdout)
    assert counts["predict_method"] == counts["score_method"] == 2 * 5
    assert counts["score_clicks"] == 2 * 4
    assert counts["embed_images"] == 2 * 2  # LiteMedSAM and MedSAM2 on each dataset
    assert counts["train_nnunet"] == 2 and counts["make_prompts"] == 2
    output = result.stdout + result.stderr
    for line in (
        "weights.sam_med3d_turbo: file not found at /data/weights/sam_med3d_turbo.pth",
        "weights.medsam2: file not found at /data/weights/MedSAM2_latest.pt",
        "weights.nninteractive_v1: /data/weights/nnInteractive_v1.0: nnInteractive model "
        "folder not found",
    ):
        assert line in output, line
    assert "Hugging Face MIC-DKFZ/nnInteractive" in output
