# Config validation, ablation expansion, wildcard constraints, then small get_* functions.
# The logic lives in medsegflow.config and medsegflow.workflow (covered by pytest).

from medsegflow import workflow as wf
from medsegflow.config import load_config
from medsegflow.errors import ConfigError

config = load_config(config)
if missing := wf.missing_weights(config):
    raise ConfigError(
        "missing weight files (download them or change weights: in the config):\n"
        + "\n".join(missing)
    )
wf.check_nnunet(config)


wildcard_constraints:
    **wf.wildcard_patterns(config),


def get_final_output():
    return wf.final_outputs(config)


def get_dataset_config(wildcards):
    return config["datasets"][wildcards.dataset]


def get_method_config(wildcards):
    return wf.method_config(config, wildcards.method)


def get_prompt_config(wildcards):
    return config["prompts"][wildcards.prompt]


def get_predict_inputs(wildcards):
    return wf.predict_inputs(config, wildcards.dataset, wildcards.method)


def get_metrics_files(wildcards):
    return wf.metrics_files(config)


def get_dataset_metrics_files(wildcards):
    return wf.metrics_files_for_dataset(config, wildcards.dataset)


def get_dataset_predictions(wildcards):
    return wf.predictions_for_dataset(config, wildcards.dataset)


def get_sam_checkpoint(wildcards):
    return wf.sam_checkpoint(config, wildcards.model)


def get_demo_sam_training_inputs(wildcards):
    return wf.demo_sam_training_inputs(config, wildcards.model)


def get_sam_model_config(wildcards):
    return config["sam_models"][wildcards.model]


def get_embedding_splits(wildcards):
    return wf.embedding_splits(config)


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
