"""SAM without text guidance (family sam_auto): grid, stability, NMS, choice, prediction.

The pure helpers are tested on hand-made values; the end-to-end runs use the tiny random
SAM of test_sam_predict (segment_anything's classes, input 64 x 64) and its 3-slice case.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sam_fixtures import TINY_SAM, embedded_sam_inputs, promptable
from test_sam_predict import GEOMETRY, SHAPE, _dataset

from medsegflow.errors import ConfigError, InputError
from medsegflow.families.registry import complete_method
from medsegflow.io import read_volume
from medsegflow.methods.sam_auto import (
    MaskCandidate,
    SamAutoConfig,
    automatic_masks,
    borders_touched,
    box_iou,
    box_nms,
    choose_mask,
    grid_points,
    parse_sam_auto_config,
    predict_sam_auto_cases,
    stability_scores,
    target_label,
)
from medsegflow.models.sam_archs import build_sam
from medsegflow.prediction.job import PredictJob
from medsegflow.prediction.manifest import WRITTEN_COLUMNS
from medsegflow.promptable.interface import Decoded
from medsegflow.stages.predict import predict_dataset

AREAS = {"min_area_frac": 0.001, "max_area_frac": 0.5}  # the schema's defaults


def auto_config(**keys) -> SamAutoConfig:
    """A ``sam_auto`` method's settings: ``keys`` over the schema's defaults."""
    method = {"family": "sam_auto", "model": "tiny", **keys}
    return parse_sam_auto_config(complete_method(method, "m"), "m")


def _rect(shape, y0, y1, x0, x1) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


# --- pure helpers -----------------------------------------------------------------------


def test_grid_points_are_sam_cell_centres_scaled_to_the_slice():
    points = grid_points(2, (40, 100))  # H, W
    np.testing.assert_allclose(points, [[25, 10], [75, 10], [25, 30], [75, 30]])
    grid = grid_points(16, (37, 53))
    assert grid.shape == (256, 2)
    np.testing.assert_allclose(grid[:2], [[53 / 32, 37 / 32], [3 * 53 / 32, 37 / 32]])
    np.testing.assert_allclose(grid[-1], [53 * 31 / 32, 37 * 31 / 32])
    # segment_anything's own grid, scaled as its generator scales it
    from segment_anything.utils.amg import build_point_grid

    np.testing.assert_allclose(grid, build_point_grid(16) * np.array([53, 37]))
    with pytest.raises(ValueError, match="points_per_side"):
        grid_points(0, (4, 4))


def test_stability_score_is_the_iou_of_the_offset_thresholds():
    logits = np.full((3, 4, 5), -5.0, dtype=np.float32)
    logits[0, :2] = 3.0  # 10 px above +1, the same 10 above -1: stable
    logits[1, :2] = 3.0
    logits[1, 2] = 0.5  # 5 px between -1 and +1: 10 / 15
    logits[2] = 0.5  # nothing above +1
    np.testing.assert_allclose(stability_scores(logits, 0.0), [1.0, 10 / 15, 0.0])
    assert stability_scores(np.full((1, 2, 2), -3.0), 0.0).tolist() == [0.0]  # empty


def test_box_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array(
        [
            [0, 0, 9, 9],  # 100 px
            [0, 0, 9, 8],  # IoU 0.9 with box 0
            [20, 20, 29, 29],  # apart
            [0, 0, 9, 4],  # IoU 0.5 with box 0
        ],
        dtype=float,
    )
    np.testing.assert_allclose(box_iou(boxes[0], boxes), [1.0, 0.9, 0.0, 0.5])
    scores = np.array([0.9, 0.95, 0.5, 0.8])
    assert box_nms(boxes, scores, 0.7).tolist() == [1, 3, 2]  # 0 suppressed by 1
    assert box_nms(boxes, scores, 0.4).tolist() == [1, 2]
    assert box_nms(boxes, scores, 0.95).tolist() == [1, 0, 3, 2]
    assert box_nms(boxes[:2], [0.5, 0.5], 0.7).tolist() == [0]  # ties: the earlier
    assert box_nms(np.zeros((0, 4)), [], 0.7).tolist() == []


def test_choose_mask_rule():
    shape = (100, 100)  # 10_000 px: min_area_frac 0.001 -> 10 px, max 0.5 -> 5000 px
    inner = _rect(shape, 20, 40, 20, 40)  # 400 px, no border
    assert borders_touched(inner) == 0
    corner = _rect(shape, 0, 30, 0, 30)  # 2 borders
    assert borders_touched(corner) == 2
    edge = _rect(shape, 0, 10, 40, 60)  # 1 border: allowed
    huge = _rect(shape, 10, 90, 10, 90)  # 6400 px > half
    tiny = _rect(shape, 50, 53, 50, 53)  # 9 px < 10
    assert borders_touched(np.ones(shape, bool)) == 4
    cands = [
        MaskCandidate(corner, 0.99, 0.99),
        MaskCandidate(huge, 0.98, 0.99),
        MaskCandidate(tiny, 0.97, 0.99),
        MaskCandidate(inner, 0.90, 0.96),
        MaskCandidate(edge, 0.90, 0.97),
    ]
    assert choose_mask(cands, shape, **AREAS) == 4  # ties on IoU: higher stability
    cands[4] = MaskCandidate(edge, 0.90, 0.96)  # 200 px: ties on IoU and stability
    assert choose_mask(cands, shape, **AREAS) == 3  # larger area
    cands[4] = MaskCandidate(_rect(shape, 0, 20, 40, 60), 0.90, 0.96)  # 400 px: full tie
    assert choose_mask(cands, shape, **AREAS) == 3  # the earlier
    assert choose_mask(cands[:3], shape, **AREAS) is None
    assert choose_mask(cands[:3], shape, max_area_frac=0.7, min_area_frac=0.001) == 1
    assert (
        choose_mask(cands[:3], shape, min_area_frac=0.0009, max_area_frac=0.5) == 2
    )  # 9 / 10_000 >= 0.0009
    assert choose_mask([], shape, **AREAS) is None


def test_config_and_label_rules():
    base = {"family": "sam_auto", "model": "tiny"}
    default = auto_config()
    assert (default.points_per_side, default.pred_iou_thresh) == (16, 0.88)
    assert (default.stability_score_thresh, default.box_nms_thresh) == (0.95, 0.7)
    assert (default.min_area_frac, default.max_area_frac) == (0.001, 0.5)
    full = {
        **base,
        "points_per_side": 8,
        "pred_iou_thresh": 0,
        "stability_score_thresh": 0.5,
        "box_nms_thresh": 1,
        "min_area_frac": 0.01,
        "max_area_frac": 0.9,
        "label": "organ",
        "batch_size": 16,
    }
    assert auto_config(**full) == SamAutoConfig(8, 0.0, 0.5, 1.0, 0.01, 0.9, "organ", 16)
    for extra, key in (
        ({"model": None}, "model"),
        ({"points_per_side": 0}, "points_per_side"),
        ({"batch_size": True}, "batch_size"),
        ({"pred_iou_thresh": 1.2}, "pred_iou_thresh"),
        ({"max_area_frac": "0.5"}, "max_area_frac"),
        ({"min_area_frac": 0.6}, "min_area_frac"),
        ({"label": 1}, "label"),
        ({"prompts": "box"}, "prompts"),
    ):
        with pytest.raises(ConfigError, match=rf"^methods\.m\.{key}"):
            auto_config(**extra)
    labels = {"background": 0, "organ": 1, "lesion": 2}
    assert target_label(labels, "lesion", method_name="m", source="l.json") == 2
    assert target_label({"background": 0, "tumour": 3}, None, method_name="m", source="l") == 3
    with pytest.raises(ConfigError, match=r"^methods\.m\.label: required, l\.json has 2"):
        target_label(labels, None, method_name="m", source="l.json")
    with pytest.raises(ConfigError, match=r"^methods\.m\.label: 'liver' is not"):
        target_label(labels, "liver", method_name="m", source="l.json")
    with pytest.raises(ConfigError, match=r"^methods\.m\.label: 'background' is not"):
        target_label(labels, "background", method_name="m", source="l.json")


# --- with the tiny SAM ------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return build_sam(TINY_SAM)


@pytest.fixture(scope="module")
def volume_case(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("sam_auto")
    label = _dataset(root)
    inputs = embedded_sam_inputs(model, root)
    return {"root": root, "label": label, "inputs": inputs}


FEATURES = {"embeddings": np.zeros((32, 4, 4))}
MASK_A = (slice(5, 20), slice(8, 30))  # 15 x 22 = 330 px, no border
MASK_B = (slice(30, 35), slice(2, 10))  # 5 x 8 = 40 px, apart from A
MASK_C = (slice(24, 30), slice(38, 46))  # 6 x 8 = 48 px


def _fake_decode(calls: list[int]):
    """``PromptableModel.decode`` stand-in, 3 outputs per point: points left of x = 26 give mask A
    (output 0, IoU 0.95, stable) and mask B (output 1, IoU 0.90, stable); right and below
    y = 20 give mask C (output 0, IoU 0.92, stable); right and above give a large unstable
    mask (output 0, IoU 0.99); every other output is empty with IoU 0."""

    def fake(features, prompts, *, original_size, input_size, multimask, batch_size, all_masks):
        assert multimask and all_masks and len(prompts) <= batch_size
        calls.append(len(prompts))
        n = 3 * len(prompts)
        logits = np.full((n, *original_size), -8.0, dtype=np.float32)
        iou = np.zeros(n, dtype=np.float32)
        for i, prompt in enumerate(prompts):
            x, y, label = prompt.points_xyl[0]
            assert prompt.box_xyxy is None and label == 1 and prompt.points_xyl.shape == (1, 3)
            if x < 26:
                logits[3 * i][MASK_A], iou[3 * i] = 6.0, 0.95
                logits[3 * i + 1][MASK_B], iou[3 * i + 1] = 6.0, 0.90
            elif y > 20:
                logits[3 * i][MASK_C], iou[3 * i] = 6.0, 0.92
            else:
                logits[3 * i][2:30, 2:50], iou[3 * i] = 0.5, 0.99  # stability 0
        return Decoded(logits, np.zeros((n, 1, 16, 16), np.float32), iou, 0.0)

    return fake


def test_automatic_masks_filter_and_deduplicate(model, monkeypatch):
    calls: list[int] = []
    model = promptable(model)
    monkeypatch.setattr(model, "decode", _fake_decode(calls))
    sizes = ((37, 53), (45, 64))
    config = auto_config(points_per_side=4, batch_size=6)
    candidates = automatic_masks(
        model, {"embeddings": np.zeros((32, 4, 4))}, sizes=sizes, config=config
    )
    assert calls == [6, 6, 4]  # 16 grid points in batches of 6
    # NMS keeps 1 of each; B is a second output of the same points as A (all 3 are kept)
    assert [c.pred_iou for c in candidates] == pytest.approx([0.95, 0.92, 0.90])
    assert [c.area for c in candidates] == [330, 48, 40]
    assert all(c.stability == 1.0 for c in candidates)
    loose = auto_config(points_per_side=4, stability_score_thresh=0.0)
    candidates = automatic_masks(
        model, {"embeddings": np.zeros((32, 4, 4))}, sizes=sizes, config=loose
    )
    assert [c.pred_iou for c in candidates] == pytest.approx([0.99, 0.95, 0.92, 0.90])
    strict = auto_config(points_per_side=4, pred_iou_thresh=0.95)
    assert automatic_masks(model, FEATURES, sizes=sizes, config=strict) == []


def test_prediction_paints_the_chosen_mask_on_labelled_slices(model, volume_case, monkeypatch):
    root = volume_case["root"]
    model = promptable(model)
    monkeypatch.setattr(model, "decode", _fake_decode([]))
    job = PredictJob(
        method=complete_method({"family": "sam_auto", "model": "tiny"}, "m"),
        method_name="m",
        inputs=volume_case["inputs"],
        out_dir=root / "fake",
        splits=("test",),
        seed=0,
    )
    manifest = predict_sam_auto_cases(
        job,
        model=model,
        config=auto_config(points_per_side=4, label="lesion"),
        label_value=2,
        embeddings_dir=root / "emb",
    )
    assert manifest["n_prompts"].tolist() == [16]  # the lesion is on slice 2 only
    out = read_volume(root / "fake" / "vol01.nii.gz")
    assert out.array_zyx.shape == SHAPE and out.geometry.matches(GEOMETRY)
    expected = np.zeros(SHAPE, np.uint8)
    expected[2][MASK_A] = 2  # highest predicted IoU among the eligible candidates
    np.testing.assert_array_equal(out.array_zyx, expected)


def test_end_to_end_with_the_tiny_sam(volume_case, tmp_path):
    root, inputs = volume_case["root"], volume_case["inputs"]
    method = {"family": "sam_auto", "model": "tiny", "label": "organ", "points_per_side": 6}
    manifest = predict_dataset(
        method=method,
        method_name="auto",
        inputs=inputs,
        out_dir=tmp_path / "p",
        splits=["test"],
        seed=0,
    )
    assert tuple(manifest.columns) == WRITTEN_COLUMNS
    assert manifest["gpu_mem_mb"].isna().all()  # no GPU here
    assert manifest[["case_id", "n_prompts"]].values.tolist() == [["vol01", 2 * 36]]
    out = read_volume(tmp_path / "p" / "vol01.nii.gz")
    assert out.array_zyx.shape == SHAPE and out.array_zyx.dtype == np.uint8
    assert out.geometry.matches(GEOMETRY)
    assert not out.array_zyx[1].any()  # organ absent from slice 1
    assert set(np.unique(out.array_zyx)) <= {0, 1}
    # with every filter open, a random SAM still has candidates; the rule picks one
    loose = {**method, "pred_iou_thresh": 0, "stability_score_thresh": 0}
    loose.update(min_area_frac=0, max_area_frac=1)
    predict_dataset(
        method=loose,
        method_name="auto",
        inputs=inputs,
        out_dir=tmp_path / "q",
        splits=["test"],
        seed=0,
    )
    assert set(np.unique(read_volume(tmp_path / "q" / "vol01.nii.gz").array_zyx)) <= {0, 1}
    # sharded: the single case is in shard 1 of 2, shard 2 is empty
    for index, n_cases in ((0, 1), (1, 0)):
        part = predict_dataset(
            method=method,
            method_name="auto",
            inputs=inputs,
            out_dir=tmp_path / "s",
            shard=(index, 2),
            splits=["test"],
            seed=0,
        )
        assert len(part) == n_cases
        assert (tmp_path / "s" / "shards" / f"{index + 1}-of-2.tsv").is_file()
    assert not (tmp_path / "s" / "manifest.tsv").exists()
    with pytest.raises(ConfigError, match=r"^methods\.auto\.label: required"):
        predict_dataset(
            method={"family": "sam_auto", "model": "tiny"},
            method_name="auto",
            inputs=inputs,
            out_dir=tmp_path / "r",
            splits=["test"],
            seed=0,
        )
    other = {**inputs, "checkpoint": tmp_path / "other.pth"}
    with pytest.raises(InputError, match=r"model\.json: embeddings were made with"):
        predict_dataset(
            method=method,
            method_name="auto",
            inputs=other,
            out_dir=tmp_path / "r",
            splits=["test"],
            seed=0,
        )
    assert not (tmp_path / "r").exists()
    info = json.loads((root / "emb" / "model.json").read_text(encoding="utf-8"))
    assert info["arch"] == "demo"
