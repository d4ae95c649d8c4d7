"""Cross-checks of medsegflow.metrics against medpy 0.5.2 and an independent NSD reference.

medpy is run on the full, uncropped arrays, so these tests also check that cropping to the
bounding box (and dropping size-1 axes) changes no number. Real masks come from the shared
public fixtures in ``../shared/data``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from medpy.metric import binary as medpy_binary
from scipy import ndimage
from scipy.spatial import cKDTree

from medsegflow.io import read_raster, read_volume
from medsegflow.metrics import NSD_VOXEL, compute_metrics

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
RTOL = 1e-6


def _fixture(relative: str) -> Path:
    path = DATA / relative
    if not path.is_file():
        pytest.fail(f"shared fixture {path} not found (expected ../shared/data beside the repo)")
    return path


def _blob(shape: tuple[int, ...], seed: int, *, level: float = 0.1) -> np.ndarray:
    """Seeded blobby bool mask: smoothed Gaussian noise thresholded at ``level``."""
    noise = np.random.default_rng(seed).standard_normal(shape)
    return ndimage.gaussian_filter(noise, sigma=2.0) > level


def _assert_matches_medpy(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...]) -> None:
    """compute_metrics agrees with medpy's dc, jc, hd95, assd, precision, recall, specificity."""
    ours = compute_metrics(pred.astype(bool), gt.astype(bool), spacing)[1]
    expected = {
        "dsc": medpy_binary.dc(pred, gt),
        "iou": medpy_binary.jc(pred, gt),
        "hd95_mm": medpy_binary.hd95(pred, gt, voxelspacing=spacing),
        "assd_mm": medpy_binary.assd(pred, gt, voxelspacing=spacing),
        "precision": medpy_binary.precision(pred, gt),
        "recall": medpy_binary.recall(pred, gt),
        "specificity": medpy_binary.specificity(pred, gt),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(ours[name], value, rtol=RTOL, err_msg=name)


def _shift(mask: np.ndarray, offset: tuple[int, ...]) -> np.ndarray:
    """``mask`` moved by ``offset`` voxels, zero-filled (no wrap-around)."""
    padded = np.pad(mask, [(abs(o), abs(o)) for o in offset])
    window = tuple(
        slice(abs(o) - o, abs(o) - o + n) for o, n in zip(offset, mask.shape, strict=True)
    )
    return padded[window]


# --- medpy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_blobs_3d_anisotropic_match_medpy(seed: int) -> None:
    shape = (18, 40, 36)
    gt = _blob(shape, seed)
    pred = _blob(shape, seed + 100, level=0.05) | _shift(gt, (1, 2, -1))
    _assert_matches_medpy(pred, gt, (2.5, 0.8, 1.1))


def test_masks_touching_the_image_border_match_medpy() -> None:
    gt = np.zeros((6, 20, 20), dtype=bool)
    gt[:, :8, 3:12] = True  # through every slice and along the y=0 border
    pred = np.zeros_like(gt)
    pred[2:, 5:, 15:] = True  # the far corner
    _assert_matches_medpy(pred, gt, (3.0, 0.7, 0.9))
    _assert_matches_medpy(np.ones_like(gt), gt, (3.0, 0.7, 0.9))


def test_real_sarcoma_ct_mask_shifted_matches_medpy() -> None:
    volume = read_volume(_fixture("ibsi_sts/STS_001/CT_mask.nii.gz"))
    gt = volume.array_zyx > 0
    _assert_matches_medpy(_shift(gt, (1, 3, -2)), gt, volume.spacing_zyx)


@pytest.mark.parametrize("operation", [ndimage.binary_erosion, ndimage.binary_dilation])
def test_real_spleen_mask_eroded_or_dilated_matches_medpy(operation) -> None:
    volume = read_volume(_fixture("msd_spleen_crop/sub-spleen2_ct_seg-manual.nii.gz"))
    gt = volume.array_zyx > 0
    pred = operation(gt, structure=np.ones((1, 3, 3), bool), iterations=2)
    _assert_matches_medpy(pred, gt, volume.spacing_zyx)


def test_real_2d_ultrasound_mask_matches_medpy_and_its_one_slice_volume() -> None:
    gt_yx = read_raster(_fixture("busi_mini/masks/10018.png")).any(axis=-1)
    pred_yx = _shift(gt_yx, (4, -6))
    spacing_yx = (0.5, 0.7)
    _assert_matches_medpy(pred_yx, gt_yx, spacing_yx)
    flat = compute_metrics(pred_yx, gt_yx, spacing_yx)
    stacked = compute_metrics(pred_yx[None], gt_yx[None], (3.0, *spacing_yx))
    np.testing.assert_equal(stacked, flat)


# --- independent surface-Dice reference -----------------------------------------------------


def _surface_points_mm(mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """(K, ndim) physical coordinates of voxels with a face neighbour outside the mask or
    outside the image (size-1 axes dropped first)."""
    keep = [axis for axis, size in enumerate(mask.shape) if size > 1]
    mask = mask.reshape([mask.shape[axis] for axis in keep])
    inside = np.pad(mask, 1, constant_values=False)
    centre = tuple(slice(1, -1) for _ in range(mask.ndim))
    exposed = np.zeros_like(mask)
    for axis in range(mask.ndim):
        for step in (-1, 1):
            neighbour = list(centre)
            neighbour[axis] = slice(1 + step, inside.shape[axis] - 1 + step)
            exposed |= ~inside[tuple(neighbour)]
    return np.argwhere(mask & exposed) * np.asarray([spacing[axis] for axis in keep])


def _reference_distances(pred, gt, spacing) -> tuple[np.ndarray, np.ndarray]:
    pred_points, gt_points = _surface_points_mm(pred, spacing), _surface_points_mm(gt, spacing)
    pred_to_gt, _ = cKDTree(gt_points).query(pred_points)
    gt_to_pred, _ = cKDTree(pred_points).query(gt_points)
    return pred_to_gt, gt_to_pred


@pytest.mark.parametrize(
    ("shape", "spacing", "seed"),
    [
        ((16, 36, 40), (2.5, 0.8, 1.1), 3),
        ((16, 36, 40), (1.7, 0.6, 0.45), 4),
        ((1, 60, 50), (3.0, 0.9, 0.6), 5),
    ],
)
def test_nsd_hd95_assd_match_a_kdtree_reference(
    shape: tuple[int, ...], spacing: tuple[float, ...], seed: int
) -> None:
    gt = _blob(shape, seed)
    pred = _blob(shape, seed + 50) | _shift(gt, (0, 1, 2))
    pred_to_gt, gt_to_pred = _reference_distances(pred, gt, spacing)
    pooled = np.concatenate([pred_to_gt, gt_to_pred])
    for tau in (0.5, 1.0, 2.0, 3.5):
        # the comparison is only meaningful when no distance sits on the tolerance itself
        assert np.min(np.abs(pooled - tau)) > 1e-6
        expected_nsd = np.count_nonzero(pooled <= tau) / pooled.size
        ours = compute_metrics(pred, gt, spacing, tau, nsd_variant=NSD_VOXEL)[1]
        np.testing.assert_allclose(ours["nsd"], expected_nsd, rtol=RTOL, err_msg=f"tau={tau}")
    np.testing.assert_allclose(ours["hd95_mm"], np.percentile(pooled, 95), rtol=RTOL)
    np.testing.assert_allclose(ours["assd_mm"], pooled.mean(), rtol=RTOL)
