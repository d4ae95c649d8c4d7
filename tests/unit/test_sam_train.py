from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from medsegflow.datasets.registry import prepare_dataset
from medsegflow.errors import ConfigError, InputError
from medsegflow.models.sam_loader import load_sam_model, select_device
from medsegflow.planning import check_sam_models, sam_checkpoint, sam_train_inputs
from medsegflow.precision import resolve_precision
from medsegflow.stages.preprocess import preprocess_dataset
from medsegflow.training.batches import decode_all_masks
from medsegflow.training.pairs import augment_slice, load_training_pairs, load_validation_pairs
from medsegflow.training.stage import train_sam_model

torch.set_num_threads(1)

TRAIN = {
    "recipe": "scratch",
    "iterations": 20,
    "batch_size": 4,
    "lr": 3e-3,
    "jitter": 20,
    "image_size": 64,
    "threads": 1,
}


def train_demo_sam(*, preprocessed_dirs, out_checkpoint, train, seed):
    """The training stage's job for a demo model with recipe ``train``."""
    return train_sam_model(
        model="demo_sam",
        arch="demo",
        train=train,
        preprocessed_dirs=preprocessed_dirs,
        out_weights=out_checkpoint,
        seed=seed,
    )


def _phantom(root, name, params):
    prepare_dataset(adapter="phantom", params=params, seed=3, out_dir=root / "data" / name)
    preprocess_dataset(
        data_dir=root / "data" / name,
        out_dir=root / "pre" / name,
        cleaning={"min_voxels_3d": 0, "min_pixels_2d": 20},
        n_empty_slices=1,
        seed=3,
    )
    return root / "pre" / name


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    ct = _phantom(root, "ct", {"kind": "ct", "n_cases": 3, "shape": [16, 40, 48]})
    us = _phantom(root, "us", {"kind": "us", "n_cases": 3, "shape": [48, 48]})
    return [ct, us]


