"""SAM-Med3D against the official ``utils/infer_utils.py`` (``../shared/conformance/sam3d``).

The fixture is a tiny random SAM-Med3D (medim's classes) in both official checkpoint layouts,
run by the official inference on the real spleen CT with 3 fixed clicks, once with torchio
0.20.8 and once with torchio 1.1.1 (their 1.5 mm grids differ). The checkpoints are loaded
through a ``sam3d`` method block completed by the family schema, as a user's config is.

- The installed torchio's own grid (``resample_grid: torchio``) reproduces ``tio1.1.1``
  and ``resample_grid: ceil_corner`` reproduces ``tio0.20.8``: the encoder input (atol 1e-5),
  the label crop (equal).
- The network, from each variant's stored input (torchio-independent): embedding (atol
  2e-5), low-res logits after each click (atol 1e-5), crop masks (equal except where the
  fixture's upsampled logit is within 1e-5 of 0).
- The final masks on the original grid through :func:`segment_object` (the predictor's
  path) with the fixture's clicks in place of the simulated user: equal except where they
  map from such near-threshold crop voxels; the outermost voxels of the original grid
  included.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medsegflow.errors import InputError
from medsegflow.families.registry import complete_method
from medsegflow.io import Volume, read_volume
from medsegflow.prompts import clicks as click_rules
from medsegflow.sam3d import preprocess as pp
from medsegflow.sam3d.infer import segment_object
from medsegflow.sam3d.model import load_checkpoint
from medsegflow.sam3d.session import CropSession

VARIANTS = {"tio1.1.1": "torchio", "tio0.20.8": "ceil_corner"}
CHECKPOINTS = ("sam_med3d_turbo_tiny.pth", "sam_model_dice_best.pth")


@pytest.fixture(scope="module")
def fixture_dir(conformance_root: Path) -> Path:
    return conformance_root / "sam3d"


@pytest.fixture(scope="module")
def manifest(fixture_dir: Path) -> dict:
    return json.loads((fixture_dir / "manifest.json").read_text(encoding="utf-8"))


def _method(fixture_dir: Path, resample_grid: str = "torchio") -> dict:
    """The fixture's network as a user writes it: a sam3d method with explicit
    hyper-parameters (medim builder keyword arguments of ``arch.json``), schema-completed."""
    arch = json.loads((fixture_dir / "arch.json").read_text(encoding="utf-8"))
    kwargs = arch["builder_kwargs"]
    spec = {
        "image_size": kwargs["image_size"],
        "patch_size": kwargs["vit_patch_size"],
        "encoder_embed_dim": kwargs["encoder_embed_dim"],
        "encoder_depth": kwargs["encoder_depth"],
        "encoder_num_heads": kwargs["encoder_num_heads"],
        "global_attn_indexes": kwargs["encoder_global_attn_indexes"],
        "window_size": arch["image_encoder"]["window_size"],
        "prompt_embed_dim": kwargs["prompt_embed_dim"],
    }
    block = {"family": "sam3d", "spec": spec, "weights": "sam3d_tiny"}
    block["resample_grid"] = resample_grid
    return complete_method(block, "sam3d_conformance")


@pytest.fixture(scope="module")
def models(fixture_dir: Path) -> dict:
    torch.set_num_threads(1)
    spec = _method(fixture_dir)["spec"]
    return {name: load_checkpoint(fixture_dir / name, spec) for name in CHECKPOINTS}


@pytest.fixture(scope="module")
def case(conformance_root: Path, manifest: dict) -> tuple[Volume, Volume]:
    data = conformance_root.parent / "data" / "msd_spleen_crop"
    image = read_volume(data / Path(manifest["input_volume"]["image"]).name)
    label = read_volume(data / Path(manifest["input_volume"]["label"]).name)
    binary = (np.asarray(label.array_zyx) == 1).astype(np.uint8)  # category 1
    return image, Volume(binary, label.geometry)


def _load(fixture_dir: Path, variant: str) -> dict[str, np.ndarray]:
    folder = fixture_dir / variant
    return {
        "input": np.load(folder / "input_crop.npz")["image"],
        "label": np.load(folder / "label_crop.npz")["label"],
        "embedding": np.load(folder / "embedding.npy"),
        "points": np.load(folder / "click_points.npy"),
        "labels": np.load(folder / "click_labels.npy"),
        "lowres": np.load(folder / "lowres_logits.npy"),
        "crop_masks": np.load(folder / "crop_masks.npz")["masks"],
        "orig_masks": np.load(folder / "orig_masks.npz")["masks"],
    }


def _near_threshold(lowres: np.ndarray, band: float) -> np.ndarray:
    """Crop voxels whose trilinear-upsampled fixture logit is within ``band`` of 0."""
    up = F.interpolate(
        torch.from_numpy(lowres), size=(128,) * 3, mode="trilinear", align_corners=False
    )
    return np.abs(up[0, 0].numpy()) <= band


def test_both_official_checkpoint_layouts_load_strictly(fixture_dir, models, manifest):
    arch = json.loads((fixture_dir / "arch.json").read_text(encoding="utf-8"))
    turbo, trained = (models[name] for name in CHECKPOINTS)
    assert sum(p.numel() for p in turbo.parameters()) == arch["n_parameters"]
    assert len(turbo.state_dict()) == arch["n_state_dict_tensors"]
    for key, value in turbo.state_dict().items():
        assert torch.equal(value, trained.state_dict()[key]), key
    # train.py's file holds an argparse.Namespace: plain weights_only loading refuses it
    with pytest.raises(Exception, match="argparse.Namespace"):
        torch.load(fixture_dir / CHECKPOINTS[1], map_location="cpu", weights_only=True)


def test_another_pickled_class_is_refused_in_one_line(fixture_dir, tmp_path):
    import fractions

    payload = torch.load(fixture_dir / CHECKPOINTS[0], map_location="cpu", weights_only=True)
    payload["note"] = fractions.Fraction(1, 3)
    bad = tmp_path / "odd_checkpoint.pth"
    torch.save(payload, bad)
    with pytest.raises(InputError, match=r"odd_checkpoint\.pth.*fractions\.Fraction") as err:
        load_checkpoint(bad, _method(fixture_dir)["spec"])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_input_crop_on_the_variants_grid(fixture_dir, manifest, case, variant):
    image, label = case
    pre = manifest["variants"][variant]["preprocessing"]
    grid = pp.to_model_grid(image, label=label, resample_grid=VARIANTS[variant])
    assert list(grid.shape) == pre["canonical_shape_ijk"]
    np.testing.assert_allclose(grid.affine, pre["canonical_affine_ras"], atol=1e-6)
    box = pp.crop_box(pp.gt_centre(grid.label_ijk > 0), 128)  # the official oracle centre
    assert list(box.start) == pre["crop_start_in_canonical_ijk"]
    ref = _load(fixture_dir, variant)
    np.testing.assert_array_equal(pp.extract(grid.label_ijk, box), ref["label"][0, 0])
    crop = pp.prepare_crop(grid, box)
    np.testing.assert_allclose(crop, ref["input"][0, 0], rtol=0, atol=1e-5)


def test_installed_torchio_is_recorded_with_its_grid_rule():
    import torchio

    record = pp.grid_provenance("torchio")
    assert record["torchio"] == torchio.__version__
    assert record["grid_rule"] == pp.torchio_grid_rule(torchio.__version__)
    assert pp.torchio_grid_rule("0.20.8") == "ceil_corner"
    assert pp.torchio_grid_rule("1.1.1") == "floor_centred"
    assert pp.grid_provenance("ceil_corner")["grid_rule"] == "ceil_corner"


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_network_from_the_stored_input(fixture_dir, manifest, models, variant, checkpoint):
    tol = manifest["tolerances"]
    ref = _load(fixture_dir, variant)
    precision = _method(fixture_dir)["precision"]
    session = CropSession(models[checkpoint], ref["input"][0, 0], device="cpu", precision=precision)
    np.testing.assert_allclose(
        session.embedding.numpy(), ref["embedding"], rtol=0, atol=tol["embedding_atol"]
    )
    low = session.empty_logits()
    for k in range(ref["lowres"].shape[0]):
        points, labels = ref["points"][0, : k + 1], ref["labels"][0, : k + 1]
        low, prob = session.decode(points, labels, low)
        np.testing.assert_allclose(
            low.numpy(), ref["lowres"][k], rtol=0, atol=tol["lowres_logits_atol"]
        )
        differ = (prob > 0.5) != ref["crop_masks"][k].astype(bool)
        band = _near_threshold(ref["lowres"][k], tol["mask_logit_band"])
        assert not (differ & ~band).any(), f"click {k + 1}: {int(differ.sum())} voxels differ"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_final_masks_on_the_original_grid(
    fixture_dir, manifest, models, case, variant, monkeypatch
):
    """segment_object, the predictor's per-object path, with the official oracle crop
    centre and the fixture's clicks in place of the simulated user."""
    image, label = case
    ref = _load(fixture_dir, variant)
    tol = manifest["tolerances"]
    info = manifest["variants"][variant]
    method = _method(fixture_dir, VARIANTS[variant])
    grid = pp.to_model_grid(image, label=label, resample_grid=method["resample_grid"])
    start = np.asarray(info["preprocessing"]["crop_start_in_canonical_ijk"])
    crop_clicks = np.c_[ref["points"][0], ref["labels"][0]].astype(np.int64)
    queue = list(crop_clicks[1:])
    monkeypatch.setattr(
        click_rules,
        "first_click",
        lambda *a, **k: np.r_[crop_clicks[0, :3] + start, crop_clicks[0, 3]],
    )
    monkeypatch.setattr(click_rules, "next_click_index", lambda *a, **k: queue.pop(0))
    result = segment_object(
        models[CHECKPOINTS[1]],
        grid,
        grid.label_ijk > 0,
        n_clicks=len(crop_clicks),
        oracle_gt_centre=True,
        device="cpu",
        precision=method["precision"],
    )
    assert list(result.box.start) == list(start)
    shape = tuple(manifest["input_volume"]["shape_ijk"][::-1])
    counts = info["near_threshold_counts_band_1e-5"]
    for k, mask in enumerate(result.masks):
        assert mask.shape == shape
        band = _near_threshold(ref["lowres"][k], tol["mask_logit_band"]).astype(np.uint8)
        allowed = pp.block_to_original(band, result.box.start, grid) > 0
        assert int(allowed.sum()) == counts[k]["original_voxels"]
        differ = mask != ref["orig_masks"][k]
        assert not (differ & ~allowed).any(), f"click {k + 1}: {int(differ.sum())} differ"
        # the outermost layer of the original grid is predicted, as the official code does
        edge = np.ones(shape, bool)
        edge[1:-1, 1:-1, 1:-1] = False
        assert (ref["orig_masks"][k][edge] > 0).sum() > 0
        assert np.array_equal(mask[edge & ~allowed], ref["orig_masks"][k][edge & ~allowed])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_official_crop_masks_map_back_exactly(fixture_dir, manifest, variant):
    """The paste-back rule alone, from the fixture's crop masks and affines (no torchio)."""
    info = manifest["variants"][variant]["preprocessing"]
    ref = _load(fixture_dir, variant)
    shape_zyx = tuple(info["original_shape_ijk"][::-1])
    grid = pp.ModelGrid(
        image_ijk=np.zeros(info["canonical_shape_ijk"], np.float32),
        affine=np.asarray(info["canonical_affine_ras"]),
        original_shape_zyx=shape_zyx,
        original_affine=np.asarray(info["original_affine_ras"]),
        geometry=None,
    )
    start = tuple(info["crop_start_in_canonical_ijk"])
    for k in range(ref["crop_masks"].shape[0]):
        back = pp.block_to_original(ref["crop_masks"][k], start, grid)
        np.testing.assert_array_equal(back, ref["orig_masks"][k])
