"""The cost table from the files a run writes (manifests, benchmarks, model cards)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from medsegflow.config import load_config
from medsegflow.cost import COST_COLUMNS, cost_table, count_parameters, pareto_front


@pytest.fixture(scope="module")
def config(repo_root):
    return load_config(yaml.safe_load((repo_root / "config.yaml").read_text(encoding="utf-8")))


def _tsv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)


def test_cost_rows_add_encoder_and_decoder_time_and_read_the_card(tmp_path, config):
    root = tmp_path
    # sam_box on phantom_us: cached LiteMedSAM embeddings, 2 cases
    pred = root / "results/predictions/phantom_us/sam_box/manifest.tsv"
    _tsv(
        pred,
        [
            {"case_id": "a", "split": "test", "n_prompts": 1, "seconds": 0.5},
            {"case_id": "b", "split": "test", "n_prompts": 1, "seconds": 1.5},
        ],
    )
    emb = root / "results/embeddings/phantom_us/lite_medsam/manifest.tsv"
    _tsv(
        emb,
        [
            {"case_id": c, "split": s, "n_slices": 1, "seconds": t, "gpu_mem_mb": g}
            for c, s, t, g in (
                ("a", "test", 2.0, 512.0),
                ("b", "test", 4.0, 900.0),
                ("x", "train", 100.0, 1.0),
            )
        ],
    )
    _tsv(root / "benchmarks/predict_method/phantom_us/sam_box.tsv", [{"s": 9, "max_rss": 800.0}])
    _tsv(root / "benchmarks/embed_images/phantom_us/lite_medsam.tsv", [{"s": 9, "max_rss": 1200.5}])
    # medsam_ft_box on phantom_ct: a model trained here, with its card
    card = root / "results/models/lite_medsam_medsam/model.json"
    card.parent.mkdir(parents=True)
    card.write_text(
        json.dumps({"training": {"n_parameters": 1000, "n_trainable": 600, "seconds": 54.5}})
    )
    _tsv(
        root / "results/predictions/phantom_ct/medsam_ft_box/manifest.tsv",
        [{"case_id": "c", "split": "test", "n_prompts": 3, "seconds": 2.0}],
    )
    table = cost_table(config, root=root).set_index(["dataset", "method"])
    assert list(table.reset_index().columns) == list(COST_COLUMNS)
    sam = table.loc[("phantom_us", "sam_box")]
    assert sam["n_cases"] == 2
    assert sam["decoder_s_per_case"] == pytest.approx(1.0)
    assert sam["encoder_s_per_case"] == pytest.approx(3.0)  # the 2 test cases, not x
    assert sam["s_per_case"] == pytest.approx(4.0)
    assert sam["peak_rss_mb"] == pytest.approx(1200.5)  # the embedding job's, the larger
    assert sam["gpu_mem_mb"] == pytest.approx(900.0)
    assert sam["n_trainable"] == 0  # zero-shot: nothing trained here
    assert math.isnan(sam["train_s"])
    ft = table.loc[("phantom_ct", "medsam_ft_box")]
    assert (ft["n_parameters"], ft["n_trainable"], ft["train_s"]) == (1000, 600, 54.5)
    assert ft["notes"] == "no benchmark file"
    otsu = table.loc[("phantom_us", "otsu_box")]
    assert otsu["n_parameters"] == 0 and otsu["notes"].startswith("no prediction manifest")


def test_count_parameters_reads_official_layouts(tmp_path):
    weights = {"a.weight": torch.zeros(3, 4), "a.bias": torch.zeros(3)}
    torch.save({"model_state_dict": weights, "epoch": 3}, tmp_path / "turbo.pth")
    torch.save({"network_weights": weights, "init_args": {"x": 1}}, tmp_path / "nnunet.pth")
    torch.save(weights, tmp_path / "plain.pth")
    for name in ("turbo", "nnunet", "plain"):
        assert count_parameters(tmp_path / f"{name}.pth") == 15
    assert count_parameters(tmp_path / "absent.pth") is None


def test_pareto_front():
    seconds = np.array([1.0, 2.0, 0.5, 3.0, np.nan])
    score = np.array([0.8, 0.9, 0.5, 0.85, 0.99])
    assert pareto_front(seconds, score).tolist() == [True, True, True, False, False]


def test_count_parameters_counts_a_tensor_saved_under_two_keys_once(tmp_path):
    import torch

    encoder = torch.zeros(3, 4)
    weights = {"encoder.w": encoder, "decoder.encoder.w": encoder, "decoder.b": torch.zeros(5)}
    torch.save({"network_weights": weights}, tmp_path / "checkpoint_final.pth")
    assert count_parameters(tmp_path / "checkpoint_final.pth") == 12 + 5
    # a view of another part of the same storage is its own tensor
    base = torch.zeros(10)
    torch.save({"a": base[:4], "b": base[4:]}, tmp_path / "views.pth")
    assert count_parameters(tmp_path / "views.pth") == 10
