# Config validation, ablation expansion, wildcard constraints, then small get_* functions.
# The logic lives in medsegflow (covered by pytest): config (loading), workflow (targets,
# prediction inputs, weights), planning (shared queries), families (the family registry)
# and resources (cluster requests, conda envs). A family's extra stages keep their get_*
# functions, and the import of the family's own module, in their own rule file.

import sys

from medsegflow import paths
from medsegflow import planning as pl
from medsegflow import resources as res
from medsegflow import workflow as wf
from medsegflow.allocator import keep_freed_memory
from medsegflow.config import check_config_files, load_config
from medsegflow.datasets.sources import update_manifests
from medsegflow.errors import ConfigError
from medsegflow.preflight import before_run, exit_on_bad_input

# glibc keeps the memory torch frees for reuse, in this process and in every job it starts
# (medsegflow.allocator; MEDSEGFLOW_MALLOC=default keeps glibc's defaults).
keep_freed_memory()

# Bad config or input found here stops the run with its line(s) and exit status 1, no
# traceback (medsegflow.preflight): a key given twice in a config file, an invalid config,
# a missing weight file, an output folder that cannot be written, a lock of a killed run.
with exit_on_bad_input():
    check_config_files(workflow.configfiles)
    config = load_config(config)
    # A real run stops here naming every missing weight file. A dry-run warns and plans every
    # job anyway, leaving the missing weight paths out of the jobs' inputs (PLAN_WITHOUT).
    PLAN_WITHOUT = set()
    if wf.missing_weights(config):
        if warning := wf.check_weights(config, dry_run=wf.dry_run_requested(sys.argv)):
            print(f"WARNING: {warning}", file=sys.stderr)
            PLAN_WITHOUT = wf.missing_weight_paths(config)
    before_run(sys.argv, main_process=workflow.is_main_process)
    # results/sources/{dataset}.tsv: the raw files of each dataset read from disk, rewritten
    # only when one changes, so the adapter job of that dataset alone reruns
    SOURCE_MANIFESTS = update_manifests(
        config["datasets"],
        write=workflow.is_main_process,
        first_scan=not wf.dry_run_requested(sys.argv),
    )


wildcard_constraints:
    **wf.wildcard_patterns(config),


def get_final_output():
    return wf.final_outputs(config)


def get_dataset_config(wildcards):
    # only what shapes the data: methods, exclusions and text prompts may change freely
    # without invalidating the prepared and preprocessed datasets (Snakemake's params check)
    return pl.dataset_source(config, wildcards.dataset)


def get_source_manifest(wildcards):
    return SOURCE_MANIFESTS.get(wildcards.dataset, [])


def get_method_config(wildcards):
    return pl.method_config(config, wildcards.method)


def get_prompt_config(wildcards):
    return config["prompts"][wildcards.prompt]


def get_predict_inputs(wildcards):
    return wf.without_paths(
        wf.predict_inputs(config, wildcards.dataset, wildcards.method), PLAN_WITHOUT
    )


def get_preprocessed_manifest(wildcards):
    return paths.fill(paths.PREPROCESSED, dataset=wildcards.dataset)


def get_metrics_files(wildcards):
    return wf.metrics_files(config)


def get_convention_files(wildcards):
    return wf.convention_files(config)


def get_dataset_metrics_files(wildcards):
    return wf.metrics_files_for_dataset(config, wildcards.dataset)


def get_dataset_predictions(wildcards):
    return wf.predictions_for_dataset(config, wildcards.dataset)


def get_dataset_prompt_files(wildcards):
    return wf.prompt_files_for_dataset(config, wildcards.dataset)


def get_dataset_prompt_inputs(wildcards):
    return sorted(set(get_dataset_prompt_files(wildcards).values()))


def get_dataset_interactive_methods(wildcards):
    return wf.interactive_methods_for_dataset(config, wildcards.dataset)


# Prompt-robustness curves (medsegflow.workflow.robustness_pairs)


def get_robustness_inputs(wildcards):
    return wf.without_paths(
        wf.robustness_inputs(config, wildcards.dataset, wildcards.model), PLAN_WITHOUT
    )


def get_robustness_files(wildcards):
    return wf.robustness_files(config)


# The interactive protocol (medsegflow.interactive)


def get_click_metrics_files(wildcards):
    return wf.click_metrics_files(config)


# SAM-family models: the training stage and the embedding cache


def get_sam_checkpoint(wildcards):
    return wf.without_paths(pl.sam_checkpoint(config, wildcards.model), PLAN_WITHOUT)


def get_sam_train_inputs(wildcards):
    return wf.without_paths(pl.sam_train_inputs(config, wildcards.model), PLAN_WITHOUT)


def get_sam_model_config(wildcards):
    return pl.sam_model(config, wildcards.model)


def get_sam_model_arch(wildcards):
    return pl.sam_model_arch(config, wildcards.model)


def get_sam_train_threads(wildcards):
    return pl.sam_model(config, wildcards.model)["train"]["threads"]


def get_embedding_splits(wildcards):
    return wf.embedding_splits(config, wildcards.dataset, wildcards.model)


# Cluster resources and conda envs (medsegflow.resources): resource callables receive the
# job's rule name and attempt, so `gpu=get_gpu_count` works unchanged in any rule.


def get_gpu_count(wildcards, rulename):
    return res.gpu_count(config, rulename, wildcards.get("method"))


def get_mem_mb(wildcards, attempt, rulename):
    base = res.job_resources(config, rulename, wildcards.get("method"))
    return base.for_attempt(attempt).mem_mb


def get_runtime(wildcards, attempt, rulename):
    base = res.job_resources(config, rulename, wildcards.get("method"))
    return base.for_attempt(attempt).runtime_min


def get_attempt(wildcards, attempt):
    return attempt


def get_method_env(wildcards):
    return res.method_env(config, wildcards.method)
