"""Real CT fixtures (MSD spleen crop, IBSI sarcoma) converted and checked as nnU-Net reads them."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from medsegflow.datasets.canonical import image_path, label_path
from medsegflow.datasets.registry import prepare_dataset
from medsegflow.errors import InputError
from medsegflow.io import read_volume
from medsegflow.nnunet.convert import convert_dataset
from medsegflow.nnunet.plan import POOL_MODULES, in_process_pools, verify_raw_dataset

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

FIXTURES = {
    "spleen": (
        {
            "root": str(DATA / "msd_spleen_crop"),
            "images": "sub-*_ct.nii.gz",
            "label_replace": [["_ct.nii.gz", "_ct_seg-manual.nii.gz"]],
            "case_id": "(sub-[^_/]+)",
            "labels": {"background": 0, "spleen": 1},
            "modality": "CT",
            "split_all": "train",
        },
        {"sub-spleen2": (26, 166, 164)},
    ),
    "sarcoma": (
        {
            "root": str(DATA / "ibsi_sts"),
            "images": "STS_*/CT_image.nii.gz",
            "label_replace": [["CT_image", "CT_mask"]],
            "case_id": r"(STS_\d+)/",
            "labels": {"background": 0, "tumour": 1},
            "modality": "CT",
            "split": {"STS_001": "train", "STS_002": "val"},
        },
        {"STS_001": None, "STS_002": None},
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_real_ct_converts_and_passes_nnunet_integrity_check(name: str, tmp_path: Path) -> None:
    if not DATA.is_dir():
        pytest.fail(f"real fixtures not found at {DATA}")
    params, shapes = FIXTURES[name]
    data_dir = tmp_path / "data" / name
    prepare_dataset(adapter="nifti_folder", params=params, seed=0, out_dir=data_dir)
    marker = convert_dataset(
        data_dir=data_dir,
        nnunet_dir=tmp_path / "nnunet",
        dataset=name,
        out_marker=tmp_path / "m.json",
    )
    folder = tmp_path / "nnunet" / "nnUNet_raw" / marker["dataset_name"]
    verify_raw_dataset(folder, num_processes=1)  # nnU-Net's own check: keys, labels, grids

    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    content = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    assert content["channel_names"] == {"0": "CT"}
    assert content["numTraining"] == len(shapes)
    for case_id, shape in shapes.items():
        canonical = read_volume(image_path(data_dir, case_id))
        if shape is not None:
            assert canonical.array_zyx.shape == shape
        images, props = SimpleITKIO().read_images(
            [str(folder / "imagesTr" / f"{case_id}_0000.nii.gz")]
        )
        seg, seg_props = SimpleITKIO().read_seg(str(folder / "labelsTr" / f"{case_id}.nii.gz"))
        assert images.shape == (1, *canonical.array_zyx.shape)
        np.testing.assert_array_equal(images[0], canonical.array_zyx)  # HU untouched
        np.testing.assert_allclose(props["spacing"], canonical.spacing_zyx, rtol=1e-6)
        assert props["sitk_stuff"]["origin"] == seg_props["sitk_stuff"]["origin"]
        gt = read_volume(label_path(data_dir, case_id)).array_zyx
        np.testing.assert_array_equal(seg[0], gt)
        assert 0 < int(seg.sum()) < seg.size


def test_integrity_failure_is_one_line_naming_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "Dataset123_broken"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1}}
    (folder / "dataset.json").write_text(
        json.dumps({**dataset_json, "numTraining": 2}), encoding="utf-8"
    )
    with pytest.raises(InputError) as err:
        verify_raw_dataset(folder)
    assert str(err.value).startswith(f"{folder}: nnU-Net dataset integrity check failed:")
    assert "\n" not in str(err.value)


def test_one_process_plans_with_pools_inside_the_job_process() -> None:
    modules = [importlib.import_module(name) for name in POOL_MODULES]
    originals = [module.multiprocessing for module in modules]
    with in_process_pools(2) as inside:  # several processes: nnU-Net's spawn pools
        assert not inside
        assert [module.multiprocessing for module in modules] == originals
    with in_process_pools(1) as inside:
        assert inside
        for module in modules:
            with module.multiprocessing.get_context("spawn").Pool(1) as pool:
                assert pool.starmap(os.getpid, [()]) == [os.getpid()]
    assert [module.multiprocessing for module in modules] == originals
