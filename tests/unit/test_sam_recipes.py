"""The medsam, samed and medsa recipes on a tiny base model, and the released checkpoint
layouts (SAMed, SAMed_s, Med-SA) loaded through the import recipe."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medsegflow.datasets.registry import prepare_dataset
from medsegflow.errors import InputError
from medsegflow.models.medsa_arch import MedsaImageEncoder, medsa_state_from_sam
from medsegflow.models.model_card import read_card
from medsegflow.models.sam_archs import arch_spec, build_sam, medsa_spec
from medsegflow.models.sam_loader import load_sam_model
from medsegflow.models.semantic_sam import decode_semantic
from medsegflow.stages.preprocess import preprocess_dataset
from medsegflow.training.stage import train_sam_model

torch.set_num_threads(1)
CLASSES = ["liver", "spleen", "kidney", "lesion"]


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    params = {"kind": "ct", "n_cases": 3, "shape": [16, 40, 48]}
    prepare_dataset(adapter="phantom", params=params, seed=3, out_dir=root / "data")
    preprocess_dataset(
        data_dir=root / "data",
        out_dir=root / "pre",
        cleaning={"min_voxels_3d": 0, "min_pixels_2d": 20},
        n_empty_slices=1,
        seed=3,
    )
    return root / "pre"


@pytest.fixture(scope="module")
def base(ct, tmp_path_factory):
    """A tiny demo SAM (input 64) trained for a few iterations: the base of every recipe."""
    out = tmp_path_factory.mktemp("base") / "sam.pth"
    train = {"recipe": "scratch", "iterations": 30, "batch_size": 4, "lr": 3e-3, "image_size": 64}
    train_sam_model(
        model="base", arch="demo", train=train, preprocessed_dirs=[ct], out_weights=out, seed=1
    )
    return {"model": "base", "checkpoint": str(out)}


def _train(tmp_path, ct, base, train, name="tuned"):
    out = tmp_path / name / "sam.pth"
    stats = train_sam_model(
        model=name,
        arch="demo",
        train=train,
        preprocessed_dirs=[ct],
        out_weights=out,
        seed=2,
        base=base,
    )
    return out, stats


def _loss_fell(out, factor, n=4):
    history = pd.read_csv(out.parent / "train_log.csv")
    first, last = history["loss"].iloc[:n].mean(), history["loss"].iloc[-n:].mean()
    assert last < factor * first, (first, last)
    return first, last


@pytest.mark.slow
def test_medsam_recipe_lowers_its_loss_and_trains_encoder_and_decoder(tmp_path, ct, base):
    train = {"recipe": "medsam", "iterations": 24, "batch_size": 4, "lr": 1e-3}
    out, stats = _train(tmp_path, ct, base, train)
    _loss_fell(out, 0.9)
    model, _ = load_sam_model(out, arch="demo", device="cpu")
    n_prompt = sum(p.numel() for p in model.prompt_encoder.parameters())
    assert stats["n_trainable"] == stats["n_parameters"] - n_prompt
    assert read_card(out)["recipe"]["iou_loss"] == "auto"  # off for the ViT, on for TinyViT


@pytest.mark.slow
def test_medsa_recipe_trains_only_the_adapters(tmp_path, ct, base):
    train = {"recipe": "medsa", "iterations": 80, "batch_size": 4, "lr": 1e-2, "prompt": "box"}
    out, stats = _train(tmp_path, ct, base, train)
    _loss_fell(out, 0.9, n=10)
    # Med-SA's default prompt, with the code's adapters and click order: the trained model
    # is then in the layout of an official train.py checkpoint and imports as one
    code = {
        "ratio": 0.25,
        "activation": "gelu",
        "decoder_adapters": False,
        "click_order": "row_col",
    }
    clicks = {**train, "iterations": 3, "prompt": "points", **code}
    clicked, _ = _train(tmp_path, ct, base, clicks, name="clicked")
    assert np.isfinite(pd.read_csv(clicked.parent / "train_log.csv")["loss"]).all()
    ours, _ = load_sam_model(clicked, arch="demo", device="cpu")
    released = tmp_path / "best_dice_checkpoint.pth"
    torch.save({"epoch": 3, "model": "sam", "state_dict": ours.state_dict()}, released)
    spec = read_card(clicked)["spec"]
    imported = _import(tmp_path, None, {"format": "medsa"}, released, arch=spec)  # no base
    assert imported.input_recipe == ours.input_recipe
    images = torch.rand(1, 3, 64, 64)
    points = (torch.tensor([[[20.0, 30.0]]]), torch.ones(1, 1, dtype=torch.int))
    for model in (ours, imported):
        with torch.no_grad():
            embedding = model.image_encoder(images)
            sparse, dense = model.prompt_encoder(points=points, boxes=None, masks=None)
            pe = model.prompt_encoder.get_dense_pe()
            model.out = model.mask_decoder(embedding, pe, sparse, dense, False)[0]
    torch.testing.assert_close(imported.out, ours.out, rtol=0, atol=0)
    card = read_card(out)
    assert [m["kind"] for m in card["modules"]] == ["medsa_adapters"]
    # a ViT base becomes Med-SA's own network, the one of an official train.py checkpoint
    assert card["spec"]["encoder"] == "medsa_vit" and card["spec"]["input_recipe"] == "medsa"
    model, _ = load_sam_model(out, arch="demo", device="cpu")
    assert isinstance(model.image_encoder, MedsaImageEncoder)
    assert model.input_recipe.click_order == "xy"  # the recipe's default
    tuned = model.state_dict()
    assert "image_encoder.blocks.0.attn.rel_h" in tuned
    assert "mask_decoder.transformer.layers.0.mlp.layers.0.0.weight" in tuned
    adapters = sum(
        p.numel()
        for n, p in model.named_parameters()
        if "Adapter." in n and "Depth_Adapter" not in n
    )
    assert stats["n_trainable"] == adapters > 0
    # the frozen weights are the base's (under Med-SA's key names), bit for bit
    base_model, _ = load_sam_model(base["checkpoint"], arch="demo", device="cpu")
    base_state = medsa_state_from_sam(base_model.state_dict())
    assert set(base_state) <= set(tuned)
    for key, value in base_state.items():
        assert torch.equal(tuned[key], value), key


@pytest.fixture(scope="module")
def samed(ct, base, tmp_path_factory):
    train = {"recipe": "samed", "iterations": 30, "batch_size": 4, "lr": 5e-3, "warmup": 3}
    return _train(tmp_path_factory.mktemp("samed"), ct, base, train, name="samed")


@pytest.mark.slow
def test_samed_recipe_gives_a_semantic_model_of_the_dataset_classes(samed):
    out, stats = samed
    _loss_fell(out, 0.9)
    card = read_card(out)
    assert card["classes"] == CLASSES
    assert card["spec"]["mask_outputs"] == 4 and card["spec"]["input_recipe"] == "samed"
    model, _ = load_sam_model(out, arch="demo", device="cpu")
    with torch.no_grad():
        logits = decode_semantic(model, model.image_encoder(torch.rand(1, 3, 64, 64)))
    assert logits.shape == (1, 5, 16, 16)
    lora = sum(p.numel() for n, p in model.named_parameters() if ".lora." in n)
    decoder = sum(p.numel() for p in model.mask_decoder.parameters())
    prompt = sum(p.numel() for p in model.prompt_encoder.parameters())
    assert stats["n_trainable"] == lora + decoder + prompt


# --- released layouts -------------------------------------------------------------------


def _samed_file(state, *, n_blocks, decoder, n_layers=2):
    """SAMed's save_lora_parameters layout, written from the README's description."""
    out = {}
    for block in range(n_blocks):
        for offset, group in enumerate("qv"):
            stem = f"image_encoder.blocks.{block}.attn.qkv.lora.{group}"
            out[f"w_a_{2 * block + offset:03d}"] = state[f"{stem}.a.weight"]
            out[f"w_b_{2 * block + offset:03d}"] = state[f"{stem}.b.weight"]
    if decoder:
        short = {
            "sa": "self_attn",
            "cti": "cross_attn_token_to_image",
            "cit": "cross_attn_image_to_token",
        }
        for layer in range(n_layers):
            for prefix, attn in short.items():
                for offset, proj in enumerate(("q_proj", "v_proj")):
                    stem = f"mask_decoder.transformer.layers.{layer}.{attn}.{proj}.lora.w"
                    out[f"{prefix}_a_{2 * layer + offset:03d}"] = state[f"{stem}.a.weight"]
                    out[f"{prefix}_b_{2 * layer + offset:03d}"] = state[f"{stem}.b.weight"]
        final = "mask_decoder.transformer.final_attn_token_to_image"
        for q_or_v in "qv":
            out[f"fati_{q_or_v}a"] = state[f"{final}.{q_or_v}_proj.lora.w.a.weight"]
            out[f"fati_{q_or_v}b"] = state[f"{final}.{q_or_v}_proj.lora.w.b.weight"]
    for key, value in state.items():
        own = key.startswith("prompt_encoder.") or (
            key.startswith("mask_decoder.") and not (decoder and ".transformer." in key)
        )
        if own and ".lora." not in key:
            out[key] = value
    return out


def _import(tmp_path, base, settings, released, arch="demo"):
    out = tmp_path / "imported" / "sam.pth"
    train = {"recipe": "import", "weights": "released", **settings}
    train_sam_model(
        model="imported",
        arch=arch,
        train=train,
        preprocessed_dirs=[],
        out_weights=out,
        seed=0,
        base=base,
        checkpoint=released,
    )
    return load_sam_model(out, arch=arch, device="cpu")[0]


def _same_semantic_outputs(a, b):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = decode_semantic(a, a.image_encoder(images))
        theirs = decode_semantic(b, b.image_encoder(images))
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("variant", ["samed", "samed_s"])
def test_released_samed_layouts_load_through_the_import_recipe(tmp_path, ct, base, samed, variant):
    if variant == "samed":
        trained = load_sam_model(samed[0], arch="demo", device="cpu")[0]
    else:  # SAMed_s: LoRA in the decoder too
        train = {
            "recipe": "samed",
            "iterations": 3,
            "batch_size": 2,
            "warmup": 1,
            "decoder_lora": True,
        }
        out, _ = _train(tmp_path, ct, base, train, name="samed_s")
        trained = load_sam_model(out, arch="demo", device="cpu")[0]
    with torch.no_grad():  # make the LoRA B factors non-zero, as after real training
        for name, param in trained.named_parameters():
            if ".lora." in name:
                param.normal_(0, 0.02)
    state = trained.state_dict()
    released = tmp_path / "epoch_159.pth"
    torch.save(_samed_file(state, n_blocks=4, decoder=variant == "samed_s"), released)
    settings = {"format": variant, "classes": CLASSES, "rank": 4, "image_size": None}
    imported = _import(tmp_path, base, settings, released)
    _same_semantic_outputs(imported, trained)
    assert read_card(tmp_path / "imported" / "sam.pth")["classes"] == CLASSES

    wrong_rank = {**settings, "rank": 8}
    with pytest.raises(InputError, match=r"epoch_159.pth: LoRA rank 4, .*train.rank is 8"):
        _import(tmp_path, base, wrong_rank, released)
    broken = _samed_file(state, n_blocks=4, decoder=variant == "samed_s")
    del broken["w_b_003"]
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(InputError, match=r"broken.pth: not a samed.* 1 missing tensors"):
        _import(tmp_path, base, settings, tmp_path / "broken.pth")


def test_a_medsa_train_py_checkpoint_loads_strictly_with_its_3d_branch(tmp_path, base):
    """Med-SA's train.py layout (``state_dict`` entry, every tensor of Med-SA's network,
    ``Depth_Adapter`` included; ``module.`` prefix of -distributed runs) loads strictly
    onto the base's dims; a foreign tensor or other dims stop with one line naming the
    file. (The outputs are checked against the official code in
    tests/conformance/test_conformance_medsa.py.)"""
    spec = medsa_spec(arch_spec({"img_size": 64}), pos_embed_grid=64)
    torch.manual_seed(0)
    theirs = build_sam(spec)
    with torch.no_grad():
        for param in theirs.parameters():
            param.add_(0.02 * torch.randn_like(param))
    state = {f"module.{k}": v for k, v in theirs.state_dict().items()}
    released = tmp_path / "best_dice_checkpoint.pth"
    torch.save({"epoch": 3, "model": "sam", "state_dict": state, "best_tol": 0.2}, released)
    imported = _import(tmp_path, base, {"format": "medsa"}, released)
    assert set(imported.state_dict()) == {k.removeprefix("module.") for k in state}
    assert imported.input_recipe.click_order == "row_col"  # the official default
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(imported.image_encoder(images), theirs.image_encoder(images))
    state["module.image_encoder.blocks.0.Space_Adapter.D_fc9.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, released)
    with pytest.raises(
        InputError, match=r"best_dice_checkpoint.pth: not a Med-SA .*checkpoint.*unexpected"
    ):
        _import(tmp_path, base, {"format": "medsa"}, released)
    other = build_sam(
        medsa_spec(arch_spec({"img_size": 64, "depth": 2, "global_attn_indexes": [1]}))
    )
    torch.save({"state_dict": other.state_dict()}, released)
    with pytest.raises(InputError, match=r"best_dice_checkpoint.pth: not a Med-SA .*depth 4"):
        _import(tmp_path, base, {"format": "medsa"}, released)
