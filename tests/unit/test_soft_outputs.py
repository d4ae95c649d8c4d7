"""Soft outputs for the Med-SA convention: painting per-label probabilities, their file,
and the score stage passing them to the convention replay (hand-computed values)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from medsegflow.conventions import MEDSA_DICE_EPS
from medsegflow.datasets.canonical import CanonicalCase, write_canonical_dataset
from medsegflow.errors import InputError
from medsegflow.io import Geometry, Volume, write_volume
from medsegflow.prediction.cases import (
    probabilities_path,
    read_probabilities,
    write_probabilities,
)
from medsegflow.prediction.manifest import WRITTEN_COLUMNS, write_prediction_manifest
from medsegflow.prediction.painting import ObjectMask, mean_probability, paint_probabilities
from medsegflow.ranking import ALL_CLASSES
from medsegflow.stages.preprocess import preprocess_dataset
from medsegflow.stages.score import score_predictions

SHAPE = (2, 6, 7)
GEOMETRY = Geometry((0.8, 0.8, 2.5), (1.0, 2.0, 3.0))


def test_paint_probabilities_takes_the_max_per_label_and_zero_elsewhere():
    a = np.full((4, 5), 0.2, dtype=np.float32)
    a[0, 0] = 0.9
    b = np.full((4, 5), 0.4, dtype=np.float32)
    b[0, 0] = 0.1
    mask = np.zeros((4, 5), dtype=bool)
    mask[1:3, 2:4] = True
    objects = [
        ObjectMask(0, 1, a > 0.5, 1.0, a),
        ObjectMask(0, 1, b > 0.5, 1.0, b),  # a second object of label 1 on slice 0
        ObjectMask(2, 3, mask, 4.0),  # no probabilities kept: its mask counts as 0/1
    ]
    probs = paint_probabilities((3, 4, 5), objects, [1, 3])
    assert probs.dtype == np.float16 and probs.shape == (2, 3, 4, 5)
    assert probs[0, 0, 0, 0] == np.float16(0.9)  # max(0.9, 0.1)
    assert (probs[0, 0].ravel()[1:] == np.float16(0.4)).all()  # max(0.2, 0.4)
    assert not probs[0, 1:].any()  # nothing of label 1 decoded on slices 1, 2
    assert not probs[1, :2].any()
    np.testing.assert_array_equal(probs[1, 2], mask.astype(np.float16))
    assert paint_probabilities((3, 4, 5), [], [1, 3]).shape == (2, 3, 4, 5)
    with pytest.raises(ValueError, match=r"label 2 on slice 0: not in \[1, 3\]"):
        paint_probabilities((3, 4, 5), [ObjectMask(0, 2, mask, 1.0)], [1, 3])
    with pytest.raises(ValueError, match=r"map shape \(4, 4\)"):
        paint_probabilities((3, 4, 5), [ObjectMask(0, 1, mask, 1.0, a[:, :4])], [1, 3])


def test_mean_probability_is_the_average_votes_map():
    probs = np.array([[[0.2, 0.9]], [[0.6, 0.5]]], dtype=np.float32)  # (R=2, 1, 2)
    mean = mean_probability(probs)
    assert mean.dtype == np.float16 and mean.shape == (1, 2)
    np.testing.assert_allclose(mean, [[0.4, 0.7]], atol=1e-3)


def test_probability_file_round_trips_and_names_itself_on_errors(tmp_path):
    probs = np.random.default_rng(0).uniform(0, 1, (2, *SHAPE)).astype(np.float32)
    path = tmp_path / "c1_probs.npz"
    write_probabilities(path, probs, [1, 4])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c1_probs.npz"]  # no temporary
    maps = read_probabilities(path, SHAPE)
    assert list(maps) == [1, 4] and maps[4].dtype == np.float16
    np.testing.assert_allclose(maps[4], probs[1], atol=5e-4)
    with pytest.raises(InputError, match=r"c1_probs\.npz: probabilities of shape \(2, 2, 6, 7\)"):
        read_probabilities(path, (2, 6, 8))
    bad = tmp_path / "bad_probs.npz"
    for content in (b"not a zip archive", path.read_bytes()[:200]):
        bad.write_bytes(content)
        with pytest.raises(InputError, match=r"bad_probs\.npz: unreadable probability file"):
            read_probabilities(bad, SHAPE)
    np.savez(bad, probs=probs.astype(np.float16), labels=np.array([1]))
    with pytest.raises(InputError, match=r"bad_probs\.npz: 2 probability channels but labels"):
        read_probabilities(bad, SHAPE)
    np.savez(bad, probs=(probs * 2).astype(np.float16), labels=np.array([1, 4]))
    with pytest.raises(InputError, match=r"bad_probs\.npz: probabilities outside \[0, 1\]"):
        read_probabilities(bad, SHAPE)
    np.savez(bad, labels=np.array([1, 4]))
    with pytest.raises(InputError, match=r"bad_probs\.npz: unreadable.*probs"):
        read_probabilities(bad, SHAPE)


def _gt() -> np.ndarray:
    gt = np.zeros(SHAPE, dtype=np.uint8)
    gt[0, 1:3, 1:3] = 1  # organ: 4 px on slice 0, none on slice 1
    gt[1, 4, 2:5] = 2  # lesion: 3 px on slice 1, none on slice 0
    return gt


@pytest.fixture()
def scored(tmp_path):
    """One test case (organ and lesion), predicted as its reference; returns a function
    scoring it under ``med_sa`` with the given probability file content (None: no file)."""
    gt = _gt()
    image = np.where(gt > 0, 200, -50).astype(np.int16)
    case = CanonicalCase("c1", "test", "CT", Volume(image, GEOMETRY), Volume(gt, GEOMETRY))
    write_canonical_dataset(
        [case], label_map={"background": 0, "organ": 1, "lesion": 2}, out_dir=tmp_path / "data"
    )
    preprocess_dataset(
        data_dir=tmp_path / "data",
        out_dir=tmp_path / "pre",
        cleaning={"min_voxels_3d": 0, "min_pixels_2d": 0},
        n_empty_slices=0,
        seed=0,
    )
    pred_dir = tmp_path / "pred"
    write_volume(pred_dir / "c1.nii.gz", Volume(gt, GEOMETRY))
    manifest = pd.DataFrame([["c1", "test", 2, 0.1, math.nan]], columns=list(WRITTEN_COLUMNS))
    write_prediction_manifest(manifest, pred_dir, None)
    metrics = {
        "splits": ["test"],
        "reference": "cleaned",
        "nsd_tolerance_mm": 2.0,
        "conventions": ["med_sa"],
    }

    def score(write=None) -> pd.DataFrame:
        probs_path = probabilities_path(pred_dir, "c1")
        probs_path.unlink(missing_ok=True)
        if write is not None:
            write(probs_path)
        score_predictions(
            dataset="d",
            method="m",
            predictions_manifest=pred_dir / "manifest.tsv",
            preprocessed_manifest=tmp_path / "pre" / "manifest.tsv",
            metrics=metrics,
            out_csv=tmp_path / "metrics.csv",
            conventions_csv=tmp_path / "conventions.csv",
        )
        return pd.read_csv(tmp_path / "conventions.csv").set_index("label_name")

    return score


def _soft() -> np.ndarray:
    """(C=2, Z, Y, X) probabilities: the organ's 4 px at 0.9 and 2 more px at 0.6 (above
    the cuts sigmoid(0.1) = 0.525 and sigmoid(0.3) = 0.574 only); the lesion's 3 px at 0.55
    (above sigmoid(0.1) only)."""
    probs = np.zeros((2, *SHAPE), dtype=np.float32)
    probs[0][_gt() == 1] = 0.9
    probs[0, 0, 4, 5:7] = 0.6
    probs[1][_gt() == 2] = 0.55
    return probs


def test_score_stage_passes_the_probability_file_to_med_sa(scored):
    without = scored()
    assert without[["dsc", "nsd", "hd95"]].isna().all().all()  # no soft outputs: NaN
    assert (without["n_excluded"] == 2).all()  # the case's 2 classes

    rows = scored(lambda path: write_probabilities(path, _soft(), [1, 2]))
    # Med-SA: per slice (2|A and B| + 1e-4) / (|A| + |B| + 1e-4), mean over the 2 slices,
    # then over the 5 thresholds; the empty-empty slice scores 1
    eps = MEDSA_DICE_EPS
    organ_z0 = (2 * 4 + eps) / (6 + 4 + eps)  # cuts 0.1 and 0.3: 6 px predicted
    organ = (2 * (organ_z0 + 1) / 2 + 3 * 1.0) / 5
    lesion_z1 = eps / (0 + 3 + eps)  # cuts 0.3 .. 0.9: nothing predicted
    lesion = (1.0 + 4 * (1 + lesion_z1) / 2) / 5
    six_digits = {"rel": 1e-6}  # the CSV's float format
    assert rows.loc["organ", "dsc"] == pytest.approx(organ, **six_digits)
    assert rows.loc["lesion", "dsc"] == pytest.approx(lesion, **six_digits)
    assert rows.loc[ALL_CLASSES, "dsc"] == pytest.approx((organ + lesion) / 2, **six_digits)
    assert (rows["n_excluded"] == 0).all() and rows[["nsd", "hd95"]].isna().all().all()
    assert organ == pytest.approx(0.96, abs=1e-4) and lesion == pytest.approx(0.6, abs=1e-4)


def test_score_stage_names_a_bad_probability_file(scored):
    with pytest.raises(InputError, match=r"c1_probs\.npz: probabilities of shape \(2, 2, 6, 6\)"):
        scored(lambda path: write_probabilities(path, _soft()[..., :6], [1, 2]))
    with pytest.raises(InputError, match=r"c1_probs\.npz: unreadable probability file"):
        scored(lambda path: path.write_bytes(b"PK\x03\x04 truncated"))
    with pytest.raises(InputError, match=r"c1_probs\.npz: no probabilities for labels \[2\]"):
        scored(lambda path: write_probabilities(path, _soft()[:1], [1]))
