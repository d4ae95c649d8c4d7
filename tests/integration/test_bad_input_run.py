"""A broken dataset stops its own jobs with one clear line; other results stay intact."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def test_corrupt_dataset_fails_alone(shared_data, tmp_path, snakemake):
    broken = tmp_path / "broken_raw"
    (broken / "imagesTr").mkdir(parents=True)
    (broken / "labelsTr").mkdir(parents=True)
    source = (shared_data / "msd_spleen_crop/sub-spleen2_ct.nii.gz").read_bytes()
    raw = gzip.decompress(source)
    (broken / "imagesTr/case1_0000.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))
    (broken / "labelsTr/case1.nii.gz").write_bytes(
        (shared_data / "msd_spleen_crop/sub-spleen2_ct_seg-manual.nii.gz").read_bytes()
    )
    config = {
        "seed": 1,
        "datasets": {
            "phantom_us": {"adapter": "phantom", "params": {"kind": "us", "n_cases": 6}},
            "broken": {
                "adapter": "nifti_folder",
                "params": {"root": str(broken), "modality": "CT", "split_all": "test"},
            },
        },
        "prompts": {"box": {"source": "gt", "type": "box"}},
        "methods": {"otsu_box": {"family": "classical", "algorithm": "otsu", "prompts": "box"}},
    }
    targets = ["results/metrics/phantom_us/otsu_box.csv", "results/metrics/broken/otsu_box.csv"]
    result = snakemake(["--keep-going", *targets], cwd=tmp_path, config=config)
    assert result.returncode != 0
    log = (tmp_path / "logs/prepare_dataset/broken.log").read_text(encoding="utf-8")
    assert "case1_0000.nii.gz: cannot read image (corrupt or truncated file)" in log
    assert not (tmp_path / "results/data/broken/cases.tsv").exists()
    good = pd.read_csv(tmp_path / "results/metrics/phantom_us/otsu_box.csv")
    assert len(good) >= 1 and good["dsc"].notna().all()
