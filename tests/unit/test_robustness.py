"""Prompt-robustness curves: the box shift, NoC, the curves on an exact fake decoder, and
the stage end to end on a tiny SAM with real cached embeddings."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from medsegflow import robustness as rb
from medsegflow.datasets.canonical import CanonicalCase, write_canonical_dataset
from medsegflow.errors import InputError
from medsegflow.io import Geometry, Volume
from medsegflow.promptable.interface import Decoded
from medsegflow.stages.preprocess import preprocess_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sam_fixtures import TINY_SAM, embedded_sam_inputs  # noqa: E402

GRID = rb.RobustnessGrid(
    box_px=(0, 40), positive_points=(1, 3), negative_points=(0, 2), max_clicks=4
)


def test_shift_box_moves_the_box_by_the_scaled_length_and_clips_it():
    rng = np.random.default_rng(0)
    box = np.array([100.0, 50.0, 140.0, 90.0])
    moved = rb.shift_box(box, image_shape_yx=(256, 512), shift_1024=40, rng=rng)
    delta = moved - box
    assert delta[0] == pytest.approx(delta[2]) and delta[1] == pytest.approx(delta[3])
    assert math.hypot(delta[0], delta[1]) == pytest.approx(40 * 512 / 1024)
    corner = rb.shift_box(
        np.array([0.0, 0.0, 5.0, 5.0]), image_shape_yx=(64, 64), shift_1024=4000, rng=rng
    )
    assert (corner >= 0).all() and (corner <= 63).all()


def test_clicks_to_reach_counts_the_first_click_at_the_target_or_caps_it():
    iou = np.array([[0.5, 0.86, 0.95], [0.2, 0.3, 0.4], [0.91, 0.7, 0.92]])
    assert rb.clicks_to_reach(iou, 0.85, 3).tolist() == [2, 3, 1]
    assert rb.clicks_to_reach(iou, 0.90, 3).tolist() == [3, 3, 1]


def _label():
    label = np.zeros((2, 40, 40), dtype=np.uint8)
    label[0, 5:15, 5:25] = 1
    label[0, 25:35, 20:30] = 2
    label[1, 10:30, 10:30] = 1
    return label


def _box_decoder(monkeypatch):
    """A decoder that paints each box exactly and each point prompt as a 7x7 square."""

    def decode(model, sl, prompts, *, multimask, mask_inputs=None):
        shape = sl.targets.shape[1:]
        masks = np.zeros((len(prompts), *shape), dtype=np.float32)
        for i, prompt in enumerate(prompts):
            if prompt.box_xyxy is not None:
                x0, y0, x1, y1 = np.round(prompt.box_xyxy).astype(int)
                masks[i, max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = 1
            for x, y, positive in prompt.points_xyl.astype(int):
                if positive:
                    masks[i, max(y - 3, 0) : y + 4, max(x - 3, 0) : x + 4] = 1
        low = np.zeros((len(prompts), 1, 16, 16), dtype=np.float32)
        return Decoded(masks * 2 - 1, low, np.ones(len(prompts), np.float32), 0.0)

    monkeypatch.setattr(rb, "_decode", decode)


def _cached(label):
    z = np.arange(label.shape[0])
    return SimpleNamespace(
        z=z,
        embeddings=np.zeros((len(z), 1, 1, 1), np.float16),
        index_of=lambda value: int(value),
        features=lambda value: {"embeddings": np.zeros((1, 1, 1), np.float16)},
        original_size=label.shape[1:],
        input_size=label.shape[1:],
    )


def test_curves_on_an_exact_box_decoder(monkeypatch):
    _box_decoder(monkeypatch)
    label = _label()
    rows, clicks = rb.case_curves(
        None, _cached(label), label, case_id="c1", label_values=[1, 2], grid=GRID, seed=0, name="m"
    )
    table = rows.set_index(["curve", "x"])
    # three objects: labels 1 and 2 on slice 0, label 1 on slice 1
    assert (rows.loc[rows["curve"] != "noc", "n_objects"] == 3).all()
    assert table.loc[("box_jitter", 0.0), "dsc"] == pytest.approx(1.0)  # tight box: exact
    assert table.loc[("box_jitter", 40.0), "dsc"] < 1.0
    assert table.loc[("box_shift", 40.0), "dsc"] < 1.0
    # a 7x7 square per positive point: more points cover more of each object
    assert table.loc[("positive_points", 3.0), "dsc"] > table.loc[("positive_points", 1.0), "dsc"]
    assert set(rows["curve"]) == {*rb.CURVES, "noc"}
    assert clicks.shape == (3, GRID.max_clicks)
    # the 20 x 20 object of slice 1: each click adds a 7 x 7 square inside it
    assert clicks[2, 0] == pytest.approx(49 / 400)
    assert (np.diff(clicks[2]) > 0).all()
    noc = table.loc[("noc", 0.85), "noc"]
    assert noc == pytest.approx(rb.clicks_to_reach(clicks, 0.85, 4).mean())
    again, _ = rb.case_curves(
        None, _cached(label), label, case_id="c1", label_values=[1, 2], grid=GRID, seed=0, name="m"
    )
    pd.testing.assert_frame_equal(rows, again)  # seeded per case, curve and x


def test_summary_averages_cases_and_sums_objects():
    per_case = pd.DataFrame(
        {
            "case_id": ["a", "b", "a", "b"],
            "curve": ["box_jitter", "box_jitter", "noc", "noc"],
            "x": [0.0, 0.0, 0.85, 0.85],
            "n_objects": [2, 3, 2, 3],
            "dsc": [0.8, 0.6, np.nan, np.nan],
            "iou": [0.7, 0.5, np.nan, np.nan],
            "noc": [np.nan, np.nan, 2.0, 5.0],
        }
    )
    summary = rb.summarise_curves(per_case, dataset="d", model="m")
    assert list(summary.columns) == list(rb.TABLE_COLUMNS)
    table = summary.set_index("curve")
    assert table.loc["box_jitter", "dsc"] == pytest.approx(0.7)
    assert table.loc["box_jitter", "n_objects"] == 5 and table.loc["box_jitter", "n_cases"] == 2
    assert table.loc["noc", "noc"] == pytest.approx(3.5)


def _dataset(root: Path) -> None:
    label = np.zeros((2, 48, 48), dtype=np.uint8)
    label[0, 8:30, 10:40] = 1
    label[1, 12:20, 14:22] = 2
    rng = np.random.default_rng(1)
    hu = np.where(label > 0, 150.0, -60.0) + rng.normal(0, 10, label.shape)
    geometry = Geometry((0.8, 0.8, 2.5), (0.0, 0.0, 0.0))
    cases = [
        CanonicalCase(
            c, "test", "CT", Volume(hu.astype(np.int16), geometry), Volume(label, geometry)
        )
        for c in ("r01", "r02")
    ]
    write_canonical_dataset(
        cases, label_map={"background": 0, "organ": 1, "lesion": 2}, out_dir=root / "data"
    )
    preprocess_dataset(
        data_dir=root / "data",
        out_dir=root / "pre",
        cleaning={"min_voxels_3d": 0, "min_pixels_2d": 0},
        n_empty_slices=0,
        seed=0,
    )


def test_stage_on_a_tiny_sam_writes_every_curve_and_the_table(tmp_path):
    import torch

    from medsegflow.models.sam_loader import build_sam
    from medsegflow.stages.robustness import robustness_curves, write_robustness_table

    torch.manual_seed(0)
    _dataset(tmp_path)
    inputs = embedded_sam_inputs(build_sam(TINY_SAM), tmp_path)
    grid = {"box_px": [0, 20], "positive_points": [1], "negative_points": [1], "max_clicks": 3}
    out = tmp_path / "robustness" / "ds" / "tiny.csv"
    summary = robustness_curves(
        dataset="ds",
        model="tiny",
        preprocessed_manifest=inputs["preprocessed"],
        inputs=inputs,
        splits=["test"],
        grid={**grid, "max_cases": 1},
        seed=0,
        out_csv=out,
        device="cpu",
    )
    per_case = pd.read_csv(out, dtype={"case_id": str})
    assert list(per_case.columns) == list(rb.CURVE_COLUMNS)
    assert set(per_case["case_id"]) == {"r01"}  # max_cases: 1
    curves = per_case[per_case["curve"] != "noc"]
    assert len(curves) == 2 + 2 + 1 + 1 + 3  # jitter, shift, points, negatives, clicks
    assert (curves["n_objects"] == 2).all()  # organ on slice 0, lesion on slice 1
    assert curves["dsc"].between(0, 1).all() and curves["iou"].between(0, 1).all()
    noc = per_case[per_case["curve"] == "noc"]
    assert noc["x"].tolist() == [0.85, 0.90] and noc["noc"].between(1, 3).all()
    table = write_robustness_table([out], tmp_path / "robustness.csv")
    assert set(table["dataset"]) == {"ds"} and set(table["model"]) == {"tiny"}
    pd.testing.assert_frame_equal(
        table.reset_index(drop=True), summary.reset_index(drop=True), check_dtype=False
    )
    bad = tmp_path / "robustness" / "ds" / "bad.csv"
    bad.write_text("case_id,dsc\nr01,0.5\n", encoding="utf-8")
    with pytest.raises(InputError, match="bad.csv"):
        write_robustness_table([bad], tmp_path / "t.csv")
    empty = write_robustness_table([], tmp_path / "empty.csv")
    assert empty.empty and list(empty.columns) == list(rb.TABLE_COLUMNS)


def test_the_figure_has_a_line_per_model(tmp_path):
    from medsegflow.curve_figures import plot_robustness

    rows = []
    for model, base in (("a", 0.9), ("b", 0.6)):
        for curve, xs in (
            ("box_jitter", (0, 20)),
            ("box_shift", (0, 20)),
            ("positive_points", (1, 3)),
            ("negative_points", (0, 2)),
            ("clicks", (1, 2, 3)),
        ):
            for x in xs:
                rows.append(
                    {"dataset": "d", "model": model, "curve": curve, "x": x, "dsc": base,
                     "iou": base - 0.1, "noc": np.nan, "n_cases": 2, "n_objects": 4}
                )  # fmt: skip
        rows.append(
            {"dataset": "d", "model": model, "curve": "noc", "x": 0.85, "dsc": np.nan,
             "iou": np.nan, "noc": 2.5, "n_cases": 2, "n_objects": 4}
        )  # fmt: skip
    fig = plot_robustness(pd.DataFrame(rows), dataset="d", out_png=tmp_path / "r.png")
    axes = fig.axes
    assert len(axes) == 4
    assert len(axes[0].lines) == 2 * 2 + 2  # jitter and shift per model, 2 legend keys
    assert [t.get_text() for t in axes[3].get_legend().get_texts()] == [
        "a (NoC@85 2.5)",
        "b (NoC@85 2.5)",
    ]
    assert (tmp_path / "r.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="'zzz'"):
        plot_robustness(pd.DataFrame(rows), dataset="zzz", out_png=tmp_path / "z.png")
