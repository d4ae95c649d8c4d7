"""A tiny nnInteractive model folder in the released layout, with random weights.

The layout is the one ``nnInteractiveInferenceSession.initialize_from_trained_model_folder``
reads (and the released ``nnInteractive_v1.0`` folder has): ``plans.json`` and
``dataset.json`` of nnU-Net v2, the capability metadata, and
``fold_<f>/checkpoint_final.pth`` saved as nnU-Net's trainer saves it
(``network_weights``, ``trainer_name``, ``init_args`` with the ``configuration``, ...).
The network is the package's own build (``nnInteractiveTrainer_stub``, nnU-Net's
``PlainConvUNet`` from the plans), small: 3 stages of 4/8/16 features on a 56^3 patch
(the package's refinement leaves a 24-voxel margin, so a patch must exceed 48 voxels).
"""

from __future__ import annotations

import json
from pathlib import Path

PATCH = [56, 56, 56]
CONFIGURATION = "3d_fullres"
TRAINER = "nnInteractiveTrainer_stub"

LEGACY_CAPABILITY = {
    "point_radius": 4,
    "preferred_scribble_thickness": [2, 2, 2],
    "interaction_decay": 0.9,
    "pad_mode_image": "constant",
}
"""``inference_session_class.json`` as older folders have it: the package's legacy
capability (points, 2D boxes, scribbles, lassos; no 3D boxes)."""

BOX3D_CAPABILITY = {
    "inference_class": "nnInteractiveInferenceSession",
    "supported_interactions": {
        "points": True,
        "bbox2d": True,
        "bbox3d": True,
        "scribble": True,
        "lasso": True,
    },
    "interaction_channels": 6,
    "point_radius": 4,
    "preferred_scribble_thickness": [2, 2, 2],
    "interaction_decay": 0.9,
}
"""``inference_info.json`` (the current capability format) declaring 3D boxes too."""


def tiny_plans() -> dict:
    arch_kwargs = {
        "n_stages": 3,
        "features_per_stage": [4, 8, 16],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 3,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [1, 1, 1],
        "n_conv_per_stage_decoder": [1, 1],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": "Dataset999_TinyInteractive",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [24, 48, 48],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            CONFIGURATION: {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": PATCH,
                "median_image_size_in_voxels": [24, 48, 48],
                "spacing": [1.0, 1.0, 1.0],
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": resampling,
                "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
                "architecture": {
                    "network_class_name": (
                        "dynamic_network_architectures.architectures.unet.PlainConvUNet"
                    ),
                    "arch_kwargs": arch_kwargs,
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                },
                "batch_dice": False,
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 1.0,
                "mean": 0.0,
                "median": 0.0,
                "min": 0.0,
                "percentile_00_5": 0.0,
                "percentile_99_5": 1.0,
                "std": 1.0,
            }
        },
    }


TINY_DATASET = {
    "channel_names": {"0": "CT"},
    "labels": {"background": 0, "object": 1},
    "numTraining": 1,
    "file_ending": ".nii.gz",
}


def write_tiny_model_folder(
    folder: Path, *, box3d: bool = False, fold: str = "0", seed: int = 0
) -> Path:
    """Write the folder (module docstring) and return it. ``box3d``: the current
    capability file declaring 3D boxes, else the legacy one (the released v1.0's kind)."""
    import torch
    from nnInteractive.trainer.nnInteractiveTrainer import nnInteractiveTrainer_stub
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = Path(folder)
    (folder / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
    plans = tiny_plans()
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    (folder / "dataset.json").write_text(json.dumps(TINY_DATASET, indent=1))
    if box3d:
        (folder / "inference_info.json").write_text(json.dumps(BOX3D_CAPABILITY))
    else:
        (folder / "inference_session_class.json").write_text(json.dumps(LEGACY_CAPABILITY))
    manager = PlansManager(plans)
    torch.manual_seed(seed)
    # 1 image channel + 7 interaction channels (the legacy mapping's prev_seg and 3 pairs)
    network = nnInteractiveTrainer_stub.build_network_architecture(
        manager,
        manager.get_configuration(CONFIGURATION),
        1 + 7,
        2,
        enable_deep_supervision=False,
    )
    checkpoint = {
        "network_weights": network.state_dict(),
        "optimizer_state": None,
        "grad_scaler_state": None,
        "logging": {},
        "_best_ema": None,
        "current_epoch": 1,
        "init_args": {
            "plans": plans,
            "configuration": CONFIGURATION,
            "fold": int(fold) if fold != "all" else fold,
            "dataset_json": TINY_DATASET,
            "device": torch.device("cpu"),
        },
        "trainer_name": TRAINER,
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    torch.save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder
