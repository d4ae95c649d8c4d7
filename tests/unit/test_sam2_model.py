"""The sam2 family's model against the official sam2 package: a tiny SAM 2.1 (random
weights in the official ``{"model": state_dict}`` layout, config file by path) built by
the real loader; 2D decoding from the cached features equals ``SAM2ImagePredictor``
run directly; MedSAM2's key-slice propagation equals the package's video predictor run
directly on the same frames; bad checkpoints are one line naming the file."""

from __future__ import annotations

import warnings
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from sam2_fixtures import MEDSAM2_LIKE_OVERRIDES, write_tiny_sam2

from medsegflow.components import largest_component
from medsegflow.errors import ConfigError, InputError
from medsegflow.promptable.interface import Prompt2D
from medsegflow.promptable.sam2_model import Sam2Promptable, build_sam2_network

torch.set_num_threads(1)
NO_POINTS = np.zeros((0, 3))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_sam2(tmp_path_factory.mktemp("sam2"))


@pytest.fixture(scope="module")
def model(tiny):
    config, checkpoint = tiny
    return Sam2Promptable.build({"config": str(config)}, checkpoint, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def slices():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 80, (2, 72, 96), dtype=np.uint8)
    image[:, 20:50, 30:70] = 200
    return image


@pytest.fixture(scope="module")
def cached(model, slices):
    return model.encode_slices(slices, batch_size=2)


def test_the_loader_reads_the_official_layout_strictly(tiny, model):
    config, checkpoint = tiny
    saved = torch.load(checkpoint, weights_only=True)["model"]
    state = model.net.state_dict()
    assert set(state) == set(saved)
    for name, tensor in saved.items():
        assert torch.equal(state[name], tensor), name
    assert model.image_size == 1024
    info = model.describe()
    assert info["family"] == "sam2" and info["config"] == str(config)
    assert info["precision"] == "fp32"
    again = Sam2Promptable.build(info, checkpoint, device="cpu", precision="fp32")
    assert again.describe() == info  # the cache's model.json builds the same model


def test_decoding_the_cache_equals_the_package_predictor(model, slices, cached):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    assert set(cached.arrays) == {"image_embed", "high_res_feats_0", "high_res_feats_1"}
    assert cached.arrays["image_embed"].shape == (2, 32, 64, 64)
    assert cached.arrays["high_res_feats_0"].dtype == np.float32
    box = np.array([28.0, 18.0, 72.0, 52.0])
    points = np.array([[50.0, 35.0, 1.0], [10.0, 60.0, 0.0]])
    predictor = SAM2ImagePredictor(model.net)
    for z in range(2):
        predictor.set_image(np.repeat(slices[z][..., None], 3, axis=-1))
        row = cached.row(z)
        cases = [
            dict(box=box, multimask=True),
            dict(box=box, multimask=False),
            dict(points=points, multimask=True),
            dict(box=box, points=points[:1], multimask=False),
        ]
        for case in cases:
            pts = case.get("points")
            want, iou, low = predictor.predict(
                point_coords=None if pts is None else pts[:, :2],
                point_labels=None if pts is None else pts[:, 2],
                box=case.get("box"),
                multimask_output=case["multimask"],
                return_logits=True,
            )
            best = int(iou.argmax()) if case["multimask"] else 0
            prompt = Prompt2D(case.get("box"), NO_POINTS if pts is None else pts)
            got = model.decode(
                row,
                [prompt],
                original_size=cached.original_size,
                input_size=cached.input_size,
                multimask=case["multimask"],
            )
            assert np.abs(got.logits_pyx[0] - want[best]).max() < 1e-4, case
            np.testing.assert_array_equal(got.masks_pyx[0], want[best] > 0.0)
            assert 0.05 < got.masks_pyx[0].mean() < 0.95  # a mask, not an empty slice
            np.testing.assert_allclose(got.iou_p[0], iou[best], atol=1e-5)
            np.testing.assert_allclose(got.low_res_pchw[0, 0], low[best], atol=1e-4)
        # the previous low-res logits as mask_input, as the predictor takes them
        want2, iou2, _ = predictor.predict(
            box=box, mask_input=low[best][None], multimask_output=False, return_logits=True
        )
        got2 = model.decode(
            row,
            [Prompt2D(box, NO_POINTS)],
            original_size=cached.original_size,
            input_size=cached.input_size,
            multimask=False,
            mask_inputs=got.low_res_pchw,
        )
        assert np.abs(got2.logits_pyx[0] - want2[0]).max() < 1e-4
        np.testing.assert_array_equal(got2.masks_pyx[0], want2[0] > 0.0)


def test_a_batch_of_prompts_decodes_as_each_alone(model, cached):
    boxes = [np.array(b, float) for b in ([5, 5, 60, 40], [28, 18, 72, 52], [40, 30, 90, 70])]
    prompts = [Prompt2D(b, NO_POINTS) for b in boxes]
    sizes = dict(original_size=cached.original_size, input_size=cached.input_size)
    together = model.decode(cached.row(1), prompts, multimask=True, **sizes)
    every = model.decode(cached.row(1), prompts, multimask=True, all_masks=True, **sizes)
    assert every.logits_pyx.shape == (9, 72, 96)
    for i, prompt in enumerate(prompts):
        alone = model.decode(cached.row(1), [prompt], multimask=True, **sizes)
        assert np.abs(together.logits_pyx[i] - alone.logits_pyx[0]).max() < 1e-4
        np.testing.assert_array_equal(together.masks_pyx[i], alone.masks_pyx[0])
        best = int(np.argmax(every.iou_p[3 * i : 3 * i + 3]))
        assert np.abs(every.logits_pyx[3 * i + best] - alone.logits_pyx[0]).max() < 1e-4


