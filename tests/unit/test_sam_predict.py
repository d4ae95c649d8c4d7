"""SAM family prediction: multimask choice, click rounds, voting and 3D reassembly.

Uses a tiny SAM (segment_anything's own classes, random weights, input 64 x 64).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medsegflow.datasets.canonical import CanonicalCase, write_canonical_dataset
from medsegflow.errors import ConfigError, InputError
from medsegflow.families.registry import complete_method
from medsegflow.interactive import click_volumes_path, read_click_volumes
from medsegflow.io import Geometry, Volume, read_volume
from medsegflow.manifests import read_prompts
from medsegflow.models.input_recipes import input_recipe
from medsegflow.models.sam_archs import build_sam
from medsegflow.models.sam_cache import (
    load_case_embeddings,
    save_case_embeddings,
)
from medsegflow.prediction.job import PredictJob
from medsegflow.prediction.manifest import WRITTEN_COLUMNS
from medsegflow.promptable.interface import Prompt2D
from medsegflow.promptable.predict2d import (
    SamConfig,
    object_target,
    parse_sam_config,
    predict_sam_cases,
    refine_with_clicks,
    row_prompt,
)
from medsegflow.promptable.propagate2d import click_slice, propagate_objects
from medsegflow.promptable.sam_model import decode_prompts
from medsegflow.prompts.voting import average_vote
from medsegflow.stages.predict import predict_dataset
from medsegflow.stages.preprocess import preprocess_dataset
from medsegflow.stages.prompts import make_prompts

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sam_fixtures import TINY_SAM, embedded_sam_inputs, promptable  # noqa: E402

SHAPE = (3, 37, 53)  # (Z, Y, X): 3 slices, non-square odd slices
GEOMETRY = Geometry((0.7, 0.7, 3.0), (5.0, -2.0, 1.0))
SIZES = ((37, 53), input_recipe("sam", 64).input_size((37, 53)))


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return build_sam(TINY_SAM)


BASE = {"family": "sam", "model": "tiny", "prompts": "bp"}


def sam_config(**keys) -> SamConfig:
    """The settings of a ``sam`` method with ``keys`` over the schema's defaults."""
    return parse_sam_config(complete_method({**BASE, **keys}, "m"))


def job(inputs, out_dir, *, seed: int = 0) -> PredictJob:
    return PredictJob(
        method=complete_method(BASE, "m"),
        method_name="m",
        inputs=inputs,
        out_dir=out_dir,
        splits=("test",),
        seed=seed,
    )


def _fake_decoder(model, monkeypatch, *, values, iou) -> list[dict]:
    """Decoder whose output c is the constant ``values[c]`` with predicted IoU ``iou``."""
    calls: list[dict] = []

    def fake(**kwargs):
        n, multimask = kwargs["sparse_prompt_embeddings"].shape[0], kwargs["multimask_output"]
        calls.append({"n": n, "multimask": multimask})
        channels = slice(0, 3) if multimask else slice(0, 1)
        low = torch.tensor(values, dtype=torch.float32)[channels][None, :, None, None]
        return low.repeat(n, 1, 16, 16), torch.tensor(iou, dtype=torch.float32)[:n, channels]

    monkeypatch.setattr(model.mask_decoder, "forward", fake)
    return calls


def test_multimask_keeps_the_mask_with_the_highest_predicted_iou(model, monkeypatch):
    calls = _fake_decoder(
        model, monkeypatch, values=[-3.0, 2.0, 5.0], iou=[[0.1, 0.9, 0.3], [0.2, 0.1, 0.8]]
    )
    box = np.array([5.0, 5.0, 30.0, 20.0])
    prompts = [Prompt2D(box, np.zeros((0, 3))), Prompt2D(box, np.zeros((0, 3)))]
    kwargs = {"original_size": SIZES[0], "input_size": SIZES[1], "batch_size": 8}
    decoded = decode_prompts(model, np.zeros((32, 4, 4)), prompts, multimask=True, **kwargs)
    np.testing.assert_allclose(decoded.iou_p, [0.9, 0.8])
    np.testing.assert_allclose(decoded.logits_pyx[0], 2.0, atol=1e-5)  # mask 1 of prompt 0
    np.testing.assert_allclose(decoded.logits_pyx[1], 5.0, atol=1e-5)  # mask 2 of prompt 1
    np.testing.assert_allclose(decoded.low_res_pchw[:, 0, 0, 0], [2.0, 5.0])
    assert decoded.masks_pyx.all()
    single = decode_prompts(model, np.zeros((32, 4, 4)), prompts, multimask=False, **kwargs)
    np.testing.assert_allclose(single.logits_pyx, -3.0, atol=1e-5)  # output 0
    assert not single.masks_pyx.any()
    assert calls == [{"n": 2, "multimask": True}, {"n": 2, "multimask": False}]
    every = decode_prompts(
        model, np.zeros((32, 4, 4)), prompts, multimask=True, all_masks=True, **kwargs
    )
    np.testing.assert_allclose(every.iou_p, [0.1, 0.9, 0.3, 0.2, 0.1, 0.8])  # prompt-major
    np.testing.assert_allclose(every.logits_pyx[:, 0, 0], [-3.0, 2.0, 5.0] * 2, atol=1e-5)
    np.testing.assert_allclose(every.low_res_pchw[:, 0, 0, 0], [-3.0, 2.0, 5.0] * 2)
    assert every.logits_pyx.shape == (6, *SIZES[0]) and every.low_res_pchw.shape == (6, 1, 16, 16)
    with pytest.raises(ValueError, match="all_masks needs multimask"):
        decode_prompts(
            model, np.zeros((32, 4, 4)), prompts, multimask=False, all_masks=True, **kwargs
        )


