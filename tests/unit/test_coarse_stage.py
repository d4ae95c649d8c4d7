"""The coarse-mask stage: saliency folder + preprocessed images -> label volumes + manifest."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from medsegflow.errors import ConfigError, InputError
from medsegflow.io import Geometry, Volume, read_volume, write_volume
from medsegflow.saliency.maps import saliency_map_path
from medsegflow.stages.coarse import COARSE_COLUMNS, make_coarse_masks

GEOMETRY = Geometry((0.8, 0.8, 2.5), (10.0, -4.0, 3.0))
SHAPE = (3, 30, 36)


def _write_table(path, rows, columns):
    pd.DataFrame(rows, columns=columns).to_csv(path, sep="\t", index=False)


def _layout(root):
    """Preprocessed images (and labels, later deleted) of a 3D and a 2D case, and a
    saliency folder: vol01 labels 1 and 2 on z 0 and 2 (label 2 inside label 1 on z 2),
    label 1 also on z 1 with a zero map; img02 without targets."""
    pre, sal = root / "pre", root / "sal"
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, SHAPE, dtype=np.uint8)
    write_volume(pre / "images" / "vol01.nii.gz", Volume(image, GEOMETRY))
    write_volume(pre / "labels" / "vol01.nii.gz", Volume(np.zeros(SHAPE, np.uint8), GEOMETRY))
    flat = Geometry((0.5, 0.5, 1.0))
    write_volume(pre / "images" / "img02.nii.gz", Volume(np.zeros((1, 20, 22), np.uint8), flat))
    organ = np.zeros(SHAPE, np.float32)
    organ[0, 5:20, 5:25] = 0.9
    organ[2, 8:26, 10:30] = 0.8
    lesion = np.zeros(SHAPE, np.float32)
    lesion[2, 12:18, 14:20] = 1.0
    lesion[2, 0:2, 0:2] = 0.7  # a smaller second component: dropped (top_k 1)
    write_volume(saliency_map_path(sal, "vol01", 1), Volume(organ, GEOMETRY))
    write_volume(saliency_map_path(sal, "vol01", 2), Volume(lesion, GEOMETRY))
    targets = [
        ("vol01", "test", 0, 1, 0.1),
        ("vol01", "test", 1, 1, 0.1),
        ("vol01", "test", 2, 1, 0.1),
        ("vol01", "test", 2, 2, 0.1),
    ]
    _write_table(sal / "targets.tsv", targets, ["case_id", "split", "z", "label", "seconds"])
    _write_table(
        sal / "manifest.tsv",
        [("vol01", "test", 4, 0.4), ("img02", "val", 0, 0.0)],
        ["case_id", "split", "n_targets", "seconds"],
    )
    return pre, sal, organ, lesion


def test_coarse_masks_painted_in_the_image_geometry_without_labels(tmp_path):
    pre, sal, organ, lesion = _layout(tmp_path)
    shutil.rmtree(pre / "labels")  # coarse masks must never read a label
    out = tmp_path / "coarse"
    manifest = make_coarse_masks(
        saliency_dir=sal,
        preprocessed_dir=pre,
        out_dir=out,
        config={"method": "threshold", "threshold": 0.5},
        key_prefix="methods.t.coarse",
    )
    assert list(manifest.columns) == list(COARSE_COLUMNS)
    written = pd.read_csv(out / "manifest.tsv", sep="\t", dtype={"case_id": str})
    pd.testing.assert_frame_equal(written, manifest, check_dtype=False)
    assert manifest[["case_id", "split", "n_targets", "n_empty"]].values.tolist() == [
        ["vol01", "test", 4, 1],
        ["img02", "val", 0, 0],
    ]
    volume = read_volume(out / "vol01.nii.gz")
    assert volume.array_zyx.dtype == np.uint8 and volume.array_zyx.shape == SHAPE
    assert volume.geometry.matches(GEOMETRY)
    expected = np.zeros(SHAPE, np.uint8)
    expected[organ > 0.5] = 1
    expected[2, 12:18, 14:20] = 2  # the smaller mask wins where the two overlap
    np.testing.assert_array_equal(volume.array_zyx, expected)
    flat = read_volume(out / "img02.nii.gz")
    assert flat.array_zyx.shape == (1, 20, 22) and not flat.array_zyx.any()
    assert flat.geometry.spacing_xyz == (0.5, 0.5, 1.0)


def test_every_method_runs_on_the_stage(tmp_path):
    pre, sal, _, _ = _layout(tmp_path)
    for method in ("kmeans", "crf", "morphology"):
        out = tmp_path / method
        manifest = make_coarse_masks(
            saliency_dir=sal,
            preprocessed_dir=pre,
            out_dir=out,
            config={"method": method},
            key_prefix="c",
        )
        labels = read_volume(out / "vol01.nii.gz").array_zyx
        assert set(np.unique(labels[2])) == {0, 1, 2}, method
        assert not labels[1].any()
        assert manifest["n_empty"].tolist() == [1, 0]


def test_errors_name_the_key_or_the_file(tmp_path):
    pre, sal, organ, _ = _layout(tmp_path)
    out = tmp_path / "coarse"
    kwargs = {"saliency_dir": sal, "preprocessed_dir": pre, "out_dir": out}
    with pytest.raises(ConfigError, match=r"methods\.t\.coarse\.top_k"):
        make_coarse_masks(**kwargs, config={"top_k": -1}, key_prefix="methods.t.coarse")
    assert not out.exists()
    path = saliency_map_path(sal, "vol01", 2)
    write_volume(path, Volume(np.zeros((3, 30, 35), np.float32), GEOMETRY))
    with pytest.raises(InputError, match=r"vol01_label2\.nii\.gz: shape"):
        make_coarse_masks(**kwargs, config={}, key_prefix="c")
    write_volume(path, Volume(organ * 1.5, GEOMETRY))
    with pytest.raises(InputError, match=r"vol01_label2\.nii\.gz: saliency spans"):
        make_coarse_masks(**kwargs, config={}, key_prefix="c")
    path.unlink()
    with pytest.raises(InputError, match=r"vol01_label2\.nii\.gz: file not found"):
        make_coarse_masks(**kwargs, config={}, key_prefix="c")
    assert not (out / "manifest.tsv").exists()
