"""The official input/output recipes, pinned against the official code on a real image.

The fixture is a non-square (303 x 461) grey crop of BUSI ``10018.png``. The expected
values come from the official formulas written out here: segment_anything's own
``ResizeLongestSide``, ``Sam.preprocess`` and ``Sam.postprocess_masks`` (called on a stub
that carries only ``pixel_mean``, ``pixel_std`` and ``image_encoder.img_size``), and the
lines of bowang-lab/MedSAM ``MedSAM_Inference.py`` and ``CVPR24_LiteMedSAM_infer.py``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from segment_anything.modeling.sam import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from skimage import transform

from medsegflow.models.input_recipes import (
    LiteMedSamRecipe,
    MedSamRecipe,
    SamRecipe,
    recipe_for,
)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
IMAGE_PATH = SHARED_DATA / "busi_mini" / "images" / "10018.png"
CROP = (slice(100, 403), slice(150, 611))  # rows, columns of the 575 x 757 image
H, W = 303, 461
BOXES = np.array([[50, 60, 300, 250], [0, 0, W, H]], dtype=np.float64)  # XYXY, original

SAM_MEAN = [123.675, 116.28, 103.53]
SAM_STD = [58.395, 57.12, 57.375]


@pytest.fixture(scope="module")
def image_yx() -> np.ndarray:
    if not IMAGE_PATH.is_file():
        pytest.fail(f"real fixture not found: {IMAGE_PATH}")
    grey = np.asarray(Image.open(IMAGE_PATH).convert("L"))
    crop = np.ascontiguousarray(grey[CROP])
    assert crop.shape == (H, W) and crop.dtype == np.uint8
    assert crop.min() > 0 and crop.max() < 255  # so the min-max normalisation matters
    return crop


def _sam_stub(image_size: int) -> SimpleNamespace:
    return SimpleNamespace(
        pixel_mean=torch.Tensor(SAM_MEAN).view(-1, 1, 1),
        pixel_std=torch.Tensor(SAM_STD).view(-1, 1, 1),
        image_encoder=SimpleNamespace(img_size=image_size),
    )


def _official_sam_input(image_yx: np.ndarray) -> np.ndarray:
    """SamPredictor.set_image -> set_torch_image -> Sam.preprocess."""
    img_3c = np.repeat(image_yx[:, :, None], 3, axis=-1)
    input_image = ResizeLongestSide(1024).apply_image(img_3c)
    input_image_torch = torch.as_tensor(input_image).permute(2, 0, 1).contiguous()[None, :, :, :]
    return Sam.preprocess(_sam_stub(1024), input_image_torch)[0].numpy()


def _official_medsam_input(image_yx: np.ndarray) -> np.ndarray:
    """MedSAM_Inference.py, image preprocessing."""
    img_3c = np.repeat(image_yx[:, :, None], 3, axis=-1)
    img_1024 = transform.resize(
        img_3c, (1024, 1024), order=3, preserve_range=True, anti_aliasing=True
    ).astype(np.uint8)
    img_1024 = (img_1024 - img_1024.min()) / np.clip(
        img_1024.max() - img_1024.min(), a_min=1e-8, a_max=None
    )
    return torch.tensor(img_1024).float().permute(2, 0, 1).numpy()


def _official_lite_input(image_yx: np.ndarray) -> np.ndarray:
    """CVPR24_LiteMedSAM_infer.py: resize_longest_side, min-max, pad_image."""
    img_3c = np.repeat(image_yx[:, :, None], 3, axis=-1)
    oldh, oldw = img_3c.shape[0], img_3c.shape[1]
    scale = 256 * 1.0 / max(oldh, oldw)
    newh, neww = oldh * scale, oldw * scale
    neww, newh = int(neww + 0.5), int(newh + 0.5)
    img_256 = cv2.resize(img_3c, (neww, newh), interpolation=cv2.INTER_AREA)
    img_256_norm = (img_256 - img_256.min()) / np.clip(
        img_256.max() - img_256.min(), a_min=1e-8, a_max=None
    )
    h, w = img_256_norm.shape[:2]
    img_256_padded = np.pad(img_256_norm, ((0, 256 - h), (0, 256 - w), (0, 0)))
    return torch.tensor(img_256_padded).float().permute(2, 0, 1).numpy()


def _official_resize_box_to_256(box: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    new_box = np.zeros_like(box)
    ratio = 256 / max(original_size)
    for i in range(len(box)):
        new_box[i] = int(box[i] * ratio)
    return new_box


@pytest.fixture(scope="module")
def inputs(image_yx: np.ndarray) -> dict[str, np.ndarray]:
    """Each recipe's encoder input, computed once (MedSAM's bicubic resize is slow)."""
    return {
        "sam": SamRecipe().prepare_image(image_yx),
        "medsam": MedSamRecipe().prepare_image(image_yx),
        "lite_medsam": LiteMedSamRecipe().prepare_image(image_yx),
    }


@pytest.fixture(scope="module")
def low_res_logits() -> torch.Tensor:
    """(2, 1, 256, 256) logits: a blob plus strong seeded noise, so the order matters."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:256, 0:256]
    blob = 6.0 - np.hypot(xx - 110.0, yy - 90.0) / 8.0
    ramp = 0.08 * (xx - 128.0) + 3.0 * np.sin(yy / 9.0)
    noise = rng.normal(0.0, 4.0, size=(2, 256, 256))
    logits = np.stack([blob, ramp]) + noise
    return torch.tensor(logits[:, None], dtype=torch.float32)