def _spy(model, monkeypatch) -> list[dict]:
    """Record every prompt-encoder input and decoder output of the real tiny model."""
    calls: list[dict] = []
    encode, decode = model.prompt_encoder.forward, model.mask_decoder.forward

    def spy_encoder(points, boxes, masks):
        masks_ = None if masks is None else masks.clone()
        calls.append({"points": points, "boxes": boxes, "masks": masks_})
        return encode(points, boxes, masks)

    def spy_decoder(**kwargs):
        low_res, iou = decode(**kwargs)
        calls[-1].update(
            low_res=low_res.clone(), iou=iou.clone(), multimask=kwargs["multimask_output"]
        )
        return low_res, iou

    monkeypatch.setattr(model.prompt_encoder, "forward", spy_encoder)
    monkeypatch.setattr(model.mask_decoder, "forward", spy_decoder)
    return calls


def _chosen(call) -> torch.Tensor:
    best = call["iou"].argmax(dim=1) if call["multimask"] else torch.zeros(1, dtype=torch.long)
    return call["low_res"][torch.arange(len(best)), best][:, None]


def test_click_rounds_feed_back_the_previous_low_res_logits(model, monkeypatch):
    calls = _spy(model, monkeypatch)
    embedding = np.random.default_rng(0).normal(size=(32, 4, 4)).astype(np.float16)
    prompts = [Prompt2D(None, np.array([[26, 18, 1]]))]
    target = np.zeros((1, *SIZES[0]), dtype=bool)
    target[0, 10:28, 15:40] = True
    first = decode_prompts(
        model, embedding, prompts, original_size=SIZES[0], input_size=SIZES[1], multimask=True
    )
    final, clicked = refine_with_clicks(
        promptable(model),
        {"embeddings": embedding},
        prompts,
        first=first,
        targets_pyx=target,
        rounds=3,
        mode="center",
        rng=np.random.default_rng(0),
        sizes=SIZES,
    )
    assert len(calls) == 3 + 1  # the first decoding and one per round
    assert calls[0]["masks"] is None and calls[0]["multimask"]
    for k in range(1, 4):
        assert calls[k]["masks"].shape == (1, 1, 16, 16)  # 4 x the 4 x 4 embedding
        torch.testing.assert_close(calls[k]["masks"], _chosen(calls[k - 1]))
        assert not calls[k]["multimask"]
        assert calls[k]["points"][0].shape == (1, 1 + k, 2)  # one click more per round
    np.testing.assert_allclose(final.low_res_pchw, _chosen(calls[-1]).numpy(), atol=1e-6)
    assert clicked[0].points_xyl.shape == (4, 3) and prompts[0].points_xyl.shape == (1, 3)
    for x, y, label in clicked[0].points_xyl[1:]:
        assert label in (0, 1) and target[0, y, x] == bool(label)  # click on its error type


