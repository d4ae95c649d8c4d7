"""SAMed and SAMed_s against the official ``test.py`` (``../shared/conformance/samed*``).

Each fixture is SAMed's LoRA file ``epoch_159.pth`` (rank 4, 3 classes, image 512) on the
tiny random SAM ``../sam/tiny_sam.pth`` as the base, run by the official ``test.py`` on 3
real CT slices with ``--input_size 224`` (its default) and ``--input_size 512``.

The path is a user's: the base is a ``sam_models`` entry with an explicit architecture
(``../sam/arch.json``), the LoRA file is imported by the ``import`` recipe of the training
stage (:func:`~medsegflow.training.stage.train_sam_model`), which writes the pipeline
model and card; the predictor's steps then load it (:func:`load_sam_model`, LoRA merged),
apply the ``sam_semantic`` method's ``input_size`` and segment every slice
(:func:`segment_semantic_volume`). Checked, with the README's tolerances: the network
input (atol 1e-6), the low-res logits (atol 1e-4) and the label maps (equal, except where
the reference's two largest upsampled class logits are within 1e-4).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import zoom

from medsegflow.families.registry import complete_method
from medsegflow.io import read_volume
from medsegflow.methods.sam_semantic import (
    hu_window_slices,
    segment_semantic_volume,
    with_test_input_size,
)
from medsegflow.models.model_card import read_card
from medsegflow.models.sam_encode import encode_slices
from medsegflow.models.sam_loader import load_sam_model
from medsegflow.models.sam_lora import merge_lora
from medsegflow.models.semantic_sam import decode_semantic
from medsegflow.precision import encoder_batch_size
from medsegflow.preprocess.intensity import window_ct
from medsegflow.training.stage import train_sam_model

SYSTEMS = ("samed", "samed_s")
INPUT_SIZES = (224, 512)
CLASSES = ["class1", "class2", "class3"]


def _tiny_arch(conformance_root: Path) -> dict:
    """The base's explicit architecture, as a user writes it under sam_models.<name>.arch."""
    arch = json.loads((conformance_root / "sam" / "arch.json").read_text(encoding="utf-8"))
    return {
        "like": "vit_b",
        "embed_dim": arch["encoder_embed_dim"],
        "depth": arch["encoder_depth"],
        "num_heads": arch["encoder_num_heads"],
        "global_attn_indexes": arch["encoder_global_attn_indexes"],
    }


@pytest.fixture(scope="module", params=SYSTEMS)
def imported(request, conformance_root: Path, tmp_path_factory) -> tuple[str, Path, Path]:
    """``(system, fixture folder, pipeline weights)`` of the imported LoRA checkpoint."""
    torch.set_num_threads(1)
    system = request.param
    folder = conformance_root / system
    lora = json.loads((folder / "lora.json").read_text(encoding="utf-8"))
    out = tmp_path_factory.mktemp(system) / "sam.pth"
    train_sam_model(
        model=f"{system}_released",
        arch=_tiny_arch(conformance_root),
        train={
            "recipe": "import",
            "format": system,
            "weights": f"{system}_lora",
            "image_size": lora["img_size"],
            "rank": lora["rank"],
            "classes": CLASSES[: lora["num_classes"]],
        },
        preprocessed_dirs=[],
        out_weights=out,
        seed=0,
        base={"model": "tiny_sam", "checkpoint": str(conformance_root / "sam" / "tiny_sam.pth")},
        checkpoint=folder / "epoch_159.pth",
    )
    return system, folder, out


def _predictor_model(weights: Path, input_size: int):
    """The model as ``predict_sam_semantic`` prepares it for a method with ``input_size``."""
    method = complete_method(
        {"family": "sam_semantic", "model": "samed_released", "input_size": input_size}, "samed"
    )
    card = read_card(weights)
    model, device = load_sam_model(weights, arch=card["arch"], device="cpu")
    merge_lora(model)
    with_test_input_size(model, method["input_size"])
    return model, device, method


@pytest.mark.parametrize("system", SYSTEMS)
def test_hu_window_gives_samed_s_float_input(conformance_root, system):
    """``hu_window: [-125, 275]``: the canonical CT as SAMed's preprocess_data.py makes its
    test volumes (the fixture's input slices, exactly); the uint8 slices do not."""
    stack = np.load(conformance_root / system / "inputs" / "spleen2_stack.npz")
    ct = read_volume(conformance_root.parent / "data" / "msd_spleen_crop" / "sub-spleen2_ct.nii.gz")
    slices = hu_window_slices(ct.array_zyx, [-125, 275])[stack["z_index"]]
    assert slices.dtype == np.float32
    np.testing.assert_array_equal(slices, stack["image"])
    uint8 = window_ct(ct.array_zyx, level=75, width=400)[stack["z_index"]] / 255.0
    assert np.abs(uint8 - stack["image"]).max() > 1e-3


def test_the_method_default_is_test_py_input_size():
    method = complete_method({"family": "sam_semantic", "model": "m"}, "samed")
    assert method["input_size"] == 224
    assert method["precision"] == "fp32"
    assert method["hu_window"] is None


