"""Prompts drawn from (coarse) label volumes: make_mask_prompts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medsegflow.errors import ConfigError, InputError
from medsegflow.io import Geometry, Volume, write_volume
from medsegflow.manifests import MANIFEST_COLUMNS, PROMPT_COLUMNS, parse_points, read_prompts
from medsegflow.promptable.predict2d import row_prompt
from medsegflow.stages.prompts import make_mask_prompts, make_prompts

SHAPE = (4, 32, 40)


def _masks(root):
    """Coarse masks of two cases and their manifest: vol01 has label 1 on z 0 (two
    components) and z 3, label 2 on z 3; empty02 is all background."""
    label = np.zeros(SHAPE, np.uint8)
    label[0, 4:10, 6:15] = 1  # rows 4..9, columns 6..14
    label[0, 20:23, 30:33] = 1  # a second, smaller component
    label[3, 10:25, 10:30] = 1
    label[3, 14:18, 15:19] = 2
    geometry = Geometry((0.7, 0.7, 2.0))
    write_volume(root / "coarse" / "vol01.nii.gz", Volume(label, geometry))
    write_volume(root / "coarse" / "empty02.nii.gz", Volume(np.zeros(SHAPE, np.uint8), geometry))
    pd.DataFrame(
        [("vol01", "test", 3, 0, 0.1), ("empty02", "val", 2, 2, 0.1)],
        columns=["case_id", "split", "n_targets", "n_empty", "seconds"],
    ).to_csv(root / "coarse" / "manifest.tsv", sep="\t", index=False)
    return label


def _make(root, prompt, **kwargs):
    return make_mask_prompts(
        mask_dir=root / "coarse",
        cases_manifest=root / "coarse" / "manifest.tsv",
        out_path=root / "prompts.tsv",
        prompt=prompt,
        seed=kwargs.pop("seed", 0),
        prompt_name=kwargs.pop("prompt_name", "tp"),
        **kwargs,
    )


def test_boxes_are_the_exact_tight_boxes_without_jitter(tmp_path):
    _masks(tmp_path)
    table = _make(tmp_path, {"type": "box"})
    assert list(table.columns) == list(PROMPT_COLUMNS)
    assert table[
        ["case_id", "split", "z", "label", "prompt_id", "repeat", "component"]
    ].values.tolist() == [
        ["vol01", "test", 0, 1, 0, 0, -1],
        ["vol01", "test", 3, 1, 1, 0, -1],
        ["vol01", "test", 3, 2, 2, 0, -1],
    ]
    boxes = table[["x_min", "y_min", "x_max", "y_max"]].to_numpy()
    np.testing.assert_array_equal(
        boxes, [[6, 4, 32, 22], [10, 10, 29, 24], [15, 14, 18, 17]]
    )  # union of both components on z 0
    assert (table["points"] == "[]").all()
    read = read_prompts(tmp_path / "prompts.tsv")
    pd.testing.assert_frame_equal(read, table, check_dtype=False)
    for row in read.to_dict("records"):
        prompt = row_prompt(row, source="prompts.tsv")  # the SAM family reads the rows
        np.testing.assert_array_equal(prompt.box_xyxy, [row[c] for c in PROMPT_COLUMNS[7:11]])
        assert prompt.points_xyl.shape == (0, 3)


def test_each_component_points_and_repeats(tmp_path):
    label = _masks(tmp_path)
    prompt = {
        "type": "box_points",
        "components": "each",
        "n_positive": 3,
        "n_negative": 2,
        "repeats": 2,
        "jitter": 20,
    }
    table = _make(tmp_path, prompt)
    # z 0: 2 components, z 3: label 1 and label 2 -> 4 objects, 2 repeats each
    assert len(table) == 8
    assert table.groupby("prompt_id")["repeat"].apply(list).tolist() == [[0, 1]] * 4
    assert table["component"].tolist() == [0, 0, 1, 1, 0, 0, 0, 0]
    for row in table.to_dict("records"):
        points = parse_points(row["points"])
        assert points[:, 2].tolist() == [1, 1, 1, 0, 0]
        on_label = label[row["z"]][points[:, 1], points[:, 0]] == row["label"]
        assert on_label[:3].all() and not on_label[3:].any()
        prompt_ = row_prompt(row, source="prompts.tsv")
        assert prompt_.box_xyxy is not None and len(prompt_.points_xyl) == 5
    first = table[table["component"] == 0].iloc[0]
    box = first[["x_min", "y_min", "x_max", "y_max"]].to_numpy(dtype=float)
    assert (box[:2] <= [6, 4]).all() and (box[2:] >= [14, 9]).all()  # outward only
    assert not np.array_equal(box, [6, 4, 14, 9])  # jitter 20 is kept
    again = _make(tmp_path, prompt)
    pd.testing.assert_frame_equal(again, table)  # seeded per case
    other = _make(tmp_path, prompt, seed=1)
    assert not other["points"].equals(table["points"])


def test_points_only_and_the_same_sampling_as_gt_prompts(tmp_path):
    """Masks that are a dataset's cleaned labels give exactly its GT prompts."""
    label = _masks(tmp_path)
    pre = tmp_path / "pre"
    write_volume(pre / "labels" / "vol01.nii.gz", Volume(label))
    write_volume(pre / "labels" / "empty02.nii.gz", Volume(np.zeros(SHAPE, np.uint8)))
    (pre / "labels.json").write_text(
        json.dumps({"background": 0, "organ": 1, "lesion": 2}), encoding="utf-8"
    )
    rows = [
        {c: 0 for c in MANIFEST_COLUMNS} | {"case_id": c, "split": s, "modality": "CT"}
        for c, s in (("vol01", "test"), ("empty02", "val"))
    ]
    pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_csv(
        pre / "manifest.tsv", sep="\t", index=False
    )
    prompt = {"type": "points", "n_positive": 2, "n_negative": 1, "jitter": 20}
    gt = make_prompts(
        preprocessed_dir=pre, out_path=tmp_path / "gt.tsv", prompt=prompt, seed=3, prompt_name="p"
    )
    masks = make_mask_prompts(
        mask_dir=pre / "labels",
        cases_manifest=pre / "manifest.tsv",
        out_path=tmp_path / "m.tsv",
        prompt=prompt,
        seed=3,
        prompt_name="p",
    )
    pd.testing.assert_frame_equal(masks, gt)
    assert masks[["x_min", "y_min", "x_max", "y_max"]].isna().all().all()
    assert (tmp_path / "m.tsv").read_text(encoding="utf-8") == (tmp_path / "gt.tsv").read_text(
        encoding="utf-8"
    )


def test_empty_masks_give_no_rows_and_errors_name_the_key(tmp_path):
    _masks(tmp_path)
    write_volume(tmp_path / "coarse" / "vol01.nii.gz", Volume(np.zeros(SHAPE, np.uint8)))
    table = _make(tmp_path, None)
    assert table.empty and list(table.columns) == list(PROMPT_COLUMNS)
    assert read_prompts(tmp_path / "prompts.tsv").empty
    prefix = "methods.t.sam_prompts"
    for prompt, key in (
        ({"type": "mask"}, "type"),
        ({"source": "gt"}, "source"),  # no source: the masks are the source
        ({"jitter": -1}, "jitter"),
        ({"repeats": 0}, ""),
    ):
        with pytest.raises(ConfigError, match=rf"^{prefix}\.?{key}"):
            _make(tmp_path, prompt, key_prefix=prefix)
    with pytest.raises(ConfigError, match=r"^prompts\.tp\.type"):
        _make(tmp_path, {"type": "mask"})
    (tmp_path / "coarse" / "empty02.nii.gz").unlink()
    with pytest.raises(InputError, match=r"empty02\.nii\.gz: file not found"):
        _make(tmp_path, {})
