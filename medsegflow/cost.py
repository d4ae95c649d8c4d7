"""What each method costs: ``results/tables/cost.csv``, one row per (dataset, method).

Everything comes from files the run already wrote, read after the scores exist:

- ``decoder_s_per_case``: mean seconds per case of the method's prediction job (its
  ``manifest.tsv``; for SAM-family methods on cached embeddings this is the prompt
  encoder and mask decoder only, for every other method the whole prediction);
- ``encoder_s_per_case``: for methods on cached embeddings, the mean seconds per case of
  the image encoder (the embedding job's ``manifest.tsv``, the same cases); NaN otherwise;
- ``text_s_per_case``: for text-driven methods (MedCLIP-SAMv2), the mean seconds per
  case of the saliency and coarse-mask jobs they read (their manifests), shared with
  every method that reads the same maps; NaN otherwise;
- ``s_per_case``: their sum (what one case costs from the preprocessed image);
- ``peak_rss_mb``: the largest resident memory of the prediction job and, where used, the
  embedding job (their ``benchmark:`` files, ``max_rss``); NaN when a benchmark file is
  missing (a sharded prediction takes the largest shard's);
- ``gpu_mem_mb``: the largest per-case peak GPU memory of those manifests (NaN on CPU);
- ``n_parameters``, ``n_trainable``: of the segmentation network (SAM-family: the model
  card of a trained model, else counted from the checkpoint's tensors; nnU-Net: its final
  checkpoint; classical: 0). ``n_trainable`` counts what was trained here (0 for a
  zero-shot model); CLIP towers of text-driven methods are not counted;
- ``train_s``: training time of a model trained here (model card or nnU-Net's
  ``training.json``); NaN for models not trained here.

A value that cannot be known is NaN, never a guess; ``notes`` says why.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsegflow.models.state_dicts import count_parameters

log = logging.getLogger(__name__)

COST_COLUMNS: tuple[str, ...] = (
    "dataset",
    "method",
    "family",
    "n_cases",
    "encoder_s_per_case",
    "decoder_s_per_case",
    "text_s_per_case",
    "s_per_case",
    "peak_rss_mb",
    "gpu_mem_mb",
    "n_parameters",
    "n_trainable",
    "train_s",
    "notes",
)
NAN = math.nan


def _manifest(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    return pd.read_csv(path, sep="\t", dtype={"case_id": str}, keep_default_na=True)


def _max_rss(paths: list[Path]) -> float:
    values = []
    for path in paths:
        if path.is_file():
            table = pd.read_csv(path, sep="\t")
            if "max_rss" in table.columns and len(table):
                values.append(float(pd.to_numeric(table["max_rss"], errors="coerce").max()))
    return max(values) if values else NAN


def prediction_benchmarks(root: Path, dataset: str, method: str) -> list[Path]:
    """The prediction job's benchmark file, or its shards' (``predict_shards.smk``)."""
    single = root / "benchmarks" / "predict_method" / dataset / f"{method}.tsv"
    shards = sorted((root / "benchmarks" / "predict_method_shard" / dataset / method).glob("*.tsv"))
    return [single] if single.is_file() else shards


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _method_cost(
    config: Mapping[str, Any], root: Path, dataset: str, method: str, counted: dict
) -> dict[str, Any]:
    from medsegflow import workflow as wf  # the planner: not needed by pareto_front's plots

    spec = config["methods"][method]
    family = spec["family"]
    inputs = wf.predict_inputs(config, dataset, method)
    notes: list[str] = []
    pred_dir = root / "results" / "predictions" / dataset / method
    predictions = _manifest(pred_dir / "manifest.tsv")
    row: dict[str, Any] = {"dataset": dataset, "method": method, "family": family}
    if predictions is None:
        notes.append("no prediction manifest")
        predictions = pd.DataFrame(columns=["case_id", "seconds"])
    row["n_cases"] = len(predictions)
    decoder = float(predictions["seconds"].mean()) if len(predictions) else NAN
    encoder = NAN
    gpu = [predictions["gpu_mem_mb"]] if "gpu_mem_mb" in predictions.columns else []
    rss_paths = prediction_benchmarks(root, dataset, method)
    if "embeddings" in inputs:
        embeddings = _manifest(root / inputs["embeddings"])
        if embeddings is not None:
            same = embeddings[embeddings["case_id"].isin(predictions["case_id"])]
            encoder = float(same["seconds"].mean()) if len(same) else NAN
            if "gpu_mem_mb" in same.columns:
                gpu.append(same["gpu_mem_mb"])
        model_dir = Path(inputs["embeddings"]).parent.name
        rss_paths.append(root / "benchmarks" / "embed_images" / dataset / f"{model_dir}.tsv")
    text = _stage_seconds(config, root, dataset, method, predictions, notes)
    row["encoder_s_per_case"] = encoder
    row["decoder_s_per_case"] = decoder
    row["text_s_per_case"] = text
    row["s_per_case"] = decoder + sum(0.0 if math.isnan(v) else v for v in (encoder, text))
    row["peak_rss_mb"] = _max_rss(rss_paths)
    if math.isnan(row["peak_rss_mb"]):
        notes.append("no benchmark file")
    values = pd.concat(gpu) if gpu else pd.Series(dtype=float)
    row["gpu_mem_mb"] = float(values.max()) if values.notna().any() else NAN
    row.update(_parameters(root, inputs, counted, notes))
    row["notes"] = "; ".join(notes)
    return row


def _stage_seconds(
    config: Mapping[str, Any],
    root: Path,
    dataset: str,
    method: str,
    predictions: pd.DataFrame,
    notes: list[str],
) -> float:
    """Mean seconds per case of the family's own stage jobs that ``method`` reads
    (``Family.stage_manifests``); NaN when the family has none."""
    from medsegflow.families.registry import family_of

    stages = family_of(config, method).stage_manifests
    manifests = stages(config, dataset, method) if stages else []
    if isinstance(manifests, str):
        notes.append(manifests)
        return NAN
    if not manifests:
        return NAN
    total = 0.0
    for manifest in manifests:
        table = _manifest(root / manifest)
        if table is None:
            return NAN
        same = table[table["case_id"].isin(predictions["case_id"])]
        total += float(same["seconds"].mean()) if len(same) else NAN
    return total


WEIGHT_INPUTS = ("checkpoint", "model", "embeddings", "coarse")
"""The prediction-job inputs that carry learned weights or their outputs; a job with none
of them runs no learned network (0 parameters)."""


def _parameters(
    root: Path, inputs: Mapping[str, str], counted: dict, notes: list[str]
) -> dict[str, Any]:
    """Parameters and training time of the network a prediction job reads: none without
    a weight input; a training record (``model`` input, JSON) names its checkpoint; a
    checkpoint's model card (``model.json`` beside it) gives the counts its training
    recorded, otherwise the checkpoint's tensors are counted."""
    if not any(key in inputs for key in WEIGHT_INPUTS):
        return {"n_parameters": 0, "n_trainable": 0, "train_s": NAN}
    if str(inputs.get("model", "")).endswith(".json"):  # a training record
        training = _json(root / inputs["model"])
        checkpoint = training.get("checkpoint")
        n = counted.setdefault(
            checkpoint, count_parameters(root / checkpoint) if checkpoint else None
        )
        if n is None:
            notes.append(f"checkpoint of {inputs['model']} not found")
        value = NAN if n is None else n
        return {
            "n_parameters": value,
            "n_trainable": value,
            "train_s": training.get("seconds", NAN),
        }
    checkpoint = inputs.get("checkpoint")
    if checkpoint is None:
        notes.append("no checkpoint among the job's inputs: its network is not counted")
        return {"n_parameters": NAN, "n_trainable": NAN, "train_s": NAN}
    card = _json((root / checkpoint).parent / "model.json")
    training = card.get("training", {}) if isinstance(card.get("training"), dict) else {}
    if "n_parameters" in training:
        return {
            "n_parameters": int(training["n_parameters"]),
            "n_trainable": int(training.get("n_trainable", 0)),
            "train_s": float(training.get("seconds", NAN)),
        }
    path = Path(checkpoint) if Path(checkpoint).is_absolute() else root / checkpoint
    n = counted.setdefault(str(path), count_parameters(path))
    if n is None:
        notes.append("checkpoint not found")
    return {"n_parameters": NAN if n is None else n, "n_trainable": 0, "train_s": NAN}


