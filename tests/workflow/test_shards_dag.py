"""Dry-runs of sharded prediction: scale.predict_shards and --set-scatter predict=N."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml


def dry_run(snakemake, repo_root: Path, workdir: Path, shards: int, *args: str) -> str:
    with open(repo_root / "config.yaml", encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    config["scale"] = {"predict_shards": shards}
    return snakemake(["-n", *args], cwd=workdir, config=config, check=True).stdout


def job_blocks(output: str, rule: str) -> list[str]:
    return re.findall(rf"^rule {rule}:\n((?:    .*\n)+)", output, flags=re.M)


@pytest.fixture(scope="module")
def unsharded(snakemake, demo_plan) -> dict[str, int]:
    counts = snakemake.job_counts(demo_plan.stdout)
    assert counts["predict_method"] > 0
    assert "predict_method_shard" not in counts and "gather_predictions" not in counts
    return counts


def test_one_shard_is_the_unsharded_dag(snakemake, repo_root, tmp_path, unsharded):
    assert snakemake.job_counts(dry_run(snakemake, repo_root, tmp_path, 1)) == unsharded


def test_three_shards_and_one_gather_per_dataset_and_method(
    snakemake, repo_root, tmp_path, unsharded
):
    output = dry_run(snakemake, repo_root, tmp_path, 3)
    counts = snakemake.job_counts(output)
    pairs = unsharded["predict_method"]
    expected = {k: v for k, v in unsharded.items() if k != "predict_method"}
    expected |= {"predict_method_shard": 3 * pairs, "gather_predictions": pairs}
    assert counts == expected
    shards = job_blocks(output, "predict_method_shard")
    items = [re.search(r"scatteritem=(\S+)", b).group(1) for b in shards]
    assert sorted(set(items)) == ["1-of-3", "2-of-3", "3-of-3"]
    outputs = [re.search(r"output: (\S+)", b).group(1) for b in shards]
    assert len(set(outputs)) == len(outputs)
    assert all(
        re.fullmatch(r"results/predictions/[^/]+/[^/]+/shards/\d-of-3\.tsv", o) for o in outputs
    )
    # shard jobs ask for what predict_method asks: a GPU for torch families only
    gpus = {re.search(r"gpu=(\d)", b).group(1) for b in shards}
    assert gpus == {"0", "1"}
    gathers = job_blocks(output, "gather_predictions")
    assert all("gpu=0" in b and "mem_mb=2000" in b and "runtime=30" in b for b in gathers)
    inputs = [re.search(r"input: (.*)", b).group(1).split(", ") for b in gathers]
    assert all(len([i for i in b if "/shards/" in i]) == 3 for b in inputs)


def test_set_scatter_overrides_the_config(snakemake, repo_root, tmp_path, unsharded):
    output = dry_run(snakemake, repo_root, tmp_path, 3, "--set-scatter", "predict=2")
    counts = snakemake.job_counts(output)
    assert counts["predict_method_shard"] == 2 * unsharded["predict_method"]
    assert counts["gather_predictions"] == unsharded["predict_method"]


def test_zero_shards_is_a_config_error(snakemake, repo_root, tmp_path):
    with open(repo_root / "config.yaml", encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    config["scale"] = {"predict_shards": 0}
    result = snakemake(["-n"], cwd=tmp_path, config=config, cores=None)
    assert result.returncode != 0
    assert "predict_shards" in result.stdout + result.stderr
