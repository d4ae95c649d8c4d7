"""The qualitative figures: per method its worst, median and best case, with its prompt."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from test_plots import assert_real_png, metric_rows

from medsegflow.errors import InputError
from medsegflow.interactive import click_volumes_path, write_click_volumes
from medsegflow.io import Volume, write_volume
from medsegflow.manifests import PROMPT_COLUMNS, format_points
from medsegflow.qualitative import (
    POSITIVE_COLOUR,
    PROMPT_COLOUR,
    QualPanel,
    SlicePrompt,
    choose_qualitative_cases,
    choose_qualitative_slice,
    clicks_on_slice,
    plot_qualitative,
    prompts_on_slice,
    rank_names,
    render_qualitative_figure,
    view_window,
)


def prompt_row(case_id, z, label, box, points=(), *, repeat=0, z_range=None):
    z_min, z_max = z_range or (z, z)
    x0, y0, x1, y1 = box if box is not None else (np.nan,) * 4
    return {
        "case_id": case_id,
        "split": "test",
        "z": z,
        "label": label,
        "prompt_id": 0,
        "repeat": repeat,
        "component": -1,
        "x_min": x0,
        "y_min": y0,
        "x_max": x1,
        "y_max": y1,
        "points": format_points(np.asarray(points, np.int64).reshape(-1, 3)),
        "z_min": z_min,
        "z_max": z_max,
    }


def test_choose_cases_spreads_worst_median_best():
    rows = pd.concat(
        [
            metric_rows("ct", "a", [0.5, 0.9, 0.1, 0.7, 0.3]),
            metric_rows("ct", "b", [0.5, 0.9, 0.1, 0.7, 0.3]),
        ]
    )
    assert choose_qualitative_cases(rows, n_cases=3) == ["c2", "c0", "c1"]
    assert choose_qualitative_cases(rows, n_cases=1) == ["c2"]
    assert choose_qualitative_cases(rows, n_cases=9) == ["c2", "c4", "c0", "c3", "c1"]
    with pytest.raises(ValueError, match="'zzz'"):
        choose_qualitative_cases(rows, n_cases=2, method="zzz")


def test_rank_names():
    assert rank_names(3) == ["worst", "median", "best"]
    assert rank_names(1) == ["worst"]
    assert rank_names(2) == ["worst", "best"]
    assert rank_names(5) == ["worst", "25th pct", "median", "75th pct", "best"]


def test_choose_slice_largest_reference_area():
    label = np.zeros((5, 4, 4), np.uint8)
    label[1, :2, :2] = 1
    label[3, :3, :3] = 2
    assert choose_qualitative_slice(label) == 3
    assert choose_qualitative_slice(np.zeros((5, 4, 4), np.uint8)) == 2


def test_prompts_on_slice_takes_the_first_repeat_and_3d_ranges():
    table = pd.DataFrame(
        [
            prompt_row("c0", 3, 1, (1, 2, 10, 12)),
            prompt_row("c0", 3, 1, (0, 0, 20, 20), repeat=1),  # a second draw: not drawn
            prompt_row("c0", 4, 1, (5, 5, 9, 9)),  # another slice
            prompt_row("c0", 2, 2, (3, 4, 6, 8), z_range=(1, 5)),  # a 3D box through z=3
            prompt_row("c0", 3, 2, None, [[7, 8, 1], [1, 1, 0]]),  # points only
            prompt_row("c1", 3, 1, (1, 1, 2, 2)),  # another case
        ],
        columns=list(PROMPT_COLUMNS),
    )
    prompt = prompts_on_slice(table, "c0", 3, source="p.tsv")
    np.testing.assert_array_equal(prompt.boxes, [[1, 2, 10, 12], [3, 4, 6, 8]])
    np.testing.assert_array_equal(prompt.points, [[7, 8, 1], [1, 1, 0]])
    assert prompt.describe() == "2 boxes, 2 points"
    assert prompts_on_slice(table, "c0", 0, source="p.tsv").describe() == ""
    bad = table.assign(points="[[1, 2]]")
    with pytest.raises(InputError, match="p.tsv"):
        prompts_on_slice(bad, "c0", 3, source="p.tsv")


def test_clicks_on_slice():
    clicks = pd.DataFrame(
        {
            "label": [1, 1, 2],
            "click": [1, 2, 1],
            "z": [4, 5, 4],
            "y": [10, 11, 3],
            "x": [20, 21, 2],
            "positive": [1, 0, 1],
        }
    )
    np.testing.assert_array_equal(clicks_on_slice(clicks, 4), [[20, 10, 1, 1], [2, 3, 1, 1]])
    assert clicks_on_slice(clicks, 0).shape == (0, 4)


def panel_with(gt, pred, prompt=None):
    return QualPanel(
        method="m",
        case_id="c0",
        z=0,
        rank="worst",
        image_yx=np.zeros(gt.shape),
        gt_yx=gt,
        pred_yx=pred,
        dsc=0.5,
        prompt=prompt or SlicePrompt(),
    )


def test_view_window_zooms_on_small_content_only():
    gt = np.zeros((200, 200), np.uint8)
    gt[100:110, 50:60] = 1
    pred = np.zeros_like(gt)
    pred[104:114, 52:62] = 1
    # content 100..113 x 50..61: side max(32, 1.5 * 13) = 32 around its centre
    y0, y1, x0, x1 = view_window(panel_with(gt, pred))
    assert (y0, y1, x0, x1) == (90, 123, 39, 72)
    box = SlicePrompt(boxes=np.array([[40.0, 95.0, 70.0, 120.0]]))
    y0, y1, x0, x1 = view_window(panel_with(gt, pred, box))
    assert x0 <= 40 and x1 >= 70 and y0 <= 95 and y1 >= 120 and x1 - x0 < 100
    big = np.zeros_like(gt)
    big[10:190, 10:190] = 1
    assert view_window(panel_with(big, pred)) == (0, 199, 0, 199)
    empty = np.zeros_like(gt)
    assert view_window(panel_with(empty, empty)) == (0, 199, 0, 199)


def test_plot_qualitative_rejects_mismatched_shapes(tmp_path):
    gt = np.zeros((8, 8), int)
    with pytest.raises(ValueError, match="m/c0: prediction"):
        plot_qualitative(
            rows={"m": [panel_with(gt, np.zeros((8, 7), int))]}, out_png=tmp_path / "q.png"
        )
    with pytest.raises(ValueError, match="no panels"):
        plot_qualitative(rows={"m": []}, out_png=tmp_path / "q.png")


def write_case(root, case_id: str, methods: dict[str, int]) -> None:
    """A 4-slice case: a disc on z=2 (class 1) and a small square on z=1..3 (class 2);
    each method's prediction is the reference shifted by its pixels."""
    zz, yy, xx = np.mgrid[0:4, 0:48, 0:48]
    label = np.zeros((4, 48, 48), np.uint8)
    label[((yy - 20) ** 2 + (xx - 20) ** 2 < 60) & (zz == 2)] = 1
    label[(abs(yy - 36) < 4) & (abs(xx - 36) < 4) & (zz >= 1)] = 2
    image = (40 + 100 * (label > 0) + 10 * (xx % 3)).astype(np.uint8)
    write_volume(root / "pre" / "images" / f"{case_id}.nii.gz", Volume(image))
    write_volume(root / "pre" / "labels" / f"{case_id}.nii.gz", Volume(label))
    for method, shift in methods.items():
        pred = np.roll(label, shift, axis=2)
        write_volume(root / "pred" / method / f"{case_id}.nii.gz", Volume(pred))