def cost_table(config: Mapping[str, Any], *, root: str | Path = ".") -> pd.DataFrame:
    """:data:`COST_COLUMNS` for every (dataset, method) of ``config`` (files under ``root``)."""
    from medsegflow.planning import dataset_method_pairs

    root = Path(root)
    counted: dict[str, int | None] = {}
    rows = [_method_cost(config, root, d, m, counted) for d, m in dataset_method_pairs(config)]
    table = pd.DataFrame.from_records(rows, columns=list(COST_COLUMNS))
    for column in ("n_parameters", "n_trainable"):
        table[column] = pd.to_numeric(table[column]).astype("Int64")
    log.info("cost of %d (dataset, method) pairs; %d checkpoints counted", len(table), len(counted))
    return table.replace({np.inf: NAN})


def pareto_front(seconds: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Boolean mask of the points no other point beats on both (fewer seconds, higher score)."""
    seconds, score = np.asarray(seconds, float), np.asarray(score, float)
    ok = np.isfinite(seconds) & np.isfinite(score)
    front = np.zeros(seconds.shape, bool)
    for i in np.flatnonzero(ok):
        better = ok & (seconds <= seconds[i]) & (score >= score[i])
        better &= (seconds < seconds[i]) | (score > score[i])
        front[i] = not better.any()
    return front