def test_input_sizes():
    assert SamRecipe().input_size((H, W)) == (673, 1024)
    assert SamRecipe(image_size=64).input_size((H, W)) == (42, 64)
    assert MedSamRecipe().input_size((H, W)) == (1024, 1024)
    assert LiteMedSamRecipe().input_size((H, W)) == (168, 256)
    assert LiteMedSamRecipe().input_size((W, H)) == (256, 168)


def test_sam_encoder_input_matches_official(image_yx, inputs):
    got = inputs["sam"]
    assert got.shape == (3, 1024, 1024) and got.dtype == np.float32
    np.testing.assert_allclose(got, _official_sam_input(image_yx), rtol=0, atol=1e-6)
    assert np.all(got[:, 673:, :] == 0.0)  # padding bottom, after normalisation
    resized = ResizeLongestSide(1024).apply_image(np.repeat(image_yx[:, :, None], 3, axis=-1))
    expected_red = (resized[:673, :, 0].astype(np.float32) - 123.675) / 58.395
    np.testing.assert_allclose(got[0, :673], expected_red, rtol=0, atol=1e-5)


def test_medsam_encoder_input_matches_official(image_yx, inputs):
    got = inputs["medsam"]
    assert got.shape == (3, 1024, 1024) and got.dtype == np.float32
    np.testing.assert_allclose(got, _official_medsam_input(image_yx), rtol=0, atol=1e-7)
    assert got.min() == 0.0 and got.max() == 1.0
    assert np.array_equal(got[0], got[1]) and np.array_equal(got[0], got[2])
    assert got[:, 673:, :].max() > 0.0  # no padding: the whole square is image


def test_lite_medsam_encoder_input_matches_official(image_yx, inputs):
    got = inputs["lite_medsam"]
    assert got.shape == (3, 256, 256) and got.dtype == np.float32
    np.testing.assert_allclose(got, _official_lite_input(image_yx), rtol=0, atol=1e-7)
    assert np.all(got[:, 168:, :] == 0.0)
    inside = got[:, :168, :]
    assert inside.min() == 0.0 and inside.max() == 1.0


def test_medsam_input_differs_from_sam(inputs):
    sam, medsam = inputs["sam"], inputs["medsam"]
    assert sam.shape == medsam.shape
    assert not np.allclose(sam, medsam, atol=1e-2)
    assert sam.min() < -1.0  # pixel mean/std; MedSAM has none
    assert medsam.min() == 0.0
    assert not np.array_equal(sam[0], sam[2])  # per-channel mean/std on a grey image