@pytest.fixture(scope="module")
def trained(datasets, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "sam.pth"
    stats = train_demo_sam(preprocessed_dirs=datasets, out_checkpoint=out, train=TRAIN, seed=5)
    return out, stats


def test_training_pairs_come_from_the_train_split_only(datasets, tmp_path):
    # 32 slices: the phantom's organs leave slices empty at both ends (16 fill them all)
    tall = _phantom(tmp_path, "ct", {"kind": "ct", "n_cases": 3, "shape": [32, 40, 48]})
    pairs = load_training_pairs([tall, datasets[1]])
    counts = pairs.counts()
    assert set(counts) == {"ct", "us"}
    assert counts["us"] == 1  # one train image with one lesion
    ct_slices = pd.read_csv(tall / "slices.tsv", sep="\t", dtype={"case_id": str})
    train = ct_slices[ct_slices["split"] == "train"]
    n_train_fg = (train["kind"] == "foreground").sum()
    assert (train["kind"] == "empty").any()
    # every selected train slice (empty ones teach semantic models background) ...
    assert len(pairs.datasets[0].images) == len(train)
    # ... but pairs only on foreground: each foreground slice holds one or more labels
    assert len(np.unique(pairs.datasets[0].pairs[:, 0])) == n_train_fg
    assert counts["ct"] >= n_train_fg
    empty = [i for i, lab in enumerate(pairs.datasets[0].labels) if not lab.any()]
    assert len(empty) == (train["kind"] == "empty").sum()
    assert not set(empty) & set(pairs.datasets[0].pairs[:, 0].tolist())
    rng = np.random.default_rng(0)
    for _ in range(10):
        image_yx, masks_kyx = pairs.sample(rng)
        assert image_yx.dtype == np.uint8 and masks_kyx.dtype == bool
        assert masks_kyx.shape[1:] == image_yx.shape
        # every label of the slice, each once, none empty and no two overlapping
        assert masks_kyx.reshape(len(masks_kyx), -1).any(axis=1).all()
        assert masks_kyx.sum(axis=0).max() == 1
    sizes = {len(pairs.sample(rng)[1]) for _ in range(40)}
    assert 1 in sizes and max(sizes) >= 2  # the ultrasound lesion alone, CT organs together


@pytest.mark.slow
def test_tiny_training_writes_a_loadable_checkpoint_and_the_loss_decreases(trained, datasets):
    path, stats = trained
    folder = path.parent
    assert stats["iterations"] == 20
    assert stats["n_parameters"] == 2_865_664  # the demo architecture at input 64
    history = pd.read_csv(folder / "train_log.csv")
    assert list(history.columns) == ["iteration", "loss", "seconds"]
    assert list(history["iteration"]) == list(range(1, 21))
    assert history["loss"].iloc[-3:].mean() < 0.85 * history["loss"].iloc[:3].mean()
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    assert card["arch"] == "demo" and card["spec"]["img_size"] == 64 and card["base"] is None
    assert card["recipe"] == {**TRAIN, "datasets": None, "val_slices": 32}  # the complete recipe
    assert card["training"]["iterations"] == 20 and card["modules"] == []
    # the precision the steps ran in on this machine (auto: bf16 only with native bf16)
    expected = resolve_precision(TRAIN.get("precision", "auto"), select_device("auto"))
    assert card["training"]["precision"] == expected
    assert card["training"]["n_trainable"] < card["training"]["n_parameters"]  # prompt encoder
    # checked on val: every foreground pair of the val case (ct and us), box prompts
    assert card["training"]["val_targets"] == sum(load_validation_pairs(datasets).counts().values())
    assert card["training"]["val_targets"] > 1
    assert 0.0 <= card["training"]["val_dsc"] <= 1.0

    model, _ = load_sam_model(path, arch="demo")
    assert model.image_encoder.img_size == 64
    with torch.no_grad():
        embeddings = model.image_encoder(torch.zeros(2, 3, 64, 64))
        boxes = [torch.tensor([[4.0, 4, 40, 30]]), torch.tensor([[0.0, 0, 9, 9], [5, 5, 60, 60]])]
        low_res, iou = decode_all_masks(model, embeddings, boxes)
    assert embeddings.shape == (2, 128, 4, 4)
    assert low_res.shape == (3, 4, 16, 16)
    assert iou.shape == (3, 4)


@pytest.mark.slow
def test_training_is_deterministic_given_the_seed(datasets, trained, tmp_path):
    path, _ = trained
    short = {**TRAIN, "iterations": 3}
    a = train_demo_sam(
        preprocessed_dirs=datasets, out_checkpoint=tmp_path / "a" / "sam.pth", train=short, seed=5
    )
    b = train_demo_sam(
        preprocessed_dirs=datasets, out_checkpoint=tmp_path / "b" / "sam.pth", train=short, seed=9
    )
    first = pd.read_csv(path.parent / "train_log.csv")["loss"].iloc[:3].to_numpy()
    again = pd.read_csv(tmp_path / "a" / "train_log.csv")["loss"].to_numpy()
    other = pd.read_csv(tmp_path / "b" / "train_log.csv")["loss"].to_numpy()
    np.testing.assert_array_equal(again, first)
    assert not np.array_equal(other, first)
    assert a["loss_first"] == pytest.approx(first[0])
    assert b["iterations"] == 3
    twice = train_demo_sam(
        preprocessed_dirs=datasets, out_checkpoint=tmp_path / "c" / "sam.pth", train=short, seed=5
    )
    assert twice == {**a, "seconds": twice["seconds"]}
    state_a = torch.load(tmp_path / "a" / "sam.pth", weights_only=True)
    state_c = torch.load(tmp_path / "c" / "sam.pth", weights_only=True)
    assert all(torch.equal(state_a[k], state_c[k]) for k in state_a)


def test_bad_training_input_stops_with_one_line(datasets, tmp_path):
    with pytest.raises(ConfigError, match=r"^sam_models\.demo_sam\.train\.epochs: unknown key"):
        train_demo_sam(
            preprocessed_dirs=datasets,
            out_checkpoint=tmp_path / "sam.pth",
            train={"recipe": "scratch", "epochs": 3},
            seed=0,
        )
    pre = tmp_path / "empty"
    pre.mkdir()
    manifest = pd.read_csv(datasets[1] / "manifest.tsv", sep="\t")
    manifest.assign(split="test").to_csv(pre / "manifest.tsv", sep="\t", index=False)
    (pre / "slices.tsv").write_text((datasets[1] / "slices.tsv").read_text(encoding="utf-8"))
    (pre / "labels.json").write_text((datasets[1] / "labels.json").read_text(encoding="utf-8"))
    with pytest.raises(InputError, match="no train case with foreground"):
        train_demo_sam(
            preprocessed_dirs=[pre], out_checkpoint=tmp_path / "sam.pth", train=TRAIN, seed=0
        )
    assert not (tmp_path / "sam.pth").exists()


def _models(**models):
    """sam_models entries completed as the schema does (every key present)."""
    empty = {"arch": None, "weights": None, "base": None, "train": None, "embed_batch_size": 4}
    return {name: {**empty, **spec} for name, spec in models.items()}


def test_training_stage_plans_models_with_a_recipe_from_scratch_or_a_base():
    config = {
        "datasets": {"a": {}, "b": {}},
        "weights": {"medsam_vit_b": "/w/medsam.pth"},
        "sam_models": _models(
            demo_sam={"arch": "demo", "train": {"recipe": "scratch", "datasets": ["b"]}},
            medsam={"arch": "vit_b", "weights": "medsam_vit_b"},
            medsam_ft={"base": "medsam", "train": {"recipe": "finetune"}},
            twice={"base": "medsam_ft", "train": {"recipe": "finetune"}},
        ),
    }
    check_sam_models(config)
    assert sam_train_inputs(config, "demo_sam") == {
        "preprocessed": ["results/preprocessed/b/manifest.tsv"]
    }
    assert sam_checkpoint(config, "medsam") == "/w/medsam.pth"
    assert sam_checkpoint(config, "medsam_ft") == "results/models/medsam_ft/sam.pth"
    assert sam_train_inputs(config, "medsam_ft")["base"] == "/w/medsam.pth"
    assert sam_train_inputs(config, "twice")["base_card"] == "results/models/medsam_ft/model.json"
    with pytest.raises(ConfigError, match=r"sam_models\.medsam: not trained by the pipeline"):
        sam_train_inputs(config, "medsam")
    for bad, match in (
        ({"arch": "demo"}, r"sam_models\.m\.weights: required without a train: recipe"),
        ({"base": "nope", "train": {"recipe": "finetune"}}, r"m\.base: unknown SAM model"),
        ({"base": "medsam"}, r"m\.train: required with a base model"),
        ({"base": "m", "train": {"recipe": "finetune"}}, r"m\.base: a cycle m -> m"),
        ({"base": "medsam", "train": {"recipe": "scratch"}}, r"m\.base: the scratch recipe"),
        ({"arch": "demo", "train": {"recipe": "finetune"}}, r"m\.base: the finetune recipe needs"),
        ({"arch": "vit_b", "weights": "nope"}, r"m\.weights: 'nope' is not a key under weights"),
        (
            {"arch": "vit_b", "weights": "medsam_vit_b", "train": {"recipe": "scratch"}},
            r"m\.weights: a trained model takes its start from base:",
        ),
    ):
        broken = {**config, "sam_models": {**config["sam_models"], **_models(m=bad)}}
        with pytest.raises(ConfigError, match=match):
            check_sam_models(broken)


def test_unknown_training_dataset_stops_only_a_model_that_is_used():
    """A config derived from the demo without phantom_ct keeps its unused fine-tuned
    entries; a method using one of them stops at planning, naming the key."""
    config = {
        "datasets": {"a": {}},
        "methods": {"otsu": {"family": "classical"}},
        "sam_models": _models(
            lite={"arch": "lite_medsam"},
            ft={"base": "lite", "train": {"recipe": "medsam", "datasets": ["gone"]}},
        ),
    }
    check_sam_models(config)
    config["methods"]["ft_box"] = {"family": "sam", "model": "ft"}
    with pytest.raises(
        ConfigError, match=r"^sam_models\.ft\.train\.datasets: unknown dataset 'gone'"
    ):
        check_sam_models(config)


def test_augmentation_keeps_the_drawn_object_whole_and_aligned():
    image_yx = np.tile(np.arange(60, dtype=np.uint8) * 4, (50, 1))  # x-ramp 0..236
    masks_kyx = np.zeros((2, 50, 60), dtype=bool)
    masks_kyx[0, 20:30, 25:40] = True  # 150 pixels, must survive every crop
    masks_kyx[1, 0:3, 0:3] = True  # corner object, often cropped away
    rng = np.random.default_rng(1)
    shapes, kept = set(), []
    for _ in range(50):
        image, masks = augment_slice(image_yx, masks_kyx, rng=rng)
        assert image.dtype == np.uint8 and masks.dtype == bool
        assert masks.shape[1:] == image.shape
        assert 35 <= image.shape[0] <= 50 and 42 <= image.shape[1] <= 60
        assert masks[0].sum() == 150
        # intensities are kept: a crop of the x-ramp, flipped or not
        step = np.diff(image[0].astype(int))
        assert (step == 4).all() or (step == -4).all()
        shapes.add(image.shape)
        kept.append(len(masks))
    assert len(shapes) > 5
    assert set(kept) == {1, 2}


def test_finetune_starts_from_the_base_and_loads_through_the_same_loader(
    trained, datasets, tmp_path
):
    base_path, _ = trained
    base_state = torch.load(base_path, weights_only=True)
    out = tmp_path / "ft" / "sam.pth"
    stats = train_sam_model(
        model="demo_ft",
        arch="demo",
        train={"recipe": "finetune", "iterations": 3, "batch_size": 2},
        preprocessed_dirs=datasets,
        out_weights=out,
        seed=1,
        base={"model": "demo_sam", "checkpoint": str(base_path)},
    )
    assert stats["iterations"] == 3
    card = json.loads((out.parent / "model.json").read_text(encoding="utf-8"))
    assert card["base"] == {"model": "demo_sam", "checkpoint": str(base_path)}
    assert card["recipe"]["recipe"] == "finetune" and card["recipe"]["lr"] == 0.0001
    assert card["spec"]["img_size"] == 64  # the base's architecture
    model, _ = load_sam_model(out, arch="demo")
    state = model.state_dict()
    key = "mask_decoder.iou_token.weight"
    assert not torch.equal(state[key], base_state[key])  # trained from the base
    close = torch.allclose(state[key], base_state[key], atol=0.05)  # a few small steps
    assert close
    frozen = "prompt_encoder.point_embeddings.0.weight"
    assert torch.equal(state[frozen], base_state[frozen])  # the prompt encoder is frozen
    with pytest.raises(ConfigError, match=r"demo_ft\.base: the finetune recipe needs a base"):
        train_sam_model(
            model="demo_ft",
            arch="demo",
            train={"recipe": "finetune", "iterations": 1},
            preprocessed_dirs=datasets,
            out_weights=tmp_path / "x" / "sam.pth",
            seed=1,
        )
