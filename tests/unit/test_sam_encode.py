"""The inference encoder: batch norms folded into their convolutions, the same function."""

from __future__ import annotations

import torch

from medsegflow.models.sam_archs import build_sam
from medsegflow.models.sam_encode import inference_encoder


def _lite_encoder_with_statistics() -> torch.nn.Module:
    torch.manual_seed(0)
    encoder = build_sam("lite_medsam").image_encoder.eval()
    for module in encoder.modules():  # non-trivial running statistics and affine weights
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_(1.0, 0.1)
            module.bias.data.normal_(0.0, 0.1)
    return encoder


def test_litemedsam_encoder_is_folded_and_computes_the_same():
    torch.set_num_threads(1)
    encoder = _lite_encoder_with_statistics()
    keys = list(encoder.state_dict())
    fused = inference_encoder(encoder)
    assert fused is not encoder
    norms = [m for m in fused.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms == [], f"{len(norms)} batch norms left"
    assert list(encoder.state_dict()) == keys  # the model itself is untouched
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules())
    x = torch.rand(1, 3, 256, 256)
    with torch.inference_mode():
        reference, folded = encoder(x), fused(x)
    assert reference.abs().max() > 0.1
    torch.testing.assert_close(folded, reference, atol=1e-4, rtol=1e-4)


def test_training_and_norm_free_encoders_come_back_as_they_are():
    encoder = build_sam("lite_medsam").image_encoder.train()
    assert inference_encoder(encoder) is encoder
    vit = build_sam("demo").image_encoder.eval()  # SAM's ViT: LayerNorms only
    assert inference_encoder(vit) is vit
