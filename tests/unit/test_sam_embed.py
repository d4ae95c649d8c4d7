from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medsegflow.datasets.canonical import image_path
from medsegflow.datasets.registry import prepare_dataset
from medsegflow.errors import InputError
from medsegflow.io import read_volume
from medsegflow.models.sam_archs import build_sam
from medsegflow.models.sam_cache import (
    EMBEDDINGS_MANIFEST_COLUMNS,
    load_case_embeddings,
    read_model_info,
)
from medsegflow.models.sam_encode import model_input
from medsegflow.stages.embed import embed_dataset
from medsegflow.stages.preprocess import preprocess_dataset
from medsegflow.workflow import embedding_splits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sam_fixtures import TINY_SAM_2BLOCK, save_tiny_sam  # noqa: E402

torch.set_num_threads(1)

NO_CLEANING = {"min_voxels_3d": 0, "min_pixels_2d": 0}


def _phantom(root, name, params):
    prepare_dataset(adapter="phantom", params=params, seed=7, out_dir=root / "data" / name)
    preprocess_dataset(
        data_dir=root / "data" / name,
        out_dir=root / "pre" / name,
        cleaning=NO_CLEANING,
        n_empty_slices=1,
        seed=7,
    )
    return root / "pre" / name


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """3-case CT (16 x 40 x 48) and ultrasound (40 x 56) phantoms, one case per split, and
    a tiny SAM checkpoint with its model card."""
    root = tmp_path_factory.mktemp("embed")
    ct = _phantom(root, "ct", {"kind": "ct", "n_cases": 3, "shape": [16, 40, 48]})
    us = _phantom(root, "us", {"kind": "us", "n_cases": 3, "shape": [40, 56]})
    torch.manual_seed(0)
    model = build_sam(TINY_SAM_2BLOCK)
    save_tiny_sam(model, root / "model" / "sam.pth", arch=TINY_SAM_2BLOCK)
    return {"root": root, "ct": ct, "us": us, "model": model, "ckpt": root / "model" / "sam.pth"}


def _embed(setup, dataset, out, **kwargs):
    return embed_dataset(
        preprocessed_dir=setup[dataset],
        checkpoint=setup["ckpt"],
        arch="demo",
        family="sam",
        out_dir=setup["root"] / out,
        **{"batch_size": 4, "precision": "fp32", **kwargs},
    )


def test_embeds_every_listed_slice_of_the_requested_splits(setup):
    manifest = _embed(setup, "ct", "emb_ct", splits=["val", "test"], batch_size=5)
    assert tuple(manifest.columns) == EMBEDDINGS_MANIFEST_COLUMNS
    slices = pd.read_csv(setup["ct"] / "slices.tsv", sep="\t", dtype={"case_id": str})
    cases = pd.read_csv(setup["ct"] / "manifest.tsv", sep="\t", dtype={"case_id": str})
    wanted = cases[cases["split"].isin(["val", "test"])]
    assert list(manifest["case_id"]) == list(wanted["case_id"])
    assert sorted(manifest["split"]) == ["test", "val"]
    out = setup["root"] / "emb_ct"
    on_disk = pd.read_csv(out / "manifest.tsv", sep="\t", dtype={"case_id": str})
    pd.testing.assert_frame_equal(on_disk, manifest)
    train_case = cases.loc[cases["split"] == "train", "case_id"].item()
    assert not (out / f"{train_case}.npz").exists()
    for row in manifest.itertuples():
        z = np.sort(slices.loc[slices["case_id"] == row.case_id, "z"].to_numpy())
        cached = load_case_embeddings(out / f"{row.case_id}.npz")
        assert row.n_slices == len(z) == 16
        np.testing.assert_array_equal(cached.z, z)
        assert cached.embeddings.dtype == np.float32  # precision fp32: stored as computed
        assert cached.embeddings.shape == (16, 32, 4, 4)
        assert cached.original_size == (40, 48)
        assert cached.input_size == (53, 64)  # 40 * 64 / 48 = 53.3 rounds to 53
        assert cached.image_size == 64
    info = read_model_info(out)
    assert info == {
        "family": "sam",  # the promptable family that built the model (sam_models.<m>.family)
        "model_class": "medsegflow.promptable.sam_model:SamPromptable",
        "arch": "demo",
        "checkpoint": str(setup["ckpt"]),
        "image_size": 64,
        "precision": "fp32",  # what the encoder ran in on this machine
        "input_recipe": "sam",
    }
    assert json.loads((out / "model.json").read_text(encoding="utf-8"))["arch"] == "demo"