def test_map_boxes_sam():
    got = SamRecipe().map_boxes(BOXES, (H, W))
    assert got.dtype == np.float64 and got.shape == (2, 4)
    np.testing.assert_array_equal(got, ResizeLongestSide(1024).apply_boxes(BOXES, (H, W)))
    expected = [[111.0629067, 133.2673267, 666.3774403, 555.2805281], [0, 0, 1024, 673]]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_map_boxes_medsam():
    got = MedSamRecipe().map_boxes(BOXES.astype(np.int64), (H, W))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, BOXES / np.array([W, H, W, H]) * 1024)
    expected = [[111.0629067, 202.7722772, 666.3774403, 844.8844884], [0, 0, 1024, 1024]]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_map_boxes_lite_medsam_truncates():
    got = LiteMedSamRecipe().map_boxes(BOXES, (H, W))
    assert got.dtype == np.float64
    # 50 * 256 / 461 = 27.77 -> 27, 300 * 256 / 461 = 166.59 -> 166 (int truncation)
    np.testing.assert_array_equal(got, [[27, 33, 166, 138], [0, 0, 256, 168]])
    for i, box in enumerate(BOXES.astype(np.int64)):
        official = _official_resize_box_to_256(box, original_size=(H, W))
        assert official.dtype == np.int64
        np.testing.assert_array_equal(got[i], official)


@pytest.mark.parametrize("recipe", [SamRecipe(), MedSamRecipe(), LiteMedSamRecipe()])
def test_points_use_the_boxes_scaling(recipe):
    corners = BOXES.reshape(-1, 2, 2)  # (N, 2 corners, (x, y))
    points = recipe.map_points(corners, (H, W))
    assert points.shape == (2, 2, 2) and points.dtype == np.float64
    np.testing.assert_array_equal(points.reshape(-1, 4), recipe.map_boxes(BOXES, (H, W)))
    if isinstance(recipe, SamRecipe):
        official = ResizeLongestSide(1024).apply_coords(corners, (H, W))
        np.testing.assert_array_equal(points, official)


def _alt_order_differs(a: torch.Tensor, b: torch.Tensor) -> None:
    """The other order of operations gives another mask: the test can tell them apart."""
    assert bool((a != b).any())


def test_postprocess_sam_matches_official(low_res_logits):
    recipe = SamRecipe()
    input_size = recipe.input_size((H, W))
    probs, logits = recipe.postprocess(low_res_logits, original_size=(H, W), input_size=input_size)
    assert probs.shape == logits.shape == (2, H, W)
    assert probs.dtype == logits.dtype == torch.float32
    official = Sam.postprocess_masks(_sam_stub(1024), low_res_logits, input_size, (H, W))[:, 0]
    torch.testing.assert_close(logits, official, rtol=0, atol=1e-5)
    assert torch.equal(probs > 0.5, official > 0.0)
    torch.testing.assert_close(probs, torch.sigmoid(official), rtol=0, atol=1e-6)
    no_crop = F.interpolate(low_res_logits, (H, W), mode="bilinear", align_corners=False)[:, 0]
    _alt_order_differs(probs > 0.5, no_crop > 0.0)


def test_postprocess_sam_tiny_logits_keep_the_official_threshold():
    recipe = SamRecipe(image_size=64)
    low_res = torch.tensor([1e-9, -1e-9, 0.0]).view(3, 1, 1, 1).expand(3, 1, 16, 16)
    probs, logits = recipe.postprocess(
        low_res.contiguous(), original_size=(37, 53), input_size=recipe.input_size((37, 53))
    )
    assert probs.shape == (3, 37, 53)
    assert torch.equal(probs > 0.5, logits > 0)
    assert bool((probs[0] > 0.5).all()) and not bool((probs[1:] > 0.5).any())


