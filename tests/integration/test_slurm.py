"""The reduced demo through a real one-node SLURM cluster with the slurm profile.

The fixture starts munged, slurmctld and slurmd on this machine (``slurm_cluster.py``;
needs root and ``apt-get install slurm-wlm munge``) and fails, not skips, when it cannot.
One prediction job is made to fail on its first attempt (``debug.fail_first_attempt``) so
that the profile's retries are exercised; the tables must equal the local run's rows of
the same dataset and methods (the shared demo run, ``demo_run``). The SLURM run needs only
the shared run's config (``demo_config``), so it runs while the shared run does (most of
its time is spent waiting for the scheduler); only the comparison waits for the latter.
"""

from __future__ import annotations

import copy
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_cluster import SlurmCluster, SlurmStartError  # noqa: E402

pytestmark = pytest.mark.slow

FAULTY = "predict_method:phantom_us:otsu_box"
KEYS = ["dataset", "method", "case_id", "label"]
TARGET = "results/tables/summary.csv"  # the tables; figures add a level of jobs, not news


def study_config(demo_config: dict) -> dict:
    """The shared demo run's config on phantom_us only, its classical baselines."""
    config = copy.deepcopy(demo_config)
    config["datasets"] = {"phantom_us": config["datasets"]["phantom_us"]}
    config["datasets"]["phantom_us"]["exclude_methods"] = []  # names the demo's SAM rows
    config["methods"] = {
        name: spec for name, spec in config["methods"].items() if spec["family"] == "classical"
    }
    config["ablations"] = {}
    config["debug"] = {"fail_first_attempt": [FAULTY]}
    return config


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="msf-slurm-"))  # short: munge's socket path
    cluster = SlurmCluster(root, cpus=2, memory_mb=32000)
    try:
        cluster.start()
    except SlurmStartError as err:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"cannot start the test SLURM cluster: {err}")
    yield cluster
    cluster.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def runs(cluster, demo_config, snakemake, repo_root, tmp_path_factory):
    """The study run through SLURM: ``(slurm dir, output)``."""
    slurm = tmp_path_factory.mktemp("slurm")
    args = [
        TARGET,
        "--profile",
        str(repo_root / "profiles/slurm"),
        "--jobs",
        "4",
        "--latency-wait",
        "5",
        "--max-status-checks-per-second",
        "10",
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "4",
        "--slurm-keep-successful-logs",
    ]
    config = study_config(demo_config)
    result = snakemake(args, cwd=slurm, config=config, cores=None, env=cluster.env, check=True)
    return slurm, result.stdout + result.stderr


def test_every_job_went_through_slurm(runs, cluster):
    slurm, output = runs
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", output)
    config = yaml.safe_load((slurm / "config.yaml").read_text(encoding="utf-8"))
    # prepare, preprocess, prompts, predict and score per method, collect, summarise
    n_jobs = 3 + 2 * len(config["methods"]) + 2
    assert len(submitted) == n_jobs + 1, output[-3000:]  # one job retried once
    jobs = {job["job_id"]: job for job in cluster.squeue()}
    assert set(submitted) <= set(jobs)
    run_ids = {jobs[j]["name"] for j in submitted}
    assert len(run_ids) == 1, run_ids  # every job carries the run's uuid as its name
    rules = {re.match(r"rule_([a-z_]+?)(_wildcards_|$)", jobs[j]["comment"])[1] for j in jobs}
    assert rules == {
        "prepare_dataset",
        "preprocess_dataset",
        "make_prompts",
        "predict_method",
        "score_method",
        "collect_tables",
        "summarise_tables",
    }
    states = {j: jobs[j]["state"] for j in submitted}
    assert sorted(states.values()).count("FAILED") == 1, states
    assert set(states.values()) == {"COMPLETED", "FAILED"}, states
    for slurm_id in submitted:
        logs = list((slurm / ".snakemake/slurm_logs").rglob(f"{slurm_id}.log"))
        assert len(logs) == 1, f"no SLURM log for job {slurm_id}"
    ctld = cluster.ctld_log.read_text(encoding="utf-8")
    for slurm_id in submitted:
        assert f"JobId={slurm_id} " in ctld


def test_tables_equal_a_local_run(runs, demo_run):
    (slurm, _), local = runs, demo_run
    for table in ("all", "summary"):
        expected = pd.read_csv(local / f"results/tables/{table}.csv", dtype={"case_id": str})
        found = pd.read_csv(slurm / f"results/tables/{table}.csv", dtype={"case_id": str})
        assert set(found["dataset"]) == {"phantom_us"}
        shown = expected["dataset"].eq("phantom_us") & expected["method"].isin(found["method"])
        expected = expected[shown]
        assert set(expected["method"]) == set(found["method"])
        keys = [k for k in (*KEYS, "metric") if k in expected.columns]
        expected = expected.sort_values(keys).reset_index(drop=True)
        found = found.sort_values(keys).reset_index(drop=True)
        pd.testing.assert_frame_equal(found, expected, check_exact=False, rtol=1e-12)
    rows = pd.read_csv(slurm / "results/tables/all.csv", dtype={"case_id": str})
    assert len(rows) >= 2 * 2 and rows["dsc"].notna().all()
    assert (rows["dsc"] > 0.3).mean() > 0.8


def test_failed_attempt_was_retried_with_nothing_lost_or_duplicated(runs, cluster):
    slurm, output = runs
    jobs = cluster.squeue()
    faulty = [
        j for j in jobs if j["comment"] == "rule_predict_method_wildcards_phantom_us_otsu_box"
    ]
    assert sorted(j["state"] for j in faulty) == ["COMPLETED", "FAILED"], faulty
    failed_id = next(j["job_id"] for j in faulty if j["state"] == "FAILED")
    failed_log = next((slurm / ".snakemake/slurm_logs").rglob(f"{failed_id}.log")).read_text(
        encoding="utf-8"
    )
    assert "InjectedFault" in failed_log and "fails on attempt 1" in failed_log
    job_log = (slurm / "logs/predict_method/phantom_us/otsu_box.log").read_text(encoding="utf-8")
    assert "runs normally on attempt 2" in job_log
    cases = pd.read_csv(slurm / "results/data/phantom_us/cases.tsv", sep="\t", dtype=str)
    test_ids = sorted(cases.loc[cases["split"] == "test", "case_id"])
    folder = slurm / "results/predictions/phantom_us/otsu_box"
    manifest = pd.read_csv(folder / "manifest.tsv", sep="\t", dtype={"case_id": str})
    assert sorted(manifest["case_id"]) == test_ids
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{c}.nii.gz" for c in test_ids] + ["manifest.tsv"]
    )
    rows = pd.read_csv(slurm / "results/tables/all.csv", dtype={"case_id": str})
    assert not rows.duplicated(KEYS).any()
    otsu = rows[rows["method"] == "otsu_box"]
    assert sorted(otsu["case_id"]) == test_ids  # one lesion class per case
