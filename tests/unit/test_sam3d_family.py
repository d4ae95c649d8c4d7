"""The sam3d family end to end on a tiny random SAM-Med3D: the training stage, the
interactive predictor and its per-click files, the per-click scores and their tables, and
the family's config checks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from medsegflow.datasets.canonical import CanonicalCase, write_canonical_dataset
from medsegflow.errors import ConfigError, InputError
from medsegflow.families import sam3d as family
from medsegflow.families.registry import complete_method
from medsegflow.interactive import (
    ALL_CLASSES,
    CLICK_COLUMNS,
    click_volumes_path,
    clicks_tables,
    curve_auc,
    read_click_volumes,
)
from medsegflow.io import Geometry, Volume, read_volume
from medsegflow.prediction.job import PredictJob
from medsegflow.prediction.manifest import WRITTEN_COLUMNS
from medsegflow.stages.clicks import score_clicks
from medsegflow.stages.preprocess import preprocess_dataset
from medsegflow.stages.score import score_predictions

SHAPE = (12, 40, 44)
GEOMETRY = Geometry((1.2, 1.1, 3.0), (10.0, -5.0, 2.0))
CLICKS = {"n": 3, "first": "center", "mode": "center"}


def _case(case_id: str, split: str, rng) -> CanonicalCase:
    label = np.zeros(SHAPE, np.uint8)
    label[3:9, 8:24, 6:20] = 1
    label[4:8, 20:30, 26:36] = 2
    hu = np.where(label == 1, 80.0, np.where(label == 2, 160.0, -40.0)) + rng.normal(0, 8, SHAPE)
    return CanonicalCase(
        case_id, split, "CT", Volume(hu.astype(np.int16), GEOMETRY), Volume(label, GEOMETRY)
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("sam3d_family")
    rng = np.random.default_rng(0)
    cases = [_case("c1", "train", rng), _case("c2", "train", rng), _case("c3", "test", rng)]
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
    return root


@pytest.fixture(scope="module")
def trained(dataset):
    from medsegflow.sam3d.stage import train_sam3d_model

    train = {
        "datasets": ["d"],
        "iterations": 2,
        "batch_size": 1,
        "max_clicks": 2,
        "lr": 5e-4,
        "weight_decay": 0.1,
        "warmup": 1,
        "threads": 1,
    }
    out = dataset / "models" / "sam3d_tiny" / "sam3d.pth"
    info = train_sam3d_model(
        method="sam3d_tiny",
        spec="tiny",
        train=train,
        data_dirs=[dataset / "data"],
        preprocessed_dirs=[dataset / "pre"],
        out_weights=out,
        seed=0,
        device="cpu",
    )
    return out, info


def test_training_writes_loadable_weights_a_card_and_the_loss_history(trained):
    from medsegflow.sam3d.model import count_parameters, load_checkpoint

    weights, info = trained
    payload = torch.load(weights, map_location="cpu", weights_only=True)
    assert list(payload) == ["model_state_dict"]  # the released turbo layout
    model = load_checkpoint(weights, "tiny")  # strict, through the one loader
    card = json.loads((weights.parent / "model.json").read_text(encoding="utf-8"))
    assert card["spec"] == "tiny" and card["training"]["n_cases"] == 2  # the train split
    assert card["resampling"]["grid_rule"] == "floor_centred"  # the pinned torchio's grid
    assert card["training"]["n_parameters"] == count_parameters(model)[0]
    history = pd.read_csv(weights.parent / "train_log.csv")
    assert history["iteration"].tolist() == [1, 2] and np.isfinite(history["loss_per_click"]).all()
    assert info["iterations"] == 2


def _predict(root, weights, out_name, **method):
    """predict_sam3d on ``root``'s test split; ``method``: keys over the tiny defaults."""
    from medsegflow.sam3d.predict import predict_sam3d

    spec = {"family": "sam3d", "spec": "tiny", "clicks": CLICKS, "weights": "w", **method}
    out = root / "predictions" / out_name
    job = PredictJob(
        method=complete_method(spec, out_name),  # as the prediction stage: defaults filled
        method_name="sam3d_tiny",
        inputs={
            "preprocessed": str(root / "pre" / "manifest.tsv"),
            "data": str(root / "data" / "cases.tsv"),
            "checkpoint": str(weights),
        },
        out_dir=out,
        splits=("test",),
        seed=0,
        device="cpu",
    )
    return out, predict_sam3d(job)


