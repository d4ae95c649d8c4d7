"""The generic 3D interactive protocol (medsegflow.promptable.volume_protocol) with a small
numpy model: clicks, steps, prompt sets, the user's own frame, the per-case table."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from medsegflow.datasets.canonical import CanonicalCase, write_canonical_dataset
from medsegflow.errors import ConfigError
from medsegflow.interactive import click_volumes_path, read_click_volumes
from medsegflow.io import Geometry, Volume, read_volume, write_csv_atomic
from medsegflow.manifests import PROMPT_COLUMNS
from medsegflow.prediction.job import PredictJob
from medsegflow.promptable import volume_protocol as vp
from medsegflow.promptable.interface import Interaction, PromptableModel, UserFrame, VolumeSession
from medsegflow.prompts import clicks as click_rules
from medsegflow.stages.preprocess import preprocess_dataset

SHAPE = (10, 24, 26)
GEOMETRY = Geometry((1.0, 1.0, 2.0))


def _cube(mask: np.ndarray, zyx, value: bool, r: int = 2) -> None:
    z, y, x = zyx
    mask[max(z - r, 0) : z + r + 1, max(y - r, 0) : y + r + 1, max(x - r, 0) : x + r + 1] = value


class CubeSession(VolumeSession):
    """A click adds (positive) or removes (negative) a 5-voxel cube around it; a box3d
    sets the mask to the box shrunk by one voxel. ``pad``: the user's frame is the grid
    padded by one voxel on every side (as a model's crop reaching beyond the image)."""

    def __init__(self, shape, pad: bool = False) -> None:
        self.shape, self.pad = shape, pad
        self.mask = np.zeros(shape, bool)
        self.seen: list[Interaction] = []
        self.n_interactions = 0

    def reset(self) -> None:
        self.mask = np.zeros(self.shape, bool)
        self.started = False

    def interact(self, interaction: Interaction) -> np.ndarray:
        self.seen.append(interaction)
        self.n_interactions += 1
        self.started = True
        if interaction.kind == "box3d":
            z0, y0, x0, z1, y1, x1 = interaction.box_zyxzyx
            self.mask[:] = False
            self.mask[z0 + 1 : z1, y0 + 1 : y1, x0 + 1 : x1] = True
            return self.mask.copy()
        if interaction.frame_index is not None and self.pad:
            zyx = tuple(v - 1 for v in interaction.frame_index)  # back from the padded frame
        else:
            zyx = interaction.point_zyx
        _cube(self.mask, zyx, interaction.positive)
        return self.mask.copy()

    def user_frame(self, reference_zyx: np.ndarray) -> UserFrame | None:
        if not self.pad:
            return None
        return UserFrame(
            reference=np.pad(reference_zyx, 1),
            prediction=np.pad(self.mask, 1) if self.started else None,
            to_original=lambda index: np.asarray(index, dtype=np.float64).reshape(-1, 3) - 1,
        )

    def cost(self) -> dict[str, float]:
        return {"n_interactions": self.n_interactions}


class CubeModel(PromptableModel):
    kind = "cube"
    dims = 3
    native_prompts: ClassVar[frozenset[str]] = frozenset({"points3d", "box3d"})

    def __init__(self, pad: bool = False) -> None:
        self.pad = pad
        self.sessions: list[CubeSession] = []

    @classmethod
    def build(cls, spec, checkpoint, *, device=None, precision="auto"):
        return cls()

    def describe(self):
        return {"kind": self.kind}

    def start_session(self, image_zyx, *, spacing_zyx, geometry=None):
        assert geometry is not None and tuple(geometry.spacing_zyx) == tuple(spacing_zyx)
        self.sessions.append(CubeSession(image_zyx.shape, pad=self.pad))
        return self.sessions[-1]


class BoxOnlyModel(CubeModel):
    native_prompts: ClassVar[frozenset[str]] = frozenset({"box3d"})


def _reference() -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    label[2:8, 3:14, 4:16] = 1
    label[3:7, 16:22, 18:24] = 2
    return label


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("volume_protocol")
    label = _reference()
    rng = np.random.default_rng(0)
    image = (label * 50 + rng.normal(0, 5, SHAPE)).astype(np.int16)
    write_canonical_dataset(
        [CanonicalCase("v1", "test", "CT", Volume(image, GEOMETRY), Volume(label, GEOMETRY))],
        label_map={"background": 0, "a": 1, "b": 2},
        out_dir=root / "data",
    )
    preprocess_dataset(
        data_dir=root / "data",
        out_dir=root / "pre",
        cleaning={"min_voxels_3d": 0, "min_pixels_2d": 0},
        n_empty_slices=0,
        seed=0,
    )
    return root


def _job(root, name: str, prompts=None) -> PredictJob:
    inputs = {
        "preprocessed": str(root / "pre" / "manifest.tsv"),
        "data": str(root / "data" / "cases.tsv"),
    }
    if prompts is not None:
        inputs["prompts"] = str(prompts)
    return PredictJob(
        method={"family": "cube"},
        method_name=name,
        inputs=inputs,
        out_dir=root / "pred" / name,
        splits=("test",),
        seed=0,
    )


def _dsc(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_simulated_first_click_then_corrective_clicks(dataset):
    model = CubeModel()
    job = _job(dataset, "sim")
    manifest = vp.predict_volume_sessions(job, model, options=vp.ClickOptions(n_clicks=4))
    label = read_volume(dataset / "pre" / "labels" / "v1.nii.gz").array_zyx
    final = read_volume(job.out_dir / "v1.nii.gz").array_zyx
    volumes, clicks, first = read_click_volumes(click_volumes_path(job.out_dir, "v1"), SHAPE)
    assert first == 1 and volumes.shape == (5, *SHAPE)
    np.testing.assert_array_equal(volumes[-1], final)
    # the first click of each object is its distance-transform centre, positive
    for value in (1, 2):
        row = clicks[(clicks["label"] == value) & (clicks["click"] == 1)].iloc[0]
        expected = click_rules.first_click(label == value, mode="center")
        assert [row["z"], row["y"], row["x"], row["positive"]] == expected.tolist()
    # every corrective click is the simulated user's next click on the previous step
    session = model.sessions[0]
    for _, row in clicks[clicks["click"] > 1].iterrows():
        value = row["label"]
        assert label[row["z"], row["y"], row["x"]] == value or row["positive"] == 0
    assert manifest["n_prompts"].tolist() == [len(clicks)]
    assert manifest["n_interactions"].tolist() == [len(session.seen)] == [len(clicks)]
    dscs = [_dsc(volumes[k] == 1, label == 1) for k in range(5)]
    assert dscs[-1] > dscs[0]  # the corrections help this model


def test_user_frame_clicks_are_the_same_clicks(dataset):
    """A session whose user frame is padded gets the same clicks (as frame indices) and
    so the same masks and click table as one on the original grid."""
    label = _reference()
    options = vp.ClickOptions(n_clicks=3)
    results = []
    for pad in (False, True):
        objects = vp.case_objects(label, None, CubeModel.native_prompts, source="-")
        session = CubeSession(SHAPE, pad=pad)
        volumes, table, runs = vp.segment_volume(session, label, objects, options=options, rng=None)
        results.append((volumes, table, session.seen))
        if pad:
            assert all(i.frame_index is not None for i in session.seen)
            assert [tuple(v - 1 for v in i.frame_index) for i in session.seen] == [
                i.point_zyx for i in session.seen
            ]
    (v0, t0, _), (v1, t1, _) = results
    np.testing.assert_array_equal(v0, v1)
    pd.testing.assert_frame_equal(t0, t1)
    assert len(t0) > 2 and (t0["positive"] == 0).any()  # corrections of both signs


def test_perfect_masks_repeat_and_objects_outside_the_frame_are_skipped():
    label = np.zeros(SHAPE, np.uint8)
    label[3:8, 3:8, 3:8] = 1  # the first click's 5-cube is the object
    label[5, 20, 20] = 3

    class Hidden(CubeSession):
        def user_frame(self, reference_zyx):  # label 3 is not visible in this frame
            ref = reference_zyx & (np.arange(SHAPE[2]) < 18)[None, None]
            return UserFrame(ref, self.mask if self.started else None, vp._identity)

    session = Hidden(SHAPE)
    objects = vp.case_objects(label, None, CubeModel.native_prompts, source="-")
    volumes, table, runs = vp.segment_volume(
        session, label, objects, options=vp.ClickOptions(n_clicks=6), rng=None
    )
    assert [r.skipped for r in runs] == [False, True]
    assert volumes.shape[0] == 7 and not (volumes == 3).any()
    assert len(runs[0].clicks) == len(table) == 1  # then the mask is the reference ...
    assert (volumes[0] == label * (label == 1)).all()
    for k in range(1, 7):  # ... no click is added and the mask repeats
        np.testing.assert_array_equal(volumes[k], volumes[0])


def _prompts(root, rows) -> str:
    table = pd.DataFrame(rows).reindex(columns=list(PROMPT_COLUMNS))
    path = root / "prompts.tsv"
    write_csv_atomic(table, path, sep="\t")
    return path


def test_prompt_set_gives_the_first_interaction(dataset):
    rows = [
        {"case_id": "v1", "split": "test", "z": 5, "label": 1, "prompt_id": 0, "repeat": 0,
         "component": -1, "x_min": 3.6, "y_min": 2.2, "x_max": 16.4, "y_max": 14.0,
         "points": "[]", "z_min": 1, "z_max": 8},
        {"case_id": "v1", "split": "test", "z": 5, "label": 1, "prompt_id": 0, "repeat": 1,
         "component": -1, "x_min": 4.0, "y_min": 2.0, "x_max": 16.0, "y_max": 14.0,
         "points": "[]", "z_min": 1, "z_max": 8},
        {"case_id": "v1", "split": "test", "z": 5, "label": 2, "prompt_id": 1, "repeat": 0,
         "component": -1, "x_min": float("nan"), "y_min": float("nan"),
         "x_max": float("nan"), "y_max": float("nan"), "points": "[[20, 18, 1]]",
         "z_min": 5, "z_max": 5},
    ]  # fmt: skip
    path = _prompts(dataset, rows)
    model = CubeModel()
    job = _job(dataset, "prompted", prompts=path)
    manifest = vp.predict_volume_sessions(job, model, options=vp.ClickOptions(n_clicks=2))
    volumes, clicks, first = read_click_volumes(click_volumes_path(job.out_dir, "v1"), SHAPE)
    assert first == 0 and volumes.shape[0] == 3
    seen = model.sessions[0].seen
    # box rounded outwards over its z range; the point on the row's slice
    assert seen[0] == Interaction(kind="box3d", box_zyxzyx=(1, 2, 3, 8, 14, 17))
    assert Interaction(kind="points3d", point_zyx=(5, 18, 20)) in seen
    assert set(clicks["click"]) <= {1, 2}
    assert manifest["n_prompts"].tolist() == [2 + len(clicks)]  # repeat 1 is not used
    with pytest.raises(ConfigError, match="model takes"):
        vp.predict_volume_sessions(
            _job(dataset, "no_points", prompts=path), BoxOnlyModel(), options=vp.ClickOptions(1)
        )
    with pytest.raises(ConfigError, match="methods.no_prompt.prompts: cube takes"):
        vp.predict_volume_sessions(
            _job(dataset, "no_prompt"), BoxOnlyModel(), options=vp.ClickOptions(1)
        )


def test_a_family_first_interaction_replaces_the_simulated_click(dataset):
    """first_interaction (e.g. an oracle scribble of the family's own) is step 0, as a
    prompt is, and its box3d is the object's box for finish."""
    boxes = []

    class Finishing(CubeModel):
        def start_session(self, image_zyx, *, spacing_zyx, geometry=None):
            session = super().start_session(image_zyx, spacing_zyx=spacing_zyx, geometry=geometry)
            session.finish = lambda box: boxes.append(box)  # records, keeps the mask
            return session

    model = Finishing()
    job = _job(dataset, "own_first")
    manifest = vp.predict_volume_sessions(
        job,
        model,
        options=vp.ClickOptions(n_clicks=2),
        first_interaction=lambda obj: [vp.reference_box(obj.reference_zyx)],
    )
    volumes, clicks, first = read_click_volumes(click_volumes_path(job.out_dir, "v1"), SHAPE)
    assert first == 0 and volumes.shape[0] == 3
    seen = model.sessions[0].seen
    label = _reference()
    assert seen[0] == vp.reference_box(label == 1) == boxes[0]
    assert boxes[1] == vp.reference_box(label == 2) and len(boxes) == 2
    assert set(clicks["click"]) <= {1, 2}
    assert manifest["n_prompts"].tolist() == [2 + len(clicks)]
