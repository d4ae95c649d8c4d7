from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from medsegflow.plots import plot_metric_by_method
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
