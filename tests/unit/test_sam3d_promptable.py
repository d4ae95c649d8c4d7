"""SAM-Med3D on the promptable interface: the family's model class, its session in the
generic 3D protocol, and the per-object resampling of the reference the session's user
frame relies on (equal to resampling the whole label map once, as before the port)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsegflow.families.registry import complete_method
from medsegflow.families.sam3d import FAMILY
from medsegflow.io import Geometry, Volume
from medsegflow.promptable import volume_protocol as vp
from medsegflow.promptable.interface import Interaction
from medsegflow.sam3d.preprocess import label_to_model, to_model_grid
from medsegflow.sam3d.promptable import Sam3dPromptable, Sam3dSession

# an oblique, flipped grid: the RAS canonical model frame reorders and flips its axes
OBLIQUE = Geometry(
    (1.3, 0.9, 2.5), (4.0, -7.0, 3.0), (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
)


def _case(geometry: Geometry = OBLIQUE):
    rng = np.random.default_rng(3)
    shape = (14, 36, 30)
    label = np.zeros(shape, np.uint8)
    label[3:10, 6:20, 5:17] = 1
    label[5:9, 22:31, 18:27] = 2
    label[12, 33, 28] = 3  # one voxel: gone at 1.5 mm on some grids
    hu = np.where(label > 0, 90.0 * label, -20.0) + rng.normal(0, 8, shape)
    return Volume(hu.astype(np.float32), geometry), Volume(label, geometry)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from medsegflow.sam3d.model import build_sam3d

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam3d_promptable") / "tiny.pth"
    torch.save({"model_state_dict": build_sam3d("tiny").state_dict()}, path)
    return path


@pytest.mark.parametrize("rule", ["torchio", "ceil_corner"])
def test_an_object_resampled_alone_is_the_label_map_resampled(rule):
    image, label = _case()
    grid = to_model_grid(image, label=label, resample_grid=rule)
    alone = to_model_grid(image, resample_grid=rule)
    np.testing.assert_array_equal(alone.image_ijk, grid.image_ijk)
    for value in (1, 2, 3):
        object_ijk = label_to_model(label.array_zyx == value, alone) > 0
        np.testing.assert_array_equal(object_ijk, grid.label_ijk == value)
    with pytest.raises(ValueError, match="differs from the grid"):
        label_to_model(label.array_zyx[1:], alone)


def test_the_family_names_its_model_and_builds_it_from_a_method(tiny_checkpoint):
    cls = FAMILY.promptable()
    assert cls is Sam3dPromptable and cls.dims == 3 and cls.native_prompts == {"points3d"}
    method = complete_method(
        {"family": "sam3d", "spec": "tiny", "weights": "w", "windows": {"enabled": True}}, "m"
    )
    model = cls.build(method, tiny_checkpoint, device="cpu")
    facts = model.describe()
    assert facts["family"] == "sam3d" and facts["image_size"] == 64
    assert facts["precision"] == "fp32" and facts["window_overlap"] == 0.25
    assert facts["grid_rule"] in ("floor_centred", "ceil_corner") and facts["torchio"]
    assert model.count_parameters() == sum(p.numel() for p in model.network.parameters())


def test_the_protocol_with_a_session_equals_the_pinned_object_path(tiny_checkpoint):
    """segment_volume with a Sam3dSession (the predictor's path: the session resamples each
    reference itself) gives the masks and clicks of segment_object on the whole label
    map's resampled values (the path before the port, and the conformance test's)."""
    from medsegflow.sam3d.infer import segment_object

    image, label = _case()
    model = Sam3dPromptable.build(
        complete_method({"family": "sam3d", "spec": "tiny", "weights": "w"}, "m"),
        tiny_checkpoint,
        device="cpu",
    )
    session = model.start_session(
        image.array_zyx, spacing_zyx=image.geometry.spacing_zyx, geometry=image.geometry
    )
    assert isinstance(session, Sam3dSession)
    objects = vp.case_objects(label.array_zyx, None, model.native_prompts, source="-")
    options = vp.ClickOptions(3, mode="random", first="center")
    painted, clicks, runs = vp.segment_volume(
        session, label.array_zyx, objects, options=options, rng=np.random.default_rng(5)
    )
    assert painted.shape == (4, *label.array_zyx.shape) and painted.dtype == np.uint8
    grid = to_model_grid(image, label=label)
    rng = np.random.default_rng(5)
    for obj, run in zip(objects, runs, strict=True):
        object_ijk = grid.label_ijk == obj.label
        assert run.skipped == (not object_ijk.any())
        if run.skipped:
            continue
        pinned = segment_object(
            model.network, grid, object_ijk, n_clicks=4, mode="random", first_mode="center",
            rng=rng, device="cpu",
        )  # fmt: skip
        for mask, old in zip(run.masks, pinned.masks, strict=True):
            np.testing.assert_array_equal(mask, old > 0)
        rows = clicks[clicks["label"] == obj.label]
        np.testing.assert_array_equal(
            rows[["z", "y", "x"]].to_numpy(), np.rint(pinned.clicks_zyx).astype(np.int64)
        )
        assert rows["positive"].tolist() == pinned.clicks_ijk[:, 3].tolist()
        # the first click is on the object, in original voxel indices (the one-voxel
        # object 3 is a model-frame voxel whose centre maps next to it)
        z, y, x = rows.iloc[0][["z", "y", "x"]]
        assert label.array_zyx[z, y, x] == obj.label or obj.label == 3
    assert session.cost()["encode_seconds"] > 0 and session.cost()["n_windows"] == 0


def test_a_click_in_original_voxels_and_other_prompt_kinds(tiny_checkpoint):
    image, label = _case(Geometry((1.5, 1.5, 1.5)))
    model = Sam3dPromptable.build(
        complete_method({"family": "sam3d", "spec": "tiny", "weights": "w"}, "m"),
        tiny_checkpoint,
        device="cpu",
    )
    session = model.start_session(image.array_zyx, spacing_zyx=(1.5, 1.5, 1.5))
    session.reset()
    mask = session.interact(Interaction(kind="points3d", point_zyx=(6, 12, 10)))
    assert mask.shape == label.array_zyx.shape and mask.dtype == bool
    record = session.records[-1]
    assert len(record.points_ijk) == 1 and record.points_ijk[0][3] == 1.0
    with pytest.raises(ValueError, match="points3d"):
        session.interact(Interaction(kind="box3d", box_zyxzyx=(0, 0, 0, 5, 5, 5)))
