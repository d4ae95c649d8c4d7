from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medsegflow.datasets.canonical import CanonicalCase, image_path, write_canonical_dataset
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import Geometry, Volume, read_volume
from medsegflow.manifests import (
    BOX_COLUMNS,
    MANIFEST_COLUMNS,
    PROMPT_COLUMNS,
    SLICES_COLUMNS,
    parse_points,
    read_prompts,
)
from medsegflow.prediction.manifest import WRITTEN_COLUMNS
from medsegflow.stages.predict import predict_dataset
from medsegflow.stages.preprocess import preprocess_dataset
from medsegflow.stages.prompts import make_prompts

LABEL_MAP = {"background": 0, "organ": 1, "lesion": 2}
CLEANING = {"min_voxels_3d": 100, "min_pixels_2d": 20}
CT_GEOMETRY = Geometry((0.8, 0.8, 2.5), (10.0, -20.0, 5.0))
US_GEOMETRY = Geometry((0.3, 0.3, 1.0), (1.5, 2.5, 0.0))


def _disc(shape_yx, cy, cx, r) -> np.ndarray:
    yy, xx = np.mgrid[: shape_yx[0], : shape_yx[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _ct_case(case_id: str, split: str, seed: int) -> CanonicalCase:
    """8 x 48 x 48 CT: bright organ (label 1, slices 1..6) with a dark lesion (label 2,
    slices 2..5) in HU, plus a 5-voxel organ speck that 3D cleaning must remove."""
    label = np.zeros((8, 48, 48), dtype=np.uint8)
    organ, lesion = _disc((48, 48), 24, 22, 13), _disc((48, 48), 24, 22, 4)
    label[1:7][:, organ] = 1
    label[2:6][:, lesion] = 2
    label[3, 44, 40:45] = 1  # speck: 5 voxels
    hu = np.where(label == 1, 150.0, np.where(label == 2, -20.0, -100.0))
    hu += np.random.default_rng(seed).normal(0, 10, hu.shape)
    return CanonicalCase(
        case_id,
        split,
        "CT",
        Volume(hu.astype(np.int16), CT_GEOMETRY),
        Volume(label, CT_GEOMETRY),
        caption="organ with a lesion",
    )


def _us_case() -> CanonicalCase:
    """1 x 64 x 64 ultrasound-like image: dark lesion (label 2) in bright speckle."""
    lesion = _disc((64, 64), 30, 34, 9)
    rng = np.random.default_rng(5)
    image = np.where(lesion, 30.0, 140.0) + rng.normal(0, 12, lesion.shape)
    label = lesion.astype(np.uint8)[None] * 2
    return CanonicalCase(
        "us01",
        "test",
        "US",
        Volume(np.clip(image, 1, 255)[None].astype(np.float32), US_GEOMETRY),
        Volume(label, US_GEOMETRY),
        caption="hypoechoic lesion",
    )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    data = root / "data"
    write_canonical_dataset(
        [_ct_case("ct01", "test", 1), _ct_case("ct02", "train", 2), _us_case()],
        label_map=LABEL_MAP,
        out_dir=data,
    )
    pre = root / "pre"
    manifest = preprocess_dataset(
        data_dir=data, out_dir=pre, cleaning=CLEANING, n_empty_slices=1, seed=0
    )
    prompts_path = root / "prompts" / "box5" / "prompts.tsv"
    prompts = make_prompts(
        preprocessed_dir=pre,
        out_path=prompts_path,
        prompt={"source": "gt", "type": "box", "jitter": 5},
        seed=0,
        prompt_name="box5",
    )
    pred = root / "pred"
    predicted = predict_dataset(
        method={"family": "classical", "algorithm": "otsu", "prompts": "box5"},
        method_name="otsu",
        inputs={"preprocessed": pre / "manifest.tsv", "prompts": prompts_path},
        out_dir=pred,
        splits=["test"],
        seed=0,
    )
    return {
        "root": root,
        "data": data,
        "pre": pre,
        "manifest": manifest,
        "prompts_path": prompts_path,
        "prompts": prompts,
        "pred": pred,
        "predicted": predicted,
    }


def test_preprocess_outputs(pipeline):
    pre, data = pipeline["pre"], pipeline["data"]
    manifest = pd.read_csv(pre / "manifest.tsv", sep="\t", dtype={"case_id": str})
    assert tuple(manifest.columns) == MANIFEST_COLUMNS
    rows = manifest.set_index("case_id")
    assert rows.loc["ct01", "intensity"] == "window 40/400"
    assert rows.loc["us01", "intensity"] == "percentile 0.5-99.5"
    assert rows.loc["ct01", ["n_components_removed_3d", "voxels_removed"]].tolist() == [1, 5]
    assert rows.loc[
        "us01", ["n_components_removed_3d", "n_components_removed_2d", "voxels_removed"]
    ].tolist() == [0, 0, 0]
    assert json.loads((pre / "labels.json").read_text(encoding="utf-8")) == LABEL_MAP
    for case_id in ("ct01", "us01"):
        src = read_volume(data / "images" / f"{case_id}.nii.gz")
        for kind in ("images", "labels"):
            out = read_volume(pre / kind / f"{case_id}.nii.gz")
            assert out.array_zyx.dtype == np.uint8
            assert out.array_zyx.shape == src.array_zyx.shape
            assert out.geometry.matches(src.geometry)
    label = read_volume(pre / "labels" / "ct01.nii.gz").array_zyx
    assert label[3, 44, 40:45].sum() == 0 and (label == 2).sum() == 4 * 49
    slices = pd.read_csv(pre / "slices.tsv", sep="\t", dtype={"case_id": str})
    assert tuple(slices.columns) == SLICES_COLUMNS
    ct01 = slices[slices.case_id == "ct01"]
    assert sorted(ct01[ct01.kind == "foreground"].z) == [1, 2, 3, 4, 5, 6]
    assert ct01[ct01.kind == "empty"].z.isin([0, 7]).sum() == 1
    assert slices[slices.case_id == "us01"][["z", "kind"]].values.tolist() == [[0, "foreground"]]


def test_prompts_table(pipeline):
    prompts = read_prompts(pipeline["prompts_path"])
    assert tuple(prompts.columns) == PROMPT_COLUMNS
    per_case = prompts.groupby("case_id").size().to_dict()
    assert per_case == {"ct01": 6 + 4, "ct02": 6 + 4, "us01": 1}  # all splits
    label = read_volume(pipeline["pre"] / "labels" / "ct01.nii.gz").array_zyx
    for row in prompts[prompts.case_id == "ct01"].itertuples():
        ys, xs = np.nonzero(label[row.z] == row.label)
        assert row.x_min <= xs.min() and row.x_max >= xs.max()
        assert row.y_min <= ys.min() and row.y_max >= ys.max()
    again = make_prompts(
        preprocessed_dir=pipeline["pre"],
        out_path=pipeline["root"] / "again.tsv",
        prompt={"source": "gt", "type": "box", "jitter": 5},
        seed=0,
        prompt_name="box5",
    )
    pd.testing.assert_frame_equal(again, pipeline["prompts"])


def test_point_prompt_table_round_trips_and_respects_the_objects(pipeline):
    path = pipeline["root"] / "prompts" / "pts" / "prompts.tsv"
    made = make_prompts(
        preprocessed_dir=pipeline["pre"],
        out_path=path,
        prompt={
            "type": "points",
            "n_positive": 2,
            "n_negative": 1,
            "ring_px": [2, 6],
            "components": "each",
            "repeats": 2,
        },
        seed=0,
        prompt_name="pts",
    )
    table = read_prompts(path)
    pd.testing.assert_frame_equal(table, made)
    assert table[list(BOX_COLUMNS)].isna().all().all()  # points only: no box
    ct01 = table[table.case_id == "ct01"]
    assert len(ct01) == 2 * 10 and (ct01["component"] == 0).all()  # one component each
    assert ct01.groupby("prompt_id")["repeat"].apply(list).tolist() == [[0, 1]] * 10
    label = read_volume(pipeline["pre"] / "labels" / "ct01.nii.gz").array_zyx
    for row in ct01.itertuples():
        points = parse_points(row.points)
        np.testing.assert_array_equal(points[:, 2], [1, 1, 0])
        target = label[row.z] == row.label
        assert target[points[:2, 1], points[:2, 0]].all()
        assert not target[points[2, 1], points[2, 0]]
    # the classical family uses box rows only: nothing to segment here
    predicted = predict_dataset(
        method={"family": "classical", "algorithm": "otsu", "prompts": "pts"},
        method_name="otsu_pts",
        inputs={"preprocessed": pipeline["pre"] / "manifest.tsv", "prompts": path},
        out_dir=pipeline["root"] / "pred_pts",
        splits=["test"],
        seed=0,
    )
    assert predicted["n_prompts"].tolist() == [0, 0]
    assert not read_volume(pipeline["root"] / "pred_pts" / "ct01.nii.gz").array_zyx.any()


def test_predictions_keep_geometry_and_find_the_objects(pipeline):
    pred, data = pipeline["pred"], pipeline["data"]
    manifest = pd.read_csv(pred / "manifest.tsv", sep="\t", dtype={"case_id": str})
    assert tuple(manifest.columns) == WRITTEN_COLUMNS
    assert manifest["gpu_mem_mb"].isna().all()  # no GPU here
    assert manifest[["case_id", "split", "n_prompts"]].values.tolist() == [
        ["ct01", "test", 10],
        ["us01", "test", 1],
    ]
    assert not (pred / "ct02.nii.gz").exists()
    for case_id, labels in (("ct01", (1, 2)), ("us01", (2,))):
        src = read_volume(image_path(data, case_id))
        out = read_volume(pred / f"{case_id}.nii.gz")
        assert out.array_zyx.shape == src.array_zyx.shape
        np.testing.assert_allclose(out.geometry.spacing_xyz, src.geometry.spacing_xyz)
        np.testing.assert_allclose(out.geometry.origin_xyz, src.geometry.origin_xyz)
        np.testing.assert_allclose(out.geometry.direction, src.geometry.direction)
        truth = read_volume(data / "labels" / f"{case_id}.nii.gz").array_zyx
        for value in labels:
            p, t = out.array_zyx == value, truth == value
            dsc = 2 * (p & t).sum() / (p.sum() + t.sum())
            assert dsc > 0.85, (case_id, value, dsc)


def test_config_errors_name_the_key(pipeline, tmp_path):
    common = {
        "inputs": {
            "preprocessed": pipeline["pre"] / "manifest.tsv",
            "prompts": pipeline["prompts_path"],
        },
        "out_dir": tmp_path / "pred",
    }
    with pytest.raises(ConfigError, match=r"methods\.m\.family"):
        predict_dataset(method={}, method_name="m", **common, splits=["test"], seed=0)
    with pytest.raises(ConfigError, match=r"methods\.m\.bogus"):
        predict_dataset(
            method={"family": "classical", "algorithm": "otsu", "prompts": "p", "bogus": 1},
            method_name="m",
            **common,
            splits=["test"],
            seed=0,
        )
    with pytest.raises(ConfigError, match=r"prompts\.p\.source"):
        make_prompts(
            preprocessed_dir=pipeline["pre"],
            out_path=tmp_path / "p.tsv",
            prompt={"source": "saliency", "type": "box"},
            seed=0,
            prompt_name="p",
        )
    for bad, key in (
        ({"n_positive": -1}, "n_positive"),
        ({"ring_px": [4, 1]}, "ring_px"),
        ({"ring_px": [4]}, "ring_px"),
        ({"type": "points", "n_positive": 0}, "n_positive"),
        ({"components": "largest"}, "components"),
    ):
        with pytest.raises(ConfigError, match=rf"prompts\.p\b.*{key}"):
            make_prompts(
                preprocessed_dir=pipeline["pre"],
                out_path=tmp_path / "p.tsv",
                prompt={"type": "box", **bad},
                seed=0,
                prompt_name="p",
            )
    with pytest.raises(ConfigError, match=r"prompts\.p\.type"):
        make_prompts(
            preprocessed_dir=pipeline["pre"],
            out_path=tmp_path / "p.tsv",
            prompt={"type": "point"},
            seed=0,
            prompt_name="p",
        )
    pre = tmp_path / "pre"
    with pytest.raises(ConfigError, match=r"preprocess\.cleaning\.min_voxels"):
        preprocess_dataset(
            data_dir=pipeline["data"], out_dir=pre, cleaning={"min_voxels": 3}, seed=0
        )
    with pytest.raises(ConfigError, match=r"datasets\.data\.window: window 'lung'"):
        preprocess_dataset(data_dir=pipeline["data"], out_dir=pre, window="lung", seed=0)
    with pytest.raises(ConfigError, match=r"preprocess\.n_empty_slices"):
        preprocess_dataset(data_dir=pipeline["data"], out_dir=pre, n_empty_slices=-1, seed=0)
    assert not pre.exists()
    assert not (tmp_path / "pred").exists() and not (tmp_path / "p.tsv").exists()


def test_bad_prompt_values_name_the_file(pipeline, tmp_path):
    table = read_prompts(pipeline["prompts_path"])
    bad = tmp_path / "bad.tsv"
    table.assign(x_min=["abc"] + table["x_min"].tolist()[1:]).to_csv(bad, sep="\t", index=False)
    with pytest.raises(InputError, match=rf"{bad}: column x_min"):
        read_prompts(bad)
    with pytest.raises(InputError, match=r"p\.tsv: points '\[\[1, 2\]\]'"):
        parse_points("[[1, 2]]", source="p.tsv")
    with pytest.raises(InputError, match="label other than 0 or 1"):
        parse_points("[[1, 2, 3]]", source="p.tsv")
    np.testing.assert_array_equal(parse_points("[[4, 5, 1], [6, 7, 0]]"), [[4, 5, 1], [6, 7, 0]])
    assert parse_points("[]").shape == (0, 3)
