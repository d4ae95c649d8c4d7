"""MedSAM (official ``MedSAM_Inference.py``) against its golden outputs.

Fixture: ``../shared/conformance/medsam/`` (README: the tiny random SAM of ``sam/`` in the
``medsam_vit_b.pth`` layout, run by the official script on an RGB ultrasound image and a
grey chest X-ray, one box per run). Configured as a user would: an explicit-hyper-parameter
arch ``{like: medsam, ...}`` (MedSAM's recipe) and a ``weights:`` key. Tolerances are the
README's: the 1024 uint8 image exact, logits / features / IoU atol 1e-4, seg identical
except where the reference's upsampled probability is within 1e-4 of 0.5.
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

CASES = ("busi10509", "cxr2_lung_a", "cxr2_lung_b")
ATOL = 1e-4


@pytest.fixture(scope="module")
def fixture_dir(conformance_root):
    return conformance_root / "medsam"


@pytest.fixture(scope="module")
def manifest(fixture_dir):
    return json.loads((fixture_dir / "manifest.json").read_text())


@pytest.fixture(scope="module")
def loaded(fixture_dir, manifest):
    checkpoint = (fixture_dir / manifest["checkpoint"]["file"]).resolve()
    return configured_model(
        "tiny_medsam",
        {
            "arch": {"like": "medsam", **TINY_SAM_ARCH},
            "weights": "tiny_medsam",
            "precision": "fp32",
        },
        {"tiny_medsam": str(checkpoint)},
    )


@pytest.fixture(scope="module")
def embedded(loaded, fixture_dir, manifest, tmp_path_factory):
    cache = tmp_path_factory.mktemp("medsam_cache")
    out = {}
    for image_file in sorted({c["image"] for c in manifest["cases"].values()}):
        image = np.load(fixture_dir / image_file)["image"]
        name = image_file.split("/")[-1].removesuffix(".npz")
        out[image_file] = (image, embed_through_cache(loaded, image[None], cache, name))
    return out


def test_medsam_arch_uses_medsams_recipe(loaded):
    assert loaded.model.input_recipe.name == "medsam"
    assert loaded.model.image_encoder.img_size == 1024


@pytest.mark.parametrize("case", CASES)
def test_encoder_input_and_features_match(case, loaded, embedded, fixture_dir, manifest):
    spec = manifest["cases"][case]
    image, cached = embedded[spec["image"]]
    assert cached.embeddings.dtype == np.float32  # precision fp32: the cache keeps float32
    x = loaded.model.input_recipe.prepare_image(image)  # min-max of the 1024 uint8 image
    lo, hi = spec["img_1024_uint8_minmax"]
    img_1024 = np.rint(x * (hi - lo) + lo).astype(np.uint8).transpose(1, 2, 0)
    assert hashlib.sha256(img_1024.tobytes()).hexdigest() == spec["img_1024_uint8_sha256"]
    name = spec["image"].split("/")[-1].removesuffix(".npz")
    crops = np.load(fixture_dir / "debug" / f"{name}_img_1024_uint8_crops.npz")
    for crop, (r0, r1, c0, c1) in spec["img_1024_uint8_crops_rows_cols"].items():
        np.testing.assert_array_equal(img_1024[r0:r1, c0:c1], crops[crop], err_msg=crop)
    features = np.load(fixture_dir / "debug" / f"{name}_features_ch0-7.npy")
    np.testing.assert_allclose(cached.embeddings[0, :8], features, rtol=0, atol=ATOL)


@pytest.mark.parametrize("case", CASES)
def test_segmentation_matches(case, loaded, embedded, fixture_dir, manifest):
    spec = manifest["cases"][case]
    image, cached = embedded[spec["image"]]
    box = np.asarray(spec["box_original_xyxy"], dtype=np.float64)
    np.testing.assert_allclose(
        loaded.model.input_recipe.map_boxes(box[None], cached.original_size),
        spec["box_1024"],
        rtol=0,
        atol=1e-9,
    )
    decoded = decode_prompts(
        loaded.model,
        cached.embeddings[0],
        [Prompt2D(box, np.zeros((0, 3)))],
        original_size=cached.original_size,
        input_size=cached.input_size,
        multimask=False,  # MedSAM_Inference.py: multimask_output=False
    )
    golden = np.load(fixture_dir / "outputs" / f"{case}.npz")
    np.testing.assert_allclose(decoded.low_res_pchw, golden["low_res_logits"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(decoded.iou_p, golden["iou_predictions"][:, 0], rtol=0, atol=ATOL)
    # the reference's upsampled probabilities (sigmoid first, then bilinear to (H, W))
    ref_probs, _ = loaded.model.input_recipe.postprocess(
        torch.from_numpy(golden["low_res_logits"]),
        original_size=cached.original_size,
        input_size=cached.input_size,
    )
    np.testing.assert_array_equal(ref_probs.numpy()[0] > 0.5, golden["seg"] == 1)
    assert_masks_equal_except_near(
        decoded.masks_pyx[0], golden["seg"] == 1, ref_probs.numpy()[0] - 0.5, ATOL, case
    )
