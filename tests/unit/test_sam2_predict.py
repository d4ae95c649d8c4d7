"""A sam2 method through the shared stages: the embedding stage caches the tiny SAM 2.1's
features (built by the family's model class), the family's predictor decodes 2D boxes
and propagates box3d rows by MedSAM2's protocol (video) or the harness's (harness)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam2_fixtures import write_tiny_sam2

from medsegflow.datasets.canonical import CanonicalCase, write_canonical_dataset
from medsegflow.families.registry import FAMILIES, complete_method
from medsegflow.io import Geometry, Volume, read_volume
from medsegflow.manifests import read_prompts
from medsegflow.prediction.job import PredictJob
from medsegflow.promptable.sam2_model import Sam2Promptable
from medsegflow.stages.embed import embed_dataset
from medsegflow.stages.preprocess import preprocess_dataset
from medsegflow.stages.prompts import make_prompts

torch.set_num_threads(1)
SHAPE = (5, 40, 48)
SPEC = {"family": "sam2", "overrides": ["++model.image_size=512"], "weights": "w"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("sam2_predict")
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[1:4, 10:28, 12:36] = 1
    rng = np.random.default_rng(5)
    hu = np.where(label > 0, 180.0, -60.0) + rng.normal(0, 20, SHAPE)
    geometry = Geometry((0.8, 0.8, 2.5), (0.0, 0.0, 0.0))
    case = CanonicalCase(
        "c1", "test", "CT", Volume(hu.astype(np.int16), geometry), Volume(label, geometry)
    )
    write_canonical_dataset([case], label_map={"background": 0, "organ": 1}, out_dir=root / "d")
    preprocess_dataset(
        data_dir=root / "d",
        out_dir=root / "pre",
        cleaning={"min_voxels_3d": 0, "min_pixels_2d": 0},
        n_empty_slices=0,
        seed=0,
    )
    config, checkpoint = write_tiny_sam2(root / "model")
    spec = {**SPEC, "config": str(config)}
    embed_dataset(
        preprocessed_dir=root / "pre",
        checkpoint=checkpoint,
        arch="sam2",
        family="sam2",
        spec=spec,
        out_dir=root / "emb",
        splits=["test"],
        batch_size=2,
        precision="fp32",
        device="cpu",
    )
    for name, kind in (("b3", "box3d"), ("b2", "box")):
        make_prompts(
            preprocessed_dir=root / "pre",
            out_path=root / f"{name}.tsv",
            prompt={"type": kind, "jitter": 0},
            seed=0,
            prompt_name=name,
        )
    inputs = {
        "preprocessed": root / "pre" / "manifest.tsv",
        "embeddings": root / "emb" / "manifest.tsv",
        "checkpoint": checkpoint,
    }
    model = Sam2Promptable.build(spec, checkpoint, device="cpu", precision="fp32")
    return {"root": root, "inputs": inputs, "model": model}


def _predict(workspace, prompts: str, name: str | None = None, **keys) -> np.ndarray:
    root = workspace["root"]
    name = name or f"{prompts}_{'_'.join(map(str, keys.values())) or 'default'}"
    method = complete_method({"family": "sam2", "model": "m", "prompts": prompts, **keys}, "m")
    job = PredictJob(
        method=method,
        method_name=name,
        inputs={**workspace["inputs"], "prompts": root / f"{prompts}.tsv"},
        out_dir=root / name,
        splits=("test",),
        seed=0,
    )
    FAMILIES["sam2"].predict(job)
    return read_volume(root / name / "c1.nii.gz").array_zyx


def test_video_propagation_is_the_models_own_from_the_rows_key_slice(workspace):
    (row,) = read_prompts(workspace["root"] / "b3.tsv").to_dict("records")
    assert (row["z"], row["z_min"], row["z_max"]) == (2, 1, 3)  # the middle slice
    labels = _predict(workspace, "b3", propagation="video")
    image = read_volume(workspace["root"] / "pre" / "images" / "c1.nii.gz").array_zyx
    box = np.array([row["x_min"], row["y_min"], row["x_max"], row["y_max"]])
    own = workspace["model"].propagate_from_key_slice(image, z=2, box_xyxy=box, z_range=(1, 3))
    for z in range(SHAPE[0]):
        want = own[z] if z in own else np.zeros(SHAPE[1:], bool)
        np.testing.assert_array_equal(labels[z] == 1, want, err_msg=f"slice {z}")
    assert labels[1:4].any() and not labels[0].any() and not labels[4].any()


def test_harness_propagation_and_2d_boxes_decode_the_cache(workspace):
    video = _predict(workspace, "b3", propagation="video")
    harness = _predict(workspace, "b3", propagation="harness")
    assert harness[1:4].any() and not harness[0].any()
    assert not np.array_equal(harness, video)  # a different protocol
    boxes = _predict(workspace, "b2")
    assert set(np.unique(boxes)) <= {0, 1} and boxes[1:4].any()
    # the key slice's box decoded alone is what the harness's propagation starts from
    np.testing.assert_array_equal(harness[2], boxes[2])
    # the choice is the job's model instance's: the class keeps its own protocol
    from medsegflow.families import sam2

    assert "key_slice_box" in sam2.FAMILY.promptable().native_prompts


def test_corrective_clicks_follow_the_video_protocol(workspace):
    from medsegflow.interactive import click_volumes_path, read_click_volumes

    video = _predict(workspace, "b3", propagation="video")
    clicked = _predict(workspace, "b3", name="b3_clicks", clicks3d={"n": 2, "mask_input": False})
    labels, clicks, _ = read_click_volumes(
        click_volumes_path(workspace["root"] / "b3_clicks", "c1"), SHAPE
    )
    assert len(labels) == 1 + len(clicks) and 1 <= len(clicks) <= 2  # propagation, clicks
    np.testing.assert_array_equal(labels[0], video)  # step 0: the video protocol
    np.testing.assert_array_equal(labels[-1], clicked)
