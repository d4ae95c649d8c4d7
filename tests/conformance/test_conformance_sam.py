"""SAM (segment-anything 1.0 ``SamPredictor``) against its golden outputs.

Fixture: ``../shared/conformance/sam/`` (README: the tiny random SAM ``tiny_sam.pth`` in the
``sam_vit_b_01ec64.pth`` layout, two RGB images, box / points / box + point prompts with
``multimask_output`` on and off). The checkpoint is configured as a user would: an
explicit-hyper-parameter arch (``{like: vit_b, embed_dim: 64, ...}``) and a ``weights:`` key.
Tolerances are the README's: resized image exact, logits and features atol 1e-4, IoU atol
1e-5, masks identical except where the reference logit is within 1e-4 of 0.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from sam_conformance import (
    TINY_SAM_ARCH,
    assert_masks_equal_except_near,
    configured_model,
    embed_through_cache,
)

from medsegflow.promptable.interface import Prompt2D
from medsegflow.promptable.sam_model import decode_prompts

IMAGES = ("busi10080", "rgbmix512")
CALLS = ("box", "points", "box_point")
LOGIT_ATOL = 1e-4
IOU_ATOL = 1e-5


@pytest.fixture(scope="module")
def fixture_dir(conformance_root):
    return conformance_root / "sam"


@pytest.fixture(scope="module")
def manifest(fixture_dir):
    return json.loads((fixture_dir / "manifest.json").read_text())


@pytest.fixture(scope="module")
def prompts(fixture_dir):
    return json.loads((fixture_dir / "prompts.json").read_text())


@pytest.fixture(scope="module")
def loaded(fixture_dir):
    return configured_model(
        "tiny_sam",
        {"arch": {"like": "vit_b", **TINY_SAM_ARCH}, "weights": "tiny_sam", "precision": "fp32"},
        {"tiny_sam": str(fixture_dir / "tiny_sam.pth")},
    )


@pytest.fixture(scope="module")
def embedded(loaded, fixture_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("sam_cache")
    out = {}
    for name in IMAGES:
        image = np.load(fixture_dir / "inputs" / f"{name}.npz")["image"]
        out[name] = (image, embed_through_cache(loaded, image[None], cache, name))
    return out


def test_the_fixture_checkpoint_loads_strictly_as_configured(loaded, fixture_dir):
    arch = json.loads((fixture_dir / "arch.json").read_text())
    assert loaded.arch == {"like": "vit_b", **TINY_SAM_ARCH}
    assert loaded.checkpoint == str(fixture_dir / "tiny_sam.pth")
    state = loaded.model.state_dict()
    assert sum(t.numel() for t in state.values()) == arch["n_parameters"]  # with buffers
    assert len(state) == arch["n_tensors"]
    assert loaded.model.input_recipe.name == "sam"
    assert loaded.model.image_encoder.img_size == arch["image_size"]


@pytest.mark.parametrize("name", IMAGES)
def test_resized_image_and_features_match(name, loaded, embedded, fixture_dir, manifest):
    image, cached = embedded[name]
    case = manifest["cases"][name]
    assert tuple(cached.input_size) == tuple(case["input_size_hw"])
    assert cached.embeddings.dtype == np.float32  # precision fp32: the cache keeps float32
    # the resized uint8 image, recovered from the normalised encoder input
    x = loaded.model.input_recipe.prepare_image(image)
    mean = np.array(loaded.model.input_recipe.pixel_mean, np.float32)[:, None, None]
    std = np.array(loaded.model.input_recipe.pixel_std, np.float32)[:, None, None]
    h, w = cached.input_size
    resized = np.rint(x * std + mean)[:, :h, :w].transpose(1, 2, 0).astype(np.uint8)
    assert np.abs(x[:, h:, :]).max(initial=0) == 0 and np.abs(x[:, :, w:]).max(initial=0) == 0
    crops = np.load(fixture_dir / "debug" / f"{name}_resized_crops.npz")
    for crop, (r0, r1, c0, c1) in case["resized_crops"].items():
        np.testing.assert_array_equal(resized[r0:r1, c0:c1], crops[crop], err_msg=crop)
    assert int(resized.sum(dtype=np.int64)) == case["resized_sum"]
    digest = hashlib.sha256(np.ascontiguousarray(resized).tobytes()).hexdigest()
    assert digest == case["resized_sha256"]
    features = np.load(fixture_dir / "debug" / f"{name}_features_ch0-7.npy")
    np.testing.assert_allclose(cached.embeddings[0, :8], features, rtol=0, atol=LOGIT_ATOL)


@pytest.mark.parametrize("multimask", [True, False], ids=["mm1", "mm0"])
@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("name", IMAGES)
def test_predictions_match(name, call, multimask, loaded, embedded, prompts, fixture_dir):
    image, cached = embedded[name]
    spec = prompts["images"][name]["prompts"][call]
    points = np.zeros((0, 3))
    if spec["point_coords"] is not None:
        points = np.column_stack([spec["point_coords"], spec["point_labels"]]).astype(np.float64)
    box = None if spec["box"] is None else np.asarray(spec["box"], dtype=np.float64)
    decoded = decode_prompts(
        loaded.model,
        cached.embeddings[0],
        [Prompt2D(box, points)],
        original_size=cached.original_size,
        input_size=cached.input_size,
        multimask=multimask,
        all_masks=multimask,
    )
    golden = np.load(fixture_dir / "outputs" / name / f"{call}_mm{int(multimask)}.npz")
    n = 3 if multimask else 1
    assert decoded.low_res_pchw.shape == (n, 1, 256, 256)
    np.testing.assert_allclose(
        decoded.low_res_pchw[:, 0], golden["low_res_logits"], rtol=0, atol=LOGIT_ATOL
    )
    np.testing.assert_allclose(decoded.iou_p, golden["iou_predictions"], rtol=0, atol=IOU_ATOL)
    # the reference's own upsampled logits (recipe postprocessing of the golden low-res
    # logits) give exactly its masks; ours differ only where those logits are near 0
    recipe = loaded.model.input_recipe
    _, ref_logits = recipe.postprocess(
        torch.from_numpy(golden["low_res_logits"][:, None]),
        original_size=cached.original_size,
        input_size=cached.input_size,
    )
    np.testing.assert_array_equal(ref_logits.numpy() > 0, golden["masks"])
    assert_masks_equal_except_near(
        decoded.masks_pyx, golden["masks"], ref_logits.numpy(), LOGIT_ATOL, f"{name} {call}"
    )


def test_a_grey_conversion_would_be_caught(loaded, embedded, fixture_dir):
    """rgbmix512's channels differ: its grey version gives other features (so the RGB
    path above is what matches)."""
    from medsegflow.io import to_grey

    image, cached = embedded["rgbmix512"]
    grey = np.rint(to_grey(image)).astype(np.uint8)
    x_rgb = loaded.model.input_recipe.prepare_image(image)
    x_grey = loaded.model.input_recipe.prepare_image(grey)
    assert np.abs(x_rgb - x_grey).max() > 1.0
