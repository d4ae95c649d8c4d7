"""CLIP training with DHN-NCE: a loadable folder, deterministic, fine-tuning a base model."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from medsegflow.clip.backends import load_clip
from medsegflow.clip.captions import make_caption_table
from medsegflow.clip.finetune import (
    HISTORY_FILE,
    train_clip_model,
    train_demo_clip,
    training_block,
    training_settings,
)
from medsegflow.errors import ConfigError, InputError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clip_fixtures import make_phantom_datasets, write_tiny_biomedclip  # noqa: E402

torch.set_num_threads(1)

TINY = {
    "patch_size": 8,
    "vision_width": 32,
    "vision_layers": 2,
    "vision_head_width": 16,
    "text_width": 32,
    "text_layers": 1,
    "text_heads": 2,
    "embed_dim": 16,
}
TRAIN = training_block(
    {
        "arch": "demo",
        "train": {"epochs": 6, "batch_size": 8, "lr": 3e-3, "temperature": 0.3, "image_size": 40},
    },
    "clip_demo",
)


@pytest.fixture(scope="module")
def captions(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip_data")
    make_caption_table(datasets=make_phantom_datasets(root), out_dir=root / "pairs", seed=2)
    return root / "pairs" / "captions.csv"


@pytest.fixture(scope="module")
def trained(captions, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "clip_demo"
    history = train_demo_clip(
        captions_csv=captions, out_dir=out, train=TRAIN, words=["spleen"], seed=4, arch=TINY
    )
    return out, history


def test_demo_training_writes_a_loadable_folder_and_the_loss_drops(trained):
    out, history = trained
    assert list(history.columns) == ["epoch", "loss", "lr", "seconds"] and len(history) == 6
    pd.testing.assert_frame_equal(pd.read_csv(out / HISTORY_FILE), history, check_dtype=False)
    assert history["loss"].iloc[-2:].mean() < history["loss"].iloc[:2].mean()
    bundle = load_clip({"arch": "demo"}, name="clip_demo", weights={}, folder=out)
    assert bundle.kind == "demo" and bundle.image_size == 40  # the train block's image_size
    assert len(bundle.model.visual.transformer.resblocks) == 2
    assert 1 not in bundle.tokenizer(["the spleen"]).tolist()[0]  # extra words in the vocab


def test_training_is_deterministic_given_the_seed(captions, trained, tmp_path):
    out, history = trained
    again = train_demo_clip(
        captions_csv=captions,
        out_dir=tmp_path / "m",
        train=TRAIN,
        words=["spleen"],
        seed=4,
        arch=TINY,
    )
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), history.drop(columns="seconds"))
    first = torch.load(out / "open_clip_pytorch_model.bin", weights_only=True)
    second = torch.load(tmp_path / "m" / "open_clip_pytorch_model.bin", weights_only=True)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_finetuning_starts_from_the_base_weights(captions, tmp_path):
    base = tmp_path / "hub"
    saved = write_tiny_biomedclip(base)
    spec = {"arch": "biomedclip", "weights": "bmc", "finetune": {"epochs": 1, "batch_size": 4}}
    weights = {"bmc": str(base)}
    history = train_clip_model(
        spec=spec,
        name="bmc_ft",
        weights=weights,
        captions_csv=captions,
        out_dir=tmp_path / "bmc_ft",
        seed=1,
    )
    assert len(history) == 1
    tuned = load_clip(spec, name="bmc_ft", weights=weights, folder=tmp_path / "bmc_ft")
    assert tuned.kind == "finetuned" and (tmp_path / "bmc_ft" / "config.json").is_file()
    state = tuned.model.state_dict()
    changed = [k for k in state if not torch.equal(state[k], saved[k])]
    assert changed and set(state) <= set(saved)  # trained, same tensors as the base


def test_bad_settings_and_inputs(captions, tmp_path):
    spec = {"arch": "biomedclip", "weights": "w", "finetune": {"epoch": 3}}
    with pytest.raises(ConfigError, match=r"^clip_models\.x\.finetune\.epoch: unknown key"):
        training_block(spec, "x")
    demo = training_block({"arch": "demo", "train": {"datasets": ["a"], "image_size": 64}}, "d")
    assert (demo["epochs"], demo["crops_per_image"], demo["lr"]) == (30, 2, 0.0003)  # schema's
    tuned = training_block({**spec, "finetune": {}}, "x")
    assert (tuned["epochs"], tuned["crops_per_image"], tuned["lr"]) == (5, 0, 1e-5)
    settings = training_settings(demo)
    assert settings["epochs"] == 30 and "image_size" not in settings and "splits" not in settings
    assert demo["vision_pool"] == "tok" and "vision_pool" not in settings  # an arch key
    with pytest.raises(InputError, match="captions.csv: file not found"):
        train_demo_clip(
            captions_csv=tmp_path / "captions.csv", out_dir=tmp_path / "o", train=demo, seed=0
        )
    with pytest.raises(ConfigError, match="nothing to train"):
        train_clip_model(
            spec={"arch": "biomedclip", "weights": "w"},
            name="x",
            weights={},
            captions_csv=captions,
            out_dir=tmp_path / "o",
            seed=0,
        )
    assert not (tmp_path / "o").exists()
