from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from medsegflow.io import Volume, write_volume
from medsegflow.plots import (
    QualCase,
    choose_qualitative_cases,
    choose_qualitative_slice,
    plot_metric_by_method,
    plot_qualitative,
    render_qualitative_figure,
)
from medsegflow.tables import METRICS, ROW_COLUMNS, summarise


def metric_rows(dataset: str, method: str, dscs: list[float]) -> pd.DataFrame:
    """Rows for two classes per case; class 2 has DSC - 0.1 and a NaN HD95 on case 0."""
    records = []
    for i, dsc in enumerate(dscs):
        for label, name, value in ((1, "liver", dsc), (2, "kidney", dsc - 0.1)):
            record = dict.fromkeys(METRICS, 1.5)
            record.update(
                dataset=dataset,
                method=method,
                case_id=f"c{i}",
                split="test",
                label=label,
                label_name=name,
                dsc=value,
                gt_empty=False,
                pred_empty=False,
                gt_voxels=10,
                pred_voxels=10,
            )
            if i == 0 and label == 2:
                record["hd95_mm"] = np.nan
            records.append(record)
    return pd.DataFrame.from_records(records, columns=list(ROW_COLUMNS))


def assert_real_png(path, *, min_pixels: int = 200) -> np.ndarray:
    assert path.is_file()
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) >= min_pixels
    assert pixels[..., :3].var() > 1e-4  # not a blank canvas
    return pixels


def test_metric_plot_single_dataset_single_method(tmp_path):
    summary = summarise(metric_rows("ct", "nnunet", [0.8, 0.9, 0.7]), n_boot=100)
    out = tmp_path / "figs" / "dsc.png"
    plot_metric_by_method(summary, metric="dsc", out_png=out)
    assert_real_png(out)
    assert [p.name for p in out.parent.iterdir()] == ["dsc.png"]  # no temporary left


def test_metric_plot_many_datasets_and_methods(tmp_path):
    rng = np.random.default_rng(0)
    rows = pd.concat(
        [
            metric_rows(d, m, list(rng.uniform(0.5, 0.9, 6)))
            for d in ("ct", "us", "mri", "xray")
            for m in ("a", "sam", "medsam")
        ]
    )
    summary = summarise(rows, n_boot=100)
    out = tmp_path / "hd95.png"
    plot_metric_by_method(summary, metric="hd95_mm", out_png=out)
    pixels = assert_real_png(out)
    assert pixels.shape[1] > pixels.shape[0]  # three panels side by side, two rows


def test_metric_plot_unknown_metric_is_named(tmp_path):
    summary = summarise(metric_rows("ct", "a", [0.5, 0.6]), n_boot=10)
    with pytest.raises(ValueError, match="'dice'"):
        plot_metric_by_method(summary, metric="dice", out_png=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


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


def test_choose_slice_most_foreground():
    label = np.zeros((5, 4, 4), np.uint8)
    label[1, :2, :2] = 1
    label[3, :3, :3] = 2
    assert choose_qualitative_slice(label) == 3
    assert choose_qualitative_slice(np.zeros((5, 4, 4), np.uint8)) == 2


def test_plot_qualitative_rejects_mismatched_shapes(tmp_path):
    case = QualCase(
        dataset="ct",
        case_id="c0",
        z=0,
        image_yx=np.zeros((8, 8)),
        gt_yx=np.zeros((8, 8), int),
        predictions={"a": np.zeros((8, 7), int)},
    )
    with pytest.raises(ValueError, match="c0.*'a'"):
        plot_qualitative(cases=[case], out_png=tmp_path / "q.png")


def write_case_files(root, case_id: str, shift: int, methods: tuple[str, ...]) -> None:
    zz, yy, xx = np.mgrid[0:4, 0:24, 0:24]
    label = np.zeros((4, 24, 24), np.uint8)
    label[((yy - 10) ** 2 + (xx - 10) ** 2 < 30) & (zz == 2)] = 1
    label[(abs(yy - 18) < 3) & (abs(xx - 18) < 3) & (zz >= 1)] = 2
    image = (40 + 100 * (label > 0) + 10 * (xx % 3)).astype(np.uint8)
    write_volume(root / "pre" / "images" / f"{case_id}.nii.gz", Volume(image))
    write_volume(root / "pre" / "labels" / f"{case_id}.nii.gz", Volume(label))
    for k, method in enumerate(methods):
        pred = np.roll(label, shift * (k + 1), axis=2)
        write_volume(root / "pred" / method / f"{case_id}.nii.gz", Volume(pred))


def test_render_qualitative_figure_from_nifti(tmp_path):
    methods = ("nnunet", "sam_box")
    csvs = []
    for k, method in enumerate(methods):
        path = tmp_path / "metrics" / f"{method}.csv"
        path.parent.mkdir(exist_ok=True)
        metric_rows("ct", method, [0.8 - 0.1 * k, 0.6, 0.4, 0.9]).to_csv(path, index=False)
        csvs.append(path)
    for i in range(4):
        write_case_files(tmp_path, f"c{i}", i, methods)
    out = tmp_path / "qual.png"
    render_qualitative_figure(
        dataset="ct",
        metrics_csvs=csvs,
        preprocessed_dir=tmp_path / "pre",
        predictions_dirs={m: tmp_path / "pred" / m for m in methods},
        n_cases=3,
        out_png=out,
    )
    pixels = assert_real_png(out)
    rgb = pixels[..., :3]
    assert (np.ptp(rgb, axis=-1) > 0.3).mean() > 0.01  # coloured overlays were drawn
    (tmp_path / "pred" / "sam_box" / "c3.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"sam_box.c3\.nii\.gz"):
        render_qualitative_figure(
            dataset="ct",
            metrics_csvs=csvs,
            preprocessed_dir=tmp_path / "pre",
            predictions_dirs={m: tmp_path / "pred" / m for m in methods},
            n_cases=3,
            out_png=tmp_path / "q2.png",
        )


def test_render_qualitative_unknown_dataset(tmp_path):
    path = tmp_path / "a.csv"
    metric_rows("ct", "a", [0.5]).to_csv(path, index=False)
    with pytest.raises(ValueError, match="'mri'"):
        render_qualitative_figure(
            dataset="mri",
            metrics_csvs=[path],
            preprocessed_dir=tmp_path,
            predictions_dirs={"a": tmp_path},
            n_cases=1,
            out_png=tmp_path / "q.png",
        )