def fraction_near(pixels, colour, tol=0.08):
    return (np.abs(pixels[..., :3] - np.asarray(colour)).max(axis=-1) < tol).mean()


def test_render_picks_each_methods_own_cases_and_draws_its_prompt(tmp_path):
    # Method "box" is worst on c2 and best on c1; "clicks" has the opposite order.
    dscs = {"box": [0.5, 0.9, 0.1, 0.7], "clicks": [0.5, 0.1, 0.9, 0.7], "plain": [0.3] * 4}
    csvs = []
    for method, values in dscs.items():
        path = tmp_path / "metrics" / f"{method}.csv"
        path.parent.mkdir(exist_ok=True)
        metric_rows("ct", method, values).to_csv(path, index=False)
        csvs.append(path)
    for i in range(4):
        write_case(tmp_path, f"c{i}", {"box": 1, "clicks": 2, "plain": 0})
    prompts = pd.DataFrame(
        [prompt_row(f"c{i}", 2, 1, (10, 11, 30, 29), [[20, 20, 1]]) for i in range(4)]
        + [prompt_row("c1", 1, 2, (31, 31, 41, 41))],  # not on the chosen slice z=2
        columns=list(PROMPT_COLUMNS),
    )
    prompts_path = tmp_path / "prompts.tsv"
    prompts.to_csv(prompts_path, sep="\t", index=False)
    for i in range(4):
        volumes = np.stack([np.roll(np.zeros((4, 48, 48), np.int64), 0)] * 2)
        clicks = pd.DataFrame(
            {
                "label": [1, 1],
                "click": [1, 2],
                "z": [2, 0],
                "y": [20, 5],
                "x": [21, 5],
                "positive": [1, 0],
            }
        )
        write_click_volumes(
            click_volumes_path(tmp_path / "pred" / "clicks", f"c{i}"),
            volumes,
            clicks,
            first_click=1,
        )
    out = tmp_path / "qual.png"
    rows = render_qualitative_figure(
        dataset="ct",
        metrics_csvs=csvs,
        preprocessed_dir=tmp_path / "pre",
        predictions_dirs={m: tmp_path / "pred" / m for m in dscs},
        n_cases=3,
        out_png=out,
        prompt_files={"box": prompts_path},
        interactive=["clicks"],
    )
    assert [(p.rank, p.case_id) for p in rows["box"]] == [
        ("worst", "c2"),
        ("median", "c3"),
        ("best", "c1"),
    ]
    assert [p.case_id for p in rows["clicks"]] == ["c1", "c3", "c2"]
    assert {p.z for panels in rows.values() for p in panels} == {2}  # largest reference area
    box = rows["box"][2].prompt
    np.testing.assert_array_equal(box.boxes, [[10, 11, 30, 29]])
    np.testing.assert_array_equal(box.points, [[20, 20, 1]])
    assert rows["clicks"][0].prompt.clicks.tolist() == [[21, 20, 1, 1]]  # only z=2's click
    assert rows["plain"][0].prompt.describe() == ""
    assert rows["box"][0].dsc == pytest.approx((0.1 + 0.0) / 2)
    np.testing.assert_array_equal(rows["box"][0].pred_yx, np.roll(rows["box"][0].gt_yx, 1, 1))
    pixels = assert_real_png(out)
    assert fraction_near(pixels, PROMPT_COLOUR) > 1e-4  # the box outlines
    assert fraction_near(pixels, POSITIVE_COLOUR) > 1e-5  # the points and clicks
    assert pixels.shape[0] > pixels.shape[1]  # three method rows of three panels

    (tmp_path / "pred" / "box" / "c1.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"box.c1\.nii\.gz"):
        render_qualitative_figure(
            dataset="ct",
            metrics_csvs=csvs,
            preprocessed_dir=tmp_path / "pre",
            predictions_dirs={"box": tmp_path / "pred" / "box"},
            n_cases=3,
            out_png=tmp_path / "q2.png",
        )
    (tmp_path / "pred" / "clicks" / "clicks" / "c1.npz").write_bytes(b"broken")
    with pytest.raises(InputError, match=r"c1\.npz"):
        render_qualitative_figure(
            dataset="ct",
            metrics_csvs=csvs,
            preprocessed_dir=tmp_path / "pre",
            predictions_dirs={"clicks": tmp_path / "pred" / "clicks"},
            n_cases=3,
            out_png=tmp_path / "q3.png",
            interactive=["clicks"],
        )
    assert not (tmp_path / "q2.png").exists() and not (tmp_path / "q3.png").exists()
    assert mpimg.imread(out).shape == pixels.shape  # the good figure is intact


def test_render_single_case_and_unknown_dataset(tmp_path):
    path = tmp_path / "a.csv"
    metric_rows("ct", "a", [0.5]).to_csv(path, index=False)
    write_case(tmp_path, "c0", {"a": 0})
    rows = render_qualitative_figure(
        dataset="ct",
        metrics_csvs=[path],
        preprocessed_dir=tmp_path / "pre",
        predictions_dirs={"a": tmp_path / "pred" / "a"},
        n_cases=3,
        out_png=tmp_path / "q.png",
    )
    assert [p.rank for p in rows["a"]] == ["only case"]
    with pytest.raises(ValueError, match="'mri'"):
        render_qualitative_figure(
            dataset="mri",
            metrics_csvs=[path],
            preprocessed_dir=tmp_path,
            predictions_dirs={"a": tmp_path},
            n_cases=1,
            out_png=tmp_path / "q.png",
        )
