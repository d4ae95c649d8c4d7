"""Coordinate frames of SAM decoding from cached embeddings, and equality with SamPredictor.

A tiny SAM (segment_anything's own classes, random weights, input 64 x 64, embedding
32 x 4 x 4, low-res masks 16 x 16) on non-square images of odd sizes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medsegflow.models.input_recipes import input_recipe
from medsegflow.models.sam_archs import build_sam
from medsegflow.models.sam_cache import (
    CaseEmbeddings,
    load_case_embeddings,
    save_case_embeddings,
)
from medsegflow.models.sam_encode import encode_slices
from medsegflow.promptable.interface import Prompt2D
from medsegflow.promptable.sam_model import decode_prompts

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sam_fixtures import TINY_SAM  # noqa: E402

SIZES = [(37, 53), (101, 64)]  # (H, W): wide and tall, odd


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return build_sam(TINY_SAM)


def _image(shape_yx, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = (rng.random(shape_yx) * 120).astype(np.uint8)
    h, w = shape_yx
    image[h // 4 : 3 * h // 4, w // 3 : 2 * w // 3] = 220
    return image


def _prompts(shape_yx) -> list[Prompt2D]:
    h, w = shape_yx
    box = np.array([w // 3 - 2, h // 4 - 2, 2 * w // 3 + 1, 3 * h // 4 + 1], dtype=np.float64)
    points = np.array([[w // 2, h // 2, 1], [3, h - 4, 0]])
    return [
        Prompt2D(box, np.zeros((0, 3), dtype=np.int64)),
        Prompt2D(None, points[:1]),
        Prompt2D(None, points),
        Prompt2D(box, points),
    ]


def _spy_prompt_encoder(model, monkeypatch) -> list[dict]:
    calls: list[dict] = []
    real = model.prompt_encoder.forward

    def spy(points, boxes, masks):
        calls.append({"points": points, "boxes": boxes, "masks": masks})
        return real(points, boxes, masks)

    monkeypatch.setattr(model.prompt_encoder, "forward", spy)
    return calls


@pytest.mark.parametrize("shape_yx", SIZES)
def test_prompts_are_mapped_into_the_model_frame(model, monkeypatch, shape_yx):
    h, w = shape_yx
    new_h, new_w = input_recipe("sam", 64).input_size((h, w))
    assert max(new_h, new_w) == 64
    calls = _spy_prompt_encoder(model, monkeypatch)
    box = np.array([3.0, 5.0, w - 4.0, h - 6.0])
    points = np.array([[2, 7, 1], [w - 1, h - 1, 0]])
    decode_prompts(
        model,
        np.zeros((32, 4, 4), np.float16),
        [Prompt2D(box, points)],
        original_size=shape_yx,
        input_size=(new_h, new_w),
        multimask=True,
    )
    scale = np.array([new_w / w, new_h / h])
    np.testing.assert_allclose(calls[0]["boxes"].numpy()[0], box * np.tile(scale, 2), rtol=1e-6)
    coords, labels = calls[0]["points"]
    np.testing.assert_allclose(coords.numpy()[0], points[:, :2] * scale, rtol=1e-6)
    np.testing.assert_array_equal(labels.numpy()[0], [1, 0])
    assert calls[0]["masks"] is None


@pytest.mark.parametrize("shape_yx", SIZES)
def test_low_res_mask_goes_back_to_the_original_frame(model, monkeypatch, shape_yx):
    """A decoder mask covering the box's image in the model frame lands on the box."""
    h, w = shape_yx
    new_h, new_w = input_recipe("sam", 64).input_size((h, w))
    box = np.array([w * 0.2, h * 0.3, w * 0.7, h * 0.8]).round()
    model_box = box * np.tile([new_w / w, new_h / h], 2)
    centres = 4 * np.arange(16) + 1.5  # low-res cell centres in model pixels
    inside_x = (centres >= model_box[0]) & (centres <= model_box[2] + 1)
    inside_y = (centres >= model_box[1]) & (centres <= model_box[3] + 1)
    low_res = np.where(inside_y[:, None] & inside_x[None, :], 10.0, -10.0).astype(np.float32)

    def fake_decoder(**kwargs):
        n = kwargs["sparse_prompt_embeddings"].shape[0]
        masks = torch.from_numpy(low_res)[None, None].repeat(n, 3, 1, 1)
        return masks, torch.tensor([[0.1, 0.9, 0.2]]).repeat(n, 1)

    monkeypatch.setattr(model.mask_decoder, "forward", fake_decoder)
    decoded = decode_prompts(
        model,
        np.zeros((32, 4, 4), np.float16),
        [Prompt2D(box, np.zeros((0, 3)))],
        original_size=shape_yx,
        input_size=(new_h, new_w),
        multimask=True,
    )
    mask = decoded.masks_pyx[0]
    assert mask.shape == shape_yx
    cell = 4 * max(w / new_w, h / new_h)  # one low-res cell in original pixels
    ys, xs = np.nonzero(mask)
    assert abs(xs.min() - box[0]) <= cell and abs(xs.max() - box[2]) <= cell
    assert abs(ys.min() - box[1]) <= cell and abs(ys.max() - box[3]) <= cell
    inner = np.zeros(shape_yx, dtype=bool)
    inner[
        int(box[1] + cell) : int(box[3] - cell) + 1, int(box[0] + cell) : int(box[2] - cell) + 1
    ] = 1
    assert mask[inner].all()  # the box interior is covered, the outside is not
    outer = np.ones(shape_yx, dtype=bool)
    outer[
        int(box[1] - cell) : int(box[3] + cell) + 1, int(box[0] - cell) : int(box[2] + cell) + 1
    ] = 0
    assert not mask[outer].any()