@pytest.fixture(scope="module")
def predicted(dataset, trained):
    return _predict(dataset, trained[0], "sam3d_tiny")


def test_prediction_keeps_every_click_and_the_last_is_the_prediction(dataset, predicted):
    out, manifest = predicted
    assert manifest["case_id"].tolist() == ["c3"]
    final = read_volume(out / "c3.nii.gz")
    assert final.array_zyx.shape == SHAPE and final.geometry.matches(GEOMETRY)
    volumes, clicks, first = read_click_volumes(click_volumes_path(out, "c3"), SHAPE)
    assert first == 1 and volumes.shape == (CLICKS["n"], *SHAPE)
    np.testing.assert_array_equal(volumes[-1], final.array_zyx)
    assert set(np.unique(volumes)) <= {0, 1, 2}
    # one first click per object, on the object (its distance-transform centre), positive
    label = read_volume(dataset / "pre" / "labels" / "c3.nii.gz").array_zyx
    firsts = clicks[clicks["click"] == 1].set_index("label")
    assert sorted(firsts.index) == [1, 2] and (firsts["positive"] == 1).all()
    for value, row in firsts.iterrows():
        assert label[row["z"], row["y"], row["x"]] == value
    assert clicks.groupby("label")["click"].max().le(CLICKS["n"]).all()
    assert manifest["n_prompts"].iloc[0] == len(clicks)
    assert manifest[["n_windows", "window_seconds"]].values.tolist() == [[0, 0.0]]
    # the run's torchio and the 1.5 mm grid it implies (docs/conformance.md)
    import torchio

    assert manifest["torchio"].tolist() == [torchio.__version__]
    assert manifest["grid_rule"].tolist() == ["floor_centred"]  # torchio >= 0.20.11


def test_per_click_scores_use_the_one_metric_module(dataset, predicted):
    out, _ = predicted
    rows = score_clicks(
        predictions_manifest=out / "manifest.tsv",
        preprocessed_manifest=dataset / "pre" / "manifest.tsv",
        dataset="d",
        method="sam3d_tiny",
        nsd_tolerance_mm=2.0,
    )
    assert list(rows.columns) == list(CLICK_COLUMNS)
    assert len(rows) == 2 * CLICKS["n"] and rows["click"].tolist()[:2] == [1, 1]
    assert rows["dsc"].between(0, 1).all() and (rows["distance_unit"] == "mm").all()
    metrics = {"splits": ["test"], "nsd_tolerance_mm": 2.0, "reference": "cleaned"}
    final = score_predictions(
        dataset="d",
        method="sam3d_tiny",
        predictions_manifest=out / "manifest.tsv",
        preprocessed_manifest=dataset / "pre" / "manifest.tsv",
        metrics=metrics,
        out_csv=dataset / "m.csv",
    )
    last = rows[rows["click"] == CLICKS["n"]].set_index("label_name")["dsc"]
    assert last.to_dict() == pytest.approx(final.set_index("label_name")["dsc"].to_dict())
    (out / "clicks" / "c3.npz").write_bytes(b"not an archive")
    with pytest.raises(InputError, match="c3.npz"):
        score_clicks(
            predictions_manifest=out / "manifest.tsv",
            preprocessed_manifest=dataset / "pre" / "manifest.tsv",
            dataset="d",
            method="sam3d_tiny",
            nsd_tolerance_mm=2.0,
        )


