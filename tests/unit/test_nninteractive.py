"""The nninteractive family: a tiny random model folder in the released layout, loaded by the
package's own loader through NnInteractiveModel.build, and the REAL inference session for
every prompt kind; bad folders; the simulated user's scribbles and lassos; the predictor."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from nninteractive_fixtures import write_tiny_model_folder

from medsegflow.datasets.canonical import CanonicalCase, write_canonical_dataset
from medsegflow.errors import ConfigError, InputError
from medsegflow.families import nninteractive as family
from medsegflow.families.registry import FAMILIES, complete_method
from medsegflow.interactive import click_volumes_path, read_click_volumes
from medsegflow.io import Geometry, Volume, read_volume, write_csv_atomic
from medsegflow.manifests import PROMPT_COLUMNS
from medsegflow.prediction.job import PredictJob
from medsegflow.promptable.interface import Interaction
from medsegflow.promptable.nninteractive_model import NnInteractiveModel
from medsegflow.stages.preprocess import preprocess_dataset

SHAPE = (20, 40, 44)
SPEC = {"autozoom": False}  # a random network zooms out to 4x on every prompt: minutes


@pytest.fixture(scope="session")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("nninteractive")
    return {
        "box3d": write_tiny_model_folder(root / "box3d", box3d=True),
        "legacy": write_tiny_model_folder(root / "legacy"),
    }


@pytest.fixture(scope="session")
def model(folders):
    return NnInteractiveModel.build(SPEC, folders["box3d"], device="cpu")


def _image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 1, SHAPE).astype(np.float32)
    image[6:14, 12:28, 14:30] += 3
    return image


def _channels(session, name: str) -> np.ndarray:
    """The package's interaction channels of ``name`` (positive, negative) as numpy."""
    positive, negative = session.channel_mapping[name]
    interactions = session.interactions
    return np.stack([np.asarray(interactions[positive]), np.asarray(interactions[negative])])


def test_build_loads_the_folder_with_the_package(model, folders):
    facts = model.describe()
    assert facts["trainer"] == "nnInteractiveTrainer_stub"
    assert facts["patch_size"] == [56, 56, 56] and facts["package"] == "2.6.0"
    assert facts["checkpoint"] == str(folders["box3d"] / "fold_0" / "checkpoint_final.pth")
    assert model.native_prompts == {"points3d", "box3d", "key_slice_box", "scribble", "lasso"}
    assert model.count_parameters() > 1000 and model.precision == "fp32"
    # the weights are the checkpoint's (loaded by the package, not re-initialised)
    import torch

    saved = torch.load(facts["checkpoint"], weights_only=False)["network_weights"]
    for name, value in model.session.network.state_dict().items():
        torch.testing.assert_close(value, saved[name], rtol=0, atol=0)


def test_every_prompt_kind_changes_the_target_buffer(model):
    """Each kind after a reset: the package's interaction channel holds exactly the prompt
    at the (z, y, x) voxels sent, the target buffer changes, and the returned mask is it."""
    session = model.start_session(_image(), spacing_zyx=(2.0, 1.0, 1.0))
    pkg = session.session
    scribble = np.zeros(SHAPE, bool)
    scribble[10, 16:24, 20:22] = True
    lasso = np.zeros(SHAPE, bool)
    lasso[9, 10:30, 12:32] = True
    cases = [
        (Interaction("points3d", point_zyx=(10, 20, 22)), "points", None),
        (Interaction("points3d", positive=False, point_zyx=(3, 5, 30)), "points", None),
        (Interaction("key_slice_box", box_xyxy=(14.0, 12.0, 29.0, 27.0), z=9), "bbox2d", None),
        (Interaction("box3d", box_zyxzyx=(6, 12, 14, 13, 27, 29)), "bbox3d", None),
        (Interaction("scribble", mask_zyx=scribble), "scribble", scribble),
        (Interaction("lasso", mask_zyx=lasso), "lasso", lasso),
    ]
    expected_boxes = {
        "bbox2d": (slice(9, 10), slice(12, 28), slice(14, 30)),
        "bbox3d": (slice(6, 14), slice(12, 28), slice(14, 30)),
    }
    for interaction, channel, drawn in cases:
        session.reset()
        assert not session.mask().any()
        mask = session.interact(interaction)
        buffer = pkg.target_buffer.numpy() > 0
        np.testing.assert_array_equal(mask, buffer)
        assert mask.any(), f"{interaction.kind}: the target buffer did not change"
        placed = _channels(pkg, channel)[0 if interaction.positive else 1] > 0
        if interaction.kind == "points3d":
            z, y, x = interaction.point_zyx
            assert placed[z, y, x] and placed.sum() > 1  # a ball of the point radius
            centre = np.argwhere(placed).mean(0)
            np.testing.assert_allclose(centre, (z, y, x), atol=0.5)
        elif drawn is None:
            box = np.zeros(SHAPE, bool)
            box[expected_boxes[channel]] = True
            np.testing.assert_array_equal(placed, box)
        else:
            np.testing.assert_array_equal(placed, drawn)
    # interactions accumulate within one object: a second click changes the first's mask
    session.reset()
    first = session.interact(Interaction("points3d", point_zyx=(10, 20, 22)))
    second = session.interact(Interaction("points3d", positive=False, point_zyx=(10, 14, 16)))
    assert (first != second).any()
    np.testing.assert_array_equal(second, pkg.target_buffer.numpy() > 0)
    cost = session.cost()
    assert cost["n_interactions"] == len(cases) + 2 and cost["interaction_seconds"] > 0
    session.close()


