# Config validation, ablation expansion, wildcard constraints, then small get_* functions.
# The logic lives in medsegflow.config and medsegflow.workflow (covered by pytest).

import sys

from medsegflow import workflow as wf
from medsegflow import workflow_text as wft
from medsegflow.config import load_config
from medsegflow.errors import ConfigError

config = load_config(config)
# A real run stops here naming every missing weight file. A dry-run warns and plans every
# job anyway, leaving the missing weight paths out of the jobs' inputs (PLAN_WITHOUT).
PLAN_WITHOUT = set()
if wf.missing_weights(config):
    if warning := wf.check_weights(config, dry_run=wf.dry_run_requested(sys.argv)):
        print(f"WARNING: {warning}", file=sys.stderr)
        PLAN_WITHOUT = wf.missing_weight_paths(config)
wf.check_nnunet(config)
wft.check_text_config(config)


wildcard_constraints:
    **wf.wildcard_patterns(config),


def get_final_output():
    return wf.final_outputs(config)


def get_dataset_config(wildcards):
    # only what shapes the data: methods, exclusions and text prompts may change freely
    # without invalidating the prepared and preprocessed datasets (Snakemake's params check)
    return wf.dataset_source(config, wildcards.dataset)


def get_method_config(wildcards):
    return wf.method_config(config, wildcards.method)


def get_prompt_config(wildcards):
    return config["prompts"][wildcards.prompt]


def get_predict_inputs(wildcards):
    return wf.without_paths(
        wf.predict_inputs(config, wildcards.dataset, wildcards.method), PLAN_WITHOUT
    )


def get_metrics_files(wildcards):
    return wf.metrics_files(config)


def get_dataset_metrics_files(wildcards):
    return wf.metrics_files_for_dataset(config, wildcards.dataset)


def get_dataset_predictions(wildcards):
    return wf.predictions_for_dataset(config, wildcards.dataset)


def get_sam_checkpoint(wildcards):
    return wf.without_paths(wf.sam_checkpoint(config, wildcards.model), PLAN_WITHOUT)


def get_demo_sam_training_inputs(wildcards):
    return wf.demo_sam_training_inputs(config, wildcards.model)


def get_sam_model_config(wildcards):
    return config["sam_models"][wildcards.model]


def get_embedding_splits(wildcards):
    return wf.embedding_splits(config, wildcards.dataset, wildcards.model)


def get_demo_sam_threads(wildcards):
    return config["sam_models"][wildcards.model]["train"]["threads"]


# Cluster resources and conda envs (medsegflow.workflow): resource callables receive the
# job's rule name and attempt, so `gpu=get_gpu_count` works unchanged in any rule.


def get_gpu_count(wildcards, rulename):
    return wf.gpu_count(config, rulename, wildcards.get("method"))


def get_mem_mb(wildcards, attempt, rulename):
    base = wf.job_resources(config, rulename, wildcards.get("method"))
    return base.for_attempt(attempt).mem_mb


def get_runtime(wildcards, attempt, rulename):
    base = wf.job_resources(config, rulename, wildcards.get("method"))
    return base.for_attempt(attempt).runtime_min


def get_attempt(wildcards, attempt):
    return attempt


def get_method_env(wildcards):
    return wf.method_env(config, wildcards.method)


# nnU-Net (medsegflow.workflow, nnU-Net family section)


def get_nnunet_convert_inputs(wildcards):
    return wf.nnunet_convert_inputs(config, wildcards.dataset, wildcards.labels)


def get_nnunet_plan_params(wildcards):
    return wf.nnunet_plan_params(config, wildcards.dataset, wildcards.labels)


def get_nnunet_plan_threads(wildcards):
    params = wf.nnunet_plan_params(config, wildcards.dataset, wildcards.labels)
    return params["num_processes"]


def get_nnunet_train_inputs(wildcards):
    return wf.nnunet_train_inputs(config, wildcards.dataset, wildcards.method)


def get_nnunet_threads(wildcards):
    return wf.nnunet_threads(config, wildcards.method)


# MedCLIP-SAMv2 text-driven stages (medsegflow.workflow_text)


def get_clip_model_config(wildcards):
    return config["clip_models"][wildcards.clip]


def get_clip_caption_inputs(wildcards):
    return wft.clip_caption_inputs(config, wildcards.clip)


def get_clip_finetune_inputs(wildcards):
    return wf.without_paths(
        wft.clip_finetune_inputs(config, wildcards.clip), PLAN_WITHOUT
    )


def get_clip_threads(wildcards):
    return wft.clip_training(config, wildcards.clip)["threads"]


def get_clip_words(wildcards):
    return wft.clip_vocabulary_words(config, wildcards.clip)


def get_tuning_inputs(wildcards):
    return wf.without_paths(
        wft.tuning_inputs(config, wildcards.dataset, wildcards.method), PLAN_WITHOUT
    )


def get_method_clip_config(wildcards):
    return wft.clip_spec(config, config["methods"][wildcards.method]["clip"])


def get_method_text_prompts(wildcards):
    return wft.method_text_prompts(config, wildcards.dataset, wildcards.method)


def get_saliency_inputs(wildcards):
    return wf.without_paths(
        wft.saliency_inputs(config, wildcards.dataset, wildcards.sal), PLAN_WITHOUT
    )


def get_saliency_method(wildcards):
    return wft.stage_method(config, "sal", wildcards.sal)


def get_saliency_clip_config(wildcards):
    return wft.clip_spec(config, config["methods"][wildcards.sal]["clip"])


def get_saliency_text_prompts(wildcards):
    return wft.method_text_prompts(config, wildcards.dataset, wildcards.sal)


def get_saliency_splits(wildcards):
    return wft.stage_splits(config, wildcards.dataset, "sal", wildcards.sal)


def get_coarse_inputs(wildcards):
    return wft.coarse_inputs(config, wildcards.dataset, wildcards.crs)


def get_coarse_method(wildcards):
    return wft.stage_method(config, "crs", wildcards.crs)


def get_mask_prompt_inputs(wildcards):
    return wft.mask_prompt_inputs(config, wildcards.dataset, wildcards.tpk)


def get_mask_prompt_method(wildcards):
    return wft.stage_method(config, "tpk", wildcards.tpk)
