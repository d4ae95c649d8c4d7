"""Planning of the text-driven family (``text_sam``, MedCLIP-SAMv2) and its own stages.

A ``text_sam`` method runs, per dataset: saliency (CLIP + M2IB) -> coarse masks ->
prompts from the coarse masks -> SAM decoding from the cached embeddings (or, without
``model``, the coarse masks are the prediction). Ablation grids make many methods that
share early stages, so each stage's folder is keyed by the FIRST method (config order)
with the same settings up to that stage: 27 saliency settings x 4 post-processings x 3
prompt types give 27 saliency jobs, 108 coarse-mask jobs and 324 prompt files per
dataset, and one SAM embedding job per image for all of them.

A method with a ``tune:`` block gets its own stages: its saliency and coarse-mask jobs
read the values chosen on the validation split (``results/tuning/{dataset}/{method}/
chosen.json``).

Like all planning, nothing here reads data: targets depend on the config. The family's
declaration is :mod:`medsegflow.families.text_sam`; its rules are ``rules/saliency.smk``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from medsegflow import paths
from medsegflow.errors import ConfigError
from medsegflow.planning import (
    dataset_method_pairs,
    method_splits,
    methods_for_dataset,
    pseudo_label_sources,
    sam_model_inputs,
)

TEXT_FAMILY = "text_sam"
CLIP_TRAINED_ARCHS = frozenset({"demo"})
"""``clip_models`` archs trained from scratch inside the pipeline (no weight file)."""


def text_methods(config: Mapping[str, Any]) -> list[str]:
    """Every ``text_sam`` method of the config, in config order."""
    return [m for m, spec in config["methods"].items() if spec["family"] == TEXT_FAMILY]


def _signature(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def _saliency_signature(spec: Mapping[str, Any]) -> str:
    return _signature(spec["clip"], spec["text_prompts"], spec["saliency"], spec["slice_mode"])


def _first_with(config: Mapping[str, Any], method: str, signature) -> str:
    """``method``, or the first text method before it with the same ``signature(spec)``;
    a tuned method is always its own key."""
    spec = config["methods"][method]
    if spec.get("tune"):
        return method
    mine = signature(spec)
    for other in text_methods(config):
        other_spec = config["methods"][other]
        if not other_spec.get("tune") and signature(other_spec) == mine:
            return other
    return method


def saliency_key(config: Mapping[str, Any], method: str) -> str:
    return _first_with(config, method, _saliency_signature)


def coarse_key(config: Mapping[str, Any], method: str) -> str:
    return _first_with(
        config,
        method,
        lambda spec: _signature(_saliency_signature(spec), spec["coarse"]),
    )


def mask_prompts_key(config: Mapping[str, Any], method: str) -> str:
    return _first_with(
        config,
        method,
        lambda spec: _signature(_saliency_signature(spec), spec["coarse"], spec["sam_prompts"]),
    )


def saliency_manifest(dataset: str, key: str) -> str:
    return paths.fill(paths.SALIENCY, dataset=dataset, sal=key)


def coarse_manifest(dataset: str, key: str) -> str:
    return paths.fill(paths.COARSE, dataset=dataset, crs=key)


def stage_manifests(config: Mapping[str, Any], dataset: str, method: str) -> list[str] | str:
    """The saliency and coarse-mask manifests ``method`` reads (the cost table's
    ``text_s_per_case``); a tuned method's maps are its chosen grid point's, not one file."""
    if config["methods"][method].get("tune"):
        return "tuned on val: the saliency time of its chosen point is not counted"
    return [
        saliency_manifest(dataset, saliency_key(config, method)),
        coarse_manifest(dataset, coarse_key(config, method)),
    ]


def mask_prompts_file(dataset: str, key: str) -> str:
    return paths.fill(paths.MASK_PROMPTS, dataset=dataset, tpk=key)


def tuning_file(dataset: str, method: str) -> str:
    return paths.fill(paths.TUNING, dataset=dataset, method=method)


def _users(config: Mapping[str, Any], key_of, key: str) -> list[str]:
    return [m for m in text_methods(config) if key_of(config, m) == key]


def text_keys(config: Mapping[str, Any]) -> dict[str, list[str]]:
    """Wildcard values of the text stages: ``sal``, ``crs`` and ``tpk`` keys in use."""
    methods = text_methods(config)
    return {
        "sal": sorted({saliency_key(config, m) for m in methods}),
        "crs": sorted({coarse_key(config, m) for m in methods}),
        "tpk": sorted({mask_prompts_key(config, m) for m in methods}),
    }


def stage_splits(config: Mapping[str, Any], dataset: str, stage: str, key: str) -> list[str]:
    """Splits a text stage (``sal``, ``crs`` or ``tpk``) folder must cover: the union
    over the methods that share it."""
    key_of = {"sal": saliency_key, "crs": coarse_key, "tpk": mask_prompts_key}[stage]
    wanted = {s for m in _users(config, key_of, key) for s in method_splits(config, dataset, m)}
    return [s for s in ("train", "val", "test") if s in wanted] or list(config["metrics"]["splits"])


def stage_method(config: Mapping[str, Any], stage: str, key: str) -> dict[str, Any]:
    """The method config that defines the settings of a stage folder (the key's method)."""
    if key not in config["methods"] or config["methods"][key]["family"] != TEXT_FAMILY:
        raise ConfigError(f"methods.{key}: not a {TEXT_FAMILY} method (text stage {stage})")
    return dict(config["methods"][key])


# --- CLIP models ------------------------------------------------------------------------


def clip_marker(clip: str) -> str:
    """The file target of a pipeline-trained CLIP model folder."""
    return paths.fill(paths.CLIP_MODEL, clip=clip)


def clip_is_trained(spec: Mapping[str, Any]) -> bool:
    """True when the pipeline produces the model (demo arch, or a ``finetune:`` block)."""
    from medsegflow.clip.registry import is_trained_clip

    return is_trained_clip(spec)


def missing_clip_weights(config: Mapping[str, Any]) -> list[str]:
    """One line per downloaded CLIP weight that a requested method needs and that is not
    there (config keys, expected path, official source); fine-tuning needs its base."""
    from medsegflow.clip.registry import check_clip_weights

    lines = []
    for clip in clip_models_used(config):
        problem = check_clip_weights(config["clip_models"][clip], clip, config["weights"])
        if problem:
            lines.append(problem)
    return lines


def clip_input(config: Mapping[str, Any], clip: str) -> str:
    """The file a job that loads CLIP model ``clip`` depends on: the pipeline's output
    folder marker, or the configured weight path (folder or file)."""
    spec = config["clip_models"][clip]
    if clip_is_trained(spec):
        return clip_marker(clip)
    return str(config["weights"][spec["weights"]])


def clip_captions(clip: str) -> str:
    return paths.fill(paths.CLIP_CAPTIONS, clip=clip)


def clip_models_used(config: Mapping[str, Any]) -> list[str]:
    """CLIP models of the text methods that run (on a dataset or as pseudo-label source)."""
    methods = {m for _, m in dataset_method_pairs(config)}
    for dataset in config["datasets"]:
        methods |= pseudo_label_sources(config, dataset)
    used = {m_clip for m in methods if (m_clip := config["methods"][m].get("clip"))}
    return [c for c in config.get("clip_models", {}) if c in used]


def clip_training_datasets(config: Mapping[str, Any], clip: str) -> list[str]:
    return list(clip_training(config, clip)["datasets"] or config["datasets"])


def clip_caption_inputs(config: Mapping[str, Any], clip: str) -> dict[str, list[str]]:
    datasets = clip_training_datasets(config, clip)
    return {
        "preprocessed": [paths.fill(paths.PREPROCESSED, dataset=d) for d in datasets],
        "cases": [paths.fill(paths.DATA_CASES, dataset=d) for d in datasets],
    }


def clip_phantoms(config: Mapping[str, Any], clip: str) -> dict[str, dict[str, Any]]:
    """The config entries of ``clip``'s training datasets that are ``phantom`` adapters
    (they get ``phantom_images`` extra generated caption pairs), by name."""
    return {
        d: dict(config["datasets"][d])
        for d in clip_training_datasets(config, clip)
        if config["datasets"][d].get("adapter") == "phantom"
    }


def clip_finetune_inputs(config: Mapping[str, Any], clip: str) -> dict[str, str]:
    """Captions, and the base model's weights when fine-tuning a downloaded model."""
    spec = config["clip_models"][clip]
    inputs = {"captions": clip_captions(clip)}
    if spec["arch"] not in CLIP_TRAINED_ARCHS:
        inputs["base"] = str(config["weights"][spec["weights"]])
    return inputs


# --- jobs -------------------------------------------------------------------------------


def saliency_inputs(config: Mapping[str, Any], dataset: str, key: str) -> dict[str, str]:
    spec = stage_method(config, "sal", key)
    inputs = {
        "preprocessed": paths.fill(paths.PREPROCESSED, dataset=dataset),
        "cases": paths.fill(paths.DATA_CASES, dataset=dataset),
        "clip": clip_input(config, spec["clip"]),
    }
    if spec.get("tune"):
        inputs["tuning"] = tuning_file(dataset, key)
    return inputs


def coarse_inputs(config: Mapping[str, Any], dataset: str, key: str) -> dict[str, str]:
    spec = stage_method(config, "crs", key)
    inputs = {
        "preprocessed": paths.fill(paths.PREPROCESSED, dataset=dataset),
        "saliency": saliency_manifest(dataset, saliency_key(config, key)),
    }
    if spec.get("tune"):
        inputs["tuning"] = tuning_file(dataset, key)
    return inputs


def mask_prompt_inputs(config: Mapping[str, Any], dataset: str, key: str) -> dict[str, str]:
    return {"coarse": coarse_manifest(dataset, coarse_key(config, key))}


def tuning_inputs(config: Mapping[str, Any], dataset: str, method: str) -> dict[str, str]:
    spec = config["methods"][method]
    return {
        "preprocessed": paths.fill(paths.PREPROCESSED, dataset=dataset),
        "cases": paths.fill(paths.DATA_CASES, dataset=dataset),
        "clip": clip_input(config, spec["clip"]),
    }


def text_predict_inputs(config: Mapping[str, Any], dataset: str, method: str) -> dict[str, str]:
    """Inputs of a ``text_sam`` prediction job beside the preprocessed manifest: SAM's
    prompts, embeddings and checkpoint, or only the coarse masks without ``model``."""
    spec = config["methods"][method]
    inputs = {
        "preprocessed": paths.fill(paths.PREPROCESSED, dataset=dataset),
        "coarse": coarse_manifest(dataset, coarse_key(config, method)),
    }
    if spec.get("model"):
        inputs["prompts"] = mask_prompts_file(dataset, mask_prompts_key(config, method))
        inputs.update(sam_model_inputs(config, dataset, spec["model"]))
    return inputs


def check_text_config(config: Mapping[str, Any]) -> None:
    """:class:`ConfigError` naming the key for a ``text_sam`` method whose CLIP model or
    text prompt set does not exist, whose SAM model is unknown, or whose name collides
    with a prompt set (both name a ``results/prompts/{dataset}/<name>/`` folder)."""
    clips = config.get("clip_models", {})
    for name, spec in clips.items():
        key = f"clip_models.{name}"
        if spec["arch"] not in CLIP_TRAINED_ARCHS and not spec.get("weights"):
            raise ConfigError(f"{key}.weights: required for arch '{spec['arch']}'")
        if spec.get("weights") and spec["weights"] not in config.get("weights", {}):
            raise ConfigError(f"{key}.weights: '{spec['weights']}' is not a key under weights:")
    for method in text_methods(config):
        spec = config["methods"][method]
        key = f"methods.{method}"
        if spec["clip"] not in clips:
            raise ConfigError(f"{key}.clip: unknown CLIP model '{spec['clip']}'")
        if spec.get("model") and spec["model"] not in config.get("sam_models", {}):
            raise ConfigError(f"{key}.model: unknown SAM model '{spec['model']}'")
        if method in config.get("prompts", {}):
            raise ConfigError(f"{key}: the name is also a prompt set under prompts:; rename one")
        for dataset in config["datasets"]:
            if method not in methods_for_dataset(config, dataset):
                continue
            sets = config["datasets"][dataset].get("text_prompts", {})
            if spec["text_prompts"] not in sets:
                raise ConfigError(
                    f"{key}.text_prompts: '{spec['text_prompts']}' is not a prompt set of "
                    f"datasets.{dataset}.text_prompts (has: {', '.join(sets) or 'none'})"
                )


def clip_spec(config: Mapping[str, Any], clip: str) -> dict[str, Any]:
    """The ``clip_models`` entry of ``clip`` (:class:`ConfigError` when unknown)."""
    try:
        return dict(config["clip_models"][clip])
    except KeyError:
        raise ConfigError(f"clip_models.{clip}: unknown CLIP model") from None


def clip_training(config: Mapping[str, Any], clip: str) -> dict[str, Any]:
    """The training block of ``clip``: ``finetune`` (a downloaded base) when set, else
    ``train`` (the demo CLIP from scratch); complete, as the config schema fills it."""
    spec = clip_spec(config, clip)
    return dict(spec["finetune"] if spec.get("finetune") is not None else spec["train"])


def method_text_prompts(config: Mapping[str, Any], dataset: str, method: str) -> dict[str, Any]:
    """The text prompt set ``method`` uses on ``dataset``, with ``key`` for messages."""
    spec = config["methods"][method]
    sets = config["datasets"][dataset].get("text_prompts", {})
    name = spec["text_prompts"]
    if name not in sets:
        raise ConfigError(
            f"methods.{method}.text_prompts: '{name}' is not a prompt set of "
            f"datasets.{dataset}.text_prompts"
        )
    return {"key": f"datasets.{dataset}.text_prompts.{name}", "set": dict(sets[name])}


def clip_vocabulary_words(config: Mapping[str, Any], clip: str) -> list[str]:
    """Words of every dataset's text prompt sets: a demo CLIP's vocabulary (the training
    job adds the captions' words). ``clip`` is checked to exist."""
    clip_spec(config, clip)
    from medsegflow.text_prompts import prompt_words

    words: set[str] = set()
    for spec in config["datasets"].values():
        words.update(prompt_words(spec.get("text_prompts", {})))
    return sorted(words)
