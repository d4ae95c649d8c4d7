from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from medsegflow.errors import InputError
from medsegflow.models import sam_loader
from medsegflow.models.sam_loader import (
    arch_spec,
    autocast,
    build_sam,
    load_sam_model,
    select_device,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sam_fixtures import TINY_SAM_2BLOCK, save_tiny_sam  # noqa: E402

torch.set_num_threads(1)


# (parameters, state-dict tensors, embed dim, blocks) of the official models
OFFICIAL = {
    "vit_b": (93_735_472, 314, 768, 12),
    "vit_l": (312_342_832, 482, 1024, 24),
    "vit_h": (641_090_608, 594, 1280, 32),
}


@pytest.mark.parametrize("arch", ["vit_b", "vit_l", "vit_h"])
def test_official_architectures_match_the_released_checkpoints_without_allocating(arch):
    n_params, n_keys, dim, depth = OFFICIAL[arch]
    with torch.device("meta"):
        model = build_sam(arch)
    state = model.state_dict()
    assert all(t.is_meta for t in state.values())
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert len(state) == n_keys
    assert tuple(state["image_encoder.pos_embed"].shape) == (1, 64, 64, dim)
    assert tuple(state["image_encoder.patch_embed.proj.weight"].shape) == (dim, 3, 16, 16)
    assert sum(k.endswith("attn.qkv.weight") for k in state) == depth
    head_dim = dim // arch_spec(arch)["num_heads"]
    for i in range(depth):
        # global blocks see the whole 64 x 64 grid, the others a 14 x 14 window
        span = 64 if i in arch_spec(arch)["global_attn_indexes"] else 14
        assert tuple(state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape) == (
            2 * span - 1,
            head_dim,
        )
    assert tuple(state["image_encoder.neck.2.weight"].shape) == (256, 256, 3, 3)
    assert tuple(state["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"].shape) == (
        2,
        128,
    )
    assert tuple(state["mask_decoder.mask_tokens.weight"].shape) == (4, 256)
    assert tuple(state["mask_decoder.transformer.layers.1.mlp.lin1.weight"].shape) == (2048, 256)
    assert tuple(state["mask_decoder.iou_prediction_head.layers.2.weight"].shape) == (4, 256)
    assert model.image_encoder.img_size == 1024


def test_demo_architecture_has_about_2_9_million_parameters():
    with torch.device("meta"):
        model = build_sam("demo")
    assert sum(p.numel() for p in model.parameters()) == 2_913_280
    assert model.image_encoder.img_size == 256
    assert tuple(model.state_dict()["image_encoder.pos_embed"].shape) == (1, 16, 16, 192)


def test_arch_spec_rejects_unknown_names_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown SAM arch 'vit_x'"):
        arch_spec("vit_x")
    with pytest.raises(ValueError, match=r"unknown SAM architecture keys \['depht'\]"):
        arch_spec({"depht": 3})
    with pytest.raises(ValueError, match="multiple of patch_size"):
        arch_spec({"img_size": 100})
    with pytest.raises(ValueError, match="global_attn_indexes"):
        arch_spec({"depth": 2, "global_attn_indexes": [3]})


def _tiny_checkpoint(folder, *, seed=0):
    torch.manual_seed(seed)
    model = build_sam(TINY_SAM_2BLOCK)
    path = save_tiny_sam(model, folder / "sam.pth", arch=TINY_SAM_2BLOCK)
    return model, path


def test_demo_checkpoint_round_trip_gives_the_same_model(tmp_path):
    model, path = _tiny_checkpoint(tmp_path)
    loaded, device = load_sam_model(path, arch="demo", device="cpu")
    assert device == torch.device("cpu")
    assert not loaded.training
    card = json.loads((tmp_path / "model.json").read_text(encoding="utf-8"))
    assert card["spec"]["embed_dim"] == 32 and card["arch"] == "demo"
    assert card["recipe"] == {"recipe": "scratch"} and card["modules"] == []
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    torch.testing.assert_close(loaded.pixel_std.flatten(), torch.tensor([58.395, 57.12, 57.375]))
    image = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        expected = model.image_encoder(model.preprocess(image))
        got = loaded.image_encoder(loaded.preprocess(image))
    assert got.shape == (1, 32, 4, 4)
    torch.testing.assert_close(got, expected)


def test_official_arch_names_load_their_state_dict(tmp_path, monkeypatch):
    """The vit_b path, with the official table shrunk so that the file stays small."""
    monkeypatch.setitem(sam_loader.OFFICIAL_ARCHS, "vit_b", arch_spec(TINY_SAM_2BLOCK))
    model, path = _tiny_checkpoint(tmp_path, seed=3)
    (tmp_path / "model.json").unlink()  # official checkpoints have no model card
    loaded, _ = load_sam_model(path, arch="vit_b")
    key = "mask_decoder.iou_token.weight"
    assert torch.equal(loaded.state_dict()[key], model.state_dict()[key])


def _one_line_error(path, arch, match):
    with pytest.raises(InputError, match=match) as info:
        load_sam_model(path, arch=arch)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)
    return str(info.value)


def test_missing_unexpected_and_misshapen_keys_give_one_line_errors(tmp_path):
    model, path = _tiny_checkpoint(tmp_path)
    state = model.state_dict()

    del state["mask_decoder.iou_token.weight"]
    state["image_encoder.extra.weight"] = torch.zeros(2)
    torch.save(state, path)
    message = _one_line_error(path, "demo", "not a SAM demo checkpoint")
    assert "1 missing keys (mask_decoder.iou_token.weight)" in message
    assert "1 unexpected keys (image_encoder.extra.weight)" in message

    state = model.state_dict()
    state["image_encoder.pos_embed"] = torch.zeros(1, 8, 8, 32)
    torch.save(state, path)
    message = _one_line_error(path, "demo", "shape mismatch")
    assert "image_encoder.pos_embed (1, 8, 8, 32) != (1, 4, 4, 32)" in message


def test_a_small_checkpoint_is_not_taken_for_vit_b(tmp_path):
    _, path = _tiny_checkpoint(tmp_path)
    with pytest.raises(InputError, match=r"model\.json: the model card says arch 'demo', not"):
        load_sam_model(path, arch="vit_b")
    (tmp_path / "model.json").unlink()
    message = _one_line_error(path, "vit_b", "not a SAM vit_b checkpoint")
    assert "file holds embed dim 32, 2 blocks" in message


def test_unreadable_files_give_one_line_errors(tmp_path):
    model, path = _tiny_checkpoint(tmp_path)
    _one_line_error(tmp_path / "absent.pth", "vit_b", "checkpoint file not found")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    _one_line_error(junk, "demo", "cannot read checkpoint")
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": model.state_dict(), "epoch": 3}, wrapped)
    message = _one_line_error(wrapped, "demo", "not a SAM state dict")
    assert "'model' entry" in message
    (tmp_path / "model.json").unlink()
    with pytest.raises(InputError, match=r"arch demo is trained by the pipeline; its model card"):
        load_sam_model(path, arch="demo")


def test_select_device_and_autocast_on_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device().type == expected
    assert select_device("auto").type == expected
    assert select_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")
    with autocast("cpu", "fp32"):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.float32
    with autocast("cpu", "bf16"):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.bfloat16
