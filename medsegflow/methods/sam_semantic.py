"""Semantic SAM prediction (``family: sam_semantic``): SAMed's prompt-free inference.

Every slice of a case goes through the model's input recipe (for SAMed, with ``test.py``'s
``--input_size`` step: the method's ``input_size``, 224 by default) and image encoder; the mask
decoder, with no prompt, gives one logits map per output channel (channel 0 background);
:meth:`~medsegflow.models.input_recipes.InputRecipe.postprocess_classes` takes the arg-max
in the original frame (SAMed's ``test_single_volume``). Channel ``i`` becomes the value
of the ``i``-th label name of the model card's ``classes`` in the dataset's
``labels.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medsegflow.datasets.canonical import image_path, read_label_map
from medsegflow.errors import InputError
from medsegflow.io import read_volume
from medsegflow.models.model_card import card_path, read_card

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from segment_anything.modeling import Sam

    from medsegflow.io import Volume
    from medsegflow.prediction.job import PredictJob

log = logging.getLogger(__name__)


def channel_values(
    classes: Sequence[str] | None, label_map: Mapping[str, int], *, source: str, dataset: str
) -> np.ndarray:
    """Label value of each output channel (``[0, value(classes[0]), ...]``); :class:`InputError`
    naming ``source`` (the card) for a model without classes or a class the dataset lacks."""
    if not classes:
        raise InputError(f"{source}: not a semantic model (its card lists no classes)")
    unknown = [c for c in classes if c not in label_map]
    if unknown:
        raise InputError(
            f"{source}: classes {unknown} are not labels of {dataset} ({', '.join(label_map)})"
        )
    return np.asarray([0, *(int(label_map[c]) for c in classes)], dtype=np.int64)


def hu_window_slices(image_hu_zyx: np.ndarray, hu_window: Sequence[float]) -> np.ndarray:
    """SAMed's CT input (``preprocess/preprocess_data.py``): float32 HU clipped to
    ``[lo, hi]``, then ``(x - lo) / (hi - lo)``, in float32 (no uint8 step)."""
    lo, hi = (float(v) for v in hu_window)
    if not hi > lo:
        raise ValueError(f"hu_window [{lo}, {hi}]: the upper bound must exceed the lower")
    image = np.clip(np.asarray(image_hu_zyx).astype(np.float32), np.float32(lo), np.float32(hi))
    return ((image - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32)


def with_test_input_size(model: Sam, input_size: int | None) -> None:
    """Give a SAMed-recipe model SAMed ``test.py``'s ``--input_size`` step (each slice zoomed
    to ``input_size`` first, :class:`~medsegflow.models.input_recipes.SamedRecipe`'s
    ``zoom_size``); other recipes are left as they are."""
    from dataclasses import replace

    from medsegflow.models.input_recipes import SamedRecipe

    if isinstance(model.input_recipe, SamedRecipe):
        model.input_recipe = replace(model.input_recipe, zoom_size=input_size)


def segment_semantic_volume(
    image_zyx: np.ndarray,
    *,
    model: Sam,
    values: np.ndarray,
    device: torch.device,
    batch_size: int,
    precision: str,
    chunk: int = 8,
) -> np.ndarray:
    """``(Z, Y, X)`` label volume of one image: ``chunk`` slices at a time are encoded
    (``batch_size`` per encoder call) and decoded."""
    import torch

    from medsegflow.models.sam_encode import encode_slices
    from medsegflow.models.sam_loader import autocast
    from medsegflow.models.semantic_sam import decode_semantic

    recipe = model.input_recipe
    original = (int(image_zyx.shape[1]), int(image_zyx.shape[2]))
    label_zyx = np.zeros(image_zyx.shape, dtype=np.uint8 if values.max() < 256 else np.int32)
    if values.size - 1 != int(model.mask_decoder.num_mask_tokens) - 1:
        raise InputError(
            f"the model has {int(model.mask_decoder.num_mask_tokens) - 1} classes, its card "
            f"names {values.size - 1}"
        )
    for start in range(0, image_zyx.shape[0], chunk):
        slices = image_zyx[start : start + chunk]
        embeddings = encode_slices(
            slices, model=model, device=device, batch_size=batch_size, precision=precision
        )
        with torch.inference_mode(), autocast(device, precision):
            logits = decode_semantic(model, torch.from_numpy(embeddings).to(device).float())
        channels = recipe.postprocess_classes(
            logits.float(), original_size=original, input_size=recipe.input_size(original)
        )
        label_zyx[start : start + len(slices)] = values[channels.cpu().numpy()]
    return label_zyx


def predict_sam_semantic(job: PredictJob) -> pd.DataFrame:
    """The family predictor: every slice of every case, every class at once.

    ``job.inputs``: ``preprocessed`` and ``checkpoint`` (a model with a card naming its
    ``classes``, loaded by :func:`~medsegflow.models.sam_loader.load_sam_model`).
    """
    from medsegflow.models.sam_loader import load_sam_model
    from medsegflow.models.sam_lora import merge_lora
    from medsegflow.precision import encoder_batch_size
    from medsegflow.prediction.cases import predict_cases

    job.require("checkpoint", family="sam_semantic")
    checkpoint = job.inputs["checkpoint"]
    card = read_card(checkpoint)
    if card is None:
        raise InputError(f"{card_path(checkpoint)}: a semantic SAM needs its model card")
    values = channel_values(
        card.get("classes"),
        read_label_map(job.preprocessed_dir),
        source=str(card_path(checkpoint)),
        dataset=job.preprocessed_dir.name,
    )
    model, device = load_sam_model(checkpoint, arch=card["arch"], device=job.device)
    merge_lora(model)  # plain linear layers: the same outputs (tests/unit/test_sam_adaptation.py)
    settings: dict[str, Any] = dict(job.method)
    with_test_input_size(model, settings.get("input_size", 224))
    log.info("%s: semantic SAM, classes %s, on %s", job.method_name, card["classes"], device)

    hu_window = settings.get("hu_window")
    if hu_window:
        job.require("data", family="sam_semantic")
        log.info("%s: SAMed's float CT input, clipped to %s HU", job.method_name, hu_window)

    def segment(case: dict[str, Any], image: Volume) -> tuple[np.ndarray, int]:
        array = image.array_zyx
        if hu_window:
            path = image_path(Path(job.inputs["data"]).parent, case["case_id"])
            array = hu_window_slices(read_volume(path).array_zyx, hu_window)
            if array.shape != image.array_zyx.shape:
                raise InputError(
                    f"{path}: shape {array.shape} differs from the preprocessed image's "
                    f"{image.array_zyx.shape}"
                )
        label_zyx = segment_semantic_volume(
            array,
            model=model,
            values=values,
            device=device,
            batch_size=encoder_batch_size(settings["batch_size"], str(device)),
            precision=str(settings["precision"]),
        )
        return label_zyx, 0

    return predict_cases(job, segment=segment, desc=job.method_name)
