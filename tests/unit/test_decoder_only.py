"""A SAM loaded for cached embeddings: prompt encoder and mask decoder only, no torchvision."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from medsegflow.models.sam_loader import load_sam_model
from medsegflow.models.sam_registry import packaged_weights_path
from medsegflow.promptable.interface import Prompt2D
from medsegflow.promptable.sam_model import decode_prompts


@pytest.fixture(scope="module")
def lite_models():
    path = packaged_weights_path("lite_medsam")
    full, _ = load_sam_model(path, arch="lite_medsam", device="cpu")
    decoder, _ = load_sam_model(path, arch="lite_medsam", device="cpu", image_encoder=False)
    return full, decoder


def test_decoder_only_model_has_no_encoder_weights_and_decodes_the_same(lite_models):
    full, decoder = lite_models
    assert not list(decoder.image_encoder.parameters())
    assert decoder.image_encoder.img_size == full.image_encoder.img_size == 256
    for part in ("prompt_encoder", "mask_decoder"):
        mine, theirs = getattr(decoder, part).state_dict(), getattr(full, part).state_dict()
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    with torch.inference_mode():
        embedding = full.image_encoder(
            torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
        )
    prompt = [Prompt2D(np.array([40.0, 50.0, 150.0, 170.0]), np.zeros((0, 3)))]
    kwargs = {"original_size": (200, 200), "input_size": (256, 256), "multimask": False}
    a = decode_prompts(full, embedding[0].numpy(), prompt, **kwargs)
    b = decode_prompts(decoder, embedding[0].numpy(), prompt, **kwargs)
    np.testing.assert_array_equal(a.probs_pyx, b.probs_pyx)
    with pytest.raises(RuntimeError, match="without its image encoder"):
        decoder.image_encoder(torch.zeros(1, 3, 256, 256))


def test_loading_for_decoding_imports_neither_torchvision_nor_timm():
    code = (
        "import sys\n"
        "from medsegflow.models.sam_loader import load_sam_model\n"
        "from medsegflow.models.sam_registry import packaged_weights_path\n"
        "load_sam_model(packaged_weights_path('lite_medsam'), arch='lite_medsam',"
        " device='cpu', image_encoder=False)\n"
        "print(sorted(m for m in ('torchvision', 'timm', 'torch._dynamo') if m in sys.modules))\n"
        "import segment_anything\n"
        "print(segment_anything.SamPredictor.__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = done.stdout.strip().splitlines()
    assert lines[-2] == "[]"  # the package's own names still load, on first use:
    assert lines[-1] == "SamPredictor"