def test_clicks_without_mask_input_decode_the_points_alone(model, monkeypatch):
    calls = _spy(model, monkeypatch)
    embedding = np.random.default_rng(0).normal(size=(32, 4, 4)).astype(np.float16)
    box = np.array([10.0, 6.0, 45.0, 30.0])
    prompts = [Prompt2D(box, np.zeros((0, 3), dtype=np.int64))]
    target = np.zeros((1, *SIZES[0]), dtype=bool)
    target[0, 10:28, 15:40] = True
    first = decode_prompts(
        model, embedding, prompts, original_size=SIZES[0], input_size=SIZES[1], multimask=False
    )
    final, clicked = refine_with_clicks(
        promptable(model),
        {"embeddings": embedding},
        prompts,
        first=first,
        targets_pyx=target,
        rounds=2,
        mode="center",
        rng=np.random.default_rng(0),
        sizes=SIZES,
        mask_input=False,
    )
    assert len(calls) == 3 and all(c["masks"] is None for c in calls)
    assert [c["points"] is None for c in calls] == [True, False, False]
    assert clicked[0].points_xyl.shape == (2, 3)
    # the last round equals decoding box + both clicks from scratch with one output mask
    alone = decode_prompts(
        model, embedding, clicked, original_size=SIZES[0], input_size=SIZES[1], multimask=False
    )
    np.testing.assert_allclose(final.logits_pyx, alone.logits_pyx, atol=1e-5)


def test_no_click_once_the_mask_is_right(model, monkeypatch):
    calls = _spy(model, monkeypatch)
    embedding = np.random.default_rng(1).normal(size=(32, 4, 4)).astype(np.float16)
    prompts = [Prompt2D(np.array([4.0, 4.0, 40.0, 30.0]), np.zeros((0, 3)))]
    first = decode_prompts(
        model, embedding, prompts, original_size=SIZES[0], input_size=SIZES[1], multimask=False
    )
    final, _ = refine_with_clicks(
        promptable(model),
        {"embeddings": embedding},
        prompts,
        first=first,
        targets_pyx=first.masks_pyx,
        rounds=5,
        mode="random",
        rng=np.random.default_rng(0),
        sizes=SIZES,
    )
    assert len(calls) == 1
    np.testing.assert_array_equal(final.logits_pyx, first.logits_pyx)


def _dataset(root):
    """One 3-slice case: label 1 on slices 0 and 2, a small label 2 on slice 2, nothing on
    slice 1; images in HU with the objects bright."""
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[0, 8:30, 10:40] = 1
    label[2, 5:25, 20:50] = 1
    label[2, 12:17, 30:36] = 2
    label[2, 28:33, 4:8] = 2  # a second component of label 2
    rng = np.random.default_rng(3)
    hu = np.where(label > 0, 120.0 + 60 * label, -80.0) + rng.normal(0, 15, SHAPE)
    case = CanonicalCase(
        "vol01", "test", "CT", Volume(hu.astype(np.int16), GEOMETRY), Volume(label, GEOMETRY)
    )
    write_canonical_dataset(
        [case], label_map={"background": 0, "organ": 1, "lesion": 2}, out_dir=root / "data"
    )
    preprocess_dataset(
        data_dir=root / "data",
        out_dir=root / "pre",
        cleaning={"min_voxels_3d": 0, "min_pixels_2d": 0},
        n_empty_slices=0,
        seed=0,
    )
    return label


