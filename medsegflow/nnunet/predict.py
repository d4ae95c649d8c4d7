"""Predict a split with a trained nnU-Net method; masks in the canonical image geometry.

The family predictor of ``nnunet`` methods (:data:`medsegflow.methods.FAMILIES`). It
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
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from medsegflow.datasets.canonical import image_path
from medsegflow.errors import InputError
from medsegflow.io import Volume, read_volume, write_volume
from medsegflow.nnunet.convert import labels_to_original
from medsegflow.nnunet.env import pick_device, process_output_to_log
from medsegflow.nnunet.plan import read_marker
from medsegflow.nnunet.trainer import schedule_trainer
from medsegflow.stages.predict import (
    PREDICTION_COLUMNS,
    active_shard,
    select_cases,
    write_prediction_manifest,
)
from medsegflow.stages.preprocess import read_preprocessed_manifest

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
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    torch.set_num_threads(threads)
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


def predict_nnunet(
    *,
    method: Mapping[str, Any],
    method_name: str,
    inputs: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    splits: Sequence[str],
) -> pd.DataFrame:
    """Predict every case of ``splits`` (``FAMILIES`` signature); write volumes, manifest last.

    ``inputs``: ``preprocessed`` (manifest: which cases), ``data`` (canonical
    ``cases.tsv``: the images, in HU for CT as nnU-Net was trained) and ``model``
    (the method's ``training.json``).
    """
    out_dir = Path(out_dir)
    training = read_marker(inputs["model"])
    cases = select_cases(
        read_preprocessed_manifest(Path(inputs["preprocessed"]).parent),
        splits,
        active_shard(),
        source=inputs["preprocessed"],
    )
    data_dir = Path(inputs["data"]).parent
    rows: list[dict[str, Any]] = []
    with process_output_to_log():
        predictor = load_predictor(
            training,
            threads=int(method.get("num_processes", 2)),
            mirroring=bool(method.get("mirroring", True)),
        )
        for case in tqdm(cases.to_dict("records"), desc=f"nnU-Net {method_name}", unit="case"):
            start = time.perf_counter()
            volume = predict_case(
                predictor, image_path(data_dir, case["case_id"]), training["nnunet_to_original"]
            )
            write_volume(out_dir / f"{case['case_id']}.nii.gz", volume)
            seconds = round(time.perf_counter() - start, 3)
            rows.append(
                {
                    "case_id": case["case_id"],
                    "split": case["split"],
                    "n_prompts": 0,
                    "seconds": seconds,
                }
            )
            log.info("%s: %.2f s", case["case_id"], seconds)
    manifest = pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))
    write_prediction_manifest(manifest, out_dir)  # manifest.tsv, or the shard's manifest
    log.info("predicted %d cases with %s into %s", len(manifest), method_name, out_dir)
    return manifest
