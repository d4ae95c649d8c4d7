"""Colour 2D images stay RGB from the adapter to the encoder; one-channel steps convert.

The canonical layout stores an 8-bit colour image whose channels differ as a one-slice RGB
vector NIfTI, ``(1, H, W, 3)`` uint8 (:func:`medsegflow.io.colour_or_grey`). The image is
made of real slices of ``../shared/data`` in its three channels (R and G two AMOS CT slices,
B a chest X-ray; the same construction as the SAM conformance fixture's ``rgbmix512``), so
a grey conversion or a channel swap anywhere changes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sam_fixtures import TINY_SAM_2BLOCK, embedded_sam_inputs

from medsegflow.datasets.canonical import image_path, label_path
from medsegflow.datasets.registry import prepare_dataset
from medsegflow.errors import InputError
from medsegflow.io import grey_of, read_volume
from medsegflow.manifests import read_preprocessed_image
from medsegflow.models.sam_archs import build_sam
from medsegflow.models.sam_cache import load_case_embeddings
from medsegflow.models.sam_encode import encode_slices
from medsegflow.models.sam_loader import load_sam_model
from medsegflow.stages.preprocess import preprocess_dataset

torch.set_num_threads(1)


def colour_image(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """(512, 512, 3) uint8 RGB of three real slices, and the liver mask of its R slice."""
    demo = shared_data / "sammed2d_demo"
    red = np.asarray(Image.open(demo / "images" / "amos_0004_75.png"))[..., 0]
    green = np.asarray(Image.open(demo / "images" / "amos_0006_90.png"))[..., 0]
    blue = np.asarray(Image.open(shared_data / "cxr_lung" / "1.jpg").convert("L"))
    mask = np.asarray(Image.open(demo / "masks" / "amos_0004_75_liver_000.png"))
    return np.stack([red, green, blue], axis=-1), mask


@pytest.fixture(scope="module")
def colour_dataset(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("colour")
    rgb, mask = colour_image(shared_data)
    assert not np.array_equal(rgb[..., 0], rgb[..., 1])
    (root / "src" / "images").mkdir(parents=True)
    (root / "src" / "masks").mkdir(parents=True)
    Image.fromarray(rgb, mode="RGB").save(root / "src" / "images" / "mix.png")
    Image.fromarray(mask).save(root / "src" / "masks" / "mix.png")
    params = {"root": str(root / "src"), "modality": "CT-like RGB", "split_all": "test"}
    params.update(mask_mode="binary", labels={"background": 0, "organ": 1})
    prepare_dataset(adapter="png_folder", params=params, seed=0, out_dir=root / "data")
    preprocess_dataset(
        data_dir=root / "data",
        out_dir=root / "pre",
        cleaning={"min_voxels_3d": 0, "min_pixels_2d": 0},
        n_empty_slices=0,
        seed=0,
    )
    return root, rgb


def test_the_adapter_keeps_rgb_in_the_canonical_layout(colour_dataset):
    root, rgb = colour_dataset
    src = image_path(root / "data", "mix")
    image = read_volume(src, colour="rgb")
    assert image.array_zyx.shape == (1, 512, 512, 3) and image.array_zyx.dtype == np.uint8
    np.testing.assert_array_equal(image.array_zyx[0], rgb)
    assert read_volume(label_path(root / "data", "mix")).array_zyx.shape == (1, 512, 512)
    # a step that reads one channel says so: explicit grey, or a one-line error
    np.testing.assert_array_equal(read_volume(src, colour="grey").array_zyx[0], grey_of(rgb))
    with pytest.raises(InputError, match=r"mix\.nii\.gz.*RGB"):
        read_volume(src)


def test_preprocessing_keeps_the_8bit_rgb_image_unchanged(colour_dataset):
    root, rgb = colour_dataset
    pre = read_preprocessed_image(image_path(root / "pre", "mix"), colour="rgb")
    np.testing.assert_array_equal(pre.array_zyx[0], rgb)
    grey = read_preprocessed_image(image_path(root / "pre", "mix"), colour="grey")
    assert grey.array_zyx.shape == (1, 512, 512)


def test_the_encoder_gets_the_rgb_image(colour_dataset):
    root, rgb = colour_dataset
    torch.manual_seed(0)
    model = build_sam(TINY_SAM_2BLOCK)
    checkpoint = embedded_sam_inputs(model, root, arch=TINY_SAM_2BLOCK)["checkpoint"]
    cached = load_case_embeddings(root / "emb" / "mix.npz")
    loaded, device = load_sam_model(checkpoint, arch="demo", device="cpu")
    from_rgb = encode_slices(rgb[None], model=loaded, device=device, batch_size=1, precision="fp32")
    np.testing.assert_array_equal(cached.embeddings, from_rgb)
    grey = np.repeat(grey_of(rgb)[None, ..., None], 3, axis=-1)
    from_grey = encode_slices(grey, model=loaded, device=device, batch_size=1, precision="fp32")
    assert np.abs(cached.embeddings - from_grey).max() > 1e-3
    assert cached.original_size == (512, 512)


def test_sam_training_pairs_keep_rgb_through_augmentation(colour_dataset):
    from medsegflow.training.pairs import TrainingPairs, _dataset_pairs, augment_slice

    root, rgb = colour_dataset
    data = _dataset_pairs(root / "pre", "test")
    assert data.images[0].shape == (512, 512, 3)
    np.testing.assert_array_equal(data.images[0], rgb)
    for seed in range(4):  # flips and zoom crops move the three channels together
        rng = np.random.default_rng(seed)
        image, out = augment_slice(*TrainingPairs([data]).sample(rng), rng=rng)
        assert image.ndim == 3 and image.shape[:2] == out.shape[1:] and image.shape[2] == 3


def test_nnunet_gets_one_explicit_grey_channel(colour_dataset, tmp_path):
    from medsegflow.nnunet.convert import _copy_atomic

    root, rgb = colour_dataset
    _copy_atomic(image_path(root / "data", "mix"), tmp_path / "mix_0000.nii.gz")
    written = read_volume(tmp_path / "mix_0000.nii.gz")  # one channel: no colour argument
    np.testing.assert_array_equal(written.array_zyx[0], grey_of(rgb))


def test_qualitative_figures_show_the_colour_image(colour_dataset):
    from medsegflow.qualitative import _CaseReader

    root, rgb = colour_dataset
    image, gt, z = _CaseReader(root / "pre")("mix")
    np.testing.assert_array_equal(image[z], rgb)
    assert gt.shape == (1, 512, 512)
