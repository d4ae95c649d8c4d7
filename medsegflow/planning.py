"""Config queries that every family's planning shares: which methods run on which dataset
and splits, and where a SAM-family model's weights come from.

Pure functions of the (validated) config: nothing here reads data, so building the DAG
does not scale with the number of cases, and nothing here knows any family by name (the
registry, :mod:`medsegflow.families`, builds on these).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medsegflow import paths
from medsegflow.errors import ConfigError
from medsegflow.models.sam_registry import PACKAGED_SAM_WEIGHTS, packaged_weights_path

SPLIT_ORDER = ("train", "val", "test")
PACKAGE_MISSING = "<package of {arch} weights not installed>"
"""The checkpoint "path" of packaged weights whose package is missing (a missing file)."""


def method_config(config: Mapping[str, Any], method: str) -> dict[str, Any]:
    """The config of ``method``; :class:`ConfigError` naming it when unknown."""
    try:
        return dict(config["methods"][method])
    except KeyError:
        raise ConfigError(f"methods.{method}: unknown method") from None


def methods_for_dataset(config: Mapping[str, Any], dataset: str) -> list[str]:
    """Methods run on ``dataset``: its ``methods:`` list (default every configured
    method; ``[]`` for a dataset only trained on) without its ``exclude_methods:``."""
    spec = config["datasets"][dataset]
    chosen = list(config["methods"]) if spec.get("methods") is None else spec["methods"]
    excluded = set(spec.get("exclude_methods") or ())
    return [m for m in chosen if m not in excluded]


def dataset_method_pairs(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(d, m) for d in config["datasets"] for m in methods_for_dataset(config, d)]


DATASET_SOURCE_KEYS = ("adapter", "params", "window", "allow_constant_images")
"""Keys of a dataset's config that change its prepared and preprocessed data."""