def test_legacy_folder_takes_no_3d_box(folders):
    legacy = NnInteractiveModel.build(SPEC, folders["legacy"], device="cpu")
    assert "box3d" not in legacy.native_prompts and "key_slice_box" in legacy.native_prompts
    session = legacy.start_session(_image(), spacing_zyx=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="declares no 3D boxes"):
        session.interact(Interaction("box3d", box_zyxzyx=(6, 12, 14, 13, 27, 29)))
    assert session.interact(Interaction("key_slice_box", box_xyxy=(14, 12, 29, 27), z=9)).any()


def _broken(folders, tmp_path, name):
    folder = tmp_path / name
    shutil.copytree(folders["legacy"], folder)
    return folder


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda f: shutil.rmtree(f), "{f}: nnInteractive model folder not found"),
        (lambda f: (f / "plans.json").unlink(), "{f}/plans.json: missing"),
        (lambda f: (f / "dataset.json").unlink(), "{f}/dataset.json: missing"),
        (lambda f: (f / "inference_session_class.json").unlink(), "{f}: nnInteractive model"),
        (
            lambda f: (f / "fold_0" / "checkpoint_final.pth").unlink(),
            "{f}/fold_0/checkpoint_final.pth: checkpoint not found",
        ),
        (lambda f: (f / "fold_1").mkdir(), "{f}: the fold is inferred only from exactly one"),
    ],
)
def test_bad_folder_is_one_line_naming_the_path(folders, tmp_path, damage, named):
    folder = _broken(folders, tmp_path, "broken")
    damage(folder)
    with pytest.raises(InputError) as err:
        NnInteractiveModel.build(SPEC, folder, device="cpu")
    message = str(err.value)
    assert "\n" not in message and message.startswith(named.format(f=folder)), message


def test_bad_checkpoint_is_one_line_naming_the_file(folders, tmp_path):
    import torch

    folder = _broken(folders, tmp_path, "keys")
    path = folder / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(path, weights_only=False)
    torch.save({k: v for k, v in checkpoint.items() if k != "network_weights"}, path)
    with pytest.raises(InputError, match=f"^{path}: not an nnU-Net/nnInteractive checkpoint"):
        NnInteractiveModel.build(SPEC, folder, device="cpu")
    checkpoint["network_weights"] = {
        k: v[..., :1] for k, v in checkpoint["network_weights"].items()
    }
    torch.save(checkpoint, path)
    with pytest.raises(InputError, match=f"^{path}: weights do not fit the network") as err:
        NnInteractiveModel.build(SPEC, folder, device="cpu", precision="auto")
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="fold_3: fold folder not found"):
        NnInteractiveModel.build({**SPEC, "fold": 3}, folder, device="cpu")


# --- the simulated user's oracle scribbles and lassos ----------------------------------


def _object() -> np.ndarray:
    reference = np.zeros(SHAPE, bool)
    reference[6:14, 12:28, 14:30] = True
    reference[11, 8:12, 14:30] = True  # slice 11 is the largest cross-section
    return reference


def test_oracle_scribble_is_a_thin_line_inside_the_error():
    reference = _object()
    scribble = family.oracle_scribble(reference, thickness=2)
    assert scribble.kind == "scribble" and scribble.positive and scribble.z == 11
    drawn = scribble.mask_zyx
    assert drawn.shape == SHAPE and drawn[11].any() and drawn.sum() == drawn[11].sum()
    assert not (drawn & ~reference).any()
    assert drawn.sum() < 0.3 * reference[11].sum()  # a line, not the cross-section
    # a false positive blob is corrected by a negative scribble through it
    prediction = reference.copy()
    prediction[2:5, 30:38, 30:40] = True
    negative = family.oracle_scribble(reference, prediction, slice_rule="middle")
    assert not negative.positive and negative.z == 3
    assert (negative.mask_zyx <= prediction & ~reference).all() and negative.mask_zyx.any()
    # a shifted prediction: the miss and the false positive touch, one error component;
    # the scribble keeps the sign of its deepest pixel and only pixels of that sign
    beside = np.zeros(SHAPE, bool)
    beside[6:14, 12:28, 30:40] = True  # touches the object's side: one error component
    scribble = family.oracle_scribble(reference, beside)
    assert scribble.positive and scribble.mask_zyx.any()
    assert (scribble.mask_zyx <= reference).all()  # none of it on the false positive
    with pytest.raises(ValueError, match="equals the reference"):
        family.oracle_scribble(reference, reference)


