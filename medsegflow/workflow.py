"""Pure workflow logic for the Snakefile: target lists, method lookup, per-rule inputs.

``rules/common.smk`` binds these functions to wildcards; keeping them here lets pytest
cover them. Nothing here reads data: targets depend on the config only, never on the
cases of a dataset, so building the DAG does not scale with the number of cases.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from medsegflow import workflow_text as wft
from medsegflow.errors import ConfigError

RESULTS = "results"


def methods_for_dataset(config: Mapping[str, Any], dataset: str) -> list[str]:
    """Methods run on ``dataset``: its ``methods:`` list (default every configured
    method) without its ``exclude_methods:``."""
    spec = config["datasets"][dataset]
    chosen = spec.get("methods") or list(config["methods"])
    excluded = set(spec.get("exclude_methods") or ())
    return [m for m in chosen if m not in excluded]


DATASET_SOURCE_KEYS = ("adapter", "params", "window")
"""Keys of a dataset's config that change its prepared and preprocessed data."""


def dataset_source(config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """The part of ``datasets.<dataset>`` that the data jobs read (:data:`DATASET_SOURCE_KEYS`)."""
    spec = config["datasets"][dataset]
    return {k: spec[k] for k in DATASET_SOURCE_KEYS if k in spec}


def dataset_method_pairs(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(d, m) for d in config["datasets"] for m in methods_for_dataset(config, d)]


def prompt_sets_used(config: Mapping[str, Any], dataset: str) -> list[str]:
    """Prompt sets needed by the methods of ``dataset``, in config order."""
    used = {config["methods"][m].get("prompts") for m in methods_for_dataset(config, dataset)}
    return [p for p in config.get("prompts", {}) if p in used]


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
    """Tight wildcard constraints, built from the names in the config."""
    return {
        "dataset": alternation(config["datasets"]),
        "method": alternation(config["methods"]),
        "prompt": alternation(config.get("prompts", {})),
        "metric": alternation(config["figures"]["metrics"]),
        "model": alternation(config.get("sam_models", {})),
        "labels": alternation(nnunet_label_sources(config)),
        "clip": alternation(config.get("clip_models", {})),
        **{stage: alternation(keys) for stage, keys in wft.text_keys(config).items()},
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
    if spec["family"] in ("sam", "sam_auto"):
        inputs["embeddings"] = embeddings_manifest(dataset, spec["model"])
        inputs["checkpoint"] = sam_checkpoint(config, spec["model"])
    if spec["family"] == wft.TEXT_FAMILY:
        inputs.update(wft.text_predict_inputs(config, dataset, method))
    if spec["family"] == "nnunet":
        inputs["data"] = f"{data_dir(dataset)}/cases.tsv"
        inputs["model"] = nnunet_training_marker(dataset, method)
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


SAM_FAMILIES = frozenset({"sam", "sam_auto", wft.TEXT_FAMILY})
"""Families whose ``model`` is a key of ``sam_models`` (optional for ``text_sam``)."""


def sam_models_used(config: Mapping[str, Any]) -> list[str]:
    methods = {m for _, m in dataset_method_pairs(config)}
    for dataset in config["datasets"]:
        methods |= wft.pseudo_label_sources(config, dataset)
    used = {
        config["methods"][m].get("model")
        for m in methods
        if config["methods"][m]["family"] in SAM_FAMILIES
    }
    return [m for m in config.get("sam_models", {}) if m in used]


def missing_weights(config: Mapping[str, Any]) -> list[str]:
    """One line per weight file that a requested method needs and that is not there.

    Each line names the config key, the expected path and the official source.
    """
    from pathlib import Path

    from medsegflow.models.sam_registry import OFFICIAL_SAM_WEIGHTS

    lines = wft.missing_clip_weights(config)
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
    from pathlib import Path

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


def demo_sam_training_inputs(config: Mapping[str, Any], model: str) -> list[str]:
    """Preprocessed manifests of the datasets the demo SAM ``model`` trains on."""
    spec = config["sam_models"][model]
    if spec["arch"] != "demo":
        raise ConfigError(
            f"sam_models.{model}.arch: '{spec['arch']}' uses downloaded weights; "
            "only arch demo is trained by the pipeline"
        )
    datasets = spec["train"].get("datasets") or list(config["datasets"])
    return [f"{preprocessed_dir(d)}/manifest.tsv" for d in datasets]


def embedding_splits(config: Mapping[str, Any], dataset: str, model: str) -> list[str]:
    """Splits whose images get SAM embeddings: the scored splits (``metrics.splits``)
    plus ``val``, which tuning reads, plus ``train`` when a method on SAM ``model`` makes
    pseudo-labels for an nnU-Net method on ``dataset``; in train, val, test order."""
    wanted = {*config["metrics"]["splits"], "val"}
    for source in wft.pseudo_label_sources(config, dataset):
        spec = config["methods"][source]
        if spec["family"] in SAM_FAMILIES and spec.get("model") == model:
            wanted |= {"train", "val"}
    return [s for s in ("train", "val", "test") if s in wanted]


# --- Cluster resources and conda envs -----------------------------------------------------
# rules/common.smk binds these to each job's rule name, wildcards and attempt (get_gpu_count,
# get_mem_mb, get_runtime, get_method_env), so a rule added later gets sensible SLURM
# requests from its name alone: ``<verb>_<noun>`` with a GPU verb asks for a GPU, and a
# ``predict_*`` job asks for one when its method's family runs a torch model.


@dataclass(frozen=True)
class FamilyRuntime:
    """Where a method family's prediction jobs run: conda env (``envs/<env>.yaml``), GPU."""

    env: str
    gpu: bool


FAMILY_RUNTIMES: dict[str, FamilyRuntime] = {
    "classical": FamilyRuntime("base", gpu=False),
    "sam": FamilyRuntime("torch", gpu=True),
    "text_sam": FamilyRuntime("torch", gpu=True),
    "sam_auto": FamilyRuntime("torch", gpu=True),
    "samed": FamilyRuntime("torch", gpu=True),
    "medsa": FamilyRuntime("torch", gpu=True),
    "sam3d": FamilyRuntime("torch", gpu=True),
    "nnunet": FamilyRuntime("nnunet", gpu=True),
}
"""Every family of the config schema (tests/workflow/test_envs.py checks it)."""

DEFAULT_FAMILY_RUNTIME = FamilyRuntime("torch", gpu=True)
"""For a family missing from :data:`FAMILY_RUNTIMES`: every model family is torch-based."""

GPU_VERBS = frozenset({"embed", "train", "finetune", "compute", "tune"})
"""Rule-name verbs whose every job runs a torch model (image encoders, training)."""

LIGHT_VERBS = frozenset({"make", "collect", "summarise", "plot", "gather"})
"""Rule-name verbs of small table, prompt and figure jobs."""


@dataclass(frozen=True)
class JobResources:
    """Requests of a job's first attempt: memory (MB) and wall time (minutes)."""

    mem_mb: int
    runtime_min: int

    def for_attempt(self, attempt: int) -> JobResources:
        """Both requests times ``attempt`` (a job killed for memory or time gets more)."""
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt}")
        return JobResources(self.mem_mb * attempt, self.runtime_min * attempt)


LIGHT_JOB = JobResources(mem_mb=2000, runtime_min=30)
CPU_JOB = JobResources(mem_mb=4000, runtime_min=120)
GPU_JOB = JobResources(mem_mb=16000, runtime_min=360)
TRAIN_JOB = JobResources(mem_mb=32000, runtime_min=1440)


def _verb(rule: str) -> str:
    return rule.split("_", 1)[0]


def family_runtime(config: Mapping[str, Any], method: str) -> FamilyRuntime:
    """Conda env and GPU need of the prediction jobs of ``method`` (by its family)."""
    family = method_config(config, method)["family"]
    return FAMILY_RUNTIMES.get(family, DEFAULT_FAMILY_RUNTIME)


def gpu_count(config: Mapping[str, Any], rule: str, method: str | None = None) -> int:
    """GPUs for one job of ``rule``: 1 for GPU verbs and torch-family predictions, else 0.

    ``method`` is the job's ``{method}`` wildcard, if it has one. On a cluster without
    GPUs, override with ``--set-resources <rule>:gpu=0``.
    """
    if _verb(rule) in GPU_VERBS:
        return 1
    if _verb(rule) == "predict" and method is not None:
        return int(family_runtime(config, method).gpu)
    return 0


def job_resources(config: Mapping[str, Any], rule: str, method: str | None = None) -> JobResources:
    """First-attempt memory and wall time of a job of ``rule``; see :func:`gpu_count`.

    Training jobs get :data:`TRAIN_JOB`, other GPU jobs :data:`GPU_JOB`, table, prompt and
    figure jobs :data:`LIGHT_JOB`, the rest :data:`CPU_JOB`; scale with ``for_attempt``.
    """
    if _verb(rule) in ("train", "finetune"):
        base = TRAIN_JOB
    elif gpu_count(config, rule, method):
        base = GPU_JOB
    elif _verb(rule) in LIGHT_VERBS:
        base = LIGHT_JOB
    else:
        base = CPU_JOB
    return base


def family_env(family: str) -> str:
    """Conda env file of the prediction jobs of ``family``, relative to ``rules/``."""
    return f"../envs/{FAMILY_RUNTIMES.get(family, DEFAULT_FAMILY_RUNTIME).env}.yaml"


def method_env(config: Mapping[str, Any], method: str) -> str:
    """Conda env file of the prediction jobs of ``method`` (by its family), see ``family_env``."""
    return family_env(method_config(config, method)["family"])


# --- nnU-Net family -----------------------------------------------------------------------
# A converted nnU-Net dataset is one (dataset, labels) pair: labels "gt" or the method
# whose train/val predictions are the training labels (``labels_from``).

NNUNET_DIR = f"{RESULTS}/nnunet"
NNUNET_GT = "gt"  # medsegflow.nnunet.naming.GT_LABELS (that module is kept import-light too)


def is_nnunet(config: Mapping[str, Any], method: str) -> bool:
    return method_config(config, method)["family"] == "nnunet"


def nnunet_label_source(config: Mapping[str, Any], method: str) -> str:
    """Where ``method`` (family nnunet) takes its training labels: ``gt`` or a method name."""
    return method_config(config, method).get("labels_from") or NNUNET_GT


def nnunet_label_sources(config: Mapping[str, Any]) -> list[str]:
    """``gt`` and every method named by a ``labels_from``, in config order."""
    used = {m.get("labels_from") for m in config["methods"].values() if m["family"] == "nnunet"}
    return [NNUNET_GT, *(m for m in config["methods"] if m in used)]


def nnunet_pairs(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(dataset, labels) of every nnU-Net dataset the config trains on, without repeats."""
    pairs = [
        (d, nnunet_label_source(config, m))
        for d, m in dataset_method_pairs(config)
        if is_nnunet(config, m)
    ]
    return list(dict.fromkeys(pairs))


def check_nnunet(config: Mapping[str, Any]) -> None:
    """:class:`ConfigError` naming the key for a bad ``labels_from`` (unknown, itself, a
    method named ``gt``, a cycle) or two nnU-Net datasets with the same derived id."""
    from medsegflow.nnunet.naming import check_unique_ids

    for name, spec in config["methods"].items():
        seen = [name]
        source = spec.get("labels_from") if spec["family"] == "nnunet" else None
        while source:
            key = f"methods.{seen[-1]}.labels_from"
            if source == NNUNET_GT:
                raise ConfigError(f"{key}: '{NNUNET_GT}' is reserved for the ground truth")
            if source not in config["methods"]:
                raise ConfigError(f"{key}: unknown method '{source}'")
            if source in seen:
                raise ConfigError(
                    f"{key}: labels_from forms a cycle {' -> '.join(seen)} -> {source}"
                )
            seen.append(source)
            follow = config["methods"][source]
            source = follow.get("labels_from") if follow["family"] == "nnunet" else None
    check_unique_ids(nnunet_pairs(config))


def nnunet_converted_marker(dataset: str, labels: str) -> str:
    return f"{NNUNET_DIR}/converted/{dataset}/{labels}.json"


def nnunet_planned_marker(dataset: str, labels: str) -> str:
    return f"{NNUNET_DIR}/planned/{dataset}/{labels}.json"


def nnunet_training_marker(dataset: str, method: str) -> str:
    return f"{RESULTS}/models/nnunet/{dataset}/{method}/training.json"


def pseudolabels_manifest(dataset: str, method: str) -> str:
    return f"{RESULTS}/pseudolabels/{dataset}/{method}/manifest.tsv"


def nnunet_convert_inputs(config: Mapping[str, Any], dataset: str, labels: str) -> dict[str, str]:
    """Inputs of the conversion of (``dataset``, ``labels``): cases, and pseudo-labels."""
    inputs = {"cases": f"{data_dir(dataset)}/cases.tsv"}
    if labels != NNUNET_GT:
        inputs["pseudolabels"] = pseudolabels_manifest(dataset, labels)
    return inputs


def nnunet_plan_params(config: Mapping[str, Any], dataset: str, labels: str) -> dict[str, Any]:
    """Configurations to preprocess for (``dataset``, ``labels``) and the process count:
    the union and the maximum over the nnU-Net methods trained on it."""
    specs = [
        method_config(config, m)
        for d, m in dataset_method_pairs(config)
        if d == dataset and is_nnunet(config, m) and nnunet_label_source(config, m) == labels
    ]
    configurations = sorted({s.get("configuration", "2d") for s in specs}) or ["2d"]
    processes = max((int(s.get("num_processes", 2)) for s in specs), default=2)
    return {"configurations": configurations, "num_processes": processes}


def nnunet_train_inputs(config: Mapping[str, Any], dataset: str, method: str) -> dict[str, str]:
    labels = nnunet_label_source(config, method)
    return {"planned": nnunet_planned_marker(dataset, labels)}


def nnunet_threads(config: Mapping[str, Any], method: str) -> int:
    return int(method_config(config, method).get("num_processes", 2))
