"""Pure workflow logic for the Snakefile: target lists, method lookup, per-rule inputs.

``rules/common.smk`` binds these functions to wildcards; keeping them here lets pytest
cover them. Nothing here reads data: targets depend on the config only, never on the
cases of a dataset, so building the DAG does not scale with the number of cases.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from medsegflow.errors import ConfigError

RESULTS = "results"


def methods_for_dataset(config: Mapping[str, Any], dataset: str) -> list[str]:
    """Methods run on ``dataset``: its ``methods:`` list, or every configured method."""
    chosen = config["datasets"][dataset].get("methods")
    return list(chosen) if chosen else list(config["methods"])


def dataset_method_pairs(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(d, m) for d in config["datasets"] for m in methods_for_dataset(config, d)]


def prompt_sets_used(config: Mapping[str, Any], dataset: str) -> list[str]:
    """Prompt sets needed by the methods of ``dataset``, in config order."""
    used = {config["methods"][m].get("prompts") for m in methods_for_dataset(config, dataset)}
    return [p for p in config.get("prompts", {}) if p in used]


def alternation(names: Iterable[str]) -> str:
    """A regex matching exactly one of ``names`` (for ``wildcard_constraints``)."""
    names = sorted(set(names), key=len, reverse=True)
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def wildcard_patterns(config: Mapping[str, Any]) -> dict[str, str]:
    """Tight wildcard constraints, built from the names in the config."""
    return {
        "dataset": alternation(config["datasets"]),
        "method": alternation(config["methods"]),
        "prompt": alternation(config.get("prompts", {})),
        "metric": alternation(config["figures"]["metrics"]),
        "model": alternation(config.get("sam_models", {})),
    }


def method_config(config: Mapping[str, Any], method: str) -> dict[str, Any]:
    try:
        return dict(config["methods"][method])
    except KeyError:
        raise ConfigError(f"methods.{method}: unknown method") from None


def data_dir(dataset: str) -> str:
    return f"{RESULTS}/data/{dataset}"


def preprocessed_dir(dataset: str) -> str:
    return f"{RESULTS}/preprocessed/{dataset}"


def prompts_file(dataset: str, prompt: str) -> str:
    return f"{RESULTS}/prompts/{dataset}/{prompt}/prompts.tsv"


def predictions_manifest(dataset: str, method: str) -> str:
    return f"{RESULTS}/predictions/{dataset}/{method}/manifest.tsv"


def metrics_file(dataset: str, method: str) -> str:
    return f"{RESULTS}/metrics/{dataset}/{method}.csv"


def predict_inputs(config: Mapping[str, Any], dataset: str, method: str) -> dict[str, str]:
    """Named input files of the prediction job of (``dataset``, ``method``)."""
    spec = method_config(config, method)
    inputs = {"preprocessed": f"{preprocessed_dir(dataset)}/manifest.tsv"}
    if spec.get("prompts"):
        inputs["prompts"] = prompts_file(dataset, spec["prompts"])
    if spec["family"] == "sam":
        inputs["embeddings"] = embeddings_manifest(dataset, spec["model"])
        inputs["checkpoint"] = sam_checkpoint(config, spec["model"])
    return inputs


def metrics_files(config: Mapping[str, Any]) -> list[str]:
    return [metrics_file(d, m) for d, m in dataset_method_pairs(config)]


def metrics_files_for_dataset(config: Mapping[str, Any], dataset: str) -> list[str]:
    return [metrics_file(dataset, m) for m in methods_for_dataset(config, dataset)]


def predictions_for_dataset(config: Mapping[str, Any], dataset: str) -> list[str]:
    return [predictions_manifest(dataset, m) for m in methods_for_dataset(config, dataset)]


def figure_files(config: Mapping[str, Any]) -> list[str]:
    metric_figures = [f"{RESULTS}/figures/{m}_by_method.png" for m in config["figures"]["metrics"]]
    qualitative = [f"{RESULTS}/figures/qualitative_{d}.png" for d in config["datasets"]]
    return metric_figures + qualitative


def final_outputs(config: Mapping[str, Any]) -> list[str]:
    """Everything ``rule all`` builds: the tables and every figure."""
    tables = [f"{RESULTS}/tables/{name}.csv" for name in ("all", "summary", "stats")]
    return tables + figure_files(config)


# --- SAM family ---------------------------------------------------------------------------


def sam_checkpoint(config: Mapping[str, Any], model: str) -> str:
    """Checkpoint of SAM model ``model``: a weights path, or the demo model's training output."""
    spec = config["sam_models"][model]
    if spec["arch"] == "demo":
        return f"{RESULTS}/models/{model}/sam.pth"
    key = spec.get("weights")
    if not key:
        raise ConfigError(f"sam_models.{model}.weights: required for arch '{spec['arch']}'")
    if key not in config.get("weights", {}):
        raise ConfigError(f"sam_models.{model}.weights: '{key}' is not a key under weights:")
    return str(config["weights"][key])


def embeddings_manifest(dataset: str, model: str) -> str:
    return f"{RESULTS}/embeddings/{dataset}/{model}/manifest.tsv"


def sam_models_used(config: Mapping[str, Any]) -> list[str]:
    used = {
        config["methods"][m]["model"]
        for _, m in dataset_method_pairs(config)
        if config["methods"][m]["family"] == "sam"
    }
    return [m for m in config.get("sam_models", {}) if m in used]


def missing_weights(config: Mapping[str, Any]) -> list[str]:
    """One line per weight file that a requested method needs and that is not there.

    Each line names the config key, the expected path and the official source.
    """
    from pathlib import Path

    from medsegflow.models.sam_registry import OFFICIAL_SAM_WEIGHTS

    lines = []
    for model in sam_models_used(config):
        spec = config["sam_models"][model]
        if spec["arch"] == "demo":
            continue
        path = sam_checkpoint(config, model)
        if not Path(path).expanduser().is_file():
            key = spec["weights"]
            official = OFFICIAL_SAM_WEIGHTS.get(key)
            source = (
                f"official file {official.filename}: {official.source}"
                if official
                else "no official source known for this key"
            )
            lines.append(
                f"weights.{key}: file not found at {path} (needed by sam_models.{model}); {source}"
            )
    return lines


def demo_sam_training_inputs(config: Mapping[str, Any], model: str) -> list[str]:
    """Preprocessed manifests of the datasets the demo SAM ``model`` trains on."""
    datasets = config["sam_models"][model]["train"].get("datasets") or list(config["datasets"])
    return [f"{preprocessed_dir(d)}/manifest.tsv" for d in datasets]
