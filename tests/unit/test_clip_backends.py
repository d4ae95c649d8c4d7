"""CLIP backends: official on-disk formats (tiny), the demo CLIP, round trips, clear errors."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medsegflow.clip.backends import load_clip, load_clip_folder
from medsegflow.clip.demo import build_demo_clip, write_clip_folder
from medsegflow.clip.registry import (
    BIOMEDCLIP_HUB_ID,
    OPENAI_VIT_B_16_URL,
    check_clip_weights,
    is_trained_clip,
    missing_clip_weights,
)
from medsegflow.errors import ConfigError, InputError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clip_fixtures import (  # noqa: E402
    register_tiny_openai_arch,
    write_tiny_biomedclip,
    write_tiny_openai,
)

torch.set_num_threads(1)

BIOMED = {"arch": "biomedclip", "weights": "bmc"}


@pytest.fixture(scope="module")
def biomed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub") / "BiomedCLIP"
    state = write_tiny_biomedclip(folder)
    return folder, state


@pytest.fixture(scope="module")
def openai_arch(tmp_path_factory):
    return register_tiny_openai_arch(tmp_path_factory.mktemp("open_clip_configs"))


def _images(n, size=40):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size + 8), dtype=np.uint8) for _ in range(n)]


def _same_state(a, b):
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key].float(), b[key].float()), key


def test_biomedclip_folder_loads_offline_with_its_tokenizer(biomed):
    folder, saved = biomed
    bundle = load_clip(BIOMED, name="bmc", weights={"bmc": str(folder)})
    assert bundle.kind == "biomedclip" and bundle.image_size == 160
    assert os.environ.get("HF_HUB_OFFLINE") is None  # restored after loading
    loaded = bundle.model.state_dict()
    _same_state(loaded, {k: v for k, v in saved.items() if "position_ids" not in k})
    assert bundle.model.text.config.num_hidden_layers == 2  # sizes read from the weights
    tokens = bundle.tokenizer(["The liver lesion.", "a kidney"])
    assert tokens.shape == (2, 16) and tokens[0, 0] == 2 and 1 not in tokens[0].tolist()
    with torch.no_grad():
        assert bundle.model.encode_image(bundle.image_tensor(_images(2))).shape == (2, 32)
        assert bundle.model.encode_text(tokens).shape == (2, 32)


def test_unused_bert_pooler_weights_in_the_file_are_ignored(biomed, tmp_path):
    saved = write_tiny_biomedclip(tmp_path / "with_pooler", with_pooler=True)
    bundle = load_clip(BIOMED, name="bmc", weights={"bmc": str(tmp_path / "with_pooler")})
    loaded = bundle.model.state_dict()
    assert not any("pooler" in k for k in loaded)
    _same_state(
        loaded, {k: v for k, v in saved.items() if "position_ids" not in k and "pooler" not in k}
    )


def test_loaded_model_round_trips_through_the_folder_layout(biomed, tmp_path):
    bundle = load_clip(BIOMED, name="bmc", weights={"bmc": str(biomed[0])})
    out = write_clip_folder(bundle, tmp_path / "copy", extra_files={"note.txt": "x"})
    assert (out / "config.json").is_file() and (out / "vocab.txt").is_file()
    again = load_clip_folder(out, name="copy", kind="finetuned")
    _same_state(bundle.model.state_dict(), again.model.state_dict())
    text = ["the spleen slice", "ct showing a lesion"]
    assert torch.equal(bundle.tokenizer(text), again.tokenizer(text))
    with torch.no_grad():
        pixels = bundle.image_tensor(_images(2))
        assert torch.allclose(bundle.model.encode_image(pixels), again.model.encode_image(pixels))
        tokens = again.tokenizer(text)
        assert torch.allclose(bundle.model.encode_text(tokens), again.model.encode_text(tokens))


@pytest.mark.parametrize("jit", [False, True])
def test_openai_file_loads_into_the_open_clip_arch(openai_arch, tmp_path, jit):
    path = tmp_path / "ViT-tiny.pt"
    saved = write_tiny_openai(path, jit=jit)
    spec = {"arch": "openai", "weights": "oa", "open_clip_arch": openai_arch}
    bundle = load_clip(spec, name="oa", weights={"oa": str(path)})
    assert bundle.kind == "openai" and bundle.image_size == 32
    expected = {k: v.half().float() if not jit else v for k, v in saved.items()}
    _same_state(bundle.model.state_dict(), expected)
    tokens = bundle.tokenizer(["a photo of a liver"])
    assert tokens.shape == (1, 77)
    with torch.no_grad():
        assert bundle.model.encode_image(bundle.image_tensor(_images(3))).shape == (3, 32)
        assert bundle.model.encode_text(tokens).shape == (1, 32)
    # a fine-tuned OpenAI model is saved in the folder layout with the BPE tokenizer
    again = load_clip_folder(write_clip_folder(bundle, tmp_path / "ft"), name="ft", kind="x")
    _same_state(bundle.model.state_dict(), again.model.state_dict())
    assert torch.equal(again.tokenizer(["a photo of a liver"]), tokens)
    with torch.no_grad():
        pixels = bundle.image_tensor(_images(2))
        assert torch.allclose(bundle.model.encode_image(pixels), again.model.encode_image(pixels))


def test_demo_clip_has_ten_blocks_and_round_trips_exactly(tmp_path):
    words = ["Axial abdominal CT slice showing the liver.", "Breast ultrasound with a lesion."]
    bundle = build_demo_clip(words=words, seed=1)
    assert len(bundle.model.visual.transformer.resblocks) == 10
    tokens = bundle.tokenizer(["the liver", "a zebra"])  # unseen words: letter pieces
    assert 1 not in tokens.tolist()[0]  # no [UNK]
    write_clip_folder(bundle, tmp_path / "demo")
    loaded = load_clip({"arch": "demo"}, name="demo", weights={}, folder=tmp_path / "demo")
    assert loaded.kind == "demo" and loaded.image_size == bundle.image_size
    _same_state(bundle.model.state_dict(), loaded.model.state_dict())
    assert torch.equal(loaded.tokenizer(["the liver", "a zebra"]), tokens)
    with torch.no_grad():
        a = bundle.model.encode_text(tokens)
        assert torch.allclose(a, loaded.model.encode_text(tokens))
        assert bundle.model.encode_image(bundle.image_tensor(_images(2))).shape == (2, 64)


def test_a_second_write_replaces_the_folder(tmp_path):
    bundle = build_demo_clip(words=["liver"], seed=0, vision_layers=2, text_layers=1)
    write_clip_folder(bundle, tmp_path / "m", extra_files={"stale.txt": "old"})
    write_clip_folder(bundle, tmp_path / "m")
    assert not (tmp_path / "m" / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary left


def test_demo_clip_with_mean_pooling_round_trips_and_m2ib_may_read_its_last_block(tmp_path):
    from medsegflow.saliency.blocks import check_layer, vision_blocks

    small = {"words": ["liver"], "seed": 0, "vision_layers": 2, "text_layers": 1}
    write_clip_folder(build_demo_clip(**small, vision_pool="avg"), tmp_path / "avg")
    loaded = load_clip({"arch": "demo"}, name="demo", weights={}, folder=tmp_path / "avg")
    assert loaded.model.visual.pool_type == "avg"
    assert check_layer(vision_blocks(loaded.model), 1, key="k", model_name="avg") == 1
    token_pooled = build_demo_clip(**small)  # the class token: its last block is refused
    with pytest.raises(ConfigError, match="^k: 1 is the last vision block"):
        check_layer(vision_blocks(token_pooled.model), 1, key="k", model_name="tok")


def test_missing_weights_name_the_keys_path_and_source(tmp_path):
    weights = {"bmc": str(tmp_path / "nowhere"), "oa": str(tmp_path / "ViT-B-16.pt")}
    line = check_clip_weights(BIOMED, "bmc", weights)
    for part in ("weights.bmc", "clip_models.bmc", str(tmp_path / "nowhere"), BIOMEDCLIP_HUB_ID):
        assert part in line
    assert "\n" not in line
    openai = {"arch": "openai", "weights": "oa"}
    assert OPENAI_VIT_B_16_URL in check_clip_weights(openai, "oa", weights)
    assert check_clip_weights({"arch": "demo"}, "d", {}) is None
    with pytest.raises(InputError, match="weights.bmc"):
        load_clip(BIOMED, name="bmc", weights=weights)
    with pytest.raises(ConfigError, match="not a key under weights"):
        load_clip(BIOMED, name="bmc", weights={})
    config = {"clip_models": {"bmc": BIOMED, "d": {"arch": "demo"}}, "weights": weights}
    assert len(missing_clip_weights(config)) == 1
    assert is_trained_clip({"arch": "biomedclip", "finetune": {"epochs": 1}})


def _copy_folder(src, dst):
    dst.mkdir()
    for path in src.iterdir():
        (dst / path.name).write_bytes(path.read_bytes())
    return dst


def test_bad_folders_stop_with_one_line_naming_the_file(biomed, tmp_path):
    src, saved = biomed
    with pytest.raises(InputError, match="CLIP model folder not found"):
        load_clip_folder(tmp_path / "absent", name="x", kind="biomedclip")

    no_weights = _copy_folder(src, tmp_path / "no_weights")
    (no_weights / "open_clip_pytorch_model.bin").unlink()
    with pytest.raises(InputError, match=r"no_weights: no CLIP weights file"):
        load_clip_folder(no_weights, name="x", kind="biomedclip")

    wrong = _copy_folder(src, tmp_path / "wrong_shape")
    state = dict(saved)
    state["visual.head.proj.weight"] = torch.zeros(16, 64)
    torch.save(state, wrong / "open_clip_pytorch_model.bin")
    with pytest.raises(
        InputError,
        match=r"wrong_shape/open_clip_pytorch_model.bin: shape mismatch.*visual.head.proj.weight",
    ):
        load_clip_folder(wrong, name="x", kind="biomedclip")

    missing = _copy_folder(src, tmp_path / "missing_keys")
    torch.save(
        {k: v for k, v in saved.items() if not k.startswith("visual.")},
        missing / "open_clip_pytorch_model.bin",
    )
    with pytest.raises(
        InputError,
        match=r"missing_keys/open_clip_pytorch_model.bin: not a .* checkpoint: "
        r"\d+ missing keys \(visual\.",
    ):
        load_clip_folder(missing, name="x", kind="biomedclip")

    corrupt = _copy_folder(src, tmp_path / "corrupt")
    (corrupt / "open_clip_pytorch_model.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read CLIP weights"):
        load_clip_folder(corrupt, name="x", kind="biomedclip")

    bad_json = _copy_folder(src, tmp_path / "bad_json")
    (bad_json / "open_clip_config.json").write_text("{", encoding="utf-8")
    with pytest.raises(InputError, match="open_clip_config.json: not valid JSON"):
        load_clip_folder(bad_json, name="x", kind="biomedclip")

    no_vocab = _copy_folder(src, tmp_path / "no_vocab")
    (no_vocab / "vocab.txt").unlink()
    with pytest.raises(InputError, match="no tokenizer files"):
        load_clip_folder(no_vocab, name="x", kind="biomedclip")


def test_unknown_open_clip_arch_is_a_config_error(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(b"")
    spec = {"arch": "openai", "weights": "oa", "open_clip_arch": "No-Such-Arch"}
    with pytest.raises(ConfigError, match="clip_models.oa.open_clip_arch"):
        load_clip(spec, name="oa", weights={"oa": str(path)})
    config = json.loads(json.dumps(spec))
    assert check_clip_weights(config, "oa", {"oa": str(tmp_path)}).endswith(
        "(the _MODELS table of github.com/openai/CLIP, clip/clip.py)"
    )
