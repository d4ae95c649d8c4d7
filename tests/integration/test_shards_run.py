"""Sharded prediction gives the unsharded run's predictions: same manifest, same files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
DATASET = "phantom_us"


def study_config(repo_root: Path, shards: int) -> dict:
    """The demo's phantom_us (15 cases, val + test predicted), its classical baselines."""
    with open(repo_root / "config.yaml", encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    config["datasets"] = {DATASET: config["datasets"][DATASET]}
    config["datasets"][DATASET]["exclude_methods"] = []  # names the demo's SAM rows
    config["datasets"][DATASET]["params"]["n_cases"] = 15
    config["methods"] = {
        name: spec for name, spec in config["methods"].items() if spec["family"] == "classical"
    }
    config["ablations"] = {}
    config["metrics"]["splits"] = ["val", "test"]
    config["scale"] = {"predict_shards": shards}
    return config


def run_predictions(repo_root: Path, workdir: Path, shards: int) -> tuple[dict, str]:
    config = study_config(repo_root, shards)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    targets = [f"results/predictions/{DATASET}/{m}/manifest.tsv" for m in config["methods"]]
    cmd = [SNAKEMAKE, "-s", str(repo_root / "Snakefile"), *targets, "--cores", "2",
           "--configfile", "config.yaml"]  # fmt: skip
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, encoding="utf-8")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    return config, result.stdout + result.stderr


@pytest.fixture(scope="module")
def runs(repo_root, tmp_path_factory):
    one, two = tmp_path_factory.mktemp("unsharded"), tmp_path_factory.mktemp("sharded")
    config, _ = run_predictions(repo_root, one, 1)
    _, output = run_predictions(repo_root, two, 2)
    return one, two, list(config["methods"]), output


def read_manifest(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"case_id": str}, keep_default_na=False)


def test_the_sharded_run_used_shard_and_gather_jobs(runs):
    _, two, methods, output = runs
    assert "rule predict_method_shard:" in output and "rule gather_predictions:" in output
    assert "rule predict_method:" not in output
    for method in methods:
        folder = two / "results/predictions" / DATASET / method / "shards"
        shards = [read_manifest(folder / f"{i}-of-2.tsv") for i in (1, 2)]
        assert all(len(s) for s in shards)
        assert set(shards[0]["case_id"]).isdisjoint(shards[1]["case_id"])


def test_gathered_manifest_equals_the_unsharded_one(runs):
    one, two, methods, _ = runs
    for method in methods:
        expected = read_manifest(one / "results/predictions" / DATASET / method / "manifest.tsv")
        found = read_manifest(two / "results/predictions" / DATASET / method / "manifest.tsv")
        assert list(found.columns) == list(expected.columns)
        assert set(expected["split"]) == {"val", "test"}
        columns = ["case_id", "split", "n_prompts"]  # seconds are timings
        pd.testing.assert_frame_equal(found[columns], expected[columns])


def test_prediction_files_are_byte_identical(runs):
    one, two, methods, _ = runs
    for method in methods:
        folder = Path("results/predictions") / DATASET / method
        names = sorted(p.name for p in (one / folder).glob("*.nii.gz"))
        assert names == sorted(p.name for p in (two / folder).glob("*.nii.gz"))
        listed = read_manifest(one / folder / "manifest.tsv")["case_id"]
        assert names == sorted(f"{c}.nii.gz" for c in listed)
        for name in names:
            assert (one / folder / name).read_bytes() == (two / folder / name).read_bytes(), name