def dataset_source(config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """The part of ``datasets.<dataset>`` that the data jobs read (:data:`DATASET_SOURCE_KEYS`)."""
    spec = config["datasets"][dataset]
    return {k: spec[k] for k in DATASET_SOURCE_KEYS if k in spec}


def pseudo_label_sources(config: Mapping[str, Any], dataset: str) -> set[str]:
    """Methods whose train/val predictions train a method run on ``dataset``: the
    ``labels_from`` of those methods (weak supervision)."""
    return {
        source
        for m in methods_for_dataset(config, dataset)
        if (source := config["methods"][m].get("labels_from"))
    }


def methods_planned(config: Mapping[str, Any], dataset: str) -> list[str]:
    """Methods that predict on ``dataset``: those run on it and the pseudo-label sources
    of those, in config order."""
    wanted = set(methods_for_dataset(config, dataset)) | pseudo_label_sources(config, dataset)
    return [m for m in config["methods"] if m in wanted]


def method_splits(config: Mapping[str, Any], dataset: str, method: str) -> list[str]:
    """Splits ``method`` predicts on ``dataset``: the scored ones, plus train and val when
    its predictions are another method's pseudo-labels; in train, val, test order."""
    wanted = set(config["metrics"]["splits"])
    if method in pseudo_label_sources(config, dataset):
        wanted |= {"train", "val"}
    return [s for s in SPLIT_ORDER if s in wanted]


def base_inputs(config: Mapping[str, Any], dataset: str, method: str) -> dict[str, str]:
    """The inputs of every prediction job: the preprocessed manifest, and the method's GT
    prompt set when it names one."""
    inputs = {"preprocessed": paths.fill(paths.PREPROCESSED, dataset=dataset)}
    prompt = config["methods"][method].get("prompts")
    if prompt:
        inputs["prompts"] = paths.fill(paths.GT_PROMPTS, dataset=dataset, prompt=prompt)
    return inputs


# --- SAM-family models (sam_models:) ---------------------------------------------------------


def sam_model(config: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The ``sam_models`` entry of ``model``; :class:`ConfigError` naming it when unknown."""
    try:
        return dict(config["sam_models"][model])
    except KeyError:
        known = ", ".join(sorted(config.get("sam_models", {}))) or "none"
        raise ConfigError(f"sam_models.{model}: unknown SAM model; known: {known}") from None


def is_trained(config: Mapping[str, Any], model: str) -> bool:
    """True when the pipeline's training stage produces ``model`` (it has a ``train:``)."""
    return sam_model(config, model)["train"] is not None


def sam_model_arch(config: Mapping[str, Any], model: str) -> str | dict[str, Any]:
    """The architecture of ``model``: its ``arch`` (a name, or a mapping of explicit
    hyper-parameters), or its base model's."""
    seen = []
    while True:
        spec = sam_model(config, model)
        if isinstance(spec["arch"], Mapping):
            return dict(spec["arch"])
        if spec["arch"]:
            return str(spec["arch"])
        seen.append(model)
        if not spec["base"] or spec["base"] in seen:
            raise ConfigError(f"sam_models.{seen[0]}.arch: required (or a base model with one)")
        model = spec["base"]


def sam_checkpoint(config: Mapping[str, Any], model: str) -> str:
    """The weights file of ``model``: the training stage's output for a trained model,
    the configured ``weights:`` path, or the file an installed package ships for its arch
    (LiteMedSAM; ``PACKAGE_MISSING`` names the package when it is not installed)."""
    spec = sam_model(config, model)
    if spec["train"] is not None:
        return paths.fill(paths.SAM_MODEL_WEIGHTS, model=model)
    key = spec["weights"]
    if not key and isinstance(spec["arch"], str) and spec["arch"] in PACKAGED_SAM_WEIGHTS:
        found = packaged_weights_path(spec["arch"])
        return str(found) if found else PACKAGE_MISSING.format(arch=spec["arch"])
    if not key:
        raise ConfigError(f"sam_models.{model}.weights: required without a train: recipe")
    if key not in config.get("weights", {}):
        raise ConfigError(f"sam_models.{model}.weights: '{key}' is not a key under weights:")
    return str(config["weights"][key])


def sam_model_inputs(config: Mapping[str, Any], dataset: str, model: str) -> dict[str, str]:
    """Inputs of a job that decodes with SAM model ``model`` on ``dataset``: the image
    embeddings of the dataset and the model's weights."""
    return {
        "embeddings": paths.fill(paths.EMBEDDINGS, dataset=dataset, model=model),
        "checkpoint": sam_checkpoint(config, model),
    }


def sam_training_target(config: Mapping[str, Any], model: str | None) -> str | None:
    """The file target of the training job of ``model``, or None when it is not trained."""
    if not model or not is_trained(config, model):
        return None
    return paths.fill(paths.SAM_MODEL_WEIGHTS, model=model)


def sam_models_with_bases(config: Mapping[str, Any], models: list[str]) -> list[str]:
    """``models`` and, transitively, the base models they are trained from, config order."""
    wanted, todo = set(), list(models)
    while todo:
        model = todo.pop()
        if model in wanted:
            continue
        wanted.add(model)
        if base := sam_model(config, model)["base"]:
            todo.append(base)
    return [m for m in config.get("sam_models", {}) if m in wanted]


def sam_train_inputs(config: Mapping[str, Any], model: str) -> dict[str, Any]:
    """Inputs of the training job of ``model``: the preprocessed manifests of its training
    datasets, and its base model's weights (and model card, when trained here)."""
    spec = sam_model(config, model)
    if spec["train"] is None:
        raise ConfigError(f"sam_models.{model}: not trained by the pipeline (no train: recipe)")
    inputs: dict[str, Any] = {}
    if spec["train"]["recipe"] == "import":
        inputs["released"] = released_checkpoint(config, model)
    else:
        datasets = spec["train"].get("datasets") or list(config["datasets"])
        inputs["preprocessed"] = [paths.fill(paths.PREPROCESSED, dataset=d) for d in datasets]
    if spec["base"]:
        inputs["base"] = sam_checkpoint(config, spec["base"])
        if is_trained(config, spec["base"]):
            inputs["base_card"] = paths.fill(paths.SAM_MODEL_CARD, model=spec["base"])
    return inputs


def released_checkpoint(config: Mapping[str, Any], model: str) -> str:
    """The released file an ``import`` recipe reads: its ``train.weights`` key's path."""
    key = sam_model(config, model)["train"]["weights"]
    if key not in config.get("weights", {}):
        known = ", ".join(sorted(config.get("weights", {}))) or "none"
        raise ConfigError(
            f"sam_models.{model}.train.weights: '{key}' is not a key under weights:; known: {known}"
        )
    return str(config["weights"][key])


BASE_OPTIONAL_RECIPES = ("import",)


def check_sam_models(config: Mapping[str, Any]) -> None:
    """:class:`ConfigError` naming the key of the first inconsistent ``sam_models`` entry:
    an unknown or circular base, a base without a recipe, weights with a recipe, neither
    weights nor a recipe, an unknown weights key, or an unknown training dataset of a
    model that some method uses."""
    models = config.get("sam_models", {})
    for name, spec in models.items():
        key = f"sam_models.{name}"
        if spec["base"]:
            if spec["base"] not in models:
                raise ConfigError(f"{key}.base: unknown SAM model '{spec['base']}'")
            if spec["train"] is None:
                raise ConfigError(f"{key}.train: required with a base model (the recipe)")
            if spec["train"]["recipe"] == "scratch":
                raise ConfigError(f"{key}.base: the scratch recipe starts from no base model")
            chain = [name]
            while base := models.get(chain[-1], {}).get("base"):
                chain.append(base)
                if chain[-1] in chain[:-1]:
                    raise ConfigError(f"{key}.base: a cycle {' -> '.join(chain)}")
        recipe = (spec["train"] or {}).get("recipe")
        if recipe == "import":
            released_checkpoint(config, name)
            if spec["train"]["format"] in ("samed", "samed_s") and not spec["base"]:
                raise ConfigError(
                    f"{key}.base: a {spec['train']['format']} LoRA file goes on a base SAM "
                    "(e.g. sam_vit_b_01ec64.pth); name its sam_models entry"
                )
            fmt = spec["train"]["format"]
            if fmt in ("samed", "samed_s") and not spec["train"].get("classes"):
                raise ConfigError(
                    f"{key}.train.classes: name the label of each output channel of the "
                    f"{fmt} file (SAMed on Synapse: aorta, gallbladder, "
                    "left kidney, right kidney, liver, pancreas, spleen, stomach)"
                )
        if (
            spec["train"] is not None
            and recipe not in ("scratch", *BASE_OPTIONAL_RECIPES)
            and not spec["base"]
        ):
            raise ConfigError(
                f"{key}.base: the {spec['train']['recipe']} recipe needs a base model"
            )
        if spec["weights"] and spec["train"] is not None:
            raise ConfigError(
                f"{key}.weights: a trained model takes its start from base:, not weights: "
                "(add the official model as its own sam_models entry and name it as base)"
            )
        packaged = isinstance(spec["arch"], str) and spec["arch"] in PACKAGED_SAM_WEIGHTS
        if not spec["weights"] and spec["train"] is None and not packaged:
            raise ConfigError(f"{key}.weights: required without a train: recipe")
        if spec["weights"] and spec["weights"] not in config.get("weights", {}):
            known = ", ".join(sorted(config.get("weights", {}))) or "none"
            raise ConfigError(
                f"{key}.weights: '{spec['weights']}' is not a key under weights:; known: {known}"
            )
        arch = sam_model_arch(config, name)
        if isinstance(arch, Mapping):
            from medsegflow.models.sam_archs import arch_spec  # imports torch: only here

            try:
                arch_spec(arch)
            except ValueError as err:
                raise ConfigError(f"{key}.arch: {err}") from None
        if spec["arch"] and spec["base"] and spec["arch"] != sam_model_arch(config, spec["base"]):
            raise ConfigError(
                f"{key}.arch: '{arch}' differs from its base's; leave it out to inherit it"
            )
    # an entry no method uses may name datasets that a config derived from another left out
    named = [m["model"] for m in config.get("methods", {}).values() if m.get("model") in models]
    for name in sam_models_with_bases(config, list(dict.fromkeys(named))):
        for dataset in (models[name]["train"] or {}).get("datasets") or []:
            if dataset not in config["datasets"]:
                raise ConfigError(f"sam_models.{name}.train.datasets: unknown dataset '{dataset}'")
