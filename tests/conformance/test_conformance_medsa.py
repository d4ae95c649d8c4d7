"""Med-SA against golden outputs of its official code (``../shared/conformance/medsa``).

The fixture's ``best_dice_checkpoint.pth`` (Med-SA ``train.py`` layout, tiny ``-net sam
-mod sam_adpt`` network) goes through a user's config: a ``weights:`` key and
``sam_models.medsa_isic: {arch: {like: medsa_vit_b, ...}, train: {recipe: import, format:
medsa, weights: ...}, precision: fp32}`` added to ``config.yaml``, validated, resolved by
:mod:`medsegflow.planning`, imported by the training stage (the ``train_sam_model`` job),
loaded back by the loader, the real BUSI images embedded through the embedding cache and
the prompts decoded by ``decode_prompts``. It must reproduce the official image input,
image embeddings, low-res logits and the five ``eval_seg`` threshold masks (README
tolerances: 2e-5 on tensors, masks exact: no pixel lies within 2e-5 of a threshold), for
both cases and both prompts.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from sam_conformance import REPO, ConfiguredModel, embed_through_cache

from medsegflow import planning
from medsegflow.config import load_config
from medsegflow.errors import InputError
from medsegflow.families.registry import family_named
from medsegflow.models.input_recipes import MEDSA_THRESHOLDS, MedsaRecipe
from medsegflow.promptable.interface import Prompt2D
from medsegflow.promptable.sam_model import decode_prompts
from medsegflow.threads import limit_threads
from medsegflow.training.stage import train_sam_model

CASES = ("10018", "10509")
ATOL = 2e-5
NAME = "medsa_isic"


@pytest.fixture(scope="module")
def medsa(conformance_root):
    return conformance_root / "medsa"


def _arch(medsa) -> dict:
    """``sam_models.<name>.arch`` for the fixture's network, from its ``arch.json``."""
    encoder = json.loads((medsa / "arch.json").read_text())["image_encoder"]
    return {
        "like": "medsa_vit_b",
        "img_size": encoder["img_size"],
        "embed_dim": encoder["embed_dim"],
        "depth": encoder["depth"],
        "num_heads": encoder["num_heads"],
        "global_attn_indexes": encoder["global_attn_indexes"],
    }


def _configured(medsa, out, arch=None, **train) -> ConfiguredModel:
    """Import the fixture's checkpoint as the training job of ``sam_models.medsa_isic``
    does, into ``out``, and load the result as the embed and predict stages do."""
    with open(REPO / "config.yaml", encoding="utf-8") as handle:
        raw = copy.deepcopy(yaml.safe_load(handle))
    raw.setdefault("weights", {})["medsa_official"] = str(medsa / "best_dice_checkpoint.pth")
    raw["sam_models"][NAME] = {
        "arch": arch or _arch(medsa),
        "train": {"recipe": "import", "format": "medsa", "weights": "medsa_official", **train},
        "precision": "fp32",
    }
    config = load_config(raw)
    entry = config["sam_models"][NAME]
    arch = planning.sam_model_arch(config, NAME)
    train_sam_model(
        model=NAME,
        arch=arch,
        train=entry["train"],
        preprocessed_dirs=[],
        out_weights=out,
        seed=config["seed"],
        checkpoint=planning.sam_train_inputs(config, NAME)["released"],
    )
    built = (
        family_named(entry["family"])
        .promptable()
        .build({**entry, "arch": arch}, out, device="cpu", precision=entry["precision"])
    )
    return ConfiguredModel(
        NAME, config, arch, str(out), entry["precision"], built.net, built.device, built
    )


@pytest.fixture(scope="module")
def loaded(medsa, tmp_path_factory):
    limit_threads(1)
    return _configured(medsa, tmp_path_factory.mktemp("medsa") / "sam.pth")


@pytest.fixture(scope="module")
def model(loaded):
    return loaded.model


def test_the_train_py_checkpoint_loads_strictly_with_every_tensor(medsa, model):
    checkpoint = torch.load(
        medsa / "best_dice_checkpoint.pth", map_location="cpu", weights_only=True
    )
    state = checkpoint["state_dict"]
    ours = model.state_dict()
    assert set(ours) == set(state)  # rel_h/rel_w, mlp.layers.0.0/mlp.fc, Depth_Adapter too
    for key, value in state.items():
        assert torch.equal(ours[key], value.float()), key
    manifest = json.loads((medsa / "manifest.json").read_text())
    assert len(state) == manifest["checkpoint"]["n_state_dict_keys"]
    arch = json.loads((medsa / "arch.json").read_text())
    assert sum(p.numel() for p in model.parameters()) == arch["n_parameters"]
    assert model.input_recipe.name == "medsa" and model.input_recipe.click_order == "row_col"