def test_cached_embeddings_equal_sam_predictor_features_and_ignore_batching(setup):
    from segment_anything import SamPredictor

    _embed(setup, "us", "emb_us_b1", splits=["test"], batch_size=1)
    case_id = pd.read_csv(setup["us"] / "manifest.tsv", sep="\t").query("split == 'test'")
    case_id = case_id["case_id"].item()
    cached = load_case_embeddings(setup["root"] / "emb_us_b1" / f"{case_id}.npz")
    assert cached.embeddings.shape == (1, 32, 4, 4)
    assert (cached.original_size, cached.input_size) == ((40, 56), (46, 64))

    image_yx = read_volume(image_path(setup["us"], case_id)).array_zyx[0]
    predictor = SamPredictor(setup["model"])
    with torch.no_grad():
        predictor.set_image(np.repeat(image_yx[:, :, None], 3, axis=2))
    assert predictor.input_size == cached.input_size
    assert predictor.original_size == cached.original_size
    expected = predictor.features.numpy()
    np.testing.assert_allclose(cached.embeddings.astype(np.float32), expected, atol=5e-3, rtol=1e-2)

    ct = _embed(setup, "ct", "emb_ct_b1", splits=["test"], batch_size=1)
    case = ct["case_id"].item()
    one = load_case_embeddings(setup["root"] / "emb_ct_b1" / f"{case}.npz").embeddings
    many = load_case_embeddings(setup["root"] / "emb_ct" / f"{case}.npz").embeddings
    np.testing.assert_allclose(one.astype(np.float32), many.astype(np.float32), atol=2e-3)


def test_model_input_is_the_models_own_recipe(setup):
    image_yx = np.arange(30 * 20, dtype=np.uint16).reshape(30, 20).astype(np.uint8)
    batch = model_input([image_yx, image_yx], model=setup["model"], device="cpu")
    assert batch.shape == (2, 3, 64, 64) and batch.dtype == torch.float32
    expected = setup["model"].input_recipe.prepare_image(image_yx)
    np.testing.assert_array_equal(batch[1].numpy(), expected)
    assert (batch[:, :, :, 43:] == 0).all()  # SAM pads on the right (64 * 20 / 30 = 43 columns)


def test_a_3d_case_embeds_every_slice_between_its_foreground_slices(setup):
    import pandas as pd

    from medsegflow.stages.embed import _case_slices

    slices = pd.DataFrame(
        {
            "case_id": ["a"] * 4,
            "z": [2, 5, 9, 0],
            "kind": ["foreground", "foreground", "empty", "empty"],
        }
    )
    assert _case_slices(slices, "a", n_z=12, source=Path("s")).tolist() == [0, 2, 3, 4, 5, 9]
    with pytest.raises(InputError, match="z=14 outside 0..11"):
        _case_slices(slices.assign(z=[2, 5, 14, 0]), "a", n_z=12, source=Path("s"))


def test_no_case_in_the_splits_and_bad_checkpoints_are_one_line_errors(setup, tmp_path):
    with pytest.raises(InputError, match=r"manifest.tsv: no cases in splits \['nope'\]"):
        _embed(setup, "ct", "emb_none", splits=["nope"])
    junk = tmp_path / "sam.pth"
    junk.write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot read checkpoint"):
        embed_dataset(
            preprocessed_dir=setup["ct"],
            checkpoint=junk,
            arch="vit_b",
            family="sam",
            out_dir=tmp_path / "out",
            splits=["test"],
            batch_size=4,
            precision="fp32",
        )
    assert not (tmp_path / "out" / "manifest.tsv").exists()


def _splits_config(splits, methods=None):
    return {
        "metrics": {"splits": splits},
        "datasets": {"d": {}},
        "methods": methods or {"s": {"family": "sam", "model": "m"}},
    }


def test_embedding_splits_are_the_splits_its_methods_predict():
    # tuning reads no embedding: only the scored splits are embedded
    assert embedding_splits(_splits_config(["test"]), "d", "m") == ["test"]
    assert embedding_splits(_splits_config(["test", "train"]), "d", "m") == ["train", "test"]
    assert embedding_splits(_splits_config(["val"]), "d", "m") == ["val"]


def test_embedding_splits_add_train_for_pseudo_labels_of_that_model():
    methods = {
        "txt": {"family": "text_sam", "model": "m", "clip": "c", "text_prompts": "p"},
        "weak": {"family": "nnunet", "labels_from": "txt"},
    }
    config = _splits_config(["test"], methods)
    assert embedding_splits(config, "d", "m") == ["train", "val", "test"]
    assert embedding_splits(config, "d", "other") == ["test"]
