"""M2IB saliency on tiny open_clip models of every supported tower kind.

Two tiny models, built with open_clip directly (no weights, no download), cover the four
block kinds: ``CLIP`` (open_clip native vision and text transformers, BPE tokenizer) and
``CustomTextCLIP`` (timm ``test_vit`` vision trunk, Hugging Face BERT text tower with a
WordPiece vocabulary written to a temporary folder).
"""

from __future__ import annotations

import json
import math

import numpy as np
import open_clip
import pytest
import torch

from medsegflow.clip.bundle import ClipBundle
from medsegflow.errors import ConfigError
from medsegflow.saliency.blocks import check_layer, text_blocks, vision_blocks
from medsegflow.saliency.m2ib import (
    M2IBParams,
    _Bottleneck,
    image_saliency,
    minmax_normalise,
    text_saliency,
)

torch.set_num_threads(1)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "bright", "dark", "lesion"]
VOCAB += ["kidney", "liver", "round", "background", "."]
TEXTS = ("a bright round lesion", "a dark kidney")


def native_clip() -> ClipBundle:
    """CLIP with open_clip's native towers: 32 px input, 8 px patches (4 x 4 grid)."""
    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg={"image_size": 32, "patch_size": 8, "width": 32, "layers": 3, "head_width": 16},
        text_cfg={"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 3},
    )
    tokenizer = open_clip.SimpleTokenizer(context_length=16)
    return ClipBundle(model.eval(), tokenizer, 32, MEAN, STD, name="tiny-native", kind="openai")


def timm_bert_clip(folder) -> ClipBundle:
    """CustomTextCLIP with timm's ``test_vit`` (6 blocks, 64 px input: 4 x 4 grid) and a
    3-layer BERT of width 32 (BiomedCLIP's layout, tiny)."""
    from transformers import BertConfig

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tokenizer_config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
    BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        pad_token_id=0,
        initializer_range=0.5,  # HF's 0.02 makes every text embed alike (cosine 0.99999)
    ).to_json_file(folder / "config.json")
    torch.manual_seed(0)
    model = open_clip.CustomTextCLIP(
        embed_dim=16,
        vision_cfg={
            "timm_model_name": "test_vit",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 64,
        },
        text_cfg={
            "hf_model_name": str(folder),
            "hf_tokenizer_name": str(folder),
            "hf_model_pretrained": False,
            "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
            "context_length": 16,
        },
    )
    tokenizer = open_clip.tokenizer.HFTokenizer(str(folder), context_length=16)
    return ClipBundle(model.eval(), tokenizer, 64, MEAN, STD, name="tiny-biomed", kind="biomedclip")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    return {"native": native_clip(), "timm_bert": timm_bert_clip(tmp_path_factory.mktemp("bert"))}


@pytest.fixture(params=["native", "timm_bert"])
def bundle(request, bundles):
    return bundles[request.param]


PARAMS = M2IBParams.from_config(dict(vlayer=1, tlayer=1, steps=5, samples=4), key_prefix="s")