def _rgb(medsa, case) -> np.ndarray:
    """The case's PNG as the RGB uint8 ``(H, W, 3)`` image the official loader opens."""
    source = json.loads((medsa / "manifest.json").read_text())["cases"][case]["source_image"]
    with Image.open(medsa.parents[1] / source.removeprefix("../shared/")) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("case", CASES)
def test_image_input_is_the_official_loaders(medsa, model, case):
    ours = model.input_recipe.prepare_image(_rgb(medsa, case))
    expected = np.load(medsa / "cases" / case / "image_input.npy")[0]
    assert ours.dtype == np.float32 and ours.shape == expected.shape
    assert np.array_equal(ours, expected)


@pytest.fixture(scope="module")
def embeddings(medsa, loaded, tmp_path_factory):
    """Each case's embedding, through the embedding stage's encoder call and cache."""
    cache = tmp_path_factory.mktemp("medsa_cache")
    out = {}
    for case in CASES:
        cached = embed_through_cache(loaded, _rgb(medsa, case)[None], cache, case)
        assert cached.embeddings.dtype == np.float32  # precision fp32
        out[case] = cached.embeddings[0]
    return out


@pytest.mark.parametrize("case", CASES)
def test_embeddings_match(medsa, embeddings, case):
    expected = np.load(medsa / "cases" / case / "embedding.npy")[0]
    np.testing.assert_allclose(embeddings[case], expected, rtol=0, atol=ATOL)


def _prompt(medsa, case, kind):
    folder = medsa / "cases" / case
    if kind == "box":
        return Prompt2D(np.load(folder / "box_xyxy.npy")[0].astype(np.float64), np.zeros((0, 3)))
    row_col = np.load(folder / "click_coords.npy")[0, 0].astype(np.float64)
    label = float(np.load(folder / "click_labels.npy")[0, 0])
    # the drawn pixel as the pipeline gives a click: (x, y) = (column, row)
    return Prompt2D(None, np.array([[row_col[1], row_col[0], label]]))


def _decode(model, embedding, prompt):
    size = (model.input_recipe.image_size,) * 2  # the fixture's frame is the model frame
    return decode_prompts(
        model, embedding, [prompt], original_size=size, input_size=size, multimask=True
    )


@pytest.mark.parametrize("kind", ["click", "box"])
@pytest.mark.parametrize("case", CASES)
def test_logits_and_threshold_masks_match(medsa, model, embeddings, case, kind):
    folder = medsa / "cases" / case
    decoded = _decode(model, embeddings[case], _prompt(medsa, case, kind))
    expected = np.load(folder / f"{kind}_lowres_logits.npy")
    np.testing.assert_allclose(decoded.low_res_pchw, expected, rtol=0, atol=ATOL)
    official = np.load(folder / f"{kind}_masks.npz")["masks"].astype(bool)
    ours = MedsaRecipe.threshold_masks(decoded.logits_pyx[0])
    assert ours.shape == official.shape == (len(MEDSA_THRESHOLDS), 256, 256)
    for t, threshold in enumerate(MEDSA_THRESHOLDS):
        assert np.array_equal(ours[t], official[t]), (case, kind, threshold)
        assert official[t].any() and not official[t].all()  # every threshold cuts the mask
    # the pipeline's single mask is the middle official threshold
    assert np.array_equal(decoded.masks_pyx[0], official[MEDSA_THRESHOLDS.index(0.5)])


def test_click_order_xy_is_the_transposed_point(medsa, tmp_path, embeddings):
    """``click_order: xy`` hands the click over as (x, y): another point than the official
    one, so other logits; on the transposed click it gives the official ones back."""
    xy = _configured(medsa, tmp_path / "xy" / "sam.pth", click_order="xy").model
    case = CASES[0]
    prompt = _prompt(medsa, case, "click")
    expected = np.load(medsa / "cases" / case / "click_lowres_logits.npy")
    moved = _decode(xy, embeddings[case], prompt).low_res_pchw
    assert np.abs(moved - expected).max() > 0.1
    transposed = Prompt2D(None, prompt.points_xyl[:, [1, 0, 2]])
    back = _decode(xy, embeddings[case], transposed).low_res_pchw
    np.testing.assert_allclose(back, expected, rtol=0, atol=ATOL)


def test_another_image_size_is_named_in_one_line(medsa, tmp_path):
    """The fixture was trained with ``-image_size 256``: configured at Med-SA's default 1024,
    the import stops with one line naming the file and the size the file fits."""
    arch = {k: v for k, v in _arch(medsa).items() if k != "img_size"}
    with pytest.raises(InputError, match=r"best_dice_checkpoint.pth: .*fits img_size 256") as err:
        _configured(medsa, tmp_path / "sam.pth", arch=arch)
    assert "\n" not in str(err.value)
