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