def test_postprocess_medsam_matches_official(low_res_logits):
    recipe = MedSamRecipe()
    probs, logits = recipe.postprocess(
        low_res_logits, original_size=(H, W), input_size=recipe.input_size((H, W))
    )
    assert probs.shape == logits.shape == (2, H, W)
    assert probs.dtype == logits.dtype == torch.float32
    low_res_pred = torch.sigmoid(low_res_logits)
    low_res_pred = F.interpolate(low_res_pred, size=(H, W), mode="bilinear", align_corners=False)
    official = low_res_pred.squeeze(1).numpy()
    np.testing.assert_allclose(probs.numpy(), official, rtol=0, atol=1e-6)
    assert np.array_equal((probs > 0.5).numpy(), official > 0.5)
    assert bool(torch.isfinite(logits).all())
    clipped = probs.clamp(1e-6, 1 - 1e-6)
    torch.testing.assert_close(torch.sigmoid(logits), clipped, rtol=0, atol=1e-5)
    upsampled_logits = F.interpolate(low_res_logits, (H, W), mode="bilinear", align_corners=False)
    _alt_order_differs(probs > 0.5, torch.sigmoid(upsampled_logits[:, 0]) > 0.5)


def test_postprocess_lite_medsam_matches_official(low_res_logits):
    recipe = LiteMedSamRecipe()
    new_size = recipe.input_size((H, W))
    probs, logits = recipe.postprocess(low_res_logits, original_size=(H, W), input_size=new_size)
    assert probs.shape == logits.shape == (2, H, W)
    masks = low_res_logits[..., : new_size[0], : new_size[1]]
    masks = F.interpolate(masks, size=(H, W), mode="bilinear", align_corners=False)
    official = torch.sigmoid(masks).squeeze(1).numpy()
    np.testing.assert_allclose(probs.numpy(), official, rtol=0, atol=1e-6)
    assert np.array_equal((probs > 0.5).numpy(), official > 0.5)
    torch.testing.assert_close(logits, masks[:, 0], rtol=0, atol=1e-6)
    medsam_probs, _ = MedSamRecipe().postprocess(
        low_res_logits, original_size=(H, W), input_size=(1024, 1024)
    )
    _alt_order_differs(probs > 0.5, medsam_probs > 0.5)  # MedSAM does not crop


def test_postprocess_casts_to_float32_and_checks_shapes(low_res_logits):
    recipe = LiteMedSamRecipe()
    probs, logits = recipe.postprocess(
        low_res_logits.double(), original_size=(H, W), input_size=(168, 256)
    )
    assert probs.dtype == logits.dtype == torch.float32
    assert probs.device == low_res_logits.device
    with pytest.raises(ValueError, match="256 x 256"):
        recipe.postprocess(
            low_res_logits[..., :128, :128], original_size=(H, W), input_size=(168, 256)
        )
    with pytest.raises(ValueError, match="input_size"):
        recipe.postprocess(low_res_logits, original_size=(H, W), input_size=(256, 256))
    with pytest.raises(ValueError, match="one mask channel"):
        SamRecipe().postprocess(
            low_res_logits.expand(2, 3, 256, 256), original_size=(H, W), input_size=(673, 1024)
        )
    with pytest.raises(ValueError, match="shape"):
        MedSamRecipe().postprocess(
            low_res_logits[:, 0], original_size=(H, W), input_size=(1024, 1024)
        )


@pytest.mark.parametrize("recipe", [SamRecipe(), MedSamRecipe(), LiteMedSamRecipe()])
@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((8, 8), dtype=np.float32),
        np.zeros((8, 8), dtype=np.uint16),
        np.zeros((8, 8, 4), dtype=np.uint8),
        np.zeros((8, 8, 3), dtype=np.float32),
        np.zeros((0, 8), dtype=np.uint8),
        [[0, 1], [2, 3]],
    ],
    ids=["float32", "uint16", "rgba", "rgb-float", "empty", "list"],
)
def test_prepare_image_rejects_bad_input(recipe, bad):
    with pytest.raises(ValueError, match="slice"):
        recipe.prepare_image(bad)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [SamRecipe(), MedSamRecipe(), LiteMedSamRecipe()])
