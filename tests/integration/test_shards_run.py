"""Sharded prediction gives the unsharded run's predictions: same manifest, same files.

The unsharded predictions are the shared demo run's (``demo_run``); the sharded run
starts from copies of its data, preprocessing and prompts, with the same config and
``scale.predict_shards: 2``, and predicts its classical methods again.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

DATASET = "phantom_us"


@pytest.fixture(scope="module")
def runs(demo_run, snakemake, copy_results, tmp_path_factory):
    from medsegflow.config import load_config
    from medsegflow.workflow import methods_for_dataset

    config = yaml.safe_load((demo_run / "config.yaml").read_text(encoding="utf-8"))
    loaded = load_config(config)
    methods = [
        m
        for m in methods_for_dataset(loaded, DATASET)
        if loaded["methods"][m]["family"] == "classical"
    ]
    assert len(methods) >= 2
    sharded = tmp_path_factory.mktemp("sharded")
    copy_results(demo_run, sharded, f"data/{DATASET}", f"preprocessed/{DATASET}")
    copy_results(demo_run, sharded, f"prompts/{DATASET}")
    config["scale"] = {"predict_shards": 2}
    targets = [f"results/predictions/{DATASET}/{m}/manifest.tsv" for m in methods]
    result = snakemake(targets, cwd=sharded, config=config, check=True)
    return demo_run, sharded, methods, result.stdout + result.stderr


def config_splits(workdir: Path) -> list[str]:
    config = yaml.safe_load((workdir / "config.yaml").read_text(encoding="utf-8"))
    return config["metrics"]["splits"]


def read_manifest(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"case_id": str}, keep_default_na=False)


def test_the_sharded_run_used_shard_and_gather_jobs(runs):
    _, two, methods, output = runs
    assert "rule predict_method_shard:" in output and "rule gather_predictions:" in output
    assert "rule predict_method:" not in output
    for rule in ("prepare_dataset", "preprocess_dataset", "make_prompts"):
        assert f"rule {rule}:" not in output  # copied from the shared run
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
        assert set(expected["split"]) == set(config_splits(one))
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
