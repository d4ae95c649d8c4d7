"""Med-SA's network and recipe, unit by unit, with hand-computed values (the whole network
is checked against the official code in tests/conformance/test_conformance_medsa.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medsegflow.models.input_recipes import MEDSA_THRESHOLDS, MedsaRecipe, input_recipe
from medsegflow.models.medsa_arch import (
    MedsaImageEncoder,
    MedsaTwoWayBlock,
    medsa_state_from_sam,
)
from medsegflow.models.sam_archs import arch_spec, build_sam, medsa_spec
from medsegflow.models.sam_modules import apply_modules
from medsegflow.threads import limit_threads
from medsegflow.training.medsa import is_trained_adapter, medsa_module

limit_threads(1)

TINY_MEDSA = {"encoder": "medsa_vit", "img_size": 64, "embed_dim": 4, "depth": 1, "num_heads": 2,
              "global_attn_indexes": [0]}  # fmt: skip


def test_recipe_stretches_to_the_square_input_in_0_1_without_mean_std():
    grey = np.zeros((2, 4), np.uint8)
    grey[:, :2] = 51  # left half 0.2, right half 0
    out = MedsaRecipe(image_size=4).prepare_image(grey)
    assert out.shape == (3, 4, 4) and out.dtype == np.float32
    assert np.array_equal(out[:, :, 0], np.full((3, 4), np.float32(51) / np.float32(255)))
    assert np.array_equal(out[:, :, 3], np.zeros((3, 4), np.float32))
    rgb = np.repeat(grey[:, :, None], 3, axis=-1)
    assert np.array_equal(MedsaRecipe(image_size=4).prepare_image(rgb), out)
    colour = rgb.copy()
    colour[..., 1] = 255  # channels stay apart, in R, G, B order
    assert np.array_equal(MedsaRecipe(image_size=4).prepare_image(colour)[1], np.ones((4, 4)))


def test_clicks_are_handed_over_as_row_col_or_xy():
    xy = np.array([[[50.0, 75.0]]])  # (x, y) in a 100 x 200 (H x W) image
    official = MedsaRecipe(image_size=64)
    assert official.click_order == "row_col"  # the official default
    np.testing.assert_array_equal(official.map_points(xy, (100, 200)), [[[48.0, 16.0]]])
    as_xy = MedsaRecipe(image_size=64, click_order="xy")
    np.testing.assert_array_equal(as_xy.map_points(xy, (100, 200)), [[[16.0, 48.0]]])
    box = np.array([[50.0, 25.0, 100.0, 75.0]])  # boxes stay XYXY in both orders
    np.testing.assert_array_equal(official.map_boxes(box, (100, 200)), [[16.0, 16.0, 32.0, 48.0]])
    assert input_recipe("medsa", 64, click_order="xy") == as_xy
    with pytest.raises(ValueError, match="click_order"):
        MedsaRecipe(image_size=64, click_order="yx")


def test_logits_are_nearest_upsampled_and_thresholded_raw():
    low = torch.tensor([[[[0.2, 0.6], [0.95, -1.0]]]])
    probs, logits = MedsaRecipe(image_size=8).postprocess(
        low, original_size=(4, 6), input_size=(8, 8)
    )
    expected = np.array([[0.2] * 3 + [0.6] * 3] * 2 + [[0.95] * 3 + [-1.0] * 3] * 2, np.float32)
    np.testing.assert_array_equal(logits[0].numpy(), expected)
    np.testing.assert_allclose(probs[0].numpy(), 1 / (1 + np.exp(-expected)), rtol=1e-6)
    masks = MedsaRecipe.threshold_masks(logits[0])
    assert masks.shape == (5, 4, 6)
    # pixels above 0.1, 0.3, 0.5, 0.7, 0.9: 0.2, 0.6, 0.95 are above 1, 2-3 and 5 thresholds
    assert [int(m.sum()) for m in masks] == [18, 12, 12, 6, 6]
    assert MEDSA_THRESHOLDS[2] == MedsaRecipe.mask_threshold == 0.5
    model = build_sam(arch_spec(TINY_MEDSA))
    assert model.mask_threshold == 0.5 and build_sam({"img_size": 64}).mask_threshold == 0.0


def _silent_block(first: bool) -> MedsaTwoWayBlock:
    """A block whose attentions and MLP output zero: only its residuals and norms act."""
    block = MedsaTwoWayBlock(8, 2, 16, first=first)
    with torch.no_grad():
        for attn in (block.self_attn, block.cross_attn_token_to_image,
                     block.cross_attn_image_to_token):  # fmt: skip
            attn.out_proj.weight.zero_()
            attn.out_proj.bias.zero_()
        block.mlp.fc.weight.zero_()
        block.mlp.fc.bias.zero_()
    return block


def test_decoder_blocks_keep_the_residual_and_the_query_encoding():
    gen = torch.Generator().manual_seed(0)
    queries, query_pe = torch.randn(1, 3, 8, generator=gen), torch.randn(1, 3, 8, generator=gen)
    keys, key_pe = torch.randn(1, 5, 8, generator=gen), torch.randn(1, 5, 8, generator=gen)

    def norm(x, times=3):  # norm1, norm2, norm3 with their default (identity) affine
        for _ in range(times):
            x = F.layer_norm(x, (8,))
        return x

    with torch.no_grad():
        q0, k0 = _silent_block(first=True)(queries, keys, query_pe, key_pe)
        q1, k1 = _silent_block(first=False)(queries, keys, query_pe, key_pe)
    # layer 0: queries + self_attn(queries) (segment_anything: self_attn alone, here 0)
    torch.testing.assert_close(q0, norm(queries))
    # later layers: the query encoding is added to the queries for good
    torch.testing.assert_close(q1, norm(queries + query_pe))
    torch.testing.assert_close(k0, norm(keys, 1))
    torch.testing.assert_close(k1, norm(keys, 1))
    assert {n for n, _ in _silent_block(True).mlp.named_parameters()} == {
        "layers.0.0.weight",
        "layers.0.0.bias",
        "fc.weight",
        "fc.bias",
    }


def test_position_embedding_grid_is_resized_bicubic_to_the_tokens():
    spec = arch_spec({**TINY_MEDSA, "pos_embed_grid": 8})
    encoder = MedsaImageEncoder(spec)
    encoder.blocks = torch.nn.ModuleList()
    encoder.neck = torch.nn.Identity()
    with torch.no_grad():
        encoder.patch_embed.proj.weight.zero_()
        encoder.patch_embed.proj.bias.zero_()
        encoder.pos_embed.copy_(torch.arange(256.0).view(1, 8, 8, 4))
        out = encoder(torch.zeros(1, 3, 64, 64))  # a 4 x 4 token grid
        same = MedsaImageEncoder({**spec, "pos_embed_grid": 4})
        same.blocks, same.neck = torch.nn.ModuleList(), torch.nn.Identity()
        same.patch_embed = encoder.patch_embed
        same.pos_embed.copy_(torch.arange(64.0).view(1, 4, 4, 4))
        kept = same(torch.zeros(1, 3, 64, 64))
    pos = torch.arange(256.0).view(1, 8, 8, 4).permute(0, 3, 1, 2)
    expected = F.interpolate(pos, (4, 4), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out, expected)
    assert not torch.equal(out, pos[..., ::2, ::2])  # not a subsampling
    torch.testing.assert_close(kept, torch.arange(64.0).view(1, 4, 4, 4).permute(0, 3, 1, 2))


def test_sam_keys_are_renamed_to_medsa_s():
    state = {
        "image_encoder.blocks.0.attn.rel_pos_h": 1,
        "image_encoder.blocks.0.attn.rel_pos_w": 2,
        "image_encoder.blocks.0.mlp.lin1.weight": 3,
        "mask_decoder.transformer.layers.1.mlp.lin1.bias": 4,
        "mask_decoder.transformer.layers.1.mlp.lin2.weight": 5,
    }
    assert medsa_state_from_sam(state) == {
        "image_encoder.blocks.0.attn.rel_h": 1,
        "image_encoder.blocks.0.attn.rel_w": 2,
        "image_encoder.blocks.0.mlp.lin1.weight": 3,  # the encoder MLP keeps SAM's names
        "mask_decoder.transformer.layers.1.mlp.layers.0.0.bias": 4,
        "mask_decoder.transformer.layers.1.mlp.fc.weight": 5,
    }


def test_medsa_spec_of_vit_b_is_the_official_network():
    spec = medsa_spec(arch_spec("vit_b"))
    assert spec == arch_spec("medsa_vit_b")
    assert spec["pos_embed_grid"] == 64 and spec["input_recipe"] == "medsa"
    with pytest.raises(ValueError, match="ViT"):
        medsa_spec(arch_spec("lite_medsam"))
    with pytest.raises(ValueError, match="unknown Med-SA keys"):
        medsa_spec(arch_spec("vit_b"), ratio=0.25)


def test_the_paper_s_adapters_on_medsa_vit_b_train_about_two_percent():
    settings = {"ratio": 0.0625, "activation": "relu", "scale": 0.5, "decoder_adapters": True}
    spec = medsa_spec(arch_spec("vit_b"), adapter_ratio=0.0625, adapter_activation="relu")
    with torch.device("meta"):
        model = apply_modules(build_sam(spec), [medsa_module(settings)], source="t")
    trained = sum(p.numel() for n, p in model.named_parameters() if is_trained_adapter(n))
    assert trained == 1_954_496  # as on segment_anything's ViT-B (tests/unit/test_sam_adaptation)
    depth = sum(p.numel() for n, p in model.named_parameters() if ".Depth_Adapter." in n)
    assert depth == 12 * (768 * 48 + 48 + 48 * 768 + 768)