def test_rgb_images_keep_their_channels_and_grey_is_repeated(recipe):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    x = recipe.prepare_image(rgb)
    assert x.shape == (3, recipe.image_size, recipe.image_size)
    swapped = recipe.prepare_image(np.ascontiguousarray(rgb[..., ::-1]))

    def unnormalised(t):  # SAM's per-channel mean/std undone (others: one min-max)
        if recipe.name != "sam":
            return t
        return (
            t * np.array(recipe.pixel_std)[:, None, None]
            + np.array(recipe.pixel_mean)[:, None, None]
        )

    # each channel is processed on its own: swapping R and B swaps the encoder input's
    # channels 0 and 2 (no grey conversion, no BGR swap)
    h, w = recipe.input_size((H, W))  # SAM pads after normalising: compare the image part
    np.testing.assert_allclose(
        unnormalised(swapped)[0, :h, :w], unnormalised(x)[2, :h, :w], atol=1e-3
    )
    assert not np.allclose(x[0], x[2])
    grey = rgb[..., 1]
    np.testing.assert_array_equal(
        recipe.prepare_image(grey), recipe.prepare_image(np.repeat(grey[..., None], 3, axis=-1))
    )


@pytest.mark.parametrize("recipe", [SamRecipe(), MedSamRecipe(), LiteMedSamRecipe()])
def test_prompts_reject_bad_input(recipe):
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        recipe.map_boxes(np.array([1.0, 2.0, 3.0, 4.0]), (H, W))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        recipe.map_points(np.zeros((3, 3)), (H, W))
    with pytest.raises(ValueError, match="original_size"):
        recipe.map_boxes(BOXES, (H, 0))


def test_recipe_for():
    assert recipe_for("sam", 1024) == SamRecipe()
    assert recipe_for("sam", 64) == SamRecipe(image_size=64)
    assert recipe_for("medsam", 1024) == MedSamRecipe()
    assert recipe_for("lite_medsam", 256) == LiteMedSamRecipe()
    assert SamRecipe().pixel_mean == (123.675, 116.28, 103.53)
    assert SamRecipe().pixel_std == (58.395, 57.12, 57.375)
    with pytest.raises(ValueError, match="'sam2'"):
        recipe_for("sam2", 1024)
    with pytest.raises(ValueError, match="'medsam'.*1024"):
        recipe_for("medsam", 256)
    with pytest.raises(ValueError, match="image_size"):
        SamRecipe(image_size=0)


def test_samed_classes_are_resized_with_scipy_zoom_order_0():
    """SAMed's test_single_volume: zoom(labels, (H / 512, W / 512), order=0), whose index
    rule is not torch's nearest, and whose last row of 166 is 0 (past the edge)."""
    from scipy.ndimage import zoom

    from medsegflow.models.input_recipes import SamedRecipe

    recipe = SamedRecipe(image_size=512)
    generator = torch.Generator().manual_seed(3)
    low = torch.randn((2, 4, 128, 128), generator=generator)
    labels = recipe.postprocess_classes(low, original_size=(166, 164), input_size=(512, 512))
    up = F.interpolate(low, (512, 512), mode="bilinear", align_corners=False).argmax(1).numpy()
    expected = np.stack([zoom(c, (166 / 512, 164 / 512), order=0) for c in up])
    np.testing.assert_array_equal(labels.numpy(), expected)
    assert not labels[:, -1].any() and labels[:, -2].any()
    nearest = F.interpolate(torch.from_numpy(up[:, None]).float(), (166, 164), mode="nearest")
    assert (nearest[:, 0].long().numpy() != expected).mean() > 0.05


def test_samed_input_size_step_zooms_twice():
    """test.py --input_size N: zoom (cubic) to N x N first, then to 512 x 512."""
    from scipy.ndimage import zoom

    from medsegflow.models.input_recipes import SamedRecipe

    image = np.random.default_rng(0).integers(0, 256, (90, 70), dtype=np.uint8)
    scaled = image.astype(np.float32) / 255.0
    twice = zoom(zoom(scaled, (224 / 90, 224 / 70), order=3), (512 / 224, 512 / 224), order=3)
    once = zoom(scaled, (512 / 90, 512 / 70), order=3)
    step = SamedRecipe(image_size=512, zoom_size=224).prepare_image(image)
    np.testing.assert_allclose(step[0], twice, atol=1e-6)
    np.testing.assert_allclose(SamedRecipe(image_size=512).prepare_image(image)[1], once, atol=1e-6)
    assert np.abs(step[0] - once).max() > 1e-3
    floats = SamedRecipe(image_size=512, zoom_size=512).prepare_image(scaled)
    np.testing.assert_allclose(floats[2], once, atol=1e-6)