@pytest.fixture(scope="module")
def medsam2_like(tiny):
    config, checkpoint = tiny
    spec = {"config": str(config), "overrides": list(MEDSAM2_LIKE_OVERRIDES)}
    spec["largest_component"] = False
    return Sam2Promptable.build(spec, checkpoint, device="cpu", precision="fp32")


def _reference_frames(volume: np.ndarray, side: int) -> torch.Tensor:
    """MedSAM2's medsam2_infer_3D_CT.py frame preparation, written out again here."""
    frames = np.zeros((len(volume), 3, side, side))
    for i in range(len(volume)):
        rgb = Image.fromarray(volume[i].astype(np.uint8)).convert("RGB").resize((side, side))
        frames[i] = np.array(rgb).transpose(2, 0, 1)
    frames = torch.from_numpy(frames / 255.0)
    frames -= torch.tensor((0.485, 0.456, 0.406), dtype=torch.float32)[:, None, None]
    frames /= torch.tensor((0.229, 0.224, 0.225), dtype=torch.float32)[:, None, None]
    return frames


def test_key_slice_propagation_equals_the_package_video_predictor(medsam2_like):
    rng = np.random.default_rng(1)
    volume = rng.integers(0, 60, (9, 64, 80), dtype=np.uint8)
    volume[2:8, 20:44, 24:60] = 210
    box, key, z_range = np.array([22.0, 18.0, 62.0, 46.0]), 4, (1, 7)
    got = medsam2_like.propagate_from_key_slice(volume, z=key, box_xyxy=box, z_range=z_range)
    assert medsam2_like.image_size == 512 and sorted(got) == list(range(1, 8))

    # the package's video predictor on the whole volume, run here as MedSAM2's script does
    # (forward from the key slice, reset, the box again, backward), limited to z_range
    predictor = medsam2_like.video
    want = np.zeros(volume.shape, dtype=bool)
    frames = _reference_frames(volume, 512)
    with (
        torch.inference_mode(),
        mock.patch("sam2.sam2_video_predictor.load_video_frames", return_value=(frames, 64, 80)),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", message="(?s).*Skipping the post-processing")
        state = predictor.init_state("unused")
        for reverse, steps in ((False, z_range[1] - key), (True, key - z_range[0])):
            predictor.add_new_points_or_box(state, frame_idx=key, obj_id=1, box=box)
            for z, _, logits in predictor.propagate_in_video(
                state, start_frame_idx=key, max_frame_num_to_track=steps, reverse=reverse
            ):
                want[z] |= (logits[0] > 0.0).numpy()[0]
            predictor.reset_state(state)
    for z in range(*z_range):
        np.testing.assert_array_equal(got[z], want[z], err_msg=f"slice {z}")
    assert 0.02 < np.mean([got[z].mean() for z in got]) < 0.98

    medsam2_like.largest_component = True
    try:
        kept = medsam2_like.propagate_from_key_slice(volume, z=key, box_xyxy=box, z_range=z_range)
    finally:
        medsam2_like.largest_component = False
    expected = largest_component(want[1:8])
    np.testing.assert_array_equal(np.stack([kept[z] for z in range(1, 8)]), expected)


def test_the_package_configs_build_by_name_and_medsam2_by_overrides():
    net = build_sam2_network("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu")
    assert net.image_size == 1024
    assert sum(p.numel() for p in net.parameters()) == 38_962_498  # README: "38.9 M"
    medsam2 = build_sam2_network(
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        None,
        overrides=MEDSAM2_LIKE_OVERRIDES,
        device="cpu",
    )
    assert medsam2.image_size == 512
    with pytest.raises(ConfigError, match="sam2 config configs/nope.yaml: cannot build it"):
        build_sam2_network("configs/nope.yaml", None, device="cpu")
    with pytest.raises(InputError, match="^/nowhere/t512.yaml: sam2 config file not found$"):
        build_sam2_network("/nowhere/t512.yaml", None, device="cpu")


def test_bad_checkpoints_are_one_line_naming_the_file(tiny, tmp_path):
    config, checkpoint = tiny
    spec = {"config": str(config)}
    state = torch.load(checkpoint, weights_only=True)["model"]

    def refused(path, match):
        with pytest.raises(InputError, match=match) as info:
            Sam2Promptable.build(spec, path, device="cpu", precision="fp32")
        message = str(info.value)
        assert message.startswith(str(path)) and "\n" not in message, message
        return message

    bare = tmp_path / "bare.pt"
    torch.save(state, bare)  # the state dict without the official {"model": ...} wrapper
    refused(bare, r"bare\.pt: not a SAM 2 checkpoint .*no 'model' entry")
    short = tmp_path / "short.pt"
    torch.save({"model": {k: v for k, v in state.items() if k != "no_mem_embed"}}, short)
    refused(short, r"short\.pt: .*1 keys missing \(first: no_mem_embed\)")
    extra = tmp_path / "extra.pt"
    torch.save({"model": {**state, "spare.weight": torch.zeros(1)}}, extra)
    refused(extra, r"extra\.pt: .*1 unexpected keys \(first: spare\.weight\)")
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a checkpoint")
    refused(damaged, r"damaged\.pt: .*cannot read it")
    refused(tmp_path / "absent.pt", r"absent\.pt: checkpoint file not found")


def test_box_to_original_inverts_the_predictors_box_transform(model):
    box_model = np.array([100.0, 200.0, 612.0, 900.5])
    box = model.box_to_original(box_model, (72, 96))
    mapped = model.predictor()._transforms.transform_boxes(
        torch.tensor(box, dtype=torch.float), normalize=True, orig_hw=(72, 96)
    )
    np.testing.assert_allclose(mapped.reshape(-1).numpy(), box_model, atol=1e-3)