def test_tables_average_cases_and_integrate_the_curves():
    rows = []
    for case, dscs in (("a", [0.2, 0.6, 0.8]), ("b", [0.4, 0.4, 1.0])):
        for click, dsc in enumerate(dscs, start=1):
            for label, name in ((1, "organ"), (2, "lesion")):
                rows.append(
                    {"dataset": "d", "method": "m", "case_id": case, "label": label,
                     "label_name": name, "click": click, "dsc": dsc if label == 1 else dsc / 2,
                     "nsd": 1.0, "distance_unit": "mm"}
                )  # fmt: skip
    curves, auc = clicks_tables(pd.DataFrame(rows))
    organ = curves[curves["label_name"] == "organ"].set_index("click")["dsc"]
    assert organ.to_dict() == pytest.approx({1: 0.3, 2: 0.5, 3: 0.9})
    auc = auc.set_index("label_name")
    # per case: (0.2 + 2 * 0.6 + 0.8) / 2 = 1.1 and (0.4 + 0.8 + 1.0) / 2 = 1.1
    assert auc.loc["organ", "dsc_auc"] == pytest.approx(1.1)
    assert auc.loc["lesion", "dsc_auc"] == pytest.approx(0.55)
    assert auc.loc[ALL_CLASSES, "dsc_auc"] == pytest.approx(0.825)
    assert auc.loc["organ", "dsc_final"] == pytest.approx(0.9)
    assert auc.loc["organ", "n_cases"] == 2 and auc.loc["organ", "n_clicks"] == 3
    assert curve_auc([0.5]) == 0.0 and curve_auc([0.0, 1.0, 1.0, 1.0, 1.0]) == pytest.approx(3.5)


def _config(**method) -> dict:
    return {
        "datasets": {"ct": {}},
        "weights": {"turbo": "/nowhere/sam_med3d_turbo.pth"},
        "methods": {"m3d": {"family": "sam3d", **method}},
    }


def test_config_checks_name_the_key_and_missing_weights_name_the_source(monkeypatch):
    with pytest.raises(ConfigError, match="methods.m3d: give either weights"):
        family.check_sam3d(_config(weights="turbo", train={"datasets": ["ct"]}))
    with pytest.raises(ConfigError, match="methods.m3d: give either weights"):
        family.check_sam3d(_config())
    with pytest.raises(ConfigError, match="methods.m3d.weights: 'turbo2'"):
        family.check_sam3d(_config(weights="turbo2"))
    with pytest.raises(ConfigError, match="methods.m3d.train.datasets: unknown dataset 'mr'"):
        family.check_sam3d(_config(train={"datasets": ["mr"]}))
    config = _config(weights="turbo")
    (line,) = family.missing_sam3d_weights(config)
    assert line.startswith("weights.turbo: file not found at /nowhere/sam_med3d_turbo.pth")
    assert "sam_med3d_turbo.pth" in line and "uni-medical/SAM-Med3D" in line
    assert family.weights_file(config, "m3d") == "/nowhere/sam_med3d_turbo.pth"
    trained = _config(train={"datasets": ["ct"]})
    assert family.weights_file(trained, "m3d") == "results/models/sam3d/m3d/sam3d.pth"
    assert family.missing_sam3d_weights(trained) == []


# --- objects larger than one crop: sliding windows --------------------------------------


def test_windows_are_off_by_default_and_the_study_enables_them(repo_root):
    import yaml

    from medsegflow.config import load_config

    assert complete_method({"family": "sam3d", "weights": "w"}, "m3d")["windows"] == {
        "enabled": False,
        "min_overlap": 0.25,
    }
    on = complete_method({"family": "sam3d", "weights": "w", "windows": {"enabled": True}}, "m")
    assert on["windows"] == {"enabled": True, "min_overlap": 0.25}
    for bad, match in (
        ({"min_overlap": 0.95}, r"methods\.m3d\.windows\.min_overlap"),
        ({"min_overlap": -0.1}, r"methods\.m3d\.windows\.min_overlap"),
        ({"enabled": "yes"}, r"methods\.m3d\.windows\.enabled"),
        ({"overlap": 0.5}, r"methods\.m3d\.windows"),
    ):
        with pytest.raises(ConfigError, match=match):
            complete_method({"family": "sam3d", "weights": "w", "windows": bad}, "m3d")
    with open(repo_root / "experiments" / "sammed3d.yaml", encoding="utf-8") as handle:
        config = load_config(yaml.safe_load(handle))
    assert config["methods"]["sammed3d_turbo"]["windows"] == {"enabled": True, "min_overlap": 0.25}


