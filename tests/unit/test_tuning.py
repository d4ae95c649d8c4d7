"""Validation-only tuning of a text-driven method: grid, choice, no test-label leakage."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch
from test_saliency_stage import TEXTS, _preprocessed
from test_saliency_stage import bundle as bundle  # noqa: F401  (pytest fixture)

from medsegflow.errors import ConfigError, InputError
from medsegflow.stages.tuning import apply_chosen, grid_points, tune_text_method

torch.set_num_threads(1)

METHOD = {
    "family": "text_sam",
    "clip": "tiny",
    "text_prompts": "x",
    "saliency": {"vlayer": 1, "steps": 2, "samples": 2},
    "coarse": {"method": "kmeans"},
    "tune": {"grid": {"saliency.vlayer": [0, 1], "coarse.method": ["kmeans", "threshold"]}},
}


def test_grid_points_vary_saliency_slowest():
    points = grid_points(METHOD["tune"]["grid"], "k")
    assert points == [
        {"saliency": {"vlayer": 0}, "coarse": {"method": "kmeans"}},
        {"saliency": {"vlayer": 0}, "coarse": {"method": "threshold"}},
        {"saliency": {"vlayer": 1}, "coarse": {"method": "kmeans"}},
        {"saliency": {"vlayer": 1}, "coarse": {"method": "threshold"}},
    ]
    with pytest.raises(ConfigError, match=r"^k\.model\.x: tuning varies"):
        grid_points({"model.x": [1]}, "k")


def test_tuning_reads_val_labels_only_and_writes_the_choice(tmp_path, bundle):  # noqa: F811
    pre = _preprocessed(tmp_path)
    # the test split's label and image are gone: tuning must never need them
    (pre / "labels" / "ct02.nii.gz").unlink()
    (pre / "images" / "ct02.nii.gz").unlink()
    out = tmp_path / "tuning"
    chosen = tune_text_method(
        preprocessed_dir=pre,
        out_dir=out,
        bundle=bundle,
        texts=TEXTS,
        method=METHOD,
        method_name="txt",
        seed=3,
    )
    table = pd.read_csv(out / "tuning.csv")
    assert len(table) == 4
    assert list(table.columns) == ["saliency.vlayer", "coarse.method", "dsc", "n_objects"]
    # val objects: ct01 liver + lesion, us01 lesion
    assert (table["n_objects"] == 3).all()
    assert table["dsc"].between(0, 1).all()
    best = table.loc[table["dsc"].idxmax()]
    assert chosen["saliency"] == {"vlayer": int(best["saliency.vlayer"])}
    assert chosen["coarse"] == {"method": best["coarse.method"]}
    assert chosen["dsc"] == pytest.approx(best["dsc"])
    assert chosen["n_val_cases"] == 2
    assert json.loads((out / "chosen.json").read_text(encoding="utf-8")) == chosen
    assert not (out / "work").exists()
    applied = apply_chosen(METHOD, out / "chosen.json")
    assert applied["saliency"] == {"vlayer": chosen["saliency"]["vlayer"], "steps": 2, "samples": 2}
    assert applied["coarse"] == {"method": chosen["coarse"]["method"]}
    assert METHOD["saliency"]["vlayer"] == 1  # the method itself is not changed


def test_tuning_without_val_cases_names_the_manifest(tmp_path, bundle):  # noqa: F811
    pre = _preprocessed(tmp_path)
    manifest = pd.read_csv(pre / "manifest.tsv", sep="\t")
    manifest["split"] = "test"
    manifest.to_csv(pre / "manifest.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match=r"manifest.tsv: no val case to tune methods.txt"):
        tune_text_method(
            preprocessed_dir=pre,
            out_dir=tmp_path / "t",
            bundle=bundle,
            texts=TEXTS,
            method=METHOD,
            method_name="txt",
            seed=3,
        )
    shutil.rmtree(tmp_path / "t", ignore_errors=True)