@pytest.fixture(scope="module")
def volume_case(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("sam3d")
    label = _dataset(root)
    prompt = {"type": "box_points", "jitter": 30, "n_negative": 1, "repeats": 2}
    make_prompts(
        preprocessed_dir=root / "pre",
        out_path=root / "prompts.tsv",
        prompt=prompt,
        seed=0,
        prompt_name="bp",
    )
    inputs = {**embedded_sam_inputs(model, root), "prompts": root / "prompts.tsv"}
    return {"root": root, "label": label, "inputs": inputs}


def test_3d_case_keeps_the_original_shape_and_unprompted_slices_stay_empty(model, volume_case):
    root, inputs = volume_case["root"], volume_case["inputs"]
    prompts = read_prompts(inputs["prompts"])
    assert sorted(prompts["z"].unique()) == [0, 2]
    assert len(prompts) == 3 * 2  # (z0 organ, z2 organ, z2 lesion union) x 2 repeats
    assert prompts.groupby("prompt_id").size().tolist() == [2, 2, 2]
    manifest = predict_dataset(
        method={"family": "sam", "model": "tiny", "prompts": "bp", "voting": "average"},
        method_name="sam_bp",
        inputs=inputs,
        out_dir=root / "pred",
        splits=["test"],
        seed=0,
    )
    assert tuple(manifest.columns) == WRITTEN_COLUMNS
    assert manifest["gpu_mem_mb"].isna().all()  # no GPU here
    assert manifest[["case_id", "n_prompts"]].values.tolist() == [["vol01", len(prompts)]]
    out = read_volume(root / "pred" / "vol01.nii.gz")
    assert out.array_zyx.shape == SHAPE and out.array_zyx.dtype == np.uint8
    assert out.geometry.matches(GEOMETRY)
    assert not out.array_zyx[1].any()  # no prompt on slice 1
    assert (out.array_zyx[0] == 1).any() and (out.array_zyx[2] == 2).any()
    assert set(np.unique(out.array_zyx)) <= {0, 1, 2}

    # slice 0 holds one object (label 1): its two repeats, decoded, averaged
    cached = load_case_embeddings(root / "emb" / "vol01.npz")
    rows = prompts[prompts["z"] == 0]
    decoded = decode_prompts(
        model,
        cached.embeddings[cached.index_of(0)],
        [row_prompt(r, source="t") for r in rows.to_dict("records")],
        original_size=cached.original_size,
        input_size=cached.input_size,
        multimask=True,
    )
    np.testing.assert_array_equal(out.array_zyx[0] == 1, average_vote(decoded.probs_pyx))

    again = predict_sam_cases(
        job(inputs, root / "pred_again"),
        model=promptable(model),
        config=sam_config(voting="average"),
        embeddings_dir=root / "emb",
    )
    assert again["n_prompts"].tolist() == [len(prompts)]
    np.testing.assert_array_equal(
        read_volume(root / "pred_again" / "vol01.nii.gz").array_zyx, out.array_zyx
    )


def test_clicks_and_staple_run_on_the_volume(model, volume_case):
    root, inputs = volume_case["root"], volume_case["inputs"]
    predict_sam_cases(
        job(inputs, root / "pred_clicks", seed=1),
        model=promptable(model),
        config=sam_config(voting="staple", clicks={"rounds": 2, "mode": "random"}, batch_size=2),
        embeddings_dir=root / "emb",
    )
    out = read_volume(root / "pred_clicks" / "vol01.nii.gz").array_zyx
    assert out.shape == SHAPE and not out[1].any()


def test_object_target_matches_the_prompt_components():
    label_yx = np.zeros((20, 20), dtype=np.uint8)
    label_yx[2:10, 2:10] = 2  # 64 px: component 0
    label_yx[15:18, 15:18] = 2  # 9 px: component 1
    label_yx[0, 15:20] = 1
    assert object_target(label_yx, label=2, component=-1).sum() == 73
    assert object_target(label_yx, label=2, component=1).sum() == 9
    assert object_target(label_yx, label=2, component=5).sum() == 0


def test_sam_config_and_input_errors(model, volume_case, tmp_path):
    base = BASE
    assert sam_config() == SamConfig(True, "average", 0, "center", True, 64)  # the schema's
    full = {"multimask": False, "voting": "staple", "batch_size": 8}
    full["clicks"] = {"rounds": 2, "mode": "random", "mask_input": False}
    assert sam_config(**full) == SamConfig(False, "staple", 2, "random", False, 8)
    for extra, key in (
        ({"voting": "mean"}, "voting"),
        ({"clicks": {"rounds": -1}}, r"clicks\.rounds"),
        ({"clicks": {"mode": "edge"}}, r"clicks\.mode"),
        ({"clicks": {"every": 1}}, r"clicks\.every"),
        ({"clicks": {"mask_input": 1}}, r"clicks\.mask_input"),
        ({"batch_size": 0}, "batch_size"),
        ({"multimask": "yes"}, "multimask"),
        ({"algorithm": "otsu"}, "algorithm"),
    ):
        with pytest.raises(ConfigError, match=rf"methods\.m\.{key}"):
            sam_config(**extra)
    inputs = dict(volume_case["inputs"])
    inputs["checkpoint"] = tmp_path / "other.pth"
    with pytest.raises(InputError, match=r"model\.json: embeddings were made with"):
        predict_dataset(
            method=base,
            method_name="m",
            inputs=inputs,
            out_dir=tmp_path / "p",
            splits=["test"],
            seed=0,
        )
    cached = load_case_embeddings(volume_case["root"] / "emb" / "vol01.npz")
    cached.original_size = (37, 52)
    save_case_embeddings(tmp_path / "emb" / "vol01.npz", cached)
    with pytest.raises(InputError, match=r"vol01\.npz: embedded slices are \(37, 52\)"):
        predict_sam_cases(
            job(inputs, tmp_path / "p"),
            model=promptable(model),
            config=sam_config(),
            embeddings_dir=tmp_path / "emb",
        )
    bad = pd.DataFrame([{"case_id": "c", "z": 0, "x_min": np.nan, "y_min": np.nan,
                         "x_max": np.nan, "y_max": np.nan, "points": "[]"}])  # fmt: skip
    with pytest.raises(InputError, match="no box and no point"):
        row_prompt(bad.iloc[0].to_dict(), source="p.tsv")
    assert not (tmp_path / "p").exists()


def test_random_clicks_follow_the_jobs_seed(model, volume_case):
    """The config seed reaches the clicks: the same seed repeats a run, another changes it."""
    root, inputs = volume_case["root"], volume_case["inputs"]
    config = sam_config(clicks={"rounds": 3, "mode": "random", "mask_input": False})

    def run(seed: int, name: str) -> np.ndarray:
        predict_sam_cases(
            job(inputs, root / name, seed=seed),
            model=promptable(model),
            config=config,
            embeddings_dir=root / "emb",
        )
        return read_volume(root / name / "vol01.nii.gz").array_zyx

    first, again, other = run(11, "s11"), run(11, "s11b"), run(12, "s12")
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_every_job_that_samples_gets_the_config_seed(repo_root):
    text = "".join(p.read_text(encoding="utf-8") for p in (repo_root / "rules").glob("*.smk"))
    blocks = dict(re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", text, flags=re.M | re.S))
    sampling = [
        "prepare_dataset",
        "preprocess_dataset",
        "make_prompts",
        "make_mask_prompts",
        "train_sam_model",
        "predict_method",
        "predict_pseudolabels",
        "make_clip_captions",
        "finetune_clip",
        "compute_saliency",
        "tune_text_method",
        "train_nnunet",
    ]
    for rule in sampling:
        assert 'seed=config["seed"]' in blocks[rule], f"rule {rule} does not get the seed"


def test_box3d_prompts_propagate_from_the_middle_slice(model, volume_case, monkeypatch):
    """LiteMedSAM's 3D protocol through the SAM family: the organ's 3D box (slices 0..2)
    is decoded on its middle slice 1 first, then on 2 and 0 with the neighbour's box."""
    root, inputs = volume_case["root"], volume_case["inputs"]
    make_prompts(
        preprocessed_dir=root / "pre",
        out_path=root / "box3d.tsv",
        prompt={"type": "box3d", "jitter": 0},
        seed=0,
        prompt_name="b3",
    )
    prompts = read_prompts(root / "box3d.tsv")
    assert set(prompts["key_slice"]) == {"reference_middle"}  # recorded: an oracle's choice
    organ = prompts[prompts["label"] == 1].iloc[0]
    assert (organ["z"], organ["z_min"], organ["z_max"]) == (1, 0, 2)
    assert [organ[c] for c in ("x_min", "y_min", "x_max", "y_max")] == [10, 5, 49, 29]
    lesion = prompts[prompts["label"] == 2].iloc[0]
    assert lesion["z_min"] == lesion["z_max"] == lesion["z"] == 2  # one slice: decoded as 2D
    # slice 1 has no label but lies in the organ's box: the embedding stage embedded it
    assert 1 in load_case_embeddings(root / "emb" / "vol01.npz").z.tolist()

    calls: list[tuple[int, list[float]]] = []
    wrapped = promptable(model)
    real = wrapped.decode

    def spy(features, prompts_, **kwargs):
        calls.append((len(calls), prompts_[0].box_xyxy.tolist()))
        return real(features, prompts_, **kwargs)

    monkeypatch.setattr(wrapped, "decode", spy)
    job_inputs = {**inputs, "prompts": root / "box3d.tsv"}
    predict_sam_cases(
        job(job_inputs, root / "pred3d"),
        model=wrapped,
        config=sam_config(),
        embeddings_dir=root / "emb",
    )
    # the organ's 3 slices (the middle one first, with the 3D box), then the lesion's slice
    assert len(calls) == 3 + 1 and calls[0][1] == [10, 5, 49, 29]
    out = read_volume(root / "pred3d" / "vol01.nii.gz").array_zyx
    cached = load_case_embeddings(root / "emb" / "vol01.npz")
    middle = decode_prompts(
        model,
        cached.embeddings[cached.index_of(1)],
        [Prompt2D(np.array([10.0, 5, 49, 29]), np.zeros((0, 3)))],
        original_size=cached.original_size,
        input_size=cached.input_size,
        multimask=True,
    )
    np.testing.assert_array_equal(out[1] == 1, middle.masks_pyx[0])
    with pytest.raises(ConfigError, match="box3d prompts are propagated without oracle clicks"):
        predict_sam_cases(
            job(job_inputs, root / "pred3d_clicks"),
            model=promptable(model),
            config=sam_config(clicks={"rounds": 1}),
            embeddings_dir=root / "emb",
        )


def test_save_probabilities_writes_the_soft_outputs_beside_the_labels(model, volume_case):
    """``save_probabilities``: ``{case}_probs.npz`` holds float16 (C, Z, Y, X) maps of the
    label map's foreground labels; slice 0 (one object, two repeats) is their mean, whose
    > 0.5 is the painted (averaged) mask; unprompted slices and absent labels are 0. A run
    without the option removes the stale file."""
    root, inputs = volume_case["root"], volume_case["inputs"]
    out_dir = root / "pred_probs"
    predict_sam_cases(
        job(inputs, out_dir),
        model=promptable(model),
        config=sam_config(voting="average", save_probabilities=True),
        embeddings_dir=root / "emb",
    )
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "manifest.tsv", "vol01.nii.gz", "vol01_probs.npz",
    ]  # fmt: skip
    with np.load(out_dir / "vol01_probs.npz") as data:
        probs, labels = data["probs"], data["labels"]
    assert probs.dtype == np.float16 and probs.shape == (2, *SHAPE)
    assert labels.tolist() == [1, 2] and np.issubdtype(labels.dtype, np.integer)
    out = read_volume(out_dir / "vol01.nii.gz").array_zyx
    assert not probs[:, 1].any() and not probs[1, 0].any()  # no prompt; no lesion on z 0

    prompts = read_prompts(inputs["prompts"])
    rows = prompts[prompts["z"] == 0]
    cached = load_case_embeddings(root / "emb" / "vol01.npz")
    decoded = decode_prompts(
        model,
        cached.embeddings[cached.index_of(0)],
        [row_prompt(r, source="t") for r in rows.to_dict("records")],
        original_size=cached.original_size,
        input_size=cached.input_size,
        multimask=True,
    )
    mean_yx = decoded.probs_pyx.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(probs[0, 0], mean_yx, atol=5e-4)  # float16 rounding
    # float16 rounds (0.5, 0.5 + 2**-12] down to 0.5: painted, but not > 0.5 once stored
    clear = ~((mean_yx > 0.5) & (mean_yx <= 0.5 + 2**-12))
    assert clear.mean() > 0.95 and 0 < (out[0] == 1).sum() < out[0].size
    np.testing.assert_array_equal((probs[0, 0] > 0.5)[clear], (out[0] == 1)[clear])

    predict_sam_cases(  # the same folder without the option: same labels, no stale file
        job(inputs, out_dir),
        model=promptable(model),
        config=sam_config(),
        embeddings_dir=root / "emb",
    )
    assert not (out_dir / "vol01_probs.npz").exists()
    np.testing.assert_array_equal(read_volume(out_dir / "vol01.nii.gz").array_zyx, out)


def test_save_probabilities_covers_box3d_propagation(model, volume_case):
    """Propagated objects keep their probabilities: slice 1 (the organ's middle slice, only
    reached by the 3D box) holds the decoder's sigmoid there."""
    root, inputs = volume_case["root"], volume_case["inputs"]
    make_prompts(
        preprocessed_dir=root / "pre",
        out_path=root / "box3d_p.tsv",
        prompt={"type": "box3d", "jitter": 0},
        seed=0,
        prompt_name="b3",
    )
    predict_sam_cases(
        job({**inputs, "prompts": root / "box3d_p.tsv"}, root / "pred3d_probs"),
        model=promptable(model),
        config=sam_config(save_probabilities=True),
        embeddings_dir=root / "emb",
    )
    with np.load(root / "pred3d_probs" / "vol01_probs.npz") as data:
        probs = data["probs"]
    cached = load_case_embeddings(root / "emb" / "vol01.npz")
    middle = decode_prompts(
        model,
        cached.embeddings[cached.index_of(1)],
        [Prompt2D(np.array([10.0, 5, 49, 29]), np.zeros((0, 3)))],
        original_size=cached.original_size,
        input_size=cached.input_size,
        multimask=True,
    )
    np.testing.assert_allclose(probs[0, 1], middle.probs_pyx[0], atol=5e-4)
    assert not probs[1, 1].any()  # the lesion's box is on slice 2 only
    assert probs[0, 0].any() and probs[0, 2].any()  # propagated up and down


def _box3d_prompts(root: Path) -> Path:
    path = root / "box3d_clicks.tsv"
    if not path.exists():
        make_prompts(
            preprocessed_dir=root / "pre",
            out_path=path,
            prompt={"type": "box3d", "jitter": 0},
            seed=0,
            prompt_name="b3",
        )
    return path


def _box3d_run(model, volume_case, name: str, *, seed: int = 0, **keys) -> Path:
    """Predict the volume case from its box3d prompts into ``root/name``."""
    root, inputs = volume_case["root"], volume_case["inputs"]
    predict_sam_cases(
        job({**inputs, "prompts": _box3d_prompts(root)}, root / name, seed=seed),
        model=promptable(model),
        config=sam_config(**keys),
        embeddings_dir=root / "emb",
    )
    return root / name


def test_clicks3d_correct_the_box3d_propagation_slice_by_slice(model, volume_case):
    """``clicks3d.n = 2``: step 0 is the plain box3d prediction; each step clicks every
    object (the organ's 3D box over slices 0..2, the lesion's one-slice box on 2) on its
    error with the error's sign and changes only the clicked slices; the last step is the
    written prediction."""
    gt = volume_case["label"]
    plain = read_volume(_box3d_run(model, volume_case, "c3_plain") / "vol01.nii.gz").array_zyx
    out_dir = _box3d_run(model, volume_case, "c3", clicks3d={"n": 2})
    labels, clicks, first = read_click_volumes(click_volumes_path(out_dir, "vol01"), SHAPE)
    assert first == 0 and labels.shape == (3, *SHAPE)
    np.testing.assert_array_equal(labels[0], plain)
    np.testing.assert_array_equal(labels[-1], read_volume(out_dir / "vol01.nii.gz").array_zyx)
    assert clicks[["label", "click"]].values.tolist() == [[1, 1], [2, 1], [1, 2], [2, 2]]
    assert (clicks.loc[clicks["label"] == 2, "z"] == 2).all()  # the lesion's only slice
    for k in (1, 2):
        step, before = clicks[clicks["click"] == k], labels[k - 1]
        for label, z, y, x, positive in step[["label", "z", "y", "x", "positive"]].values:
            assert positive == (gt[z, y, x] == label)  # positive on a miss, else negative
            # a miss is not painted with the label; a false positive is painted (the lesion
            # may cover the organ's)
            assert before[z, y, x] != label if positive else before[z, y, x] != 0
        changed = np.flatnonzero((labels[k] != before).any(axis=(1, 2)))
        assert set(changed.tolist()) <= set(step["z"].tolist())
    assert (labels[1:] != labels[:-1]).any()


def test_clicks3d_random_clicks_follow_the_jobs_seed(model, volume_case):
    def run(seed: int, name: str) -> pd.DataFrame:
        clicks3d = {"n": 3, "mode": "random"}
        out_dir = _box3d_run(model, volume_case, name, seed=seed, clicks3d=clicks3d)
        return read_click_volumes(click_volumes_path(out_dir, "vol01"), SHAPE)[1]

    first, again, other = run(11, "c3_s11"), run(11, "c3_s11b"), run(12, "c3_s12")
    pd.testing.assert_frame_equal(first, again)
    assert len(first) == len(other) == 6 and not first.equals(other)


def test_clicks3d_decode_the_clicked_slice_with_its_box_clicks_and_logits(
    model, volume_case, monkeypatch
):
    """The decoder call of a click: the box that slice had, every click of the object on
    that slice so far as points (model frame), one output, and that slice's previous
    chosen low-res logits as mask input; without ``mask_input``, none."""
    calls = _spy(model, monkeypatch)
    out_dir = _box3d_run(model, volume_case, "c3_spy", clicks3d={"n": 2})
    _, clicks, _ = read_click_volumes(click_volumes_path(out_dir, "vol01"), SHAPE)
    assert len(clicks) == 4 and len(calls) == 4 + 4  # organ 1, 2, 0 and lesion 2; 4 clicks
    first = {(1, 1): 0, (1, 2): 1, (1, 0): 2, (2, 2): 3}  # (label, z) -> propagation call
    latest, points = dict(first), {}
    recipe = model.input_recipe
    for i, (label, z, y, x, positive) in enumerate(
        clicks[["label", "z", "y", "x", "positive"]].values.tolist()
    ):
        call = calls[4 + i]
        assert not call["multimask"]
        torch.testing.assert_close(call["boxes"], calls[first[(label, z)]]["boxes"])
        torch.testing.assert_close(call["masks"], _chosen(calls[latest[(label, z)]]))
        xyl = np.array(points.setdefault((label, z), []) + [[x, y, positive]], dtype=np.float64)
        points[(label, z)].append([x, y, positive])
        coords, signs = call["points"]
        np.testing.assert_allclose(coords.numpy(), recipe.map_points(xyl[None, :, :2], SIZES[0]))
        assert signs.tolist() == [xyl[:, 2].tolist()]
        latest[(label, z)] = 4 + i
    assert torch.equal(calls[0]["boxes"], torch.as_tensor(
        recipe.map_boxes(np.array([[10.0, 5, 49, 29]]), SIZES[0]), dtype=torch.float
    ))  # fmt: skip

    calls.clear()
    _box3d_run(model, volume_case, "c3_spy_alone", clicks3d={"n": 1, "mask_input": False})
    assert len(calls) == 4 + 2 and all(c["masks"] is None for c in calls)

    # off the middle slice, the box is the one propagation gave that slice
    root = volume_case["root"]
    cached = load_case_embeddings(root / "emb" / "vol01.npz")
    prompts = read_prompts(_box3d_prompts(root))
    calls.clear()
    [organ] = propagate_objects(
        promptable(model),
        cached,
        prompts[prompts["label"] == 1],
        multimask=True,
        n_z=3,
        keep_logits=True,
    )
    before = organ.masks(voting="average", keep_probs=False)
    click_slice(promptable(model), cached, organ, (0, 12, 20, 1), mask_input=True, batch_size=8)
    assert len(calls) == 3 + 1 and organ.points_zn3[0].tolist() == [[20, 12, 1]]
    assert not torch.equal(calls[2]["boxes"], calls[0]["boxes"])  # slice 0: neighbour's box
    torch.testing.assert_close(calls[3]["boxes"], calls[2]["boxes"])
    torch.testing.assert_close(calls[3]["masks"], _chosen(calls[2]))
    after = organ.masks(voting="average", keep_probs=False)
    assert after[1:] == before[1:] and after[0] is not before[0]


def test_clicks3d_settings_and_config_errors(model, volume_case, tmp_path):
    assert sam_config(clicks3d={"n": 5, "mode": "random", "mask_input": False}) == SamConfig(
        True, "average", 0, "center", True, 64, False, 5, "random", False
    )
    assert sam_config().clicks3d == 0  # off by default
    for extra, key in (
        ({"clicks3d": {"n": -1}}, r"clicks3d\.n"),
        ({"clicks3d": {"mode": "edge"}}, r"clicks3d\.mode"),
        ({"clicks3d": {"rounds": 1}}, r"clicks3d\.rounds"),
    ):
        with pytest.raises(ConfigError, match=rf"methods\.m\.{key}"):
            sam_config(**extra)
    root, inputs = volume_case["root"], volume_case["inputs"]
    for prompts, keys, message in (
        (inputs["prompts"], {}, r"clicks3d\.n needs a box3d prompt set"),  # box + points
        (_box3d_prompts(root), {"clicks": {"rounds": 1}}, r"set the method's clicks\.rounds to 0"),
    ):
        with pytest.raises(ConfigError, match=message):
            predict_sam_cases(
                job({**inputs, "prompts": prompts}, tmp_path / "p"),
                model=promptable(model),
                config=sam_config(clicks3d={"n": 1}, **keys),
                embeddings_dir=root / "emb",
            )
    assert not click_volumes_path(tmp_path / "p", "vol01").exists()


def test_clicks3d_methods_run_the_interactive_protocol(repo_root):
    """A sam method is interactive with ``clicks3d.n`` > 0, with or without the schema's
    defaults filled in; the config check names the key for a non-box3d set or 2D clicks."""
    import yaml

    from medsegflow.config import load_config
    from medsegflow.families.sam import FAMILY
    from medsegflow.planning import dataset_method_pairs
    from medsegflow.workflow import interactive_pairs

    raw = yaml.safe_load((repo_root / "config.yaml").read_text(encoding="utf-8"))
    base = load_config(raw)
    assert not FAMILY.interactive(raw, "sam_box3d") and not FAMILY.interactive(base, "sam_box3d")
    raw["methods"]["sam_box3d"]["clicks3d"] = {"n": 5}
    assert FAMILY.interactive(raw, "sam_box3d")
    config = load_config(raw)
    filled = {"n": 5, "mode": "center", "mask_input": True}
    assert config["methods"]["sam_box3d"]["clicks3d"] == filled
    added = set(interactive_pairs(config)) - set(interactive_pairs(base))
    assert added == {(d, m) for d, m in dataset_method_pairs(config) if m == "sam_box3d"} != set()
    for method, keys, message in (
        ("sam_box", {"clicks3d": {"n": 1}}, "follow a box3d prompt set; prompts 'box_j20'"),
        ("sam_box3d", {"clicks": {"rounds": 1}}, r"set methods\.sam_box3d\.clicks\.rounds to 0"),
    ):
        bad = yaml.safe_load(yaml.safe_dump(raw))
        bad["methods"][method].update(keys)
        with pytest.raises(ConfigError, match=rf"methods\.{method}\.clicks3d\.n: .*{message}"):
            load_config(bad)