LONG_SHAPE = (16, 24, 110)  # x: 110 voxels of 1.5 mm, the object 100 (> the 64-voxel crop)


@pytest.fixture(scope="module")
def long_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("sam3d_long")
    label = np.zeros(LONG_SHAPE, np.uint8)
    label[4:12, 6:18, 5:105] = 1
    label[5:11, 8:16, 45:55] = 2  # inside 1's box; fits in one crop
    hu = np.where(label == 1, 80.0, np.where(label == 2, 160.0, -40.0))
    hu = hu + np.random.default_rng(1).normal(0, 8, LONG_SHAPE)
    geometry = Geometry((1.5, 1.5, 1.5))
    case = CanonicalCase(
        "long", "test", "CT", Volume(hu.astype(np.int16), geometry), Volume(label, geometry)
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
    return root


def _x_extent(mask_zyx):
    xs = np.flatnonzero(np.asarray(mask_zyx).any(axis=(0, 1)))
    return int(xs[-1] - xs[0] + 1) if xs.size else 0


def test_predictor_windows_a_long_object_and_reports_the_cost(long_dataset, trained):
    weights, _ = trained
    runs = {
        enabled: _predict(long_dataset, weights, f"w{int(enabled)}", windows={"enabled": enabled})
        for enabled in (False, True)
    }
    volumes, finals = {}, {}
    for enabled, (out, _) in runs.items():
        finals[enabled] = read_volume(out / "long.nii.gz").array_zyx
        volumes[enabled], _, _ = read_click_volumes(click_volumes_path(out, "long"), LONG_SHAPE)
        np.testing.assert_array_equal(volumes[enabled][-1], finals[enabled])  # nii = last click
        written = pd.read_csv(out / "manifest.tsv", sep="\t")
        assert list(written.columns) == list(WRITTEN_COLUMNS)  # the shared manifest
    off, on = runs[False][1], runs[True][1]
    assert off[["n_windows", "window_seconds"]].values.tolist() == [[0, 0.0]]
    assert on["n_windows"].tolist() == [2] and on["window_seconds"].iloc[0] > 0
    # one 64-voxel crop (96 mm = 64 voxels here) limits the object's prediction; windows not
    assert 0 < _x_extent(finals[False] == 1) <= 64 < _x_extent(finals[True] == 1)
    np.testing.assert_array_equal(volumes[True][:-1], volumes[False][:-1])


def test_windows_leave_objects_that_fit_unchanged(dataset, trained):
    # (own runs: test_per_click_scores_use_the_one_metric_module spoils the shared click file)
    runs = [
        _predict(dataset, trained[0], f"fit_w{int(on)}", windows={"enabled": on})
        for on in (False, True)
    ]
    (out_off, _), (out_on, manifest) = runs
    assert manifest[["n_windows", "window_seconds"]].values.tolist() == [[0, 0.0]]
    np.testing.assert_array_equal(
        read_volume(out_on / "c3.nii.gz").array_zyx, read_volume(out_off / "c3.nii.gz").array_zyx
    )
    on = read_click_volumes(click_volumes_path(out_on, "c3"), SHAPE)
    off = read_click_volumes(click_volumes_path(out_off, "c3"), SHAPE)
    np.testing.assert_array_equal(on[0], off[0])
    pd.testing.assert_frame_equal(on[1], off[1])
