"""SAM-Med3D core: checkpoint layout, geometry round trip, crops, clicks, windows, inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medsegflow.errors import InputError
from medsegflow.io import Geometry, Volume, read_volume
from medsegflow.metrics import compute_metrics
from medsegflow.prompts import clicks
from medsegflow.sam3d.preprocess import (
    crop_box,
    extract,
    gt_centre,
    original_to_model,
    paste,
    prepare_crop,
    to_model_grid,
    to_original,
    window_boxes,
)

STS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ibsi_sts" / "STS_001"


@pytest.fixture(scope="module")
def sts():
    image = read_volume(STS / "CT_image.nii.gz")
    mask = read_volume(STS / "CT_mask.nii.gz")
    return image, mask, to_model_grid(image, label=mask)


@pytest.fixture(scope="module")
def tiny():
    from medsegflow.sam3d.model import build_sam3d

    torch.manual_seed(0)
    return build_sam3d("tiny")


# --- model and checkpoints -------------------------------------------------------------


def test_tiny_checkpoint_in_turbo_layout_loads(tiny, tmp_path):
    from medsegflow.sam3d.model import load_checkpoint

    path = tmp_path / "sam_med3d_tiny.pth"
    torch.save({"model_state_dict": tiny.state_dict(), "epoch": 3}, path)
    loaded = load_checkpoint(path, "tiny")
    for key, value in tiny.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    bare = tmp_path / "bare.pth"
    torch.save(tiny.state_dict(), bare)
    assert load_checkpoint(bare, "tiny") is not None


def test_checkpoint_errors_name_the_file(tiny, tmp_path):
    from medsegflow.sam3d.model import load_checkpoint

    missing = tmp_path / "nope.pth"
    with pytest.raises(InputError, match="nope.pth"):
        load_checkpoint(missing, "tiny")
    state = dict(tiny.state_dict())
    state.pop("mask_decoder.iou_token.weight")
    state["extra.weight"] = torch.zeros(1)
    wrong = tmp_path / "wrong.pth"
    torch.save({"model_state_dict": state}, wrong)
    with pytest.raises(InputError, match=r"wrong\.pth.*mask_decoder\.iou_token\.weight.*extra"):
        load_checkpoint(wrong, "tiny")
    reshaped = dict(tiny.state_dict())
    reshaped["mask_decoder.iou_token.weight"] = torch.zeros(1, 48)
    torch.save({"model_state_dict": reshaped}, tmp_path / "reshaped.pth")
    with pytest.raises(InputError, match=r"reshaped\.pth.*shape mismatch.*iou_token"):
        load_checkpoint(tmp_path / "reshaped.pth", "tiny")
    torch.save({"model_state_dict": tiny.state_dict()}, tmp_path / "tiny_as_turbo.pth")
    with pytest.raises(InputError, match=r"tiny_as_turbo\.pth.*missing keys"):
        load_checkpoint(tmp_path / "tiny_as_turbo.pth", "turbo")


def test_train_py_checkpoint_with_its_args_namespace_loads(tiny, tmp_path):
    """SAM-Med3D's train.py saves its argparse.Namespace (with a torch.device) beside the
    weights; that one class is allowed, weights_only stays on."""
    import argparse

    from medsegflow.sam3d.model import load_checkpoint

    args = argparse.Namespace(device=torch.device("cpu"), lr=8e-4, img_size=64)
    path = tmp_path / "sam_model_dice_best.pth"
    torch.save({"epoch": 2, "model_state_dict": tiny.state_dict(), "args": args}, path)
    loaded = load_checkpoint(path, "tiny")
    assert torch.equal(
        loaded.state_dict()["mask_decoder.iou_token.weight"],
        tiny.state_dict()["mask_decoder.iou_token.weight"],
    )
    import fractions

    torch.save({"model_state_dict": tiny.state_dict(), "x": fractions.Fraction(1, 2)}, path)
    with pytest.raises(InputError, match=r"sam_model_dice_best\.pth.*fractions\.Fraction"):
        load_checkpoint(path, "tiny")


def test_spec_from_a_config_mapping():
    from medsegflow.sam3d.model import SPECS, get_spec

    spec = get_spec(
        {
            "image_size": 64,
            "encoder_embed_dim": 192,
            "encoder_depth": 4,
            "encoder_num_heads": 6,
            "global_attn_indexes": [],
            "window_size": 0,
            "prompt_embed_dim": 96,
        }
    )
    assert spec.as_dict() == {**SPECS["tiny"].as_dict(), "name": "custom"}
    with pytest.raises(ValueError, match="depth_typo"):
        get_spec({"depth_typo": 3})


def test_turbo_shapes_on_meta_device():
    from medsegflow.sam3d.model import expected_state_dict_shapes

    shapes = expected_state_dict_shapes("turbo")
    assert shapes["image_encoder.patch_embed.proj.weight"] == (768, 1, 16, 16, 16)
    assert shapes["image_encoder.pos_embed"] == (1, 8, 8, 8, 768)
    assert shapes["image_encoder.blocks.0.attn.rel_pos_d"] == (27, 64)  # window 14
    assert shapes["image_encoder.blocks.2.attn.rel_pos_d"] == (15, 64)  # global block
    assert shapes["image_encoder.neck.0.weight"] == (384, 768, 1, 1, 1)
    assert shapes["prompt_encoder.mask_downscaling.6.weight"] == (384, 16, 1, 1, 1)
    assert shapes["mask_decoder.mask_tokens.weight"] == (4, 384)
    assert "pixel_mean" not in shapes
    assert len({k.split(".")[2] for k in shapes if k.startswith("image_encoder.blocks.")}) == 12
    total = sum(int(np.prod(s)) for s in shapes.values())
    assert 100e6 < total < 101e6


# --- geometry ---------------------------------------------------------------------------


def test_resample_crop_paste_round_trip_on_real_ct(sts):
    image, mask, grid = sts
    assert np.allclose(np.diag(grid.affine)[:3], 1.5)
    reference = grid.label_ijk > 0
    box = crop_box(clicks.first_click(reference, mode="center")[:3], 128)
    back = to_original(paste(extract(reference, box, fill=False), box, grid.shape), grid)
    assert back.shape == mask.array_zyx.shape == image.array_zyx.shape
    dsc = compute_metrics(back > 0, mask.array_zyx > 0, mask.spacing_zyx)[1]["dsc"]
    assert dsc >= 0.95
    point = np.array([[30.0, 100.0, 90.0]])
    from medsegflow.sam3d.preprocess import model_to_original

    assert np.allclose(model_to_original(original_to_model(point, grid), grid), point)


def test_crop_mask_reaches_the_outermost_original_voxels():
    """0.8 mm voxels, 1.5 mm model grid: the grid's centred floor(extent / 1.5) voxels leave
    the original's outer voxel centres outside it; the crop (with its padding) covers them,
    and they take the nearest crop voxel, as the official data_postprocess."""
    from medsegflow.sam3d.preprocess import block_to_original

    image = Volume(np.zeros((20, 21, 22), np.float32), Geometry((0.8, 0.8, 0.8)))
    grid = to_model_grid(image)
    box = crop_box(np.asarray(grid.shape) / 2.0, 64)
    ones = np.ones((64,) * 3, np.uint8)
    assert block_to_original(ones, box.start, grid).all()
    inside_grid = to_original(paste(ones, box, grid.shape), grid)
    assert not inside_grid[0].all() or not inside_grid[-1].all() or not inside_grid[:, :, 0].all()
    legacy = to_model_grid(image, resample_grid="ceil_corner")
    assert all(a >= b for a, b in zip(legacy.shape, grid.shape, strict=True))
    assert to_original(np.ones(legacy.shape, np.uint8), legacy).all()


def test_axis_aligned_paste_back_equals_the_voxel_by_voxel_rule():
    """The one-gather path for non-oblique grids gives what mapping every original voxel
    centre does, on an LPS image whose axes the RAS model frame flips and permutes."""
    from medsegflow.sam3d.preprocess import (
        _axis_aligned_to_original,
        _oblique_to_original,
        block_to_original,
    )

    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # permuted and flipped
    image = Volume(
        np.zeros((9, 23, 17), np.float32), Geometry((0.7, 1.1, 3.0), (5, -2, 40), direction)
    )
    grid = to_model_grid(image)
    values = (np.random.default_rng(4).random((16, 16, 16)) > 0.5).astype(np.uint8)
    start = (-3, 2, -1)
    to_block = np.linalg.inv(grid.affine) @ grid.original_affine
    to_block[:3, 3] -= start
    fast = _axis_aligned_to_original(values, to_block, grid.original_shape_zyx)
    slow = _oblique_to_original(values, to_block, grid.original_shape_zyx)
    assert fast.shape == (9, 23, 17) and 0 < fast.sum() < fast.size
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(block_to_original(values, start, grid), fast)


def test_crop_is_centred_on_the_first_click_not_the_gt(sts):
    _, _, grid = sts
    reference = grid.label_ijk > 0
    centre = gt_centre(reference)
    inside = np.argwhere(reference)
    click = inside[np.argmax(np.abs(inside - centre).sum(axis=1))]  # far off-centre
    assert np.abs(click - centre).max() > 15
    box = crop_box(click, 128)
    assert np.array_equal(np.asarray(box.start) + 64, click)
    assert box.to_crop(click[None])[0].tolist() == [64, 64, 64]
    assert crop_box(centre, 128).start != box.start
    crop = prepare_crop(grid, box)
    raw = extract(grid.image_ijk, box, fill=0.0)
    fg = raw[raw > 0]
    assert crop.shape == (128, 128, 128)
    assert np.isclose(crop[raw > 0].mean(), 0.0, atol=1e-4)
    assert np.isclose(crop[raw > 0].std(ddof=1), 1.0, atol=1e-3)
    assert np.isclose(crop[0, 0, 0], (raw[0, 0, 0] - fg.mean()) / fg.std(ddof=1), atol=1e-3)


# --- clicks -----------------------------------------------------------------------------


def _cube(shape, lo, hi):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return mask


def test_first_click_inside_the_object_and_seeded():
    gt = _cube((20, 20, 20), (2, 3, 4), (9, 12, 15))
    # deepest voxels (depth 4): z = 5, y = 6..8, x = 7..11 in raster order; the CVPR25 draw
    # RandomState(42).choice picks (5, 7, 8)
    assert clicks.first_click(gt, mode="center").tolist() == [5, 7, 8, 1]
    a = [clicks.first_click(gt, mode="random", rng=np.random.default_rng(7)) for _ in range(2)]
    assert np.array_equal(a[0], a[1]) and gt[tuple(a[0][:3])]
    draws = {
        tuple(clicks.first_click(gt, mode="random", rng=np.random.default_rng(s))) for s in range(5)
    }
    assert len(draws) > 1 and all(gt[d[:3]] for d in draws)


def test_next_click_sign_and_largest_component_centre():
    gt = _cube((30, 30, 30), (2, 2, 2), (12, 12, 12))
    pred = gt.copy()
    pred[2:12, 2:12, 2:5] = False  # false negative slab, 300 voxels
    pred |= _cube(pred.shape, (20, 20, 20), (27, 27, 27))  # false positive cube, 343 voxels
    click = clicks.next_click_index(pred, gt, mode="center")
    assert click.tolist() == [23, 23, 23, 0]
    pred[20:27, 20:27, 20:27] = False
    pred |= _cube(pred.shape, (20, 20, 20), (22, 22, 22))  # small FP, 8 voxels
    click = clicks.next_click_index(pred, gt, mode="center")
    assert click[3] == 1 and (gt & ~pred)[tuple(click[:3])]
    assert click[2] == 3  # the slab's middle plane (x in 2..4)
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    ra = clicks.next_click_index(pred, gt, mode="random", rng=rng_a)
    rb = clicks.next_click_index(pred, gt, mode="random", rng=rng_b)
    assert np.array_equal(ra, rb) and ra[3] == 1 and (gt & ~pred)[tuple(ra[:3])]
    assert clicks.next_click_index(gt, gt) is None


# --- sliding windows and inference ------------------------------------------------------


def test_windows_cover_an_object_larger_than_one_crop():
    lo, hi = np.array([5, 0, 10]), np.array([150, 40, 200])
    boxes = window_boxes(lo, hi, 64, min_overlap=0.25)
    covered = np.zeros((220, 220, 220), bool)
    for box in boxes:
        covered[tuple(slice(max(s, 0), e) for s, e in zip(box.start, box.stop, strict=True))] = True
    assert covered[5:151, 0:41, 10:201].all()
    starts_z = sorted({b.start[0] for b in boxes})
    gaps = np.diff(starts_z)
    assert len(starts_z) == 3 and (gaps <= 64 - 16).all()
    assert len({b.start[1] for b in boxes}) == 1
    assert len(boxes) == 3 * 1 * 4
    assert len(window_boxes(lo, lo + 10, 64)) == 1


def test_sliding_windows_run_on_a_large_box(tiny):
    from medsegflow.sam3d.windows import segment_windows

    rng = np.random.default_rng(0)
    image = Volume(rng.normal(40, 20, (30, 70, 70)).astype(np.float32), Geometry((2.0, 2.0, 3.0)))
    result = segment_windows(tiny, image, box_zyx=np.array([[2, 5, 5], [27, 64, 64]]))
    assert len(result.boxes) == result.n_run > 1
    assert result.mask.shape == image.array_zyx.shape and result.mask.dtype == np.uint8


def test_interactive_run_returns_one_mask_per_click(tiny):
    from medsegflow.sam3d.infer import interactive_segment

    rng = np.random.default_rng(1)
    array = rng.normal(0, 10, (24, 60, 50)).astype(np.float32)
    label = np.zeros(array.shape, np.uint8)
    label[8:16, 20:40, 15:35] = 1
    array[label > 0] += 100
    geometry = Geometry((1.2, 1.0, 2.5), origin_xyz=(5.0, -3.0, 10.0))
    result = interactive_segment(
        tiny, Volume(array, geometry), Volume(label, geometry), n_clicks=3, mode="center"
    )
    assert len(result.masks) == 3
    assert all(m.shape == array.shape and m.dtype == np.uint8 for m in result.masks)
    assert result.clicks_ijk.shape[1] == 4 and result.clicks_ijk[0, 3] == 1
    assert label[tuple(np.rint(result.clicks_zyx[0]).astype(int))] == 1
    assert np.array_equal(np.asarray(result.box.start) + 32, result.clicks_ijk[0, :3])


def _long_case():
    """A 150 mm long object (100 voxels of 1.5 mm along x: 100 model voxels, more than the
    tiny model's 64-voxel crop) with a small second object inside its box."""
    rng = np.random.default_rng(2)
    shape = (16, 24, 110)
    label = np.zeros(shape, np.uint8)
    label[4:12, 6:18, 5:105] = 1
    label[5:11, 8:16, 40:60] = 0
    label[5:11, 8:16, 45:55] = 2
    hu = np.where(label == 1, 100.0, np.where(label == 2, 200.0, 0.0)) + rng.normal(0, 10, shape)
    geometry = Geometry((1.5, 1.5, 1.5))
    return Volume(hu.astype(np.float32), geometry), Volume(label, geometry)


def test_windows_extend_the_last_mask_of_an_object_longer_than_one_crop(tiny):
    from medsegflow.sam3d.infer import segment_labels
    from medsegflow.sam3d.windows import reference_box_zyx, segment_windows

    image, label = _long_case()
    kwargs = {"n_clicks": 3, "mode": "center", "device": "cpu"}
    off, single = segment_labels(tiny, image, label, **kwargs)
    on, windowed = segment_labels(tiny, image, label, window_overlap=0.25, **kwargs)
    grid = to_model_grid(image)
    first_crop = to_original(paste(np.ones((64,) * 3, np.uint8), single[1].box, grid.shape), grid)
    beyond = (first_crop == 0) & (label.array_zyx == 1)
    assert beyond.sum() > 0  # the object does not fit in its first crop
    # one crop: nothing is predicted outside it, after any click
    assert all(not (m[first_crop == 0]).any() for m in single[1].masks)
    # windows: 2 crops along x (100 voxels, 64-voxel crops, stride 48), both run
    run = windowed[1].windows
    assert run is not None and len(run.boxes) == run.n_run == 2
    assert sorted({b.start[0] for b in run.boxes}) == [5, 41]  # i = 109 - x (RAS)
    assert windowed[1].seconds["windows"] == run.seconds > 0
    assert (windowed[1].masks[-1][beyond] > 0).sum() > 0  # found beyond the first crop
    # the windows span the reference's 3D box (not the clicks), prompted by all the clicks
    box = reference_box_zyx(label.array_zyx == 1)
    assert box.tolist() == [[4, 6, 5], [11, 17, 104]]
    direct = segment_windows(
        tiny,
        image,
        box_zyx=box,
        clicks_zyx=windowed[1].clicks_zyx,
        click_labels=windowed[1].clicks_ijk[:, 3],
        device="cpu",
    )
    np.testing.assert_array_equal(direct.mask, windowed[1].masks[-1])
    # only the last mask changes: the earlier clicks keep the single crop's masks
    for k in range(2):
        np.testing.assert_array_equal(windowed[1].masks[k], single[1].masks[k])
        np.testing.assert_array_equal(on[k], off[k])
    np.testing.assert_array_equal(windowed[1].clicks_ijk, single[1].clicks_ijk)
    expected = np.zeros_like(on[-1])
    expected[windowed[1].masks[-1] > 0] = 1
    expected[windowed[2].masks[-1] > 0] = 2
    np.testing.assert_array_equal(on[-1], expected)
    assert not np.array_equal(on[-1], off[-1])
    # the small object fits: no windows, exactly the single-crop result
    assert windowed[2].windows is None and "windows" not in windowed[2].seconds
    for a, b in zip(windowed[2].masks, single[2].masks, strict=True):
        np.testing.assert_array_equal(a, b)