def phantom(shape=(50, 70)) -> np.ndarray:
    """Grey noisy background with a bright disc in the upper left quarter."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    blob = (yy - 15) ** 2 + (xx - 20) ** 2 <= 9**2
    image = np.where(blob, 220.0, 60.0) + rng.normal(0, 8, shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def test_block_kinds(bundles):
    native, biomed = bundles["native"].model, bundles["timm_bert"].model
    kinds = [
        (vision_blocks(native), "open_clip", 3),
        (vision_blocks(biomed), "timm", 6),
        (text_blocks(native), "open_clip", 3),
        (text_blocks(biomed), "hf", 3),
    ]
    for blocks, kind, depth in kinds:
        assert (blocks.kind, blocks.depth, blocks.single_token_pool) == (kind, depth, True)
    assert vision_blocks(native).grid(32) == (4, 4)
    assert vision_blocks(biomed).grid(64) == (4, 4)


def test_image_saliency_is_in_the_original_geometry_and_normalised(bundle):
    image = phantom()
    for img in (image, np.repeat(image[..., None], 3, axis=2)):
        saliency = image_saliency(bundle, img, [TEXTS[0]], PARAMS, seed=0)
        assert saliency.shape == (50, 70) and saliency.dtype == np.float32
        assert np.isfinite(saliency).all()
        assert saliency.min() == 0.0 and saliency.max() == pytest.approx(1.0)


def test_deterministic_given_the_seed(bundle):
    image = phantom()
    a = image_saliency(bundle, image, [TEXTS[0]], PARAMS, seed=3)
    b = image_saliency(bundle, image, [TEXTS[0]], PARAMS, seed=3)
    c = image_saliency(bundle, image, [TEXTS[0]], PARAMS, seed=4)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-4


def test_the_map_depends_on_the_text(bundle):
    image = phantom()
    maps = [image_saliency(bundle, image, [t], PARAMS, seed=0) for t in TEXTS]
    assert np.abs(maps[0] - maps[1]).mean() > 0.02
    both = image_saliency(bundle, image, list(TEXTS), PARAMS, seed=0)
    # several sentences: the mean of their maps, normalised again
    np.testing.assert_allclose(both, minmax_normalise((maps[0] + maps[1]) / 2), atol=1e-5)


def test_model_untouched_after_the_call(bundle):
    model = bundle.model
    model.train()  # the call runs in eval mode and must restore the caller's mode
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    with torch.no_grad():
        model.eval()
        pixels = bundle.image_tensor([phantom()])
        tokens = bundle.tokenizer(list(TEXTS))
        before = model.encode_image(pixels), model.encode_text(tokens)
        model.train()
    image_saliency(bundle, phantom(), [TEXTS[0]], PARAMS, seed=0)
    text_saliency(bundle, phantom(), TEXTS[0], PARAMS, seed=0)
    assert model.training
    model.eval()
    with torch.no_grad():
        after = model.encode_image(pixels), model.encode_text(tokens)
    for x, y in zip(before, after, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    for blocks in (vision_blocks(model), text_blocks(model)):
        assert all(not block._forward_hooks for block in blocks.blocks)
    assert not frozen.requires_grad
    assert all(p.requires_grad for p in list(model.parameters())[1:])
    assert all(p.grad is None for p in model.parameters())
    frozen.requires_grad_(True)


def test_bottleneck_without_noise_keeps_the_embedding(bundle):
    """λ = 1 reproduces the model's embedding for every copy: block layouts, tuple
    outputs and the expansion to ``samples`` copies are handled."""
    model = bundle.model.eval()
    pixels = bundle.image_tensor([phantom()])
    tokens = bundle.tokenizer([TEXTS[0]])
    cases = [
        (vision_blocks(model), lambda: model.encode_image(pixels)),
        (text_blocks(model), lambda: model.encode_text(tokens)),
    ]
    with torch.no_grad():
        for blocks, run in cases:
            reference = run()
            hook = _Bottleneck(
                var=1.0, samples=3, batch_first=blocks.batch_first, generator=torch.Generator()
            )
            handle = blocks.blocks[1].register_forward_hook(hook)
            try:
                noisy = run()
                hook.alpha.fill_(40.0)  # sigmoid(40) == 1 in float32: no noise
                clean = run()
            finally:
                handle.remove()
            assert noisy.shape == clean.shape == (3, reference.shape[1])
            torch.testing.assert_close(clean, reference.expand(3, -1), rtol=1e-4, atol=1e-5)
            assert (noisy - reference).abs().max() > 1e-4


def test_sequence_first_layout():
    """open_clip transformers built with ``batch_first=False`` give (N, B, D) outputs."""
    torch.manual_seed(0)
    transformer = open_clip.transformer.Transformer(width=16, layers=2, heads=2, batch_first=False)
    x = torch.randn(1, 5, 16)
    with torch.no_grad():
        reference = transformer(x)
        hook = _Bottleneck(var=1.0, samples=2, batch_first=False, generator=torch.Generator())
        handle = transformer.resblocks[0].register_forward_hook(hook)
        try:
            transformer(x)
            hook.alpha.fill_(40.0)
            out = transformer(x)
        finally:
            handle.remove()
    assert hook.alpha.shape == (5, 16)
    torch.testing.assert_close(out, reference.expand(2, -1, -1), rtol=1e-4, atol=1e-5)


def test_bad_layers_raise_config_errors_naming_the_key(bundles):
    bundle = bundles["timm_bert"]
    image = phantom()
    key = "methods.m.saliency"
    with pytest.raises(ConfigError, match=r"methods\.m\.saliency\.vlayer: 12 is outside 0\.\.5"):
        image_saliency(
            bundle,
            image,
            ["a"],
            M2IBParams.from_config(dict(vlayer=12), key_prefix="s"),
            seed=0,
            key_prefix=key,
        )
    with pytest.raises(ConfigError, match=r"saliency\.vlayer: 5 is the last vision block"):
        image_saliency(
            bundle,
            image,
            ["a"],
            M2IBParams.from_config(dict(vlayer=5), key_prefix="s"),
            seed=0,
            key_prefix=key,
        )
    with pytest.raises(ConfigError, match=r"methods\.m\.saliency\.tlayer: 3 is outside 0\.\.2"):
        text_saliency(
            bundle,
            image,
            "a",
            M2IBParams.from_config(dict(tlayer=3), key_prefix="s"),
            seed=0,
            key_prefix=key,
        )
    blocks = vision_blocks(bundle.model)
    with pytest.raises(ConfigError, match="k: -1 is outside"):
        check_layer(blocks, -1, key="k", model_name="x")
    with pytest.raises(ConfigError, match="k: '2' must be an integer"):
        check_layer(blocks, "2", key="k", model_name="x")


def test_params_from_config():
    assert M2IBParams.from_config(None, key_prefix="s") == M2IBParams.from_config(
        {}, key_prefix="s"
    )
    params = M2IBParams.from_config({"vlayer": 7, "vbeta": 1, "steps": 3}, key_prefix="s")
    assert (params.vlayer, params.vbeta, params.steps, params.lr) == (7, 1.0, 3, 1.0)
    bad = [
        ({"vlayr": 7}, r"s\.vlayr: unknown key"),
        ({"vlayer": 1.5}, r"s\.vlayer: 1\.5 is not of type 'integer'"),
        ({"tlayer": -1}, r"s\.tlayer: -1 is less than the minimum of 0"),
        ({"steps": 0}, r"s\.steps: 0 is less than the minimum of 1"),
        ({"vbeta": 0}, r"s\.vbeta: 0 is less than or equal to the minimum of 0"),
        ({"vvar": math.inf}, r"s\.vvar: inf must be a finite number"),
        ({"lr": True}, r"s\.lr: True is not of type 'number'"),
    ]
    for config, message in bad:
        with pytest.raises(ConfigError, match=message):
            M2IBParams.from_config(config, key_prefix="s")


def test_text_saliency_scores_every_token(bundles):
    image = phantom()
    expected = {
        "native": ["<start_of_text>", "a", "bright", "round", "le", "sion", "<end_of_text>"],
        "timm_bert": ["[CLS]", "a", "bright", "round", "lesion", "[SEP]"],
    }
    for name, bundle in bundles.items():
        scores = text_saliency(bundle, image, TEXTS[0], PARAMS, seed=0)
        assert [token for token, _ in scores] == expected[name]
        values = np.array([s for _, s in scores])
        assert values.min() == 0.0 and values.max() == pytest.approx(1.0)
        again = text_saliency(bundle, image, TEXTS[0], PARAMS, seed=0)
        assert again == scores


def test_minmax_normalise():
    np.testing.assert_array_equal(minmax_normalise(np.full((3, 4), 7.0)), np.zeros((3, 4)))
    out = minmax_normalise(np.array([1.0, np.nan, 3.0]))
    np.testing.assert_allclose(out, [1 / 3, 0.0, 1.0], rtol=1e-6)  # NaN counts as 0
    assert out.dtype == np.float32


# CUDA only where a GPU is present (the machines this is developed on have none): the
# test runs on every available device instead of skipping.
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_the_model_device(bundles, device):
    bundle = bundles["timm_bert"]
    bundle.model.to(device)
    try:
        saliency = image_saliency(bundle, phantom(), list(TEXTS), PARAMS, seed=0)
        scores = text_saliency(bundle, phantom(), TEXTS[0], PARAMS, seed=0)
    finally:
        bundle.model.cpu()
    assert saliency.shape == (50, 70) and saliency.max() == pytest.approx(1.0)
    assert len(scores) == 6
