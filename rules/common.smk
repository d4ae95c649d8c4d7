# Config validation, ablation expansion, wildcard constraints, then small get_* functions.
# The logic lives in medsegflow.config and medsegflow.workflow (covered by pytest).

from medsegflow import workflow as wf
from medsegflow.config import load_config

config = load_config(config)


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