def _predictor_outputs(predictor, prompt: Prompt2D):
    points = prompt.points_xyl if len(prompt.points_xyl) else None
    logits, iou, low_res = predictor.predict(
        point_coords=None if points is None else points[:, :2],
        point_labels=None if points is None else points[:, 2],
        box=prompt.box_xyxy,
        multimask_output=True,
        return_logits=True,
    )
    best = int(np.argmax(iou))
    return logits[best], iou[best], low_res[best]


@pytest.mark.parametrize("shape_yx", SIZES)
def test_cached_decoding_equals_sam_predictor(model, tmp_path, shape_yx):
    """The key check of the cache: same masks as set_image + predict, prompt by prompt."""
    from segment_anything import SamPredictor

    image = _image(shape_yx)
    predictor = SamPredictor(model)
    predictor.set_image(np.repeat(image[:, :, None], 3, axis=2))
    cpu = torch.device("cpu")
    embedding = encode_slices(image[None], model=model, device=cpu, batch_size=1, precision="fp32")
    half = encode_slices(image[None], model=model, device=cpu, batch_size=1, precision="bf16")
    assert half.dtype == np.float16  # bf16 autocast: a float16 cache
    path = tmp_path / "case.npz"
    save_case_embeddings(
        path,
        CaseEmbeddings(
            case_id="c",
            z=np.array([0]),
            embeddings=embedding,
            original_size=shape_yx,
            input_size=input_recipe("sam", 64).input_size(tuple(shape_yx)),
            image_size=64,
        ),
    )
    cached = load_case_embeddings(path)
    assert cached.embeddings.dtype == np.float32  # precision fp32: stored as computed
    assert tuple(cached.input_size) == tuple(predictor.input_size)
    features = predictor.features.numpy()[0]
    np.testing.assert_allclose(cached.embeddings[0], features, atol=1e-5, rtol=0)

    prompts = _prompts(shape_yx)
    expected = [_predictor_outputs(predictor, p) for p in prompts]
    sizes = {"original_size": cached.original_size, "input_size": cached.input_size}
    # float32 embedding: identical to SamPredictor, one prompt per call or batched
    for batch_size in (1, 3):
        ours = decode_prompts(
            model, features, prompts, multimask=True, batch_size=batch_size, **sizes
        )
        for i, (logits, iou, low_res) in enumerate(expected):
            np.testing.assert_allclose(ours.logits_pyx[i], logits, atol=1e-5)
            np.testing.assert_array_equal(ours.masks_pyx[i], logits > 0)
            np.testing.assert_allclose(ours.iou_p[i], iou, atol=1e-6)
            np.testing.assert_allclose(ours.low_res_pchw[i, 0], low_res, atol=1e-5)
    for _logits, _, _ in expected:
        assert 0.05 < (_logits > 0).mean() < 0.95  # non-trivial masks
    # a float16 cache (after bf16): the same as SamPredictor given the same (rounded) features
    rounded = cached.embeddings[0].astype(np.float16)
    fp16 = decode_prompts(model, rounded, prompts, multimask=True, **sizes)
    predictor.features = torch.from_numpy(rounded.astype(np.float32))[None]
    for i, prompt in enumerate(prompts):
        logits, _, _ = _predictor_outputs(predictor, prompt)
        np.testing.assert_array_equal(fp16.masks_pyx[i], logits > 0)
        # and against full precision, masks differ at most where the logit is ~0
        differ = fp16.masks_pyx[i] != (expected[i][0] > 0)
        assert (np.abs(expected[i][0][differ]) < 1e-3).all()