@pytest.mark.parametrize("input_size", INPUT_SIZES)
def test_network_input_logits_and_labels(imported, input_size):
    system, folder, weights = imported
    model, device, method = _predictor_model(weights, input_size)
    stack = np.load(folder / "inputs" / "spleen2_stack.npz")
    image = stack["image"]
    # network input of slice 0 (channel 0; the 3 channels are equal)
    debug = np.load(folder / "debug" / f"input{input_size}.npz")
    net = model.input_recipe.prepare_image(image[0])
    assert net.shape == (3, 512, 512) and np.array_equal(net[0], net[2])
    crops = {"top_left": (0, 128), "centre": (192, 320), "bottom_right": (384, 512)}
    for name, (a, b) in crops.items():
        np.testing.assert_allclose(
            net[0, a:b, a:b], debug[f"net_input_z0_{name}"], rtol=0, atol=1e-6, err_msg=name
        )
    if input_size == 224:
        first = zoom(image[0], (224 / image.shape[1], 224 / image.shape[2]), order=3)
        np.testing.assert_allclose(first, debug["first_zoom_z0"], rtol=0, atol=1e-6)
    # low-res logits of every slice
    reference = np.load(folder / "outputs" / f"input{input_size}" / "low_res_logits.npy")
    embeddings = encode_slices(
        image, model=model, device=device, batch_size=3, precision=method["precision"]
    )
    assert embeddings.dtype == np.float32
    with torch.inference_mode():
        logits = decode_semantic(model, torch.from_numpy(embeddings)).numpy()
    assert logits.shape == reference.shape
    np.testing.assert_allclose(logits, reference, rtol=0, atol=1e-4, err_msg=system)
    # label maps, through the predictor's volume function
    expected = np.load(folder / "outputs" / f"input{input_size}" / "prediction.npz")["prediction"]
    labels = segment_semantic_volume(
        image,
        model=model,
        values=np.arange(len(CLASSES) + 1),
        device=device,
        batch_size=encoder_batch_size(method["batch_size"], "cpu"),
        precision=method["precision"],
    )
    assert labels.shape == expected.shape
    up = F.interpolate(torch.from_numpy(reference), (512, 512), mode="bilinear")
    top2 = torch.topk(up, 2, dim=1).values
    close = ((top2[:, 0] - top2[:, 1]) <= 1e-4).numpy().astype(np.uint8)
    factors = (expected.shape[1] / 512, expected.shape[2] / 512)
    allowed = np.stack([zoom(c, factors, order=0) for c in close]) > 0
    differ = labels != expected
    assert not (differ & ~allowed).any(), f"{system}: {int(differ.sum())} label voxels differ"
    # scipy's order-0 zoom leaves the last of the 166 rows 0, as SAMed's own output
    assert not expected[:, -1, :].any() and not labels[:, -1, :].any()
    assert len(np.unique(expected)) == len(CLASSES) + 1


def test_the_predictor_with_hu_window_writes_the_official_labels(imported, tmp_path):
    """The whole prediction job of a ``sam_semantic`` method (``hu_window: [-125, 275]``,
    ``input_size`` 224) on a canonical dataset of the fixture's three CT slices: the label
    volume it writes is test.py's (near-tie voxels excepted)."""
    from medsegflow.datasets.canonical import CanonicalCase, write_canonical_dataset
    from medsegflow.io import Volume
    from medsegflow.methods.sam_semantic import predict_sam_semantic
    from medsegflow.prediction.job import PredictJob
    from medsegflow.stages.preprocess import preprocess_dataset

    system, folder, weights = imported
    stack = np.load(folder / "inputs" / "spleen2_stack.npz")
    data = folder.parent.parent / "data" / "msd_spleen_crop"
    ct = read_volume(data / "sub-spleen2_ct.nii.gz")
    seg = read_volume(data / "sub-spleen2_ct_seg-manual.nii.gz")
    z = stack["z_index"]
    case = CanonicalCase(
        "spleen2",
        "test",
        "CT",
        Volume(np.ascontiguousarray(ct.array_zyx[z]), ct.geometry),
        Volume(np.ascontiguousarray(seg.array_zyx[z]).astype(np.uint8), ct.geometry),
    )
    labels = {"background": 0, **{name: i + 1 for i, name in enumerate(CLASSES)}}
    write_canonical_dataset([case], label_map=labels, out_dir=tmp_path / "data")
    preprocess_dataset(
        data_dir=tmp_path / "data",
        out_dir=tmp_path / "pre",
        window={"level": 75, "width": 400},
        cleaning={"min_voxels_3d": 0, "min_pixels_2d": 0},
        n_empty_slices=1000,
        seed=0,
    )
    block = {"family": "sam_semantic", "model": "m", "hu_window": [-125, 275]}
    job = PredictJob(
        method=complete_method(block, system),
        method_name=system,
        inputs={
            "preprocessed": str(tmp_path / "pre" / "manifest.tsv"),
            "data": str(tmp_path / "data" / "cases.tsv"),
            "checkpoint": str(weights),
        },
        out_dir=tmp_path / "predictions",
        splits=("test",),
        seed=0,
        device="cpu",
    )
    predict_sam_semantic(job)
    written = read_volume(tmp_path / "predictions" / "spleen2.nii.gz").array_zyx
    expected = np.load(folder / "outputs" / "input224" / "prediction.npz")["prediction"]
    reference = np.load(folder / "outputs" / "input224" / "low_res_logits.npy")
    up = F.interpolate(torch.from_numpy(reference), (512, 512), mode="bilinear")
    top2 = torch.topk(up, 2, dim=1).values
    close = ((top2[:, 0] - top2[:, 1]) <= 1e-4).numpy().astype(np.uint8)
    factors = (expected.shape[1] / 512, expected.shape[2] / 512)
    allowed = np.stack([zoom(c, factors, order=0) for c in close]) > 0
    assert written.shape == expected.shape
    differ = written != expected
    assert not (differ & ~allowed).any(), f"{system}: {int(differ.sum())} label voxels differ"
