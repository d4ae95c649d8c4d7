"""LoRA (SAMed) and adapters (Med-SA): identity at initialisation, merging, parameter
counts of the recipes on full-size SAM ViT-B/H (meta device)."""

from __future__ import annotations

import copy

import pytest
import torch

from medsegflow.models.sam_adapters import is_adapter_parameter
from medsegflow.models.sam_archs import build_sam
from medsegflow.models.sam_lora import LoRALinear, encoder_attentions, lora_layers, merge_lora
from medsegflow.models.sam_modules import apply_modules
from medsegflow.models.semantic_sam import decode_semantic, semantic_spec
from medsegflow.training.samed import samed_trainable

torch.set_num_threads(1)

LORA = {"kind": "lora", "rank": 4, "alpha": 4.0, "targets": ["encoder_qv", "decoder_qv"]}
ADAPTERS = {
    "kind": "medsa_adapters",
    "ratio": 0.0625,
    "activation": "relu",
    "scale": 0.5,
    "decoder": True,
}


def _outputs(model, images):
    """Embeddings and the single-mask logits of one box per image."""
    with torch.no_grad():
        embeddings = model.image_encoder(images)
        boxes = torch.tensor([[8.0, 10.0, 40.0, 50.0]])
        sparse, dense = model.prompt_encoder(points=None, boxes=boxes, masks=None)
        logits, iou = model.mask_decoder.predict_masks(
            embeddings[:1], model.prompt_encoder.get_dense_pe(), sparse, dense
        )
    return embeddings, logits, iou


@pytest.fixture(
    scope="module", params=["demo", pytest.param("lite_medsam", marks=pytest.mark.slow)]
)
def base(request):
    torch.manual_seed(0)
    model = build_sam(request.param if request.param != "demo" else {"img_size": 64})
    size = model.image_encoder.img_size
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    return model, images


@pytest.fixture(scope="module")
def base_outputs(base):
    """The base model's outputs, computed once per model (full size: 3 s per image)."""
    return _outputs(*base)


@pytest.mark.parametrize("module", [LORA, ADAPTERS], ids=["lora", "adapters"])
def test_zero_initialised_updates_reproduce_the_base_model_exactly(base, base_outputs, module):
    model, images = base
    adapted = apply_modules(copy.deepcopy(model), [module], source="test")
    added = sum(p.numel() for p in adapted.parameters()) - sum(
        p.numel() for p in model.parameters()
    )
    assert added > 0
    for ours, theirs in zip(_outputs(adapted, images), base_outputs, strict=True):
        assert torch.equal(ours, theirs)
    # and the new parameters do change the outputs once they are not zero
    with torch.no_grad():
        for name, param in adapted.named_parameters():
            if ".lora." in name or is_adapter_parameter(name):
                param.add_(0.05 * torch.randn_like(param))
    changed = _outputs(adapted, images)
    assert (changed[0] - base_outputs[0]).abs().max() > 1e-3
    assert (changed[1] - base_outputs[1]).abs().max() > 1e-3


def test_lora_rows_are_query_and_value_only(base):
    model, images = base
    adapted = apply_modules(copy.deepcopy(model), [{**LORA, "targets": ["encoder_qv"]}], source="t")
    layers = lora_layers(adapted.image_encoder)
    assert layers and all(isinstance(layer, LoRALinear) for _, layer in layers)
    name, layer = layers[0]
    with torch.no_grad():
        for pair in layer.lora.values():
            pair.b.weight.normal_()
        x = torch.randn(3, layer.in_features)
        delta = layer(x) - torch.nn.functional.linear(x, layer.weight, layer.bias)
    changed = delta.abs().amax(dim=0) > 0
    rows = torch.zeros(layer.out_features, dtype=torch.bool)
    rows[layer.rows_q] = True
    rows[layer.rows_v] = True
    assert torch.equal(changed, rows)  # keys untouched
    if hasattr(adapted.image_encoder, "blocks"):  # ViT: [q | k | v]
        dim = layer.in_features
        assert torch.equal(layer.rows_q, torch.arange(dim))
        assert torch.equal(layer.rows_v, torch.arange(2 * dim, 3 * dim))


def test_lora_layers_choose_the_encoder_blocks(base):
    """SAMed's ``lora_layer``: only the chosen blocks get LoRA; a block index the encoder
    lacks is one clear error."""
    model, _ = base
    n_blocks = len(encoder_attentions(model))
    last = {**LORA, "targets": ["encoder_qv"], "layers": [n_blocks - 1]}
    adapted = apply_modules(copy.deepcopy(model), [last], source="t")
    adapted_blocks = [isinstance(a.qkv, LoRALinear) for a in encoder_attentions(adapted)]
    assert adapted_blocks == [False] * (n_blocks - 1) + [True]
    with pytest.raises(ValueError, match=f"blocks 0..{n_blocks - 1}"):
        apply_modules(copy.deepcopy(model), [{**last, "layers": [n_blocks]}], source="t")


