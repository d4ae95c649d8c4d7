"""A family defined outside medsegflow plans, runs and is scored with no change to rules/.

The test writes a small thresholding family (one module, one schema file) and registers
it the way a lab's own package would: an entry point in the group
``medsegflow.families`` (here a ``.dist-info`` folder on ``PYTHONPATH``). The workflow is
then run on a small ultrasound phantom with that family and a built-in one; the built-in
one's prediction fails on its first attempt (``debug.fail_first_attempt``) and is retried
locally (``--retries 1``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsegflow.io import read_volume
from medsegflow.metrics import compute_metrics

pytestmark = pytest.mark.slow

FAMILY_MODULE = '''
"""A thresholding family: the label is painted where the preprocessed image is dark."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsegflow.datasets.canonical import read_label_map
from medsegflow.families.family import Family
from medsegflow.planning import base_inputs
from medsegflow.prediction.cases import predict_cases


def predict(job):
    value = read_label_map(job.preprocessed_dir)[job.method["label"]]
    below = job.method["below"]

    def segment(case, image):
        return np.where(image.array_zyx < below, value, 0).astype(np.uint8), 0

    return predict_cases(job, segment=segment, desc="threshold")


FAMILY = Family(
    name="threshold",
    predict=predict,
    inputs=base_inputs,
    env="base",
    gpu=False,
    cache="none",
    schema=Path(__file__).with_name("threshold.schema.yaml"),
)
'''

FAMILY_SCHEMA = """
type: object
additionalProperties: false
required: [family, label]
properties:
  family: {const: threshold}
  label: {type: string}
  below: {type: integer, minimum: 1, maximum: 255, default: 70}
"""


def _plugin(root: Path) -> Path:
    """The family's module, schema file and entry point in ``root`` (for ``PYTHONPATH``)."""
    root.mkdir()
    (root / "threshold_family.py").write_text(FAMILY_MODULE, encoding="utf-8")
    (root / "threshold.schema.yaml").write_text(FAMILY_SCHEMA, encoding="utf-8")
    info = root / "medsegflow_threshold-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: medsegflow-threshold\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "[medsegflow.families]\nthreshold = threshold_family:FAMILY\n"
    )
    return root


def _config() -> dict:
    return {
        "seed": 5,
        "datasets": {
            "us": {"adapter": "phantom", "params": {"kind": "us", "n_cases": 6, "shape": [64, 64]}}
        },
        "prompts": {"box": {"type": "box"}},
        "methods": {
            "thr": {"family": "threshold", "label": "lesion", "below": 60},
            "otsu": {"family": "classical", "algorithm": "otsu", "prompts": "box"},
        },
        "tables": {"bootstrap": 100},
        "debug": {"fail_first_attempt": ["predict_method:us:otsu"]},
    }


def _rules_digest(repo_root: Path) -> str:
    files = sorted((repo_root / "rules").glob("*.smk"))
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def test_an_entry_point_family_plans_runs_and_is_scored(repo_root, tmp_path, snakemake):
    plugin = _plugin(tmp_path / "plugin")
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {"PYTHONPATH": os.pathsep.join([str(plugin), str(repo_root)])}
    rules_before = _rules_digest(repo_root)
    target = "results/tables/all.csv"
    plan = snakemake(["-n", target], cwd=workdir, config=_config(), env=env, check=True)
    assert "results/predictions/us/thr/manifest.tsv" in plan.stdout

    args = [target, "--retries", "1"]
    snakemake(args, cwd=workdir, config="config.yaml", env=env, check=True)
    assert _rules_digest(repo_root) == rules_before
    log = (workdir / "logs/predict_method/us/otsu.log").read_text(encoding="utf-8")
    assert "runs normally on attempt 2" in log  # the injected fault was retried

    rows = pd.read_csv(workdir / "results/tables/all.csv", dtype={"case_id": str})
    thr = rows[rows["method"] == "thr"]
    cases = pd.read_csv(workdir / "results/data/us/cases.tsv", sep="\t", dtype={"case_id": str})
    test_ids = set(cases.loc[cases["split"] == "test", "case_id"])
    assert set(thr["case_id"]) == test_ids and set(thr["label_name"]) == {"lesion"}
    for row in thr.itertuples():  # the family's rule, recomputed from the files, scored once
        image = read_volume(workdir / f"results/preprocessed/us/images/{row.case_id}.nii.gz")
        gt = read_volume(workdir / f"results/preprocessed/us/labels/{row.case_id}.nii.gz")
        expected = (image.array_zyx < 60).astype(np.uint8)
        pred = read_volume(workdir / f"results/predictions/us/thr/{row.case_id}.nii.gz")
        np.testing.assert_array_equal(pred.array_zyx, expected)
        dsc = compute_metrics(expected, gt.array_zyx, gt.spacing_zyx, 2.0, labels=[1])[1]["dsc"]
        assert row.dsc == np.float64(dsc) or abs(row.dsc - dsc) < 1e-6
    assert 0 < thr["dsc"].mean() < 1
    assert (rows["method"] == "otsu").sum() == len(test_ids)


def test_a_broken_entry_point_stops_with_one_line_naming_it(repo_root, tmp_path, snakemake):
    plugin = _plugin(tmp_path / "plugin")
    (plugin / "medsegflow_threshold-0.1.dist-info" / "entry_points.txt").write_text(
        "[medsegflow.families]\nthreshold = threshold_family:NOT_THERE\n"
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {"PYTHONPATH": os.pathsep.join([str(plugin), str(repo_root)])}
    result = snakemake(["-n"], cwd=workdir, config=_config(), env=env)
    assert result.returncode != 0
    assert "family entry point 'threshold' (threshold_family:NOT_THERE) cannot be loaded" in (
        result.stdout + result.stderr
    )
