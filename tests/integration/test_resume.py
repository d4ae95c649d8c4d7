"""A run killed in the middle of the prediction stage resumes to the same tables.

The run is SIGKILLed (process group: Snakemake and the job it runs) as soon as the
prediction job has written its first per-case file, i.e. with the prediction folder half
full and no ``manifest.tsv``. After ``--unlock`` the rerun with ``--rerun-incomplete``
must give exactly the tables of an uninterrupted run, from complete files only. The killed
run starts from copies of the uninterrupted run's data, preprocessing and prompts, so it
reaches the prediction stage at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsegflow.io import read_volume

pytestmark = pytest.mark.slow

TARGET = "results/tables/summary.csv"
PREDICTIONS = "results/predictions/phantom_us/otsu_box"
N_CASES = 200  # all test cases, ~10 ms each: the kill lands ~2 s before the stage ends

CONFIG = {
    "seed": 7,
    "datasets": {
        "phantom_us": {
            "adapter": "phantom",
            "params": {
                "kind": "us",
                "n_cases": N_CASES,
                "shape": [96, 96],
                "spacing_mm": [0.27, 0.27],
                "splits": {"test": 1.0},
            },
        }
    },
    "prompts": {"box_j20": {"source": "gt", "type": "box", "jitter": 20}},
    "methods": {"otsu_box": {"family": "classical", "algorithm": "otsu", "prompts": "box_j20"}},
    "tables": {"bootstrap": 200},
}


def case_files(folder: Path) -> list[Path]:
    """Finished per-case files (temporary ones are hidden: ``.<case>.<random>.nii.gz``)."""
    return sorted(p for p in folder.glob("*.nii.gz") if not p.name.startswith("."))


def kill_during_prediction(snakemake, workdir: Path) -> dict:
    """Start the run, SIGKILL its process group once a prediction file exists."""
    folder = workdir / PREDICTIONS
    proc = subprocess.Popen(
        snakemake.command([TARGET], cwd=workdir, config=CONFIG),
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while not case_files(folder):
            if proc.poll() is not None:
                pytest.fail(f"the run ended (rc {proc.returncode}) before any prediction")
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return {
        "manifest": (folder / "manifest.tsv").exists(),
        "files": case_files(folder),
        "temporary": sorted(p.name for p in folder.glob(".*")),
    }


@pytest.fixture(scope="module")
def reference(snakemake, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    snakemake([TARGET], cwd=workdir, config=CONFIG, check=True)
    return workdir


@pytest.fixture(scope="module")
def resumed(snakemake, copy_results, reference, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("killed")
    copy_results(reference, workdir, "data", "preprocessed", "prompts")
    at_kill = kill_during_prediction(snakemake, workdir)
    for path in at_kill["files"]:  # finished files are complete even after SIGKILL
        assert read_volume(path).array_zyx.shape == (1, 96, 96)
    locked = snakemake([TARGET], cwd=workdir, config="config.yaml")
    snakemake([TARGET, "--unlock"], cwd=workdir, config="config.yaml", check=True)
    # a temporary that a killed writer left, whatever the kill itself left (it may be none)
    first_case = at_kill["files"][0].name.split(".")[0]
    (workdir / PREDICTIONS / f".{first_case}.stale_00.nii.gz").write_bytes(b"half-written")
    rerun = snakemake([TARGET, "--rerun-incomplete"], cwd=workdir, config="config.yaml", check=True)
    return workdir, at_kill, locked, rerun.stdout + rerun.stderr


def test_the_kill_hit_the_middle_of_the_prediction_stage(resumed):
    _, at_kill, locked, _ = resumed
    assert not at_kill["manifest"], "prediction finished before the kill; raise N_CASES"
    assert 1 <= len(at_kill["files"]) < N_CASES
    print(f"at the kill: {len(at_kill['files'])} of {N_CASES} case files, {at_kill['temporary']}")
    # a killed run leaves its lock: the rerun is refused with one line that says what to do
    assert locked.returncode != 0
    output = locked.stdout + locked.stderr
    assert "locked by a run that was killed" in output and "--unlock" in output
    assert "Traceback" not in output


def test_rerun_finishes_the_stage_and_later_ones(resumed):
    workdir, _, _, output = resumed
    assert "rule predict_method:" in output
    assert "rule prepare_dataset:" not in output  # finished stages are not redone
    assert "rule preprocess_dataset:" not in output
    manifest = pd.read_csv(workdir / PREDICTIONS / "manifest.tsv", sep="\t", dtype=str)
    assert len(manifest) == N_CASES and manifest["case_id"].is_unique
    # every case was rewritten, removing the temporaries the killed run left behind
    assert sorted(p.name for p in (workdir / PREDICTIONS).glob(".*")) == []


def test_tables_equal_an_uninterrupted_run(resumed, reference):
    workdir = resumed[0]
    for table, keys in (("all", ["case_id", "label"]), ("summary", ["metric", "label_name"])):
        expected = pd.read_csv(reference / f"results/tables/{table}.csv", dtype={"case_id": str})
        found = pd.read_csv(workdir / f"results/tables/{table}.csv", dtype={"case_id": str})
        expected = expected.sort_values(keys).reset_index(drop=True)
        found = found.sort_values(keys).reset_index(drop=True)
        pd.testing.assert_frame_equal(found, expected, check_exact=False, rtol=1e-12)
    rows = pd.read_csv(workdir / "results/tables/all.csv", dtype={"case_id": str})
    assert len(rows) == N_CASES and rows["case_id"].is_unique
    assert rows["dsc"].mean() > 0.6


def test_every_listed_file_is_complete_and_equals_the_reference(resumed, reference):
    workdir = resumed[0]
    manifest = pd.read_csv(workdir / PREDICTIONS / "manifest.tsv", sep="\t", dtype=str)
    listed = {f"{case}.nii.gz" for case in manifest["case_id"]}
    assert {p.name for p in case_files(workdir / PREDICTIONS)} == listed
    for name in sorted(listed):
        found = read_volume(workdir / PREDICTIONS / name)
        expected = read_volume(reference / PREDICTIONS / name)
        np.testing.assert_array_equal(found.array_zyx, expected.array_zyx, err_msg=name)
        assert found.geometry.matches(expected.geometry)
