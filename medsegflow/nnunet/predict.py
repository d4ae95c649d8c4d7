"""Predict a split with a trained nnU-Net method; masks in the canonical image geometry.

The family predictor of ``nnunet`` methods (:mod:`medsegflow.families.nnunet`). It
reads the model tree named in ``training.json`` (``plans.json``, ``dataset.json``,
``fold_<f>/checkpoint_final.pth``), builds the network with the same trainer class that
trained it and hands it to ``nnUNetPredictor.manual_initialization`` (no lookup of the
trainer by name), then predicts each canonical image (read with nnU-Net's SimpleITK
reader, as in training) on CUDA, MPS or the CPU (``perform_everything_on_device`` only on
CUDA). Labels are mapped back to the dataset's values and written with the canonical
image's geometry; ``manifest.tsv`` (``case_id, split, n_prompts (0), seconds``) last.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medsegflow.datasets.canonical import image_path
from medsegflow.errors import InputError
from medsegflow.io import Volume, read_volume
from medsegflow.nnunet.convert import labels_to_original
from medsegflow.nnunet.env import pick_device, process_output_to_log
from medsegflow.nnunet.plan import read_marker
from medsegflow.nnunet.trainer import schedule_trainer
from medsegflow.prediction.cases import predict_cases
from medsegflow.prediction.job import PredictJob
from medsegflow.threads import limit_threads

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def build_network(
    training: Mapping[str, Any], plans_manager: Any, dataset_json: dict
) -> tuple[Any, dict, tuple[int, ...] | None]:
    """The trained network (weights loaded on the CPU), built by the class that trained it;
    its weights and the mirroring axes allowed at inference."""
    import torch
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    checkpoint_file = Path(training["checkpoint"])
    if not checkpoint_file.is_file():
        raise InputError(f"{checkpoint_file}: nnU-Net checkpoint not found")
    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    trainer_class = schedule_trainer(
        training["base_trainer"],
        epochs=training["num_epochs"],
        iterations_per_epoch=training["num_iterations_per_epoch"],
        val_iterations=training["num_val_iterations_per_epoch"],
    )
    configuration = plans_manager.get_configuration(training["configuration"])
    network = trainer_class.build_network_architecture(
        plans_manager,
        configuration,
        determine_num_input_channels(plans_manager, configuration, dataset_json),
        plans_manager.get_label_manager(dataset_json).num_segmentation_heads,
        enable_deep_supervision=False,
    )
    network.load_state_dict(checkpoint["network_weights"])
    axes = checkpoint.get("inference_allowed_mirroring_axes")
    return network, checkpoint["network_weights"], axes


def load_predictor(training: Mapping[str, Any], *, threads: int = 2, mirroring: bool = True) -> Any:
    """An initialised ``nnUNetPredictor`` for the model described by a ``training.json``.

    ``mirroring``: nnU-Net's test-time augmentation (average over mirrored inputs).
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    limit_threads(threads)
    model_dir = Path(training["model_dir"])
    plans_manager = PlansManager(str(model_dir / "plans.json"))
    dataset_json = read_marker(model_dir / "dataset.json")
    network, weights, axes = build_network(training, plans_manager, dataset_json)
    device = pick_device()
    predictor = nnUNetPredictor(
        use_mirroring=mirroring,
        perform_everything_on_device=device.type == "cuda",
        device=device,
        allow_tqdm=False,
    )
    predictor.manual_initialization(
        network,
        plans_manager,
        plans_manager.get_configuration(training["configuration"]),
        [weights],
        dataset_json,
        training["trainer"],
        axes,
    )
    log.info(
        "loaded %s (%s, fold %s) on %s",
        training["checkpoint"],
        training["configuration"],
        training["fold"],
        device,
    )
    return predictor


def predict_case(predictor: Any, image_file: Path, nnunet_to_original: Mapping[Any, int]) -> Volume:
    """Labels (dataset values, uint8/uint16 ``zyx``) for one canonical image, in its geometry."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    data, properties = SimpleITKIO().read_images([str(image_file)])
    segmentation = predictor.predict_single_npy_array(data, properties, None, None, False)
    geometry = read_volume(image_file).geometry
    if segmentation.shape != data.shape[1:]:
        raise InputError(
            f"{image_file}: nnU-Net returned shape {segmentation.shape}, image is {data.shape[1:]}"
        )
    return Volume(labels_to_original(segmentation, nnunet_to_original), geometry)


def predict_nnunet(job: PredictJob) -> pd.DataFrame:
    """The family predictor (``family: nnunet``): every case of ``job`` through the shared
    per-case loop (:func:`~medsegflow.prediction.cases.predict_cases`).

    ``job.inputs``: ``preprocessed`` (manifest: which cases), ``data`` (canonical
    ``cases.tsv``: the images, in HU for CT as nnU-Net was trained) and ``model`` (the
    method's ``training.json``).
    """
    job.require("data", "model", family="nnunet")
    training = read_marker(job.inputs["model"])
    data_dir = Path(job.inputs["data"]).parent
    with process_output_to_log():
        predictor = load_predictor(
            training,
            threads=int(job.method["num_processes"]),
            mirroring=bool(job.method["mirroring"]),
        )

        def segment(case: dict[str, Any], image: Volume) -> tuple[np.ndarray, int]:
            volume = predict_case(
                predictor, image_path(data_dir, case["case_id"]), training["nnunet_to_original"]
            )
            if not volume.geometry.matches(image.geometry):
                raise InputError(
                    f"{image_path(data_dir, case['case_id'])}: geometry differs from the "
                    "preprocessed image's; prepare and preprocess the dataset again"
                )
            return volume.array_zyx, 0

        return predict_cases(job, segment=segment, desc=f"nnU-Net {job.method_name}")