def test_oracle_lasso_encloses_the_cross_section():
    reference = _object()
    reference[11, 18, 20] = False  # a hole: the lasso is filled
    lasso = family.oracle_lasso(reference)
    assert lasso.kind == "lasso" and lasso.positive and lasso.z == 11
    assert (reference[11] <= lasso.mask_zyx[11]).all() and lasso.mask_zyx[11, 18, 20]
    assert lasso.mask_zyx.sum() == lasso.mask_zyx[11].sum()
    contour = family.oracle_lasso(reference, slice_rule="middle", shape="contour")
    assert contour.z == 10 and contour.mask_zyx[10].sum() == reference[10].sum()


# --- the family: config, weights, the predictor -----------------------------------------


def test_family_declaration_and_missing_weights(tmp_path):
    declared = FAMILIES["nninteractive"]
    assert declared.promptable() is NnInteractiveModel and declared.env == "nninteractive"
    method = complete_method({"family": "nninteractive", "weights": "nnint"}, "nni")
    assert method["clicks3d"] == {"n": 5, "first": "center", "mode": "center"}
    assert method["fold"] is None and method["checkpoint_name"] == "checkpoint_final.pth"
    assert method["autozoom"] is True and method["first_interaction"] == "prompts"
    config = {
        "weights": {"nnint": str(tmp_path / "nnInteractive_v1.0")},
        "methods": {"nni": method},
        "datasets": {"ct": {"methods": ["nni"]}},
    }
    lines = family.missing_nninteractive_weights({**config, "datasets": {}})
    assert lines == [] or all("weights.nnint" in line for line in lines)
    family.check_nninteractive(config)
    bad = {**config, "methods": {"nni": {**method, "weights": "other"}}}
    with pytest.raises(ConfigError, match=r"^methods.nni.weights: 'other' is not a key"):
        family.check_nninteractive(bad)
    oracle = {
        **config,
        "methods": {"nni": {**method, "first_interaction": "lasso", "prompts": "p"}},
    }
    with pytest.raises(ConfigError, match=r"^methods.nni.prompts: first_interaction lasso"):
        family.check_nninteractive(oracle)
    with pytest.raises(ConfigError, match="fold"):
        complete_method({"family": "nninteractive", "weights": "w", "fold": "two"}, "nni")


def test_missing_model_folder_names_key_path_and_source(tmp_path, monkeypatch):
    method = complete_method({"family": "nninteractive", "weights": "nnint"}, "nni")
    folder = tmp_path / "nnInteractive_v1.0"
    config = {"weights": {"nnint": str(folder)}, "methods": {"nni": method}}
    monkeypatch.setattr(family, "dataset_method_pairs", lambda c: [("ct", "nni")])
    (line,) = family.missing_nninteractive_weights(config)
    assert line.startswith(f"weights.nnint: {folder}: nnInteractive model folder not found")
    assert "(needed by methods.nni)" in line
    assert "Hugging Face MIC-DKFZ/nnInteractive" in line and "nnInteractive_v1.0" in line
    # a dry-run plans without the folder (the workflow drops it) and its checkpoint
    assert "checkpoint" not in family.FAMILY.inputs(config, "ct", "nni")
    folder.mkdir()
    (line,) = family.missing_nninteractive_weights(config)
    assert line.startswith(f"weights.nnint: {folder / 'plans.json'}: missing")
    write_tiny_model_folder(folder)
    assert family.missing_nninteractive_weights(config) == []
    inputs = family.FAMILY.inputs(config, "ct", "nni")
    assert inputs["model"] == str(folder)
    assert inputs["checkpoint"] == str(folder / "fold_0" / "checkpoint_final.pth")
    (folder / "fold_all").mkdir()  # two folds: fold: null is ambiguous
    (line,) = family.missing_nninteractive_weights(config)
    assert "the fold is inferred only from exactly one fold_* folder" in line
    config["methods"]["nni"] = {**method, "fold": "all"}
    (line,) = family.missing_nninteractive_weights(config)
    assert line.startswith(f"weights.nnint: {folder / 'fold_all' / 'checkpoint_final.pth'}")
    assert family.checkpoint_file(config, "nni") == str(
        folder / "fold_all" / "checkpoint_final.pth"
    )
    assert "checkpoint" not in family.FAMILY.inputs(config, "ct", "nni")  # not there yet


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("nninteractive_data")
    label = np.zeros(SHAPE, np.uint8)
    label[6:14, 12:28, 14:30] = 1
    label[8:12, 30:37, 34:41] = 2
    image = (label * 40 + np.random.default_rng(0).normal(0, 5, SHAPE)).astype(np.int16)
    geometry = Geometry((2.0, 1.0, 1.0))
    write_canonical_dataset(
        [CanonicalCase("c1", "test", "CT", Volume(image, geometry), Volume(label, geometry))],
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


def _job(root, folder, name, prompts=None, **spec) -> PredictJob:
    method = complete_method(
        {"family": "nninteractive", "weights": "nnint", "autozoom": False, **spec}, name
    )
    inputs = {
        "preprocessed": str(root / "pre" / "manifest.tsv"),
        "data": str(root / "data" / "cases.tsv"),
        "model": str(folder),
    }
    if prompts is not None:
        inputs["prompts"] = str(prompts)
    return PredictJob(method, name, inputs, root / "pred" / name, ("test",), seed=0, device="cpu")


@pytest.mark.parametrize("first", ["prompts", "lasso", "scribble"])
def test_predictor_writes_every_step(dataset, folders, first):
    job = _job(
        dataset, folders["legacy"], f"nni_{first}", first_interaction=first, clicks3d={"n": 2}
    )
    manifest = family.FAMILY.predict(job)
    volumes, clicks, first_click = read_click_volumes(click_volumes_path(job.out_dir, "c1"), SHAPE)
    final = read_volume(job.out_dir / "c1.nii.gz").array_zyx
    assert volumes.shape == (3, *SHAPE) and set(np.unique(volumes)) <= {0, 1, 2}
    np.testing.assert_array_equal(volumes[-1], final)
    assert first_click == (1 if first == "prompts" else 0)
    n_objects = 2
    assert manifest["n_interactions"].tolist() == [len(clicks) + (0 if first == "prompts" else 2)]
    assert manifest["n_prompts"].tolist() == [
        len(clicks) + (0 if first == "prompts" else n_objects)
    ]
    assert manifest["set_image_seconds"].iloc[0] >= 0


def test_predictor_with_a_prompt_set_sends_key_slice_boxes(dataset, folders, monkeypatch):
    """The legacy folder takes no 3D box: the protocol sends the row's 2D box on slice z."""
    row = {"case_id": "c1", "split": "test", "z": 9, "label": 1, "prompt_id": 0, "repeat": 0,
           "component": -1, "x_min": 14.0, "y_min": 12.0, "x_max": 29.0, "y_max": 27.0,
           "points": "[]", "z_min": 6, "z_max": 13}  # fmt: skip
    path = dataset / "prompts.tsv"
    write_csv_atomic(pd.DataFrame([row]).reindex(columns=list(PROMPT_COLUMNS)), path, sep="\t")
    seen = []
    original = NnInteractiveModel.start_session

    def spy(self, *args, **kwargs):
        session = original(self, *args, **kwargs)
        send = session._send
        session._send = lambda interaction: (seen.append(interaction), send(interaction))[1]
        return session

    monkeypatch.setattr(NnInteractiveModel, "start_session", spy)
    job = _job(dataset, folders["legacy"], "nni_box", prompts=path, clicks3d={"n": 1})
    family.FAMILY.predict(job)
    assert seen[0] == Interaction("key_slice_box", box_xyxy=(14.0, 12.0, 29.0, 27.0), z=9)
    assert all(i.kind == "points3d" for i in seen[1:])
    volumes, _, first_click = read_click_volumes(click_volumes_path(job.out_dir, "c1"), SHAPE)
    assert first_click == 0 and volumes.shape[0] == 2 and set(np.unique(volumes)) <= {0, 1}


def test_an_all_zero_image_is_one_line_naming_it(tmp_path, model):
    path = tmp_path / "zeros.nii.gz"
    with pytest.raises(InputError, match=f"^{path}: the image is all zeros"):
        family.check_image(Volume(np.zeros(SHAPE, np.int16), Geometry((1.0, 1.0, 1.0))), path)
    family.check_image(Volume(_image().astype(np.int16), Geometry((1.0, 1.0, 1.0))), path)
    with pytest.raises(InputError, match="all zeros"):
        model.start_session(np.zeros(SHAPE, np.float32), spacing_zyx=(1.0, 1.0, 1.0))
