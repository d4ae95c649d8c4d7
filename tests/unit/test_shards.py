"""Sharded prediction (scale.predict_shards): case selection, shard manifests, gathering."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medsegflow.errors import InputError
from medsegflow.families.family import Family
from medsegflow.prediction.cases import job_cases, select_cases
from medsegflow.prediction.job import parse_scatteritem
from medsegflow.prediction.manifest import (
    PREDICTION_COLUMNS,
    gather_shard_manifests,
    read_prediction_manifest,
    shard_manifest_path,
    write_prediction_manifest,
)


def manifest(n: int = 11) -> pd.DataFrame:
    splits = ["train", "test", "val", "test"]
    return pd.DataFrame(
        {"case_id": [f"{i:03d}" for i in range(n)], "split": [splits[i % 4] for i in range(n)]}
    )


@pytest.mark.parametrize("count", [1, 2, 3, 7, 20])
@pytest.mark.parametrize("splits", [("test",), ("train", "val", "test")])
def test_shards_partition_the_cases_of_the_splits(count, splits):
    cases = manifest()
    everything = select_cases(cases, splits)["case_id"].tolist()
    assert everything == cases.loc[cases["split"].isin(splits), "case_id"].tolist()
    shards = [select_cases(cases, splits, (i, count))["case_id"].tolist() for i in range(count)]
    union = [c for shard in shards for c in shard]
    assert sorted(union) == everything and len(set(union)) == len(union)  # disjoint, complete
    for i, shard in enumerate(shards):  # round robin, manifest order within a shard
        assert shard == everything[i::count]
        assert shard == select_cases(cases, splits, (i, count))["case_id"].tolist()  # stable


def test_select_cases_errors():
    with pytest.raises(InputError, match=r"pre/manifest.tsv: no cases in splits \['val'\]"):
        select_cases(manifest(2), ["val"], (0, 2), source="pre/manifest.tsv")
    for bad in [(2, 2), (-1, 2), (0, 0)]:
        with pytest.raises(ValueError, match="0 <= index < count"):
            select_cases(manifest(), ["test"], bad)


def test_scatteritem_names_match_snakemake():
    assert parse_scatteritem("1-of-3") == (0, 3)
    assert parse_scatteritem("3-of-3") == (2, 3)
    for bad in ["0-of-3", "4-of-3", "x", "1of3"]:
        with pytest.raises(ValueError, match="scatteritem"):
            parse_scatteritem(bad)
    assert shard_manifest_path("out", (1, 3)) == Path("out/shards/2-of-3.tsv")


def test_manifest_goes_to_the_shards_file(tmp_path):
    rows = pd.DataFrame([{"case_id": "001", "split": "test", "n_prompts": 2, "seconds": 0.5}])
    assert write_prediction_manifest(rows, tmp_path, None) == tmp_path / "manifest.tsv"
    path = write_prediction_manifest(rows, tmp_path, (1, 2))
    assert path == tmp_path / "shards" / "2-of-2.tsv"
    pd.testing.assert_frame_equal(read_prediction_manifest(path), rows)


def write_shards(tmp_path: Path, shards: list[list[str]]) -> list[Path]:
    paths = []
    for i, case_ids in enumerate(shards):
        rows = pd.DataFrame(
            [
                {"case_id": c, "split": "test", "n_prompts": int(c), "seconds": 0.25}
                for c in case_ids
            ],
            columns=list(PREDICTION_COLUMNS),
        )
        path = shard_manifest_path(tmp_path, (i, len(shards)))
        path.parent.mkdir(parents=True, exist_ok=True)
        rows.to_csv(path, sep="\t", index=False)
        paths.append(path)
    return paths


def test_gather_restores_the_case_order(tmp_path):
    expected = ["007", "001", "003", "010", "002"]
    paths = write_shards(tmp_path, [["007", "010"], [], ["001", "002", "003"]])
    out = tmp_path / "manifest.tsv"
    gathered = gather_shard_manifests(paths, out, expected)
    assert gathered["case_id"].tolist() == expected
    assert list(gathered.columns) == list(PREDICTION_COLUMNS)
    on_disk = read_prediction_manifest(out)
    assert on_disk["case_id"].tolist() == expected  # leading zeros kept
    assert on_disk["n_prompts"].tolist() == [7, 1, 3, 10, 2]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic, no leftovers


def test_gather_names_a_missing_case(tmp_path):
    paths = write_shards(tmp_path, [["001"], ["003"]])
    out = tmp_path / "manifest.tsv"
    with pytest.raises(InputError, match="case 002 is missing from the shard manifests"):
        gather_shard_manifests(paths, out, ["001", "002", "003"])
    assert not out.exists()


def test_gather_names_a_duplicate_and_an_unexpected_case(tmp_path):
    paths = write_shards(tmp_path, [["001", "002"], ["002"]])
    with pytest.raises(InputError, match=r"case 002 is listed more than once, in .*1-of-2.tsv"):
        gather_shard_manifests(paths, tmp_path / "manifest.tsv", ["001", "002"])
    paths = write_shards(tmp_path, [["001"], ["009"]])
    with pytest.raises(InputError, match="2-of-2.tsv: case 009 is not a case of the predicted"):
        gather_shard_manifests(paths, tmp_path / "manifest.tsv", ["001"])
    with pytest.raises(InputError, match="file not found"):
        gather_shard_manifests([tmp_path / "nope.tsv"], tmp_path / "manifest.tsv", ["001"])


def fake_family(name: str, schema: Path, *, honours_shard: bool) -> Family:
    """A family that predicts nothing but lists its cases like a real one."""

    def predict(job):
        cases = (
            job_cases(job)
            if honours_shard
            else select_cases(
                pd.read_csv(job.inputs["preprocessed"], sep="\t", dtype=str), job.splits
            )
        )
        rows = pd.DataFrame(
            {"case_id": cases["case_id"], "split": cases["split"], "n_prompts": 0, "seconds": 0.0}
        )
        if honours_shard:
            write_prediction_manifest(rows, job.out_dir, job.shard)
        else:  # a family written before sharding: always manifest.tsv
            rows.to_csv(job.out_dir / "manifest.tsv", sep="\t", index=False)
        return rows

    return Family(
        name=name,
        predict=predict,
        inputs=lambda config, dataset, method: {},
        env="base",
        gpu=False,
        cache="none",
        schema=schema,
    )


def test_predict_dataset_runs_a_shard_and_refuses_a_family_ignoring_it(tmp_path, monkeypatch):
    from medsegflow.manifests import MANIFEST_COLUMNS
    from medsegflow.stages import predict as stage

    pre = tmp_path / "pre" / "manifest.tsv"
    pre.parent.mkdir()
    table = manifest(9).reindex(columns=list(MANIFEST_COLUMNS), fill_value=0)
    table.to_csv(pre, sep="\t", index=False)
    from medsegflow.families import registry

    schema = tmp_path / "any.schema.yaml"
    schema.write_text("type: object\n", encoding="utf-8")
    for name, honours in (("good", True), ("bad", False)):
        monkeypatch.setitem(
            registry.FAMILIES, name, fake_family(name, schema, honours_shard=honours)
        )
    out = tmp_path / "out"
    out.mkdir()
    kwargs = {"method_name": "m", "inputs": {"preprocessed": str(pre)}}
    got = stage.predict_dataset(
        method={"family": "good"}, out_dir=out, splits=["test"], shard=(1, 2), **kwargs, seed=0
    )
    assert got["case_id"].tolist() == ["003", "007"]  # test cases 001 003 005 007, 2nd shard
    assert read_prediction_manifest(out / "shards" / "2-of-2.tsv")["case_id"].tolist() == [
        "003",
        "007",
    ]
    assert not (out / "manifest.tsv").exists()
    with pytest.raises(RuntimeError, match="family 'bad' .* does not support sharding"):
        stage.predict_dataset(
            method={"family": "bad"}, out_dir=out, splits=["test"], shard=(0, 2), **kwargs, seed=0
        )
    assert not (out / "manifest.tsv").exists()  # removed: it would look like the gathered one
    with pytest.raises(ValueError, match="0 <= index < count"):
        stage.predict_dataset(
            method={"family": "good"}, out_dir=out, splits=["test"], shard=(2, 2), **kwargs, seed=0
        )