def test_merged_lora_predicts_what_the_unmerged_model_does(base):
    model, images = base
    adapted = apply_modules(copy.deepcopy(model), [LORA], source="test")
    with torch.no_grad():
        for name, param in adapted.named_parameters():
            if ".lora." in name:
                param.copy_(0.05 * torch.randn_like(param))
    merged = merge_lora(copy.deepcopy(adapted))
    assert not lora_layers(merged)
    assert set(merged.state_dict()) == set(model.state_dict())  # the plain SAM layout
    for ours, theirs in zip(_outputs(merged, images), _outputs(adapted, images), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=2e-5)


def _trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _meta(arch, spec=None):
    with torch.device("meta"):
        return build_sam(spec or arch)


def test_samed_trains_lora_plus_prompt_encoder_and_decoder_on_vit_b():
    from medsegflow.models.sam_archs import arch_spec

    spec = semantic_spec(arch_spec("vit_b"), n_classes=8, image_size=512)
    with torch.device("meta"):
        model = apply_modules(build_sam(spec), [{**LORA, "targets": ["encoder_qv"]}], source="t")
    for name, param in model.named_parameters():
        param.requires_grad_(samed_trainable(name, decoder_lora=False))
    lora = 12 * 2 * (4 * 768 + 768 * 4)  # 12 blocks x (q, v) x (A + B) at r = 4
    assert lora == 147_456
    prompt_encoder = 6_220  # SAM ViT-B's, without its positional buffer
    decoder = 4_058_340 + 5 * (2 * (256 * 256 + 256) + 256 * 32 + 32) + 5 * 256 + 5 * 257
    assert _trainable(model) == lora + prompt_encoder + decoder == 4_913_621
    # exactly the tensors SAMed's save_lora_parameters writes (plus the positional buffer)
    buffers = sum(b.numel() for n, b in model.named_buffers() if n.startswith("prompt_encoder."))
    assert buffers == 256
    assert model.image_encoder.pos_embed.shape == (1, 32, 32, 768)  # 512 input


def test_medsa_trains_about_two_percent_of_sam():
    with torch.device("meta"):
        vit_b = apply_modules(build_sam("vit_b"), [ADAPTERS], source="t")
    for name, param in vit_b.named_parameters():
        param.requires_grad_(is_adapter_parameter(name))
    encoder = 12 * 2 * (768 * 48 + 48 + 48 * 768 + 768)
    decoder = 2 * ((256 * 16 + 16 + 16 * 256 + 256) * 2 + 256 * 256 + 256)
    assert _trainable(vit_b) == encoder + decoder == 1_954_496
    total = sum(p.numel() for p in vit_b.parameters())
    assert 0.018 < _trainable(vit_b) / total < 0.022
    # the paper's "2% of the SAM parameters (13M)" is ViT-H with this bottleneck
    with torch.device("meta"):
        vit_h = apply_modules(build_sam("vit_h"), [{**ADAPTERS, "decoder": False}], source="t")
    encoder_h = sum(p.numel() for n, p in vit_h.named_parameters() if is_adapter_parameter(n))
    assert encoder_h == 32 * 2 * (1280 * 80 + 80 + 80 * 1280 + 1280) == 13_194_240


def test_medsam_trains_the_image_encoder_and_mask_decoder_of_vit_b():
    model = _meta("vit_b")
    for name, param in model.named_parameters():
        param.requires_grad_(not name.startswith("prompt_encoder."))
    assert _trainable(model) == 89_670_912 + 4_058_340


def test_semantic_decoder_gives_one_channel_per_class_plus_background():
    model = build_sam({"img_size": 64, "mask_outputs": 4, "input_recipe": "samed"})
    with torch.no_grad():
        embeddings = model.image_encoder(torch.rand(2, 3, 64, 64))
        logits = decode_semantic(model, embeddings)
    assert logits.shape == (2, 5, 16, 16)
    channels = model.input_recipe.postprocess_classes(
        logits, original_size=(30, 50), input_size=(64, 64)
    )
    assert channels.shape == (2, 30, 50) and channels.dtype == torch.int64
    expected = torch.nn.functional.interpolate(logits, (64, 64), mode="bilinear").argmax(1)
    assert set(channels.unique().tolist()) <= set(expected.unique().tolist())
